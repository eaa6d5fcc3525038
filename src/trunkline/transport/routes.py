"""Routes of the HTTP-streaming, SSE, emulation and unidirectional endpoints that are enabled.

Everything is off by default, as in Centrifugo; ``/emulation`` is served when
``http_stream`` or ``sse`` is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .emulation import emulation_handler
from .http_stream import http_stream_handler
from .sse import sse_handler
from .uni import uni_http_stream_handler, uni_sse_handler, uni_websocket_handler

if TYPE_CHECKING:
    from aiohttp import web

    from ..config import Settings


def add_http_transport_routes(app: web.Application, settings: Settings) -> None:
    if settings.http_stream.enabled:
        app.router.add_route("*", settings.http_stream.handler_prefix, http_stream_handler)
    if settings.sse.enabled:
        app.router.add_route("*", settings.sse.handler_prefix, sse_handler)
    if settings.http_stream.enabled or settings.sse.enabled:
        app.router.add_route("*", settings.emulation.handler_prefix, emulation_handler)
    if settings.uni_websocket.enabled:
        app.router.add_get(settings.uni_websocket.handler_prefix, uni_websocket_handler)
    if settings.uni_sse.enabled:
        app.router.add_route("*", settings.uni_sse.handler_prefix, uni_sse_handler)
    if settings.uni_http_stream.enabled:
        app.router.add_route("*", settings.uni_http_stream.handler_prefix, uni_http_stream_handler)
