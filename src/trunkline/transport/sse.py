"""``GET|POST /connection/sse``: bidirectional emulation over Server-Sent Events (JSON only).

The connect command(s) come in the ``cf_connect`` query parameter (what a browser
``EventSource`` can send: a GET) or as a POST body. The answer is ``200``,
``Content-Type: text/event-stream; charset=utf-8``; the server first writes ``\\r\\n``
(so the browser sees the stream open), then every reply and push as one event,
``data: <json>\\n\\n``. Later commands come through ``POST /emulation``.

Refusals carry a JSON body: 400 (no or malformed ``cf_connect``), 403, 503, 408,
413 (a POST body over ``sse.max_request_body_size``), 405.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from ..appkeys import NODE_KEY
from ..contracts import TransportInfo
from ..protocol.codec import JsonCodec, ProtocolError
from .admission import refuse
from .emulation import registration
from .http_body import error, preflight, read_body
from .stream import serve_stream

if TYPE_CHECKING:
    from ..node import Node

INFO: Final = TransportInfo("sse", emulation=True)
EVENT_STREAM: Final = "text/event-stream; charset=utf-8"
CONNECT_PARAM: Final = "cf_connect"
_JSON: Final = JsonCodec()


def sse_events(frame: bytes) -> bytes:
    """Newline-joined JSON messages as SSE events, one ``data:`` event each (JSON has no raw newline)."""
    return b"data: " + frame.replace(b"\n", b"\n\ndata: ") + b"\n\n"


async def connect_data(request: web.Request, node: Node, limit: int) -> bytes | web.Response:
    """The connect request of a GET (``cf_connect``, required) or a POST (the body)."""
    if request.method == "GET":
        value = request.query.get(CONNECT_PARAM)
        if not value:
            return error(400, f"bad request: no {CONNECT_PARAM} query parameter")
        data = value.encode()
        if len(data) > limit:
            return error(413, f"{CONNECT_PARAM} over {limit} bytes")
        return data
    return await read_body(request, node, limit)


async def sse_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method not in {"GET", "POST"}:
        return error(405, "method not allowed: GET or POST a connect command", {"Allow": "GET, POST, OPTIONS"})
    refusal = refuse(request, node, "sse")
    if refusal is not None:
        return refusal
    data = await connect_data(request, node, node.settings.sse.max_request_body_size)
    if isinstance(data, web.Response):
        return data
    try:
        _JSON.decode_commands(data)
    except ProtocolError as exc:
        return error(400, f"bad request: {exc}")
    return await serve_stream(
        request,
        node,
        INFO,
        sse_events,
        data,
        content_type=EVENT_STREAM,
        preamble=b"\r\n",
        on_session=registration(node),
    )
