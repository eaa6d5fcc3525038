"""Logs never contain tokens, API keys or secrets - also while refusing them, at debug level."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import Process, Running
from tests.security.conftest import (
    API_KEY,
    SEC_CONFIG,
    SECRET,
    RawClient,
    conn_token,
    hand_signed,
    sub_token,
)

Serve = Callable[..., Awaitable[Running]]
WRONG_KEY = "wrong-api-key-" + "w" * 40


def secrets() -> dict[str, str]:
    """Everything that must never reach a log line."""
    now = int(time.time())
    return {
        "valid": conn_token("42"),
        "forged": conn_token("42", key="attacker-" + "f" * 40),
        "expired": conn_token("42", ttl=-60),
        "not yet valid": conn_token("42", nbf=now + 600),
        "alg none": hand_signed({"alg": "none"}, {"sub": "42"}, None),
        "garbage": "garbage-token-" + "g" * 40,
        "refresh other user": conn_token("43"),
        "sub valid": sub_token("42", "$room"),
        "sub other user": sub_token("43", "$other"),
        "sub forged": sub_token("42", "$forged", key="attacker-" + "f" * 40),
        "api key": API_KEY,
        "wrong api key": WRONG_KEY,
        "hmac secret": SECRET,
    }


async def exercise(ws_url: str, api_url: str, tokens: dict[str, str]) -> None:
    """Connect, subscribe, refresh and call the API with every secret, good and bad."""
    for name in ("forged", "expired", "not yet valid", "alg none", "garbage"):
        client = await RawClient.open(ws_url)
        try:
            await client.connect(tokens[name])
        finally:
            await client.aclose()
    client = await RawClient.open(ws_url)
    try:
        await client.connect(tokens["valid"])
        await client.attempt("subscribe", {"channel": "$room", "token": tokens["sub valid"]})
        await client.attempt("subscribe", {"channel": "$forged", "token": tokens["sub forged"]})
        await client.attempt("subscribe", {"channel": "$other", "token": tokens["sub other user"]})
    finally:
        await client.aclose()
    client = await RawClient.open(ws_url)
    try:
        await client.connect(tokens["valid"])
        await client.attempt("refresh", {"token": tokens["refresh other user"]})
    finally:
        await client.aclose()
    async with aiohttp.ClientSession() as session:
        for headers, params in (
            ({"X-API-Key": API_KEY}, {}),
            ({"X-API-Key": WRONG_KEY}, {}),
            ({}, {"api_key": API_KEY}),
            ({}, {"api_key": WRONG_KEY}),
            ({"Authorization": f"apikey {WRONG_KEY}"}, {}),
        ):
            async with session.post(f"{api_url}/info", json={}, headers=headers, params=params) as resp:
                await resp.read()
            async with session.post(f"{api_url}/nope", data=b"{bad json", headers=headers, params=params) as resp:
                await resp.read()


def leaks(text: str, tokens: dict[str, str]) -> list[str]:
    found = []
    for name, value in tokens.items():
        pieces = [value, *(part for part in value.split(".") if len(part) >= 24)]
        if any(piece in text for piece in pieces):
            found.append(name)
    return found


async def test_in_process_logs_hold_no_secrets(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    running = await serve()
    tokens = secrets()
    await exercise(running.ws_url, running.api_url, tokens)
    await asyncio.sleep(0.1)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert "disconnect client=" in text  # the refusals were logged...
    assert leaks(text, tokens) == []  # ...without what was refused


async def test_server_process_logs_hold_no_secrets(server_process: Callable[..., Process]) -> None:
    """The real ``trunkline serve`` logging setup (JSON lines, debug level)."""
    config: dict[str, Any] = {**SEC_CONFIG, "log": {"level": "debug", "format": "json"}}
    proc = await asyncio.to_thread(server_process, config)
    tokens = secrets()
    await exercise(proc.ws_url, proc.http_url + "/api", tokens)
    await asyncio.to_thread(proc.stop)
    text = proc.output()
    assert '"level": "info"' in text and "disconnect client=" in text
    assert leaks(text, tokens) == []
