"""``POST /connection/http_stream``: bidirectional emulation over one streaming HTTP response.

The request body holds the client's first commands (the connect), encoded in the
connection's format: Protobuf when ``Content-Type`` is ``application/octet-stream``,
JSON otherwise. The answer is ``200`` and a response that never ends while the
connection lives: every reply and push, JSON lines each followed by ``\\n``, or
varint-delimited Protobuf. Later commands (and pongs) come through ``POST /emulation``
with the ``session`` and ``node`` of the connect result. ``OPTIONS`` is ``204``.

Refusals carry a JSON body: 403 (origin), 503 (shutdown, connection limit), 413
(body over ``http_stream.max_request_body_size``), 408 (body too slow), 400 (a body
that is not the format's commands), 405 (another method).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from ..appkeys import NODE_KEY
from ..contracts import TransportInfo
from ..protocol.codec import JsonCodec, ProtocolError
from ..protocol.protobuf import ProtobufCodec
from .admission import refuse
from .emulation import registration
from .http_body import PROTOBUF_CONTENT_TYPE, error, is_protobuf, preflight, read_body
from .stream import serve_stream

if TYPE_CHECKING:
    from ..node import Node

JSON_INFO: Final = TransportInfo("http_stream", emulation=True)
PROTOBUF_INFO: Final = TransportInfo("http_stream", protocol="protobuf", binary=True, emulation=True)
NDJSON: Final = "application/x-ndjson"
_JSON: Final = JsonCodec()
_PROTOBUF: Final = ProtobufCodec()


def _json_line(frame: bytes) -> bytes:
    return frame + b"\n"


def _as_is(frame: bytes) -> bytes:
    return frame


async def http_stream_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method != "POST":
        return error(405, "method not allowed: POST a connect command", {"Allow": "POST, OPTIONS"})
    refusal = refuse(request, node, "http_stream")
    if refusal is not None:
        return refusal
    body = await read_body(request, node, node.settings.http_stream.max_request_body_size)
    if isinstance(body, web.Response):
        return body
    protobuf = is_protobuf(request)
    try:
        (_PROTOBUF if protobuf else _JSON).decode_commands(body)
    except ProtocolError as exc:
        return error(400, f"bad request: {exc}")
    if protobuf:
        return await serve_stream(
            request,
            node,
            PROTOBUF_INFO,
            _as_is,
            body,
            content_type=PROTOBUF_CONTENT_TYPE,
            on_session=registration(node),
        )
    return await serve_stream(
        request, node, JSON_INFO, _json_line, body, content_type=NDJSON, on_session=registration(node)
    )
