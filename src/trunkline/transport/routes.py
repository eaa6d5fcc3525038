"""Routes of the HTTP-streaming, SSE, emulation and unidirectional endpoints that are enabled.

Everything is off by default, as in Centrifugo; ``/emulation`` is served when
``http_stream`` or ``sse`` is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..appkeys import NODE_KEY
from .emulation import emulation_handler
from .http_stream import http_stream_handler
from .sse import sse_handler
from .uni import uni_http_stream_handler, uni_sse_handler, uni_websocket_handler

if TYPE_CHECKING:
    from ..config import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def counted(transport: str, handler: Handler) -> Handler:
    """``handler``, its answers counted in ``trunkline_transport_requests_total{transport, status}``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        request.app[NODE_KEY].metrics.transport_request(transport, response.status)
        return response

    return handle


def add_http_transport_routes(app: web.Application, settings: Settings) -> None:
    if settings.http_stream.enabled:
        app.router.add_route("*", settings.http_stream.handler_prefix, counted("http_stream", http_stream_handler))
    if settings.sse.enabled:
        app.router.add_route("*", settings.sse.handler_prefix, counted("sse", sse_handler))
    if settings.http_stream.enabled or settings.sse.enabled:
        app.router.add_route("*", settings.emulation.handler_prefix, counted("emulation", emulation_handler))
    if settings.uni_websocket.enabled:
        app.router.add_get(settings.uni_websocket.handler_prefix, counted("uni_websocket", uni_websocket_handler))
    if settings.uni_sse.enabled:
        app.router.add_route("*", settings.uni_sse.handler_prefix, counted("uni_sse", uni_sse_handler))
    if settings.uni_http_stream.enabled:
        app.router.add_route(
            "*", settings.uni_http_stream.handler_prefix, counted("uni_http_stream", uni_http_stream_handler)
        )
