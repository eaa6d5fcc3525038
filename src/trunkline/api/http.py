"""``POST /api/<method>`` and the legacy ``POST /api`` (reference §8.1).

Authentication: ``X-API-Key``, ``Authorization: apikey <key>`` or ``?api_key=``,
compared in constant time. A wrong key gets 401, a malformed JSON body 400, an
unknown method 404 — each with a JSON body. Protocol-level errors travel inside a
200 body as ``{"error": {"code", "message"}}``, or as HTTP statuses in
``transport`` error mode.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from .. import errors as E
from ..appkeys import NODE_KEY
from . import schemas as S
from .methods import LEGACY_IDS, METHODS, MalformedBody

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.api")
_encoder = msgspec.json.Encoder()
_TRANSPORT_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def _authorized(request: web.Request, node: Node) -> bool:
    settings = node.settings.http_api
    if settings.insecure:
        return True
    key = settings.key
    if not key:
        return False
    given = request.headers.get("X-API-Key", "")
    if not given:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "apikey":
            given = value.strip()
    if not given:
        given = request.query.get("api_key", "")
    return hmac.compare_digest(given.encode(), key.encode())


async def _read_body(request: web.Request, node: Node) -> bytes | web.Response:
    limit = node.settings.http_api.max_body_size
    if request.content_length is not None and limit and request.content_length > limit:
        return _json({"error": {"code": 107, "message": f"request body over {limit} bytes"}}, status=413)
    body = await request.content.read(limit + 1 if limit else -1)
    if limit and len(body) > limit:
        return _json({"error": {"code": 107, "message": f"request body over {limit} bytes"}}, status=413)
    return body


def _malformed() -> web.Response:
    return _json({"error": {"code": 107, "message": "malformed JSON body"}}, status=400)


async def _prepare(request: web.Request) -> tuple[Node, bytes] | web.Response:
    node: Node = request.app[NODE_KEY]
    if not _authorized(request, node):
        return _json({"error": {"code": 401, "message": "unauthorized"}}, status=401)
    body = await _read_body(request, node)
    if isinstance(body, web.Response):
        return body
    try:
        body.decode("utf-8")  # payloads are passed through to clients as they are: they must be valid text
    except UnicodeDecodeError:
        return _malformed()
    return node, body


async def api_method(request: web.Request) -> web.StreamResponse:
    prepared = await _prepare(request)
    if isinstance(prepared, web.Response):
        return prepared
    node, body = prepared
    name = request.match_info["method"]
    method = METHODS.get(name)
    if method is None:
        return _json({"error": {"code": 104, "message": f"method not found: {name[:64]}"}}, status=404)
    transport_mode = (
        node.settings.http_api.error_mode == "transport"
        or request.headers.get("X-Centrifugo-Error-Mode", "").lower() == "transport"
    )
    try:
        result = await method(node, body)
    except MalformedBody:
        return _malformed()
    except E.ClientError as err:
        error = {"code": err.code, "message": err.message}
        if transport_mode:
            return _json(error, status=_TRANSPORT_STATUS.get(err.code, 400))
        return _json({"error": error})
    except Exception:
        log.exception("server API method %s failed", name)
        return _json(
            {"error": {"code": 100, "message": "internal server error"}}, status=500 if transport_mode else 200
        )
    if name == "batch":  # Centrifugo answers batch with {"replies": [...]} at the top level
        return _json(result)
    return _json({"result": result})


async def api_legacy(request: web.Request) -> web.StreamResponse:
    """``POST /api`` with newline-delimited ``{"method": ..., "params": {...}}`` commands."""
    prepared = await _prepare(request)
    if isinstance(prepared, web.Response):
        return prepared
    node, body = prepared
    replies: list[bytes] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            cmd = msgspec.json.decode(line, type=S.LegacyCommand)
        except (msgspec.DecodeError, RecursionError):  # ValidationError included: not a legacy command
            return _malformed()
        name = LEGACY_IDS.get(cmd.method, "") if isinstance(cmd.method, int) else cmd.method
        method = METHODS.get(name)
        if method is None:
            replies.append(_encoder.encode({"error": {"code": 104, "message": "method not found"}}))
            continue
        try:
            result = await method(node, bytes(cmd.params))
            replies.append(_encoder.encode({"result": result}))
        except MalformedBody:
            return _malformed()
        except E.ClientError as err:
            replies.append(_encoder.encode({"error": {"code": err.code, "message": err.message}}))
    if not replies:
        return _json({"error": {"code": 107, "message": "empty request"}}, status=400)
    return web.Response(body=b"\n".join(replies), content_type="application/json")


async def api_not_allowed(request: web.Request) -> web.StreamResponse:
    return _json({"error": {"code": 405, "message": "use POST"}}, status=405)
