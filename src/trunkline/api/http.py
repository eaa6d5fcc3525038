"""``POST /api/<method>`` and the legacy ``POST /api`` (reference §8.1).

Authentication: ``X-API-Key``, ``Authorization: apikey <key>`` or ``?api_key=``,
compared in constant time. A wrong key gets 401 (also one that is not UTF-8), a body
over ``http_api.max_body_size`` 413, a malformed JSON body 400, an unknown method or
path under the prefix 404, another HTTP method than POST 405 — each with a JSON body.
Protocol-level errors travel inside a 200 body as ``{"error": {"code", "message"}}``,
or as HTTP statuses in ``transport`` error mode.

Every answer is counted (``trunkline_api_requests_total`` by method, result and
HTTP status class, ``trunkline_api_request_duration_seconds`` by method): the
result is ``"ok"`` or the error code the body carries (401, 404 as 104, 405, 413
and a malformed body as 107…). Each command executed, alone or inside a batch or
legacy request, also counts in ``trunkline_api_commands_total``.

A request body is read whole (however many reads it takes, never more than the limit)
before it is parsed, and parsed whole before anything is executed: a legacy request
with one bad line executes none of its lines.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from .. import errors as E
from ..appkeys import NODE_KEY
from ..observe.logs import log_failure
from . import schemas as S
from .methods import LEGACY_IDS, MAX_BATCH_COMMANDS, METHODS, MalformedBody

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.api")
_encoder = msgspec.json.Encoder()
_TRANSPORT_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}
_READ_SIZE = 65536  # per read when there is no body limit

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Answer(web.Response):
    """A JSON answer that remembers its metrics result label (``"ok"`` or an error code)."""

    __slots__ = ("result",)

    def __init__(self, body: bytes, status: int, result: str) -> None:
        super().__init__(body=body, status=status, content_type="application/json")
        self.result = result


def _json(body: object, status: int = 200, result: str = "") -> web.Response:
    if not result:
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        result = str(code) if isinstance(code, int) else "ok"
    return _Answer(_encoder.encode(body), status, result)


def _method_label(request: web.Request) -> str:
    """The method a request names: its path's method, ``legacy`` for the prefix itself (bounded later)."""
    name = request.match_info.get("method")
    if name is not None:
        return name
    return "unknown" if "path" in request.match_info else "legacy"


def counted(handler: Handler) -> Handler:
    """Count and time every answer of ``handler`` in the node's API metrics."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        metrics = request.app[NODE_KEY].metrics
        try:
            response = await handler(request)
        except Exception:  # aiohttp answers 500; count it before it does
            metrics.api_request(_method_label(request), "100", 500, time.perf_counter() - started)
            raise
        result = response.result if isinstance(response, _Answer) else "ok"
        metrics.api_request(_method_label(request), result, response.status, time.perf_counter() - started)
        return response

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


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
    # Header bytes that are not UTF-8 reach us as lone surrogates (surrogateescape);
    # "surrogatepass" encodes any str, so such a key is simply a wrong key.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass"))


def _too_large(limit: int) -> web.Response:
    return _json({"error": {"code": 107, "message": f"request body over {limit} bytes"}}, status=413)


async def _read_body(request: web.Request, node: Node) -> bytes | web.Response:
    """The whole body, however many reads it takes; 413 as soon as it passes the limit."""
    limit = node.settings.http_api.max_body_size
    if request.content_length is not None and limit and request.content_length > limit:
        return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    # Each read returns at least one byte until EOF, and the size check ends the loop
    # past the limit: at most limit + 1 reads (in practice a few, one per buffered chunk).
    while chunk := await request.content.read(limit + 1 - size if limit else _READ_SIZE):
        chunks.append(chunk)
        size += len(chunk)
        if limit and size > limit:
            return _too_large(limit)
    return b"".join(chunks)


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


@counted
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
    command = name != "batch"  # a batch counts its own commands
    try:
        result = await method(node, body)
    except MalformedBody:
        if command:
            node.metrics.api_command(name, "107")
        return _malformed()
    except E.ClientError as err:
        if command:
            node.metrics.api_command(name, str(err.code))
        error = {"code": err.code, "message": err.message}
        if transport_mode:
            return _json(error, status=_TRANSPORT_STATUS.get(err.code, 400), result=str(err.code))
        return _json({"error": error})
    except Exception:
        if command:
            node.metrics.api_command(name, "100")
        log_failure(log, node.metrics, "server API method %s failed", name)
        return _json(
            {"error": {"code": 100, "message": "internal server error"}}, status=500 if transport_mode else 200
        )
    if not command:  # Centrifugo answers batch with {"replies": [...]} at the top level
        return _json(result)
    node.metrics.api_command(name, "ok")
    return _json({"result": result})


def _parse_legacy(body: bytes) -> list[S.LegacyCommand] | web.Response:
    """Every command of a legacy body, or the 400 answer that executes none of them."""
    commands: list[S.LegacyCommand] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        if len(commands) == MAX_BATCH_COMMANDS:
            message = f"bad request: at most {MAX_BATCH_COMMANDS} commands per request"
            return _json({"error": {"code": 107, "message": message}}, status=400)
        try:
            commands.append(msgspec.json.decode(line, type=S.LegacyCommand))
        except (msgspec.DecodeError, RecursionError):  # ValidationError included: not a legacy command
            return _malformed()
    if not commands:
        return _json({"error": {"code": 107, "message": "empty request"}}, status=400)
    return commands


@counted
async def api_legacy(request: web.Request) -> web.StreamResponse:
    """``POST /api`` with newline-delimited ``{"method": ..., "params": {...}}`` commands.

    All lines are parsed before the first is executed (a bad line: 400, nothing done).
    ``batch`` is not a legacy method, as it cannot be nested in ``batch`` either: the
    1000-command cap holds for the whole request.
    """
    prepared = await _prepare(request)
    if isinstance(prepared, web.Response):
        return prepared
    node, body = prepared
    commands = _parse_legacy(body)
    if isinstance(commands, web.Response):
        return commands
    replies: list[bytes] = []
    for cmd in commands:
        name = LEGACY_IDS.get(cmd.method, "") if isinstance(cmd.method, int) else cmd.method
        method = METHODS.get(name)
        if method is None or name == "batch":
            node.metrics.api_command("unknown", "104")
            replies.append(_encoder.encode({"error": {"code": 104, "message": "method not found"}}))
            continue
        try:
            result = await method(node, bytes(cmd.params))
            node.metrics.api_command(name, "ok")
            replies.append(_encoder.encode({"result": result}))
        except MalformedBody:  # params were parsed above, so this cannot happen; never a 400 after executing
            node.metrics.api_command(name, "107")
            replies.append(_encoder.encode({"error": {"code": 107, "message": "malformed JSON body"}}))
        except E.ClientError as err:
            node.metrics.api_command(name, str(err.code))
            replies.append(_encoder.encode({"error": {"code": err.code, "message": err.message}}))
    return web.Response(body=b"\n".join(replies), content_type="application/json")


@counted
async def api_not_allowed(request: web.Request) -> web.StreamResponse:
    """Any HTTP method but POST under the API prefix."""
    response = _json({"error": {"code": 405, "message": "use POST"}}, status=405)
    response.headers["Allow"] = "POST"
    return response


@counted
async def api_not_found(request: web.Request) -> web.StreamResponse:
    """A POST to a path under the API prefix that names no method (``/api/publish/``, ``/api/a/b``).

    Method names match exactly (the reference, §8.1, names no other form): a trailing slash names none."""
    node: Node = request.app[NODE_KEY]
    if not _authorized(request, node):
        return _json({"error": {"code": 401, "message": "unauthorized"}}, status=401)
    return _json({"error": {"code": 104, "message": "not found"}}, status=404)
