"""The writer's fast path: whole WebSocket frames written straight to the transport.

A real aiohttp server whose handler wraps its WebSocket in ``WebSocketTransport`` and
a ``Writer``, as the session does, and real clients: aiohttp's, and a raw TCP socket
that stops reading (so the server's socket pushes back) and then reads everything.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from trunkline.transport.websocket import WebSocketTransport
from trunkline.transport.writer import Writer


@dataclass
class Served:
    port: int
    writers: asyncio.Queue[Writer] = field(default_factory=asyncio.Queue)
    errors: list[BaseException] = field(default_factory=list)
    sinks: list[bool] = field(default_factory=list)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    state = Served(0)

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        transport = WebSocketTransport(ws, request)
        writer = Writer(transport.send, 1 << 24, lambda: None, state.errors.append)
        writer.start()
        state.sinks.append(transport.frame_sink() is not None)
        await state.writers.put(writer)
        async for _ in ws:
            pass
        writer.abort()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


async def test_frames_reach_a_real_client_one_per_turn_and_batched_within_a_turn(served: Served) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{served.port}/ws", compress=0) as ws,
    ):
        writer = await asyncio.wait_for(served.writers.get(), 5)
        assert served.sinks == [True]  # uncompressed: the fast path is used
        writer.push(b'{"a":1}')
        first = await asyncio.wait_for(ws.receive(), 5)
        writer.push(b'{"b":2}')
        writer.push(b'{"c":3}')
        second = await asyncio.wait_for(ws.receive(), 5)
        big = b'{"d":"' + b"x" * 70000 + b'"}'
        writer.push(big)
        third = await asyncio.wait_for(ws.receive(), 5)
    assert (first.type, first.data) == (aiohttp.WSMsgType.TEXT, '{"a":1}')
    assert second.data == '{"b":2}\n{"c":3}'
    assert third.data == big.decode()
    assert writer.frames_sent == 3
    assert served.errors == []


async def test_a_compressed_connection_keeps_the_aiohttp_path(served: Served) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{served.port}/ws", compress=15) as ws,
    ):
        writer = await asyncio.wait_for(served.writers.get(), 5)
        writer.push(b'{"z":1}')
        msg = await asyncio.wait_for(ws.receive(), 5)
    assert served.sinks == [False]
    assert msg.data == '{"z":1}'


async def test_a_closed_websocket_is_not_written_and_reports_an_error(served: Served) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{served.port}/ws", compress=0) as ws,
    ):
        writer = await asyncio.wait_for(served.writers.get(), 5)
        await ws.close()
        for _ in range(200):  # bounded: until the server side has closed too
            if writer.closed:
                break
            writer.push(b'{"late":1}')
            await asyncio.sleep(0.01)
    assert writer.closed


def _read_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """Unmasked server frames from ``data``: the complete payloads and the rest."""
    out: list[bytes] = []
    while len(data) >= 2:
        n = data[1] & 0x7F
        start = 2
        if n == 126:
            if len(data) < 4:
                break
            n, start = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, start = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < start + n:
            break
        out.append(data[start : start + n])
        data = data[start + n :]
    return out, data


async def test_a_client_that_stops_reading_gets_everything_in_order_once_it_reads(served: Served) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", served.port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert chunk, "server closed during the handshake"
        buf += chunk
    buf = buf.split(b"\r\n\r\n", 1)[1]
    try:
        writer = await asyncio.wait_for(served.writers.get(), 5)
        assert served.sinks == [True]
        payload = b"y" * 1000
        sent = 0
        for _ in range(4000):  # bounded: until the server's socket pushes back
            writer.push(b"%d:" % sent + payload)
            sent += 1
            await asyncio.sleep(0)
            if writer._draining is not None:
                break
        assert writer._draining is not None, "the socket never pushed back"
        for _ in range(20):  # more pushes while it drains: queued, not written
            writer.push(b"%d:" % sent + payload)
            sent += 1
        got: list[bytes] = []
        async with asyncio.timeout(10):
            while len(got) < sent:
                chunk = await loop.sock_recv(sock, 65536)
                assert chunk, "server closed early"
                frames, buf = _read_frames(buf + chunk)
                got.extend(m for f in frames for m in f.split(b"\n"))
        assert [int(m.split(b":", 1)[0]) for m in got] == list(range(sent))
        assert all(m.endswith(payload) for m in got)
        assert served.errors == []
        for _ in range(100):  # bounded: the drain task ends once everything is written
            if writer._draining is None:
                break
            await asyncio.sleep(0.01)
        assert writer._draining is None
    finally:
        sock.close()
