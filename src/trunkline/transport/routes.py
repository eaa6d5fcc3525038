"""Routes of the HTTP-streaming, SSE, emulation and unidirectional endpoints that are enabled.

Everything is off by default, as in Centrifugo; ``/emulation`` is served when
``http_stream`` or ``sse`` is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .emulation import emulation_handler
from .http_stream import http_stream_handler

if TYPE_CHECKING:
    from aiohttp import web

    from ..config import Settings


def add_http_transport_routes(app: web.Application, settings: Settings) -> None:
    if settings.http_stream.enabled:
        app.router.add_route("*", settings.http_stream.handler_prefix, http_stream_handler)
    if settings.http_stream.enabled or settings.sse.enabled:
        app.router.add_route("*", settings.emulation.handler_prefix, emulation_handler)
