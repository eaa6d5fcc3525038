"""The WebSocket endpoint (``/connection/websocket``): Origin check, upgrade, read loop.

This is the only module that awaits the client socket. It feeds each frame to the
session in order and lets the session's writer send what the node hands it.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.transport")
SUBPROTOCOLS = ("centrifuge-json",)


class WebSocketTransport:
    """Adapts an aiohttp ``WebSocketResponse`` to the session's ``Transport``."""

    name = "websocket"
    __slots__ = ("_request", "_ws")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._request = request

    async def send(self, frame: bytes) -> None:
        await self._ws.send_frame(frame, WSMsgType.TEXT)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()


def origin_allowed(origin: str | None, host: str | None, patterns: tuple[str, ...]) -> bool:
    """Browsers send Origin; non-browser SDKs usually do not and are allowed.

    With no patterns configured only same-origin pages may connect; ``*`` allows all;
    patterns are globs such as ``https://*.example.com``.
    """
    if not origin:
        return True
    origin = origin.lower()
    if patterns:
        return any(fnmatch.fnmatchcase(origin, p.lower()) for p in patterns)
    return bool(host) and urlsplit(origin).netloc == (host or "").lower()


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    from ..app import NODE_KEY

    node: Node = request.app[NODE_KEY]
    settings = node.settings
    if not node.accepting:
        return web.json_response({"error": "server is shutting down"}, status=503)
    if not origin_allowed(request.headers.get("Origin"), request.host, settings.client.allowed_origins):
        log.info("refused websocket from origin %r", request.headers.get("Origin"))
        return web.json_response({"error": "origin not allowed"}, status=403)
    limit = settings.client.connection_limit
    if limit and node.hub.num_clients >= limit:
        return web.json_response({"error": "connection limit reached"}, status=503)
    ws = web.WebSocketResponse(
        protocols=SUBPROTOCOLS,
        max_msg_size=settings.websocket.message_size_limit,
        compress=settings.websocket.compression,
        autoping=True,
    )
    await ws.prepare(request)
    session = node.new_session(WebSocketTransport(ws, request), remote=request.remote or "")
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await session.handle_frame(msg.data.encode())
            elif msg.type is WSMsgType.BINARY:
                await session.handle_frame(msg.data)
            else:
                break
    except Exception:  # a failing read must never take the server down
        log.exception("websocket read loop failed for client=%s", session.client_id)
    finally:
        await session.close(None)
    return ws
