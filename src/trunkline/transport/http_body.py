"""What every HTTP transport endpoint shares before its stream starts: bodies, answers, CORS.

- :func:`read_body` reads a request body whole, never more than the endpoint's limit
  (413 as soon as it passes it, also from ``Content-Length`` alone) and within
  ``websocket.handshake_timeout`` (408 for a client that trickles its body);
- :func:`error` is the JSON answer of every refusal (``{"error": "<reason>"}``), as
  :mod:`trunkline.transport.admission` gives;
- :func:`cors_headers` lets a page of an allowed origin read the answer (the Origin
  allow-list of ``client.allowed_origins``; a refused origin never gets here), and
  :func:`preflight` answers ``OPTIONS``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from aiohttp import web

from .admission import origin_allowed

if TYPE_CHECKING:
    from ..node import Node

#: Headers of every streaming response (Centrifugo's): no caching, and no buffering by a
#: reverse proxy in front (nginx honours ``X-Accel-Buffering``).
STREAM_HEADERS: Final = {
    "Cache-Control": "private, no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expire": "0",
    "X-Accel-Buffering": "no",
}
PROTOBUF_CONTENT_TYPE: Final = "application/octet-stream"
_READ_SIZE: Final = 65536


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """A refusal with a JSON body that names the reason."""
    return web.json_response({"error": reason}, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


def cors_headers(request: web.Request, node: Node) -> dict[str, str]:
    """CORS headers for a request whose ``Origin`` is allowed (none for same-origin or no Origin)."""
    origin = request.headers.get("Origin")
    if not origin or not origin_allowed(origin, request.host, node.settings.client.allowed_origins):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}


def preflight(request: web.Request, node: Node) -> web.Response:
    """``OPTIONS``: 204, with the CORS grant when the origin is allowed (403 when it is not)."""
    origin = request.headers.get("Origin")
    if origin and not origin_allowed(origin, request.host, node.settings.client.allowed_origins):
        return error(403, "origin not allowed")
    headers = cors_headers(request, node)
    if headers:
        headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers", "")
        if asked and asked != "null":
            headers["Access-Control-Allow-Headers"] = asked[:1000]
        headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)


def is_protobuf(request: web.Request) -> bool:
    """Protobuf bodies and streams are asked for by ``Content-Type: application/octet-stream``."""
    return request.content_type == PROTOBUF_CONTENT_TYPE


async def read_body(request: web.Request, node: Node, limit: int) -> bytes | web.Response:
    """The whole body (at most ``limit`` bytes), or the refusal: 413 past the limit, 408 too slow."""
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"request body over {limit} bytes")
    timeout = node.settings.websocket.handshake_timeout
    try:
        async with asyncio.timeout(timeout if timeout > 0 else None):
            chunks: list[bytes] = []
            size = 0
            # Each read returns at least one byte until EOF and the size check ends the loop
            # past the limit: at most limit + 1 reads, and all of them within the timeout.
            while chunk := await request.content.read(min(limit + 1 - size, _READ_SIZE)):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return error(413, f"request body over {limit} bytes")
    except TimeoutError:
        return error(408, "request body not received in time")
    return b"".join(chunks)
