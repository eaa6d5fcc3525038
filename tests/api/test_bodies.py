"""Issue 9 item 3: the server API reads the whole body (bounded), then parses, then executes.

Bodies arrive in small pieces with delays between them, as through a real network: with
``Content-Length`` over a raw socket in 1448-byte segments, chunked from an aiohttp
async generator, and cut at random points by hypothesis. A body over
``http_api.max_body_size`` gets 413 with a JSON body as soon as the limit is passed. The
legacy ``POST /api`` parses every line before it executes any.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.api import rawhttp
from tests.conftest import API_KEY, Running

Start = Callable[..., Awaitable[Running]]
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
SIZES = {"2KB": 2_000, "500KB": 500_000}
MIB = 1024 * 1024


def publish_body(channel: str, size: int) -> bytes:
    """A publish request of about ``size`` bytes."""
    text = "x" * max(size - 60, 1)
    return json.dumps({"channel": channel, "data": {"text": text}}).encode()


async def api_call(running: Running, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.api_url}/{method}", json=params, headers={"X-API-Key": API_KEY}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        reply: dict[str, Any] = await resp.json()
        assert "error" not in reply, reply
        return reply


async def history(running: Running, channel: str) -> list[Any]:
    reply = await api_call(running, "history", {"channel": channel, "limit": -1})
    return [p["data"] for p in reply["result"]["publications"]]


def paced(body: bytes, size: int = rawhttp.MSS, delay: float = 0.002) -> AsyncIterator[bytes]:
    """``body`` as an async generator of ``size``-byte chunks, ``delay`` seconds apart."""

    async def gen() -> AsyncIterator[bytes]:
        for piece in rawhttp.segments(body, size):
            yield piece
            await asyncio.sleep(delay)  # network pacing, not synchronisation

    return gen()


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_content_length_body_in_segments(server: Running, size: int) -> None:
    channel = f"segmented-{size}"
    body = publish_body(channel, size)
    req = rawhttp.head("/api/publish", HEADERS, content_length=len(body))
    resp = await rawhttp.request(server.port, req, rawhttp.segments(body), delay=0.002)
    assert resp.status == 200, resp.body[:200]
    assert resp.json()["result"]["offset"] == 1
    assert await history(server, channel) == [json.loads(body)["data"]]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_chunked_body_in_small_chunks(server: Running, size: int) -> None:
    channel = f"chunked-{size}"
    body = publish_body(channel, size)
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.api_url + "/publish", data=paced(body), headers=HEADERS) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["result"]["offset"] == 1
    assert await history(server, channel) == [json.loads(body)["data"]]


async def test_10mb_chunked_body_is_413_before_it_is_all_sent(server: Running) -> None:
    """The answer comes once the limit (1 MiB by default) is passed: the client pauses after
    limit + 256 KiB and only goes on once it has the 413, so a server that waited for (or
    buffered) more would never answer."""
    limit = server.settings.http_api.max_body_size
    assert limit == MIB
    answered = asyncio.Event()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65536
        for _ in range(10 * MIB // len(chunk)):
            if sent > limit + 256 * 1024 and not answered.is_set():
                await asyncio.wait_for(answered.wait(), 10)
            yield chunk
            sent += len(chunk)

    async with (
        aiohttp.ClientSession() as session,
        session.post(server.api_url + "/publish", data=body(), headers=HEADERS) as resp,
    ):
        answered.set()
        assert resp.status == 413
        assert resp.content_type == "application/json"
        assert await resp.json() == {"error": {"code": 107, "message": f"request body over {limit} bytes"}}
    assert sent <= limit + 512 * 1024
    # The server is still fine.
    assert (await api_call(server, "publish", {"channel": "after-413", "data": 1}))["result"]["offset"] == 1


async def test_over_limit_content_length_is_413_without_any_body(server: Running) -> None:
    req = rawhttp.head("/api/publish", HEADERS, content_length=10 * MIB)
    resp = await rawhttp.request(server.port, req)  # not one byte of the body is sent
    assert resp.status == 413
    assert resp.json()["error"]["code"] == 107


async def test_legacy_body_in_segments_runs_every_line(server: Running) -> None:
    lines = [
        json.dumps({"method": "publish", "params": {"channel": "legacy-seg", "data": {"n": n, "pad": "y" * 900}}})
        for n in range(5)
    ]
    body = "\n".join(lines).encode()
    req = rawhttp.head("/api", HEADERS, content_length=len(body))
    resp = await rawhttp.request(server.port, req, rawhttp.segments(body, 700), delay=0.002)
    assert resp.status == 200, resp.body[:200]
    replies = [json.loads(line) for line in resp.body.split(b"\n")]
    assert [r["result"]["offset"] for r in replies] == [1, 2, 3, 4, 5]
    assert [d["n"] for d in await history(server, "legacy-seg")] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "second",
    [b'{"method":"publish","params":', b"not json", b"[1,2]", b'{"method":"publish","params":{"channel":"x"}} junk'],
    ids=["truncated", "garbage", "not-a-command", "trailing-junk"],
)
async def test_legacy_body_that_fails_to_parse_executes_nothing(server: Running, second: bytes) -> None:
    first = json.dumps({"method": "publish", "params": {"channel": "legacy-aon", "data": {"n": 1}}}).encode()
    third = json.dumps({"method": "publish", "params": {"channel": "legacy-aon", "data": {"n": 3}}}).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.api_url, data=b"\n".join([first, second, third]), headers=HEADERS) as resp,
    ):
        assert resp.status == 400
        assert await resp.json() == {"error": {"code": 107, "message": "malformed JSON body"}}
    assert await history(server, "legacy-aon") == []


# Bounded: a few examples, no shrinking (a failure shows the first failing cut).
FEW = settings(
    max_examples=15,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


async def test_bodies_cut_at_random_points(server: Running) -> None:
    """Hypothesis cuts publish and legacy bodies anywhere; every request succeeds and
    publishes exactly its data."""
    loop = asyncio.get_running_loop()
    counter = iter(range(10_000))

    async def one(size: int, cuts: list[int], legacy: bool) -> None:
        channel = f"cut-{next(counter)}"
        if legacy:
            body = b"\n".join(
                json.dumps(
                    {"method": "publish", "params": {"channel": channel, "data": {"n": n, "pad": "z" * size}}}
                ).encode()
                for n in range(3)
            )
            path = "/api"
        else:
            body = publish_body(channel, size)
            path = "/api/publish"
        pieces = rawhttp.pieces_at(body, [c % len(body) for c in cuts])
        req = rawhttp.head(path, HEADERS, content_length=len(body))
        resp = await rawhttp.request(server.port, req, pieces, delay=0.001)
        assert resp.status == 200, (len(pieces), resp.body[:200])
        data = await history(server, channel)
        if legacy:
            assert [d["n"] for d in data] == [0, 1, 2]
        else:
            assert data == [json.loads(body)["data"]]

    @FEW
    @given(
        size=st.integers(min_value=1, max_value=200_000),
        cuts=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20),
        legacy=st.booleans(),
    )
    def cut(size: int, cuts: list[int], legacy: bool) -> None:
        asyncio.run_coroutine_threadsafe(one(size, cuts, legacy), loop).result(timeout=30)

    await asyncio.to_thread(cut)
