"""RFC 6455 §5.1: a client masks every frame; the server closes on an unmasked one with 1002.

A hand-written client on a raw TCP socket: a valid handshake, then frames built byte by
byte, masked or not, split across writes or sent together with the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.conftest import Running, token
from trunkline.transport.websocket import MaskGuard

TEXT, CLOSE, PING = 0x1, 0x8, 0x9
REASON = "protocol error: unmasked frame"


def frame(payload: bytes, *, opcode: int = TEXT, masked: bool = True, fin: bool = True) -> bytes:
    """One client frame, masked with a random key unless ``masked`` is false."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def command(**body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@dataclass
class Frame:
    opcode: int
    payload: bytes


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next server frame (servers never mask), or None at EOF."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await asyncio.wait_for(self.reader.readexactly(2), timeout))[0]
            elif n == 127:
                n = struct.unpack("!Q", await asyncio.wait_for(self.reader.readexactly(8), timeout))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except asyncio.IncompleteReadError:
            return None
        return Frame(head[0] & 0x0F, payload)

    async def close_frame(self, limit: int = 20) -> tuple[int, str, list[bytes]]:
        """Read up to the close frame: (code, reason, the text payloads that came before it)."""
        texts: list[bytes] = []
        for _ in range(limit):
            got = await self.read_frame()
            assert got is not None, f"connection dropped without a close frame after {texts!r}"
            if got.opcode == CLOSE:
                return struct.unpack("!H", got.payload[:2])[0], got.payload[2:].decode(), texts
            texts.append(got.payload)
        raise AssertionError(f"no close frame within {limit} frames: {texts!r}")


async def _open(running: Running, first: bytes = b"") -> RawSocket:
    """A raw socket after a successful handshake; ``first`` is written together with the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    sock = RawSocket(reader, writer)
    await sock.send(upgrade_request(running.port) + first)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.fixture
async def raw_socket(server: Running) -> AsyncIterator[Callable[..., Awaitable[RawSocket]]]:
    socks: list[RawSocket] = []

    async def open_(first: bytes = b"") -> RawSocket:
        sock = await _open(server, first)
        socks.append(sock)
        return sock

    yield open_
    for sock in socks:
        sock.writer.close()
        with contextlib.suppress(ConnectionError):
            await sock.writer.wait_closed()


CONNECT = command(id=1, connect={"token": token("42", ttl=None)})


async def test_masked_frames_are_served(raw_socket: Callable[..., Awaitable[RawSocket]]) -> None:
    """The control case: the same connect, masked, gets its reply."""
    sock = await raw_socket()
    await sock.send(frame(CONNECT))
    got = await sock.read_frame()
    assert got is not None and got.opcode == TEXT
    assert json.loads(got.payload)["id"] == 1 and "connect" in json.loads(got.payload)


async def test_unmasked_text_frame_is_closed_1002(raw_socket: Callable[..., Awaitable[RawSocket]]) -> None:
    sock = await raw_socket()
    await sock.send(frame(CONNECT, masked=False))
    code, reason, before = await sock.close_frame()
    assert (code, reason) == (1002, REASON)
    assert before == []  # the frame was never parsed: no connect reply
    assert await sock.read_frame() is None  # and the server hangs up


async def test_unmasked_frame_after_masked_ones(raw_socket: Callable[..., Awaitable[RawSocket]]) -> None:
    """An unmasked control frame (a ping) between masked frames: nothing from it on is served."""
    sock = await raw_socket()
    await sock.send(frame(CONNECT))
    got = await sock.read_frame()
    assert got is not None and json.loads(got.payload)["id"] == 1
    await sock.send(
        frame(command(id=2, ping={})) + frame(b"x", opcode=PING, masked=False) + frame(command(id=3, ping={}))
    )
    code, reason, before = await sock.close_frame()
    assert (code, reason) == (1002, REASON)
    # aiohttp may send its close frame before the reply to id 2 is flushed; id 3 is never read
    ids = {json.loads(line)["id"] for payload in before for line in payload.split(b"\n") if line}
    assert ids <= {2}


async def test_unmasked_frame_sent_with_the_handshake(raw_socket: Callable[..., Awaitable[RawSocket]]) -> None:
    """Bytes that arrive in the same segment as the upgrade request pass the same check."""
    sock = await raw_socket(frame(CONNECT, masked=False))
    code, reason, before = await sock.close_frame()
    assert (code, reason, before) == (1002, REASON, [])


async def test_unmasked_header_split_across_writes(raw_socket: Callable[..., Awaitable[RawSocket]]) -> None:
    """A masked frame with a 16-bit length delivered byte by byte at its header, then an unmasked one split in two."""
    sock = await raw_socket()
    big = frame(command(id=1, connect={"token": token("42"), "data": {"pad": "p" * 60000}}))
    for i in range(8):  # the header (2 + 2 + 4 bytes) one byte per write, then the rest
        await sock.send(big[i : i + 1])
    await sock.send(big[8:])
    got = await sock.read_frame()
    assert got is not None and json.loads(got.payload)["id"] == 1
    bad = frame(command(id=2, ping={}), masked=False)
    await sock.send(bad[:1])
    await sock.send(bad[1:])
    assert await sock.close_frame() == (1002, REASON, [])


class _Parser:
    def __init__(self) -> None:
        self.fed: list[bytes] = []

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed.append(data)
        return False, b""

    def feed_eof(self) -> None:
        self.fed.append(b"<eof>")


class _Queue:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def set_exception(self, exc: BaseException) -> None:
        self.errors.append(exc)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("step", [1, 3, 7, 1000, 1 << 20])
def test_guard_walks_frame_boundaries(size: int, step: int) -> None:
    """Any payload length (7-bit, 16-bit, 64-bit) and any split: only the unmasked frame is refused."""
    good = frame(b"m" * size) + frame(b"", opcode=PING)
    stream = good + frame(b"u" * size, masked=False) + frame(b"after")
    parser, queue = _Parser(), _Queue()
    guard = MaskGuard(parser, queue)
    results = [guard.feed_data(stream[i : i + step]) for i in range(0, len(stream), step)]
    assert b"".join(parser.fed) == good  # everything before the unmasked frame, nothing of it
    assert guard.failed and len(queue.errors) == 1
    assert results[-1] == (True, b"")
    assert guard.feed_data(b"more") == (True, b"") and b"".join(parser.fed) == good


def test_guard_passes_masked_streams_through() -> None:
    stream = b"".join(frame(bytes([i]) * i) for i in range(200))
    parser, queue = _Parser(), _Queue()
    guard = MaskGuard(parser, queue)
    for i in range(0, len(stream), 13):
        assert guard.feed_data(stream[i : i + 13]) == (False, b"")
    assert b"".join(parser.fed) == stream and not guard.failed and queue.errors == []
    guard.feed_eof()
    assert parser.fed[-1] == b"<eof>"
