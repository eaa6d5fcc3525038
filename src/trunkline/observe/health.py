"""``/health`` (the process answers) and ``/ready`` (accepting and the broker reachable)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from ..appkeys import NODE_KEY

if TYPE_CHECKING:
    from ..node import Node


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    if not node.accepting:
        return web.json_response({"status": "unavailable", "reason": "not accepting connections"}, status=503)
    try:
        await asyncio.wait_for(node.broker.ping(), 2.0)
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "reason": f"broker unreachable: {type(exc).__name__}"}, status=503
        )
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    return web.Response(body=node.metrics.exposition(), content_type="text/plain", charset="utf-8")
