"""Unidirectional transports with real third-party clients, no Centrifugo SDK.

- ``curl -N`` (a subprocess) on ``/connection/uni_sse`` (GET with ``cf_connect``, and POST)
  and on ``/connection/uni_http_stream`` (POST), reading what it prints;
- the ``websockets`` library on ``/connection/uni_websocket`` (the bare connect request as
  the first message, or ``?cf_connect=``).

The client only connects; the channel comes from the token (``channels`` claim), and the
publications are sent through the server API. The server sends bare pushes: first
``{"connect": {...}}`` with the server-side subscriptions, then ``{"channel", "pub"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from cent import AsyncClient, PublishRequest

from tests.conftest import API_KEY, Running, eventually, token

CURL = shutil.which("curl")
CHANNEL = "news"
READ_TIMEOUT = 10.0  # seconds for any one line from a client
# Centrifugo v6 names; every uni transport is off by default.
UNI: dict[str, Any] = {
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "uni_websocket": {"enabled": True},
}


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    running: Running = await start_server(UNI)
    return running


@pytest.fixture
async def api(srv: Running) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(srv.api_url, API_KEY, timeout=5)
    yield client
    await client.close()


def connect_request(user: str) -> str:
    return json.dumps({"token": token(user, channels=[CHANNEL])})


def transports_by_user(srv: Running) -> dict[str, str]:
    return {c.user: c.transport.info.name for c in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


async def publish(api: AsyncClient, count: int) -> list[dict[str, Any]]:
    sent = [{"headline": f"story {n}", "n": n} for n in range(1, count + 1)]
    for data in sent:
        await api.publish(PublishRequest(channel=CHANNEL, data=data))
    return sent


def assert_connect_push(push: dict[str, Any]) -> None:
    connect = push["connect"]
    assert connect["client"] and connect["version"] is not None
    assert CHANNEL in connect["subs"], push


def publications(pushes: list[dict[str, Any]]) -> list[tuple[str, Any, int | None]]:
    return [(p["channel"], p["pub"]["data"], p["pub"].get("offset")) for p in pushes if "pub" in p]


# ------------------------------------------------------------------------------ curl


class Curl:
    """``curl -sS -N -D -`` as a subprocess: the response head, then the body line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, *args: str) -> Curl:
        assert CURL is not None, "curl is not installed: run `make system-deps`"
        proc = await asyncio.create_subprocess_exec(
            CURL, "-sS", "-N", "-D", "-", "--max-time", "60", *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        curl = cls(proc)
        status_line = await curl.line()
        assert status_line.startswith("HTTP/1.1 "), status_line
        curl.status = int(status_line.split()[1])
        for _ in range(100):  # a bounded head
            line = await curl.line()
            if not line:
                break
            name, _, value = line.partition(":")
            curl.headers[name.strip().lower()] = value.strip()
        return curl

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), READ_TIMEOUT)
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"curl's output ended (rc={self.proc.returncode}): {err.decode(errors='replace')}")
        return raw.decode().rstrip("\r\n")

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)


async def sse_messages(curl: Curl, count: int) -> list[dict[str, Any]]:
    """The JSON of the next ``count`` SSE ``data:`` messages (comments and blank lines skipped)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + READ_TIMEOUT
    while len(out) < count and time.monotonic() < deadline:
        line = await curl.line()
        if line.startswith("data:"):
            out.append(json.loads(line[5:].strip()))
    assert len(out) == count, out
    return out


async def json_lines(curl: Curl, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + READ_TIMEOUT
    while len(out) < count and time.monotonic() < deadline:
        line = await curl.line()
        if line.strip():
            out.append(json.loads(line))
    assert len(out) == count, out
    return out


def without_pings(pushes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pushes if p != {}]


async def read_pubs(read: Callable[[int], Any], count: int) -> list[dict[str, Any]]:
    """Read until ``count`` publication pushes are in; pings (``{}``, needing no answer) are dropped,
    other pushes (the channel's join/leave) kept."""
    got: list[dict[str, Any]] = []
    for _ in range(count + 20):  # a few pings and join/leave pushes at most
        if len(publications(got)) >= count:
            break
        got += without_pings(await read(1))
    return got


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_curl_on_uni_sse(srv: Running, api: AsyncClient, method: str) -> None:
    url = f"{srv.http_url}/connection/uni_sse"
    if method == "GET":
        args = [f"{url}?cf_connect={urllib.parse.quote(connect_request('curl'))}"]
    else:
        args = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", connect_request("curl"), url]
    curl = await Curl.open(*args)
    try:
        assert curl.status == 200
        assert curl.headers["content-type"].startswith("text/event-stream")
        assert curl.headers.get("x-accel-buffering") == "no"
        (first,) = await sse_messages(curl, 1)
        assert_connect_push(first)
        assert transports_by_user(srv) == {"curl": "uni_sse"}

        sent = await publish(api, 3)
        got = await read_pubs(lambda n: sse_messages(curl, n), 3)
        assert publications(got) == [(CHANNEL, data, n) for n, data in enumerate(sent, 1)]
    finally:
        await curl.close()
    await eventually(lambda: "curl" not in transports_by_user(srv), timeout=5)


async def test_curl_on_uni_http_stream(srv: Running, api: AsyncClient) -> None:
    curl = await Curl.open(
        "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", connect_request("curl"),
        f"{srv.http_url}/connection/uni_http_stream",
    )  # fmt: skip
    try:
        assert curl.status == 200
        assert curl.headers.get("x-accel-buffering") == "no"
        (first,) = await json_lines(curl, 1)
        assert_connect_push(first)
        assert transports_by_user(srv) == {"curl": "uni_http_stream"}

        sent = await publish(api, 3)
        got = await read_pubs(lambda n: json_lines(curl, n), 3)
        assert publications(got) == [(CHANNEL, data, n) for n, data in enumerate(sent, 1)]
    finally:
        await curl.close()
    await eventually(lambda: "curl" not in transports_by_user(srv), timeout=5)


async def test_curl_gets_a_clear_answer_for_a_bad_token(srv: Running) -> None:
    """A refused connect is a plain HTTP answer or a disconnect push, never a hanging stream."""
    body = json.dumps({"token": "not-a-jwt"})
    curl = await Curl.open(
        "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
        f"{srv.http_url}/connection/uni_http_stream",
    )  # fmt: skip
    try:
        if curl.status == 200:  # Centrifugo answers in the stream: a disconnect push, then the end
            (push,) = await json_lines(curl, 1)
            assert push["disconnect"]["code"] == 3500, push
        else:
            assert 400 <= curl.status < 500
        assert curl.proc.stdout is not None
        rest = await asyncio.wait_for(curl.proc.stdout.read(), READ_TIMEOUT)
        assert b"pub" not in rest
    finally:
        await curl.close()
    assert transports_by_user(srv) == {}


# ------------------------------------------------------------------------------ websockets


async def ws_pushes(ws: websockets.ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` pushes; one frame may carry several, joined with newlines."""
    out: list[dict[str, Any]] = []
    for _ in range(count):
        if len(out) >= count:
            break
        frame = await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
        text = frame if isinstance(frame, str) else frame.decode()
        out += [json.loads(line) for line in text.split("\n") if line.strip()]
    return out


@pytest.mark.parametrize("how", ["first-message", "query"])
async def test_websockets_library_on_uni_websocket(srv: Running, api: AsyncClient, how: str) -> None:
    url = srv.ws_url.replace("/connection/websocket", "/connection/uni_websocket")
    if how == "query":
        url += "?cf_connect=" + urllib.parse.quote(connect_request("wslib"))
    async with websockets.connect(url, open_timeout=5, close_timeout=2) as ws:
        if how == "first-message":
            await ws.send(connect_request("wslib"))
        first = without_pings(await ws_pushes(ws, 1))
        assert first, "no connect push"
        assert_connect_push(first[0])
        assert transports_by_user(srv) == {"wslib": "uni_websocket"}

        sent = await publish(api, 3)
        got = first[1:] + await read_pubs(lambda n: ws_pushes(ws, n), 3 - len(publications(first[1:])))
        assert publications(got) == [(CHANNEL, data, n) for n, data in enumerate(sent, 1)]
    await eventually(lambda: "wslib" not in transports_by_user(srv), timeout=5)
