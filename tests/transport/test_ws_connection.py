"""The WebSocket connection after its handshake (``WebSocketConnection``), on a raw TCP socket.

A real server, a hand-written client: pings answered with the same payload, the close
handshake in both directions, every protocol violation answered with a close frame
that names it, commands sent together with the upgrade request, a flood of pipelined
commands answered in order (the socket is paused, not buffered without bound), and a
connection that never sent ``connect`` closed with 3001 when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import Running, eventually, token
from tests.transport.test_masking import CLOSE, PING, TEXT, RawSocket, _open, command, frame, raw_socket
from trunkline.transport.admission import open_connections
from trunkline.transport.websocket import _detached
from trunkline.transport.ws_connection import INBOX_LIMIT

__all__ = ["raw_socket"]  # the fixture, shared with test_masking

PONG, BINARY, CONTINUATION = 0xA, 0x2, 0x0
CONNECT = command(id=1, connect={"token": token("42", ttl=None)})
Opener = Callable[..., Awaitable[RawSocket]]


async def _connected(raw_socket: Opener) -> RawSocket:
    sock = await raw_socket()
    await sock.send(frame(CONNECT))
    got = await sock.read_frame()
    assert got is not None and json.loads(got.payload)["id"] == 1
    return sock


def _ids(payloads: list[bytes]) -> list[int]:
    return [json.loads(line)["id"] for payload in payloads for line in payload.split(b"\n") if line]


async def test_a_ping_is_answered_with_a_pong_of_the_same_payload(raw_socket: Opener) -> None:
    sock = await _connected(raw_socket)
    await sock.send(frame(b"hello?", opcode=PING))
    got = await sock.read_frame()
    assert got is not None and (got.opcode, got.payload) == (PONG, b"hello?")


async def test_the_clients_close_is_answered_and_tcp_closed(server: Running, raw_socket: Opener) -> None:
    sock = await _connected(raw_socket)
    await sock.send(frame(struct.pack("!H", 1000) + b"bye", opcode=CLOSE))
    code, _, before = await sock.close_frame()
    assert (code, before) == (1000, [])
    assert await sock.read_frame() is None
    node = server.server.node
    await eventually(lambda: open_connections(node) == 0 and not _detached(node))


async def test_a_server_close_carries_code_and_reason_then_waits_for_the_clients(raw_socket: Opener) -> None:
    sock = await _connected(raw_socket)
    await sock.send(frame(b"{not json"))  # Centrifugo: bad request -> 3501
    code, reason, _ = await sock.close_frame()
    assert (code, reason) == (3501, "bad request")
    await sock.send(frame(struct.pack("!H", code), opcode=CLOSE))  # the client's answer
    assert await sock.read_frame() is None


async def test_violations_are_closed_with_a_code_that_names_them(raw_socket: Opener) -> None:
    cases: list[tuple[bytes, int, str]] = [
        (frame(b"\xff\xfe", opcode=TEXT), 1007, "invalid frame payload data: text is not UTF-8"),
        (bytes([0x80 | 0x40 | TEXT, 0x80]) + b"\0\0\0\0", 1002, "protocol error: reserved bits set"),
        (frame(b"x", opcode=0x3), 1002, "protocol error: unknown opcode 3"),
        (frame(b"x" * 126, opcode=PING), 1002, "protocol error: fragmented or long control frame"),
        (frame(b"x", opcode=CONTINUATION), 1002, "protocol error: continuation without a message"),
        (frame(b"a", fin=False) + frame(b"b"), 1002, "protocol error: new message inside a fragmented one"),
        (frame(b"\x03", opcode=CLOSE), 1002, "protocol error: close frame of one byte"),
        (frame(struct.pack("!H", 1005), opcode=CLOSE), 1002, "protocol error: close code 1005"),
    ]
    for data, code, reason in cases:
        sock = await _connected(raw_socket)
        await sock.send(data)
        assert (await sock.close_frame())[:2] == (code, reason), data
        assert await sock.read_frame() is None


async def test_a_message_over_the_limit_is_refused_from_its_header(start_server: Any) -> None:
    running: Running = await start_server({"websocket": {"message_size_limit": 1000}})
    sock = await _open(running)
    await sock.send(frame(CONNECT))
    assert (got := await sock.read_frame()) is not None and json.loads(got.payload)["id"] == 1
    # Only the header of a 10 MB frame: the server answers before any payload arrives.
    await sock.send(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 10_000_000) + b"\1\2\3\4")
    code, reason, _ = await sock.close_frame()
    assert (code, reason) == (1009, "message too big")
    assert await sock.read_frame() is None
    await _shut(sock)


async def test_fragments_are_joined_and_control_frames_may_come_between(raw_socket: Opener) -> None:
    sock = await raw_socket()
    half = len(CONNECT) // 2
    await sock.send(
        frame(CONNECT[:half], fin=False) + frame(b"mid", opcode=PING) + frame(CONNECT[half:], opcode=CONTINUATION)
    )
    pong = await sock.read_frame()
    assert pong is not None and (pong.opcode, pong.payload) == (PONG, b"mid")
    got = await sock.read_frame()
    assert got is not None and json.loads(got.payload)["id"] == 1


async def test_commands_sent_with_the_upgrade_request_are_served(raw_socket: Opener) -> None:
    sock = await raw_socket(frame(CONNECT) + frame(command(id=2, presence_stats={"channel": "nope"})))
    got: list[bytes] = []
    while len(_ids(got)) < 2:
        reply = await sock.read_frame()
        assert reply is not None
        got.append(reply.payload)
    assert _ids(got) == [1, 2]


async def test_a_flood_of_pipelined_commands_is_answered_in_order(raw_socket: Opener) -> None:
    sock = await _connected(raw_socket)
    count = INBOX_LIMIT * 8
    await sock.send(b"".join(frame(command(id=i, presence_stats={"channel": f"c{i}"})) for i in range(2, count + 2)))
    got: list[bytes] = []
    for _ in range(count):
        if len(_ids(got)) >= count:
            break
        reply = await sock.read_frame()
        assert reply is not None and reply.opcode == TEXT
        got.append(reply.payload)
    assert _ids(got) == list(range(2, count + 2))


async def test_a_connection_without_connect_is_closed_with_3001_at_shutdown(start_server: Any) -> None:
    running: Running = await start_server()
    sock = await _open(running)
    node = running.server.node
    await eventually(lambda: len(_detached(node)) == 1)
    stopping = asyncio.ensure_future(running.server.stop(timeout=2))
    code, reason, _ = await sock.close_frame()
    assert code == 3001 and reason
    await sock.send(frame(struct.pack("!H", code), opcode=CLOSE))
    assert await sock.read_frame() is None
    await asyncio.wait_for(stopping, 10)
    assert not _detached(node) and open_connections(node) == 0
    await _shut(sock)


async def _shut(sock: RawSocket) -> None:
    sock.writer.close()
    with contextlib.suppress(ConnectionError):
        await sock.writer.wait_closed()
