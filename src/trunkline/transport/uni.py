"""Unidirectional transports: the client connects, then only reads. No SDK needed.

The client sends one bare JSON ``ConnectRequest`` (``{"token": "…"}``, optionally
``subs`` with recovery positions); the server answers with bare ``Push`` objects
(no Reply wrapper): first ``{"connect": {…}}`` (the connect result, with the
server-side subscriptions in ``subs``), then ``{"channel": "…", "pub": {…}}``, join,
leave, unsubscribe… pushes; ``{}`` is a ping that needs no answer. A disconnect is a
``{"disconnect": {"code", "reason", "reconnect"}}`` push before the stream ends (and,
on uni_websocket, the close frame's code). Channels come from the token's
``channels`` and ``subs`` claims, the personal channel, or the connecting hook.

- ``/connection/uni_websocket``: the connect request is the first message (or the
  ``cf_connect`` query parameter); one push per frame, or several newline-joined
  with ``uni_websocket.join_push_messages``; later messages are read and ignored.
- ``/connection/uni_sse``: ``GET ?cf_connect=<JSON>`` (a plain browser
  ``EventSource``; without it the request is an empty one) or ``POST`` with the JSON
  body; ``data: <push>\\n\\n`` events after a first ``\\r\\n``.
- ``/connection/uni_http_stream``: ``POST`` with the JSON body; newline-delimited pushes.

Refusals before the stream are HTTP answers with a JSON body: 400 (a body that is not a
ConnectRequest), 403, 405, 408, 413, 503. A connect refused by the server (bad token…)
is a disconnect push with its code, then the end of the stream.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Final

from aiohttp import WSMsgType, web

from ..appkeys import NODE_KEY
from ..contracts import TransportInfo
from ..protocol.codec import ProtocolError, UniJsonCodec
from .admission import connection_counter, refuse
from .http_body import error, preflight, read_body
from .remote import client_ip
from .sse import CONNECT_PARAM, EVENT_STREAM, sse_events
from .stream import serve_stream
from .websocket import WebSocketTransport, _WebSocketResponse

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.transport")
UNI_WEBSOCKET: Final = TransportInfo("uni_websocket", bidirectional=False)
UNI_SSE: Final = TransportInfo("uni_sse", bidirectional=False)
UNI_HTTP_STREAM: Final = TransportInfo("uni_http_stream", bidirectional=False)
_CODEC: Final = UniJsonCodec()
_EMPTY_REQUEST: Final = b"{}"


def _check(data: bytes) -> web.Response | None:
    try:
        _CODEC.decode_commands(data)
    except ProtocolError as exc:
        return error(400, f"bad request: {exc}")
    return None


def _json_line(frame: bytes) -> bytes:
    return frame + b"\n"


# ------------------------------------------------------------------------------------ uni_sse


async def uni_sse_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method not in {"GET", "POST"}:
        return error(405, "method not allowed: GET or POST a connect request", {"Allow": "GET, POST, OPTIONS"})
    refusal = refuse(request, node, "uni_sse")
    if refusal is not None:
        return refusal
    limit = node.settings.uni_sse.max_request_body_size
    if request.method == "GET":
        data = request.query.get(CONNECT_PARAM, "").encode() or _EMPTY_REQUEST
        if len(data) > limit:
            return error(413, f"{CONNECT_PARAM} over {limit} bytes")
    else:
        body = await read_body(request, node, limit)
        if isinstance(body, web.Response):
            return body
        data = body
    refusal = _check(data)
    if refusal is not None:
        return refusal
    return await serve_stream(request, node, UNI_SSE, sse_events, data, content_type=EVENT_STREAM, preamble=b"\r\n")


# ------------------------------------------------------------------------------------ uni_http_stream


async def uni_http_stream_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method != "POST":
        return error(405, "method not allowed: POST a connect request", {"Allow": "POST, OPTIONS"})
    refusal = refuse(request, node, "uni_http_stream")
    if refusal is not None:
        return refusal
    body = await read_body(request, node, node.settings.uni_http_stream.max_request_body_size)
    if isinstance(body, web.Response):
        return body
    refusal = _check(body)
    if refusal is not None:
        return refusal
    return await serve_stream(request, node, UNI_HTTP_STREAM, _json_line, body, content_type="application/x-ndjson")


# ------------------------------------------------------------------------------------ uni_websocket


class UniWebSocketTransport(WebSocketTransport):
    """A WebSocket that carries bare pushes: one per frame unless ``join`` (newline-joined)."""

    __slots__ = ("_join", "session")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, *, join: bool, session: str) -> None:
        super().__init__(ws, request, UNI_WEBSOCKET)
        self._join = join
        self.session = session

    async def send(self, frame: bytes) -> None:
        if self._join or b"\n" not in frame:
            await super().send(frame)
            return
        for message in frame.split(b"\n"):  # JSON messages hold no raw newline
            await super().send(message)


async def uni_websocket_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    settings = node.settings.uni_websocket
    refusal = refuse(request, node, "uni_websocket")
    if refusal is not None:
        return refusal
    query_connect = request.query.get(CONNECT_PARAM, "").encode()
    if query_connect:
        refusal = _check(query_connect)
        if refusal is not None:
            return refusal
    ws = _WebSocketResponse(
        max_msg_size=settings.message_size_limit + 1 if settings.message_size_limit else 0,
        compress=settings.compression,
        autoping=True,
    )
    counter = connection_counter(node)
    counter.value += 1
    try:
        await ws.prepare(request)
        transport = UniWebSocketTransport(ws, request, join=settings.join_push_messages, session=str(uuid.uuid4()))
        session = node.new_session(transport, remote=client_ip(request, node.settings), headers=dict(request.headers))
        try:
            connected = bool(query_connect)
            if connected:
                await session.handle_frame(query_connect)
            async for msg in ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    if not connected:  # the first message is the connect request
                        connected = True
                        await session.handle_frame(msg.data.encode() if msg.type is WSMsgType.TEXT else msg.data)
                    continue  # later messages are read and ignored, as Centrifugo does
                break
        except Exception:  # a failing read must never take the server down
            log.exception("uni_websocket read loop failed for client=%s", session.client_id)
        finally:
            await session.close(None)
    finally:
        counter.value -= 1
    return ws
