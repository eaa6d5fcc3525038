"""The WebSocket endpoint (``/connection/websocket``): admission, upgrade, read loop.

After the handshake an uncompressed connection's socket is handed to a
:class:`~trunkline.transport.ws_connection.WebSocketConnection` (:func:`_take_socket`),
and aiohttp's objects for it are let go. A compressed connection keeps aiohttp's
reader: this module's read loop feeds each frame to the session in order and lets
the session's writer send what the node hands it.

Before the upgrade, :func:`trunkline.transport.admission.refuse` (shared by every
transport) checks shutdown, ``Origin`` and the connection limit and answers with a
status and a JSON body that names the reason. After the upgrade, every close frame carries a reason, including
those aiohttp sends on its own (1009 ``message too big`` for a message over
``websocket.message_size_limit``).

The listener itself is guarded too: :func:`runner_options` and
:class:`GuardedTCPSite` make a connection that does not complete its TLS handshake
or its HTTP request head within ``websocket.handshake_timeout`` be dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from .. import errors as E
from ..appkeys import NODE_KEY
from ..contracts import TransportInfo
from .admission import connection_counter, open_connections, refuse
from .cancelling import being_cancelled
from .per_owner import PerOwner
from .remote import client_ip
from .writer import FrameSink
from .ws_connection import WebSocketConnection, shared_frame

#: The open-connection count of a node (every transport counts; kept under this name for callers).
open_websockets = open_connections

if TYPE_CHECKING:
    from ssl import SSLContext

    from aiohttp.http_websocket import WebSocketWriter
    from aiohttp.web_request import BaseRequest

    from ..config import Settings
    from ..node import Node

log = logging.getLogger("trunkline.transport")
SUBPROTOCOLS = ("centrifuge-json", "centrifuge-protobuf")
JSON_INFO: Final = TransportInfo("websocket")
PROTOBUF_INFO: Final = TransportInfo("websocket", protocol="protobuf", binary=True)


def wants_protobuf(query_string: str) -> bool:
    """Protobuf asked for in the query (``?format=protobuf`` or ``?cf_protocol=protobuf``)."""
    if "protobuf" not in query_string and "%" not in query_string:  # most connections: no query worth parsing
        return False
    query = urllib.parse.parse_qs(query_string)
    return query.get("format", [""])[0] == "protobuf" or query.get("cf_protocol", [""])[0] == "protobuf"


#: Reasons for the close frames aiohttp sends by itself with an empty reason.
_CLOSE_REASONS: Final[dict[int, str]] = {
    WSCloseCode.PROTOCOL_ERROR: "protocol error",
    WSCloseCode.UNSUPPORTED_DATA: "unsupported data",
    WSCloseCode.INVALID_TEXT: "invalid frame payload data",
    WSCloseCode.POLICY_VIOLATION: "policy violation",
    WSCloseCode.MESSAGE_TOO_BIG: E.MESSAGE_TOO_BIG.reason,
}
_LOG_CLIP: Final = 100
_UNMASKED: Final = "protocol error: unmasked frame"
_MAX_HEADER: Final = 14  # 2 bytes, an 8-byte length, a 4-byte mask


class WebSocketTransport:
    """Adapts an aiohttp ``WebSocketResponse`` to the session's ``Transport``."""

    __slots__ = ("_kind", "_request", "_ws", "info")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, info: TransportInfo = JSON_INFO) -> None:
        self._ws = ws
        self._request = request
        self.info = info
        self._kind = WSMsgType.BINARY if info.binary else WSMsgType.TEXT

    # A CancelledError the current task was not asked for is a dead connection (see cancelling.py).

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send_frame(frame, self._kind)
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise ConnectionResetError("websocket write aborted") from None

    def frame_sink(self) -> FrameSink | None:
        """Frames straight to the socket (the writer's fast path), unless compression is on.

        A subclass that reshapes what ``send`` writes keeps the ``send`` path.
        """
        ws = self._ws
        writer = ws._writer
        transport = self._request.transport
        if type(self).send is not WebSocketTransport.send:
            return None
        if ws.compress or writer is None or writer.compress or transport is None:
            return None
        return _DirectSink(ws, transport, writer.protocol, 0x82 if self.info.binary else 0x81)

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code=code, message=reason.encode())
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            self.abort()

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()


class _DirectSink:
    """Writes whole uncompressed frames to the transport, without aiohttp's per-frame coroutine.

    A fan-out sends the same payload to thousands of sockets in one loop turn: the
    frame (header + payload) is built once and the same bytes go to each transport.
    Nothing is written once the response is closed (its close frame is the last one).
    """

    __slots__ = ("_first", "_protocol", "_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, protocol: Any, first: int) -> None:
        self._ws = ws
        self._transport = transport
        self._protocol = protocol
        self._first = first

    def write(self, payload: bytes) -> bool:
        transport = self._transport
        if self._ws._closed or transport.is_closing():  # closed: its close frame went out
            raise ConnectionResetError("websocket closing")
        transport.write(shared_frame(payload, self._first))
        return not self._protocol.writing_paused

    async def drain(self) -> None:
        protocol = self._protocol
        if not protocol.writing_paused:
            return
        if protocol.transport is None:
            raise ConnectionResetError("websocket closed")
        try:
            await protocol._drain_helper()  # the future aiohttp's own writes wait on, too
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise ConnectionResetError("websocket write aborted") from None


class MaskGuard:
    """Sits in front of aiohttp's frame parser and refuses unmasked client frames.

    RFC 6455 §5.1: a client masks every frame it sends, and a server that receives an
    unmasked frame closes the connection (1002). aiohttp's ``WebSocketReader`` serves
    clients too, so it accepts frames either way. This guard walks the frame headers
    of the bytes the protocol feeds (a few integer operations per frame; payloads are
    skipped, not copied) and hands the bytes on to the real parser. At the first
    unmasked header it forwards only the frames before it, then fails the message
    queue with a 1002 ``WebSocketError``: the read loop gets the error, never the
    frame, and aiohttp answers with a close frame (whose reason ``_WebSocketResponse``
    fills in).
    """

    __slots__ = ("_head", "_held", "_parser", "_queue", "_skip", "failed")

    def __init__(self, parser: Any, queue: Any) -> None:
        self._parser = parser
        self._queue = queue
        self._head = b""  # the start of a frame header split across reads
        self._held = b""  # a header's first byte, forwarded once its second (the mask bit) is known
        self._skip = 0  # payload bytes of the current frame still to come
        self.failed = False

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.failed:
            return True, b""
        held, self._held = self._held, b""
        bad = self._scan(data)
        if bad is None:
            out = held + data if held else data
            if len(self._head) == 1:  # not yet known whether this frame is masked
                out, self._held = out[:-1], out[-1:]
            if not out:
                return False, b""
            result: tuple[bool, bytes] = self._parser.feed_data(out)
            return result
        self.failed = True
        # No byte of the unmasked frame reaches the parser (a negative offset: its header began earlier).
        before = (held + data[:bad]) if bad >= 0 else b""
        if before and self._parser.feed_data(before)[0]:
            return True, b""  # the frames before it were broken already: that error stands
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, _UNMASKED))
        return True, b""

    def _scan(self, data: bytes) -> int | None:
        """Offset in ``data`` where an unmasked frame starts (negative: in an earlier read), or None."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            start = pos - len(self._head)
            head = self._head + data[pos : pos + _MAX_HEADER - len(self._head)]
            if len(head) < 2:
                self._head = head
                return None
            if not head[1] & 0x80:
                return start
            flag = head[1] & 0x7F
            size = 2 + (2 if flag == 126 else 8 if flag == 127 else 0) + 4
            if len(head) < size:
                self._head = head
                return None
            if flag == 126:
                length = int.from_bytes(head[2:4], "big")
            elif flag == 127:
                length = int.from_bytes(head[2:10], "big")
            else:
                length = flag
            pos += size - len(self._head)
            self._head = b""
            self._skip = length
        return None


class _Pipeline(list):  # type: ignore[type-arg]
    """An empty stand-in for aiohttp's queue of pipelined requests (a 64-slot deque, ~620 bytes)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def _shed_http_state(handler: Any) -> None:
    """Drop what aiohttp's request handler keeps for HTTP once its connection is a WebSocket.

    After the upgrade every byte goes to the WebSocket parser: the HTTP request parser
    (~760 bytes) is not used again (aiohttp only reads it when no upgrade happened, and
    checks it for None), and no further request can be queued. 1.3 KiB less per
    connection; anything unexpected (another aiohttp) leaves the handler as it is.
    """
    if not getattr(handler, "_upgraded", False) or getattr(handler, "_payload_parser", None) is None:
        return
    messages = getattr(handler, "_messages", None)
    if isinstance(messages, collections.deque) and not messages:
        handler._messages = _Pipeline()
    if hasattr(handler, "_parser"):
        handler._parser = None


class _WebSocketResponse(web.WebSocketResponse):
    """Gives the close frames aiohttp sends on its own (1009 for an oversized message,
    1002/1007 for broken frames) a reason, so every close names why, and refuses
    unmasked client frames (1002, :class:`MaskGuard`)."""

    _guard: MaskGuard | None = None
    #: Hand the socket to a :class:`WebSocketConnection` after the handshake (when uncompressed).
    take_over = False

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        if self.take_over and not self._compress:
            # No aiohttp reader: what the client sends next waits in the handler's
            # ``_message_tail`` until the connection object takes the socket.
            self._ws_protocol = protocol
            self._writer = writer
            handler.keep_alive(False)
            return
        self.take_over = False
        # aiohttp feeds the bytes that arrived with the upgrade request to the parser as it
        # installs it; hold them back so that they, too, pass the guard.
        tail: bytes = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        guard = MaskGuard(handler._payload_parser, self._reader)
        handler._payload_parser = guard
        self._guard = guard
        _shed_http_state(handler)
        if tail and guard.feed_data(tail)[0]:
            handler.close()

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if not message and code == WSCloseCode.PROTOCOL_ERROR and self._guard is not None and self._guard.failed:
            message = _UNMASKED.encode()
        if not message and code in _CLOSE_REASONS:
            message = _CLOSE_REASONS[code].encode()
        return await super().close(code=code, message=message, drain=drain)


# ------------------------------------------------------------------------------------ Origin


# ------------------------------------------------------------------------------------ endpoint


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    settings = node.settings
    refusal = refuse(request, node, "websocket")
    if refusal is not None:
        return refusal
    counter = connection_counter(node)
    ws = _WebSocketResponse(
        protocols=SUBPROTOCOLS,
        # aiohttp refuses a message of exactly max_msg_size bytes; the configured limit is inclusive.
        max_msg_size=settings.websocket.message_size_limit + 1 if settings.websocket.message_size_limit else 0,
        compress=settings.websocket.compression,
        autoping=True,
    )
    ws.take_over = True
    counter.value += 1
    detached = False
    try:
        await ws.prepare(request)
        protobuf = ws.ws_protocol == "centrifuge-protobuf" or wants_protobuf(request.query_string)
        info = PROTOBUF_INFO if protobuf else JSON_INFO
        if ws.take_over:
            detached = _take_socket(ws, request, node, info, counter)
            if detached:
                return ws
        transport = WebSocketTransport(ws, request, info)
        session = node.new_session(transport, remote=client_ip(request, settings), headers=dict(request.headers))
        try:
            receive = ws.receive  # not ``async for``: one coroutine less kept by every idle connection
            while True:
                msg = await receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    await session.handle_frame(msg.data.encode())
                elif kind is WSMsgType.BINARY:
                    await session.handle_frame(msg.data)
                else:  # CLOSE, CLOSING, CLOSED end the loop as ``async for`` would; ERROR is logged
                    if kind is WSMsgType.ERROR:
                        log.info("websocket of client=%s closed with %s", session.client_id, ws.close_code)
                    break
                del msg  # an idle connection does not keep its last frame (a connect token, say)
        except Exception:  # a failing read must never take the server down
            log.exception("websocket read loop failed for client=%s", session.client_id)
        finally:
            await session.close(None)
    finally:
        if not detached:
            counter.value -= 1
    return ws


#: The connections each node's WebSocket endpoint handed to :class:`WebSocketConnection` (for shutdown).
_detached: PerOwner[Node, set[WebSocketConnection]] = PerOwner(set)


def _take_socket(
    ws: web.WebSocketResponse, request: web.Request, node: Node, info: TransportInfo, counter: Any
) -> bool:
    """Give the upgraded socket to a :class:`WebSocketConnection` and let aiohttp's objects go.

    aiohttp's request handler is told its connection is gone (it leaves the server's
    table, drops its parser and timers) after it lost its hold on the socket, so it
    neither closes it nor reads from it; the response is marked finished so aiohttp
    sends no close frame when the handler returns. False (nothing changed) when the
    socket is already gone.
    """
    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing() or handler.transport is not transport:
        return False
    settings = node.settings
    data: bytes = handler._message_tail
    handler._message_tail = b""
    handler.transport = None
    handler.connection_lost(None)
    ws._eof_sent = True  # aiohttp's write_eof sends no close frame when the handler returns
    if not transport.is_reading():
        transport.resume_reading()
    remote = client_ip(request, settings)
    adopt(node, transport, info, remote=remote, headers=dict(request.headers), data=data, counter=counter)
    return True


def adopt(
    node: Node,
    transport: asyncio.Transport,
    info: TransportInfo,
    *,
    remote: str,
    headers: dict[str, str],
    data: bytes,
    counter: Any,
) -> WebSocketConnection:
    """Make an upgraded socket a :class:`WebSocketConnection` with a new session; ``data`` came after the head.

    ``counter`` (the node's open-connection count, already raised) is lowered when the connection ends.
    """
    live = _detached(node)

    def ended(conn: WebSocketConnection) -> None:
        counter.value -= 1
        live.discard(conn)

    conn = WebSocketConnection(transport, info, node.settings.websocket.message_size_limit, ended)
    session = node.new_session(conn, remote=remote, headers=headers)
    transport.set_protocol(conn)
    live.add(conn)
    conn.start(session, data)
    return conn


async def close_detached(node: Node, timeout: float = 1.0) -> None:
    """At shutdown: close the handed-over connections still open (3001), abort what does not close in time.

    The node closes its connected sessions itself; what is left here has not sent
    ``connect`` yet (aiohttp's server no longer knows these sockets).
    """
    sessions = [c.session for c in _detached.get(node) or () if c.session is not None]
    if sessions:
        await asyncio.wait([asyncio.ensure_future(s.close(E.SHUTDOWN)) for s in sessions], timeout=timeout)
    for conn in list(_detached.get(node) or ()):
        conn.abort()


# ------------------------------------------------------------------------------------ listener


def runner_options(settings: Settings) -> dict[str, Any]:
    """``AppRunner`` keyword arguments that bound the wait for a request head.

    aiohttp arms its keep-alive timer when a connection is accepted and closes a
    connection whose request head has not fully arrived when it fires, so a client
    that opens TCP and sends a partial request (slowloris) is dropped after
    ``websocket.handshake_timeout``; idle keep-alive connections close after the
    same time. ``0`` keeps aiohttp's default.
    """
    timeout = settings.websocket.handshake_timeout
    return {"keepalive_timeout": timeout} if timeout > 0 else {}


class GuardedTCPSite(web.TCPSite):
    """A ``TCPSite`` whose TLS handshake must finish within ``handshake_timeout`` seconds.

    aiohttp leaves asyncio's default of 60 s; a client that opens TCP to a TLS port
    and never sends a ClientHello holds a socket that long.
    """

    __slots__ = ("_front", "_tls_handshake_timeout")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        handshake_timeout: float = 0.0,
        ssl_context: SSLContext | None = None,
        front: Callable[[Callable[[], asyncio.Protocol]], Callable[[], asyncio.Protocol]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, **kwargs)
        self._tls_handshake_timeout = handshake_timeout
        self._front = front

    async def start(self) -> None:
        if self._front is None and (self._ssl_context is None or self._tls_handshake_timeout <= 0):
            await super().start()
            return
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server if self._front is None else self._front(server)
        tls_timeout = self._tls_handshake_timeout if self._ssl_context and self._tls_handshake_timeout > 0 else None
        self._server = await asyncio.get_running_loop().create_server(
            factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=tls_timeout,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
