"""A connection over one long HTTP response: HTTP-streaming, SSE and their unidirectional twins.

:class:`StreamTransport` adapts an aiohttp ``StreamResponse`` to the session's
``Transport``: each frame the session's writer hands it is framed for the wire
(``frame``: a trailing newline for JSON lines, ``data: …`` events for SSE, nothing
for varint-delimited Protobuf) and written as one chunk. Backpressure is the
writer's: a reader that stops reading fills the socket, the writer's bounded queue
passes ``client.queue_max_size`` and the connection is closed with 3008 and its
TCP connection aborted — never buffered without end.

:func:`serve_stream` runs one such connection from the first byte to the last:
headers (no caching, ``X-Accel-Buffering: no``), the session, its first frame
(the connect), then it waits until the session closes the stream or the client
goes away. A disconnect reaches the client as a Disconnect push before the
response ends (the session writes it: ``TransportInfo.pushes_disconnect``).

aiohttp does not tell a handler that its client went away (handler cancellation is
off), so :func:`peer_gone` gives the request a fresh payload reader that aiohttp
fails when the connection is lost; a dead stream is noticed at once, not at the
next ping write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.streams import StreamReader

from .admission import connection_counter
from .cancelling import being_cancelled
from .http_body import STREAM_HEADERS, cors_headers
from .remote import client_ip

if TYPE_CHECKING:
    from ..contracts import Connection, TransportInfo
    from ..node import Node

log = logging.getLogger("trunkline.transport")
Framing = Callable[[bytes], bytes]
#: Called with the new session before its first frame (``/emulation`` registers it); returns the undo.
OnSession = Callable[["StreamTransport", "Connection"], Callable[[], None]]
_END_TIMEOUT: Final = 1.0  # seconds to write the end of a stream before dropping the TCP connection


class StreamTransport:
    """The session's ``Transport`` over one streaming HTTP response."""

    __slots__ = ("_done", "_frame", "_request", "_response", "info", "session")

    def __init__(self, request: web.Request, response: web.StreamResponse, info: TransportInfo, frame: Framing) -> None:
        self._request = request
        self._response = response
        self._frame = frame
        self._done = asyncio.Event()
        self.info = info
        #: secret id of the connection (named by /emulation requests); random, unlike the client id
        self.session = str(uuid.uuid4()) if info.has_session else ""

    @property
    def done(self) -> asyncio.Event:
        """Set once the stream must end (closed by the session, aborted, or a write failed)."""
        return self._done

    async def send(self, frame: bytes) -> None:
        try:
            await self._response.write(self._frame(frame))
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            self._done.set()
            raise ConnectionResetError("stream write aborted") from None
        except Exception:
            self._done.set()
            raise

    async def close(self, code: int, reason: str) -> None:
        """End the stream; the Disconnect push with ``code`` and ``reason`` is already written."""
        self._done.set()

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()
        self._done.set()


def peer_gone(request: web.Request) -> asyncio.Future[None]:
    """A future that fails when the client's connection is lost.

    When a connection is lost aiohttp fails the current request's payload reader. The
    body has been read whole (it is at EOF, so nothing would wake up), so the request
    gets a new, empty reader that never sees EOF and is only ever failed.
    """
    reader = StreamReader(request.protocol, 2**16, loop=asyncio.get_running_loop())
    request._payload = reader
    return asyncio.ensure_future(reader.wait_eof())


async def serve_stream(
    request: web.Request,
    node: Node,
    info: TransportInfo,
    frame: Framing,
    first_frame: bytes,
    *,
    content_type: str,
    preamble: bytes = b"",
    on_session: OnSession | None = None,
) -> web.StreamResponse:
    """Run one streaming connection: the response, its session and first frame, until either side ends it."""
    counter = connection_counter(node)
    counter.value += 1
    try:
        response = web.StreamResponse(
            status=200, headers={**STREAM_HEADERS, **cors_headers(request, node), "Content-Type": content_type}
        )
        if request.version >= (1, 1):
            response.enable_chunked_encoding()
        await response.prepare(request)
        if preamble:
            await response.write(preamble)
        transport = StreamTransport(request, response, info, frame)
        session = node.new_session(transport, remote=client_ip(request, node.settings), headers=dict(request.headers))
        undo = on_session(transport, session) if on_session is not None else None
        gone = peer_gone(request)
        try:
            await session.handle_frame(first_frame)
            if not session.closed:
                await _first(transport.done.wait(), gone)
        except Exception:  # a failing stream must never take the server down
            log.exception("%s stream failed for client=%s", info.name, session.client_id)
        finally:
            if undo is not None:
                undo()
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await gone
            await session.close(None)
        await _end(request, response)
    finally:
        counter.value -= 1
    return response


async def _first(done: Awaitable[object], gone: asyncio.Future[None]) -> None:
    """Wait until the stream is done or the client has gone, whichever comes first."""
    waiter = asyncio.ensure_future(done)
    try:
        await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _end(request: web.Request, response: web.StreamResponse) -> None:
    """Write the end of the response; a client that does not take it loses its TCP connection."""
    try:
        async with asyncio.timeout(_END_TIMEOUT):
            await response.write_eof()
    except (TimeoutError, ConnectionError, RuntimeError):
        transport = request.transport
        if transport is not None:
            transport.abort()
