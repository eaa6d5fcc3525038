"""The public listener's acceptor: plain upgrades served without aiohttp, everything else handed to it.

Unit tests of the head parser (byte literals, hypothesis garbage) and of the 101
response (RFC 6455's own example), then a real server: a plain upgrade never becomes
an aiohttp request, while the server API, a refused upgrade, an oversized head and a
slow head on the same port get exactly aiohttp's answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Running, eventually, token
from trunkline.transport.websocket import _detached
from trunkline.transport.ws_accept import parse_upgrade, subprotocol, switching_protocols

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
HEAD = (
    "GET /connection/websocket?format=json HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: centrifuge-json\r\nUser-Agent: test\r\n\r\n"
)


def test_a_plain_upgrade_is_parsed_with_its_query_and_headers() -> None:
    upgrade = parse_upgrade(HEAD.encode())
    assert upgrade is not None
    assert upgrade.query == "format=json"
    assert upgrade.headers["User-Agent"] == "test" and upgrade.headers["Host"] == "127.0.0.1:8000"
    assert upgrade.lower["sec-websocket-key"] == KEY


def test_anything_unusual_is_left_to_aiohttp() -> None:
    variants = {
        "POST": HEAD.replace("GET ", "POST "),
        "HTTP/1.0": HEAD.replace("HTTP/1.1", "HTTP/1.0"),
        "other path": HEAD.replace("/connection/websocket", "/connection/websocket/x"),
        "repeated header": HEAD.replace("User-Agent: test", "Host: 127.0.0.2"),
        "repeated header, other case": HEAD.replace("User-Agent: test", "host: 127.0.0.1:8000"),
        "space before the colon": HEAD.replace("User-Agent: test", "User-Agent : test"),
        "bare LF": HEAD.replace("User-Agent: test\r\n", "User-Agent: test\n"),
        "bare CR": HEAD.replace("User-Agent: test\r\n", "User-Agent: test\r"),
        "space in the target": HEAD.replace("?format=json", "?format json"),
        "no Host": HEAD.replace("Host: 127.0.0.1:8000\r\n", ""),
        "short key": HEAD.replace(KEY, "c2hvcnQ="),
        "key not base64": HEAD.replace(KEY, "!!!!!!!!!!!!!!!!!!!!!!=="),
        "version 8": HEAD.replace("Version: 13", "Version: 8"),
        "no Connection: upgrade": HEAD.replace("keep-alive, Upgrade", "keep-alive"),
        "not websocket": HEAD.replace("Upgrade: websocket", "Upgrade: h2c"),
        "a body": HEAD.replace("User-Agent: test", "Content-Length: 0"),
        "chunked": HEAD.replace("User-Agent: test", "Transfer-Encoding: chunked"),
        "non-ASCII": HEAD.replace("test", "tést"),
        "control character": HEAD.replace("test", "te\x01st"),
        "bad header name": HEAD.replace("User-Agent:", "User Agent:"),
        "no colon": HEAD.replace("User-Agent: test", "User-Agent test"),
        "folded line": HEAD.replace("User-Agent: test", "User-Agent: te\r\n st"),
    }
    for what, head in variants.items():
        assert parse_upgrade(head.encode("utf-8")) is None, what


def test_header_values_lose_their_surrounding_blanks_and_may_be_empty() -> None:
    head = HEAD.replace("User-Agent: test", "User-Agent: \t a b \t").replace("Upgrade: websocket", "Upgrade:websocket")
    upgrade = parse_upgrade((head[:-2] + "X-Empty:\r\n\r\n").encode())
    assert upgrade is not None
    assert upgrade.headers["User-Agent"] == "a b" and upgrade.lower["upgrade"] == "websocket"
    assert upgrade.headers["X-Empty"] == ""


def test_the_101_carries_the_rfc_accept_value_and_the_chosen_subprotocol() -> None:
    response = switching_protocols(KEY, "centrifuge-json")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\nSec-WebSocket-Protocol: centrifuge-json\r\n\r\n")
    assert b"Sec-WebSocket-Protocol" not in switching_protocols(KEY, None)


def test_the_subprotocol_is_the_first_offered_that_trunkline_speaks() -> None:
    assert subprotocol("mqtt, centrifuge-protobuf, centrifuge-json") == "centrifuge-protobuf"
    assert subprotocol(" centrifuge-json ") == "centrifuge-json"
    assert subprotocol("mqtt") is None and subprotocol(None) is None and subprotocol("") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=600))
def test_garbage_heads_never_raise(noise: bytes, cut: int) -> None:
    head = HEAD.encode()
    mixed = head[:cut] + noise + head[cut:]
    result = parse_upgrade(mixed)
    assert result is None or result.lower.get("upgrade", "").lower() == "websocket"


def _requests(running: Running) -> int:
    total = 0
    for runner in running.server._runners:
        assert runner.server is not None
        total += runner.server.requests_count
    return total


async def test_a_plain_upgrade_never_becomes_an_aiohttp_request(server: Running) -> None:
    node = server.server.node
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url + "?cf_protocol=json", protocols=["centrifuge-json"]) as ws:
            assert ws.protocol == "centrifuge-json"
            await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
            reply = json.loads(await ws.receive_str(timeout=5))
            assert reply["id"] == 1 and reply["connect"]["client"]
            assert len(_detached(node)) == 1
            (conn,) = _detached(node)
            sock = conn._transport.get_extra_info("socket")  # the loop set TCP_NODELAY (replies are not held back)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert _requests(server) == 0  # no aiohttp request, router or handler task for it
            async with http.get(server.http_url + "/health") as r:  # the same port, through aiohttp
                assert r.status == 200
            assert _requests(server) == 1
        async with http.ws_connect(server.ws_url, protocols=["centrifuge-protobuf"]) as ws:
            assert ws.protocol == "centrifuge-protobuf"
            assert {c.info.protocol for c in _detached(node)} >= {"protobuf"}
    await eventually(lambda: not _detached(node))


async def test_a_refused_upgrade_gets_aiohttps_answer(start_server: Any) -> None:
    running: Running = await start_server({"client": {"allowed_origins": ["https://app.example"]}})
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": "https://evil.example"}
        async with http.get(
            running.ws_url,
            headers={**headers, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
            | {"Sec-WebSocket-Key": KEY},
        ) as r:
            assert r.status == 403
            assert (await r.json()) == {"error": "origin not allowed"}
    assert _requests(running) == 1


async def test_a_head_over_8_kib_is_answered_by_aiohttp(server: Running) -> None:
    """Past 8 KiB the acceptor serves nothing: aiohttp reads the head and its field limit answers 400."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(HEAD.replace("User-Agent: test", "X-Pad: " + "p" * 9000).encode())
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split(b" ")[1] == b"400", status
        assert not _detached.get(server.server.node)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_head_that_never_completes_is_dropped_after_the_handshake_timeout(start_server: Any) -> None:
    running: Running = await start_server({"websocket": {"handshake_timeout": "300ms"}})
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        writer.write(HEAD.encode()[:40])
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, nothing answered
    finally:
        writer.close()
        await writer.wait_closed()
