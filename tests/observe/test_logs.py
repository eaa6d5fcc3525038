"""Logs of a real server process: JSON lines or text, the configured level, and no secrets or payloads."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
from cent import AsyncClient, DisconnectRequest, PublishRequest
from centrifuge import ClientState

from tests.conftest import Process, eventually, token

from . import connect, subscribe

API_KEY = "api-key-do-not-log-4f0c9e2b7a"
PAYLOAD = "payload-do-not-log-8d3e1f"
USER = "user-logged-5521"


def _config(level: str, fmt: str) -> dict[str, Any]:
    return {"log": {"level": level, "format": fmt}, "http_api": {"key": API_KEY}}


async def _traffic(proc: Process) -> tuple[str, list[str]]:
    """Connect with a token, publish from the client and the API, then disconnect through the API."""
    jwt = token(USER, info={"note": PAYLOAD})
    client = await connect(proc.ws_url, jwt)
    client_id = client.client_id
    try:
        _, received = await subscribe(client, "news")
        await client.publish("news", {"text": PAYLOAD})
        async with AsyncClient(f"{proc.http_url}/api", API_KEY) as cent:
            await cent.publish(PublishRequest(channel="news", data={"text": PAYLOAD}))
            await received.wait_for(2)
            await cent.disconnect(DisconnectRequest(user=USER))
        await eventually(lambda: client.state == ClientState.DISCONNECTED)
    finally:
        await client.disconnect()
    # refused attempts: a forged token and a wrong API key
    forged = token(USER, secret="not-the-secret-0123456789abcdef0123")
    bad = await _refused_connect(proc, forged)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{proc.http_url}/api/publish",
            json={"channel": "news", "data": {"text": PAYLOAD}},
            headers={"X-API-Key": "wrong-key-do-not-log-77e1"},
        ) as resp,
    ):
        assert resp.status == 401
    return client_id, [jwt, bad]


async def _refused_connect(proc: Process, jwt: str) -> str:
    from centrifuge import Client

    client = Client(proc.ws_url, token=jwt, proxy=None, max_reconnect_delay=0.5)
    try:
        await client.connect()
        await eventually(lambda: client.state == ClientState.DISCONNECTED, timeout=5)
    finally:
        await client.disconnect()
    return jwt


def _assert_no_secrets(output: str, *secrets: str) -> None:
    for secret in (*secrets, API_KEY, PAYLOAD, "wrong-key-do-not-log-77e1"):
        assert secret not in output, f"{secret[:12]}... appears in the log"
        if secret.count(".") == 2:  # a JWT: no part of it either (header excepted: it is generic)
            for part in secret.split(".")[1:]:
                assert part not in output


async def test_json_logs_at_debug_carry_ids_and_no_secrets(server_process: Callable[..., Process]) -> None:
    proc = server_process(_config("debug", "json"))
    client_id, tokens = await _traffic(proc)
    assert proc.stop(signal.SIGTERM) == 0
    output = proc.output()

    entries = []
    for line in output.splitlines():
        if line.strip():
            entry = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= entry.keys()
            entries.append(entry)
    assert any(e["level"] == "debug" for e in entries) or any(e["level"] == "info" for e in entries)
    # the line about the disconnected connection names its client id and user
    about = [e for e in entries if client_id in e["message"]]
    assert about, "no log line names the client id"
    assert any(f"user={USER}" in e["message"] for e in about)
    # and carries them as fields, so a log search can filter on them
    assert any(e.get("client") == client_id and e.get("user") == USER for e in about)
    _assert_no_secrets(output, *tokens)


async def test_text_logs_by_default_and_level_from_config(server_process: Callable[..., Process]) -> None:
    proc = server_process(_config("info", "text"))
    client_id, tokens = await _traffic(proc)
    assert proc.stop(signal.SIGTERM) == 0
    output = proc.output()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert not line.startswith("{")
    assert any(" INFO trunkline" in line and client_id in line for line in lines)
    assert not any(" DEBUG " in line for line in lines)
    _assert_no_secrets(output, *tokens)

    quiet = server_process(_config("warning", "json"))
    await _traffic(quiet)
    assert quiet.stop(signal.SIGTERM) == 0
    levels = {json.loads(line)["level"] for line in quiet.output().splitlines() if line.strip()}
    assert levels <= {"warning", "error"}
