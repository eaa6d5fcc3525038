"""One WebSocket connection after its handshake: the socket's protocol, the session's transport and frame sink.

aiohttp answers the upgrade request (admission, ``Sec-WebSocket-Accept``, the
subprotocol); :func:`trunkline.transport.websocket.websocket_handler` then hands the
socket to a :class:`WebSocketConnection` and lets aiohttp's request handler, its
request, its response, its reader queue and its task go. What an idle connection
keeps is this object, its :class:`~trunkline.protocol.wsframe.FrameParser` and the
session (issue 18: ~7 KiB less per connection than aiohttp's objects).

Inbound: ``data_received`` parses frames in place and answers pings at once. Data
messages go to ``session.handle_frame`` in order, run by a task that exists only
while there is work (an idle connection has none); while it runs, further messages
wait in a short inbox and, past :data:`INBOX_LIMIT`, the socket stops being read, so a
client that floods is held back by TCP instead of by memory.

Outbound: :meth:`write` frames a payload and hands it to the socket (the writer's
fast path, :class:`~trunkline.transport.writer.FrameSink`); the frame of a fan-out is
built once for every subscriber. Flow control is asyncio's: ``pause_writing`` /
``resume_writing``.

Closing follows RFC 6455 §7: the side that closes sends a close frame with a code and
a reason and the server closes TCP once the client answered (or after
:data:`CLOSE_WAIT`); a protocol violation by the client is answered with a close frame
naming it (1002, 1007, 1009).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..contracts import TransportInfo
from ..protocol import wsframe
from ..protocol.wsframe import FrameParser, Unmask
from .cancelling import being_cancelled

_mask_in_place: Callable[[bytes, bytearray], None] | None
try:  # aiohttp's compiled masking loop (the pure fallback is wsframe.unmask)
    from aiohttp._websocket.helpers import websocket_mask as _mask_in_place
except ImportError:  # pragma: no cover - another aiohttp layout
    _mask_in_place = None

if TYPE_CHECKING:
    from ..contracts import Connection

log = logging.getLogger("trunkline.transport")

#: Messages that may wait while a command runs before the socket stops being read.
INBOX_LIMIT: Final = 32
#: Seconds a server-sent close waits for the client's close frame before TCP is closed.
CLOSE_WAIT: Final = 2.0
_PONG: Final = 0x80 | wsframe.PONG
_END: Final = None  # in the inbox: the connection is over (the session closes after what came before)


class _LastFrame:
    """The last frame built: a fan-out hands the same payload object to every subscriber's sink."""

    __slots__ = ("first", "frame", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.first = 0
        self.frame = b""


_last: Final = _LastFrame()


def shared_frame(payload: bytes, first: int) -> bytes:
    """The frame of ``payload``, built once when the same payload goes to many sockets in a row."""
    last = _last
    if last.payload is payload and last.first == first:
        return last.frame
    data = wsframe.frame(payload, first)
    last.payload, last.first, last.frame = payload, first, data
    return data


def _compiled_unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    if not payload:
        return b""
    data = bytearray(payload)
    assert _mask_in_place is not None
    _mask_in_place(bytes(mask), data)
    return bytes(data)


#: The unmasking the parsers of this module use.
UNMASK: Final[Unmask] = wsframe.unmask if _mask_in_place is None else _compiled_unmask


class WebSocketConnection(asyncio.Protocol):
    """The upgraded socket's protocol; also the session's ``Transport`` and its ``FrameSink``."""

    __slots__ = (
        "_closed",
        "_drained",
        "_first",
        "_inbox",
        "_loop",
        "_lost",
        "_on_end",
        "_parser",
        "_paused",
        "_reading",
        "_sent_close",
        "_task",
        "_transport",
        "info",
        "session",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        info: TransportInfo,
        max_message: int,
        on_end: Callable[[WebSocketConnection], None],
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()  # found once: on 3.11 each lookup is a getpid() call
        self.info = info
        self._first = 0x82 if info.binary else 0x81
        self._parser = FrameParser(max_message, UNMASK)
        self._on_end = on_end
        self.session: Connection | None = None
        self._inbox: collections.deque[bytes | None] | None = None  # set while ``_task`` runs the session's commands
        self._task: asyncio.Task[None] | None = None
        self._paused = False  # the socket pushes back (asyncio's pause_writing)
        self._drained: asyncio.Future[None] | None = None
        self._reading = True
        self._sent_close = False
        self._closed: asyncio.Future[None] | None = None  # a close we sent waits on it for the client's
        self._lost = False

    def start(self, session: Connection, data: bytes) -> None:
        """Take the socket (already handed over with ``set_protocol``); ``data`` came after the upgrade request."""
        self.session = session
        if data:
            self.data_received(data)

    # ------------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        for opcode, payload in parser.feed(data):
            if opcode <= wsframe.BINARY:
                if not self._sent_close:  # after our close frame, data is ignored (§5.5.1)
                    self._deliver(payload)
            elif opcode == wsframe.PING:
                if not self._sent_close:
                    self._transport.write(wsframe.frame(payload, _PONG))
            elif opcode == wsframe.CLOSE:
                self._close_received()
                return
        if parser.error is not None:
            self._fail(parser.error)

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionResetError("websocket closed"))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._deliver(_END)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # ------------------------------------------------------------------ inbound

    def _deliver(self, frame: bytes | None) -> None:
        """Queue a message (or the end) for the session, in order; start the task that runs it if idle."""
        inbox = self._inbox
        if inbox is None:
            if self.session is None:
                return
            self._inbox = collections.deque((frame,))
            self._task = self._loop.create_task(self._run())
            return
        if inbox and inbox[-1] is _END:
            return  # the end is queued already
        inbox.append(frame)
        if len(inbox) >= INBOX_LIMIT and self._reading and not self._lost:
            self._reading = False
            self._transport.pause_reading()

    async def _run(self) -> None:
        inbox = self._inbox
        session = self.session
        assert inbox is not None and session is not None
        try:
            while inbox:
                frame = inbox.popleft()
                if frame is _END:
                    await self._end(session)
                    return
                await session.handle_frame(frame)
                if not self._reading and len(inbox) < INBOX_LIMIT // 2 and not self._lost:
                    self._reading = True
                    self._transport.resume_reading()
        except Exception:  # a failing command must never take the server down
            log.exception("websocket read loop failed for client=%s", session.client_id)
            await self._end(session)
        finally:
            if self._inbox is inbox:
                self._inbox = None
                self._task = None

    async def _end(self, session: Connection) -> None:
        """The connection is over: the session closes (if it has not), then TCP does."""
        self._inbox = collections.deque((_END,))  # nothing is queued after the end (``_task`` stays: the last)
        try:
            await session.close(None)
        finally:
            if not self._lost:
                self._transport.close()
            on_end, self._on_end = self._on_end, _ended
            on_end(self)

    def _close_received(self) -> None:
        """The client's close frame: answer it (unless we closed first), close TCP, end the session."""
        if not self._sent_close:
            self._sent_close = True
            self._transport.write(wsframe.close_frame(1000, ""))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._transport.close()
        self._deliver(_END)

    def _fail(self, error: wsframe.FrameError) -> None:
        """A protocol violation: a close frame that names it, then TCP closes and the session ends."""
        session = self.session
        log.info(
            "websocket of client=%s closed with %d: %s", session.client_id if session else "", error.code, error.reason
        )
        if not self._sent_close:
            self._sent_close = True
            self._transport.write(wsframe.close_frame(error.code, error.reason))
        self._transport.close()
        self._deliver(_END)

    # ------------------------------------------------------------------ Transport (for the session)

    def frame_sink(self) -> WebSocketConnection:
        return self

    async def send(self, frame: bytes) -> None:
        if not self.write(frame):
            await self.drain()

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason``, wait briefly for the client's, close TCP."""
        if self._lost:
            return
        if not self._sent_close:
            self._sent_close = True
            self._transport.write(wsframe.close_frame(code, reason))
        if self._transport.is_closing():
            return
        closed = self._closed
        if closed is None:
            closed = self._closed = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(closed), CLOSE_WAIT)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self.abort()
            raise
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    # ------------------------------------------------------------------ FrameSink (for the writer)

    def write(self, payload: bytes) -> bool:
        if self._sent_close or self._lost:  # closed: our close frame was the last one
            raise ConnectionResetError("websocket closing")
        self._transport.write(shared_frame(payload, self._first))
        return not self._paused

    async def drain(self) -> None:
        if not self._paused:
            return
        if self._lost:
            raise ConnectionResetError("websocket closed")
        drained = self._drained
        if drained is None:
            drained = self._drained = self._loop.create_future()
        try:
            await asyncio.shield(drained)
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise ConnectionResetError("websocket write aborted") from None


def _ended(conn: WebSocketConnection) -> None:
    """What ``on_end`` becomes once it ran (it runs once)."""
