"""``/health`` (the process answers), ``/ready`` (accepting and the broker reachable) and ``/metrics``."""

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


async def unready_reason(node: Node) -> str:
    """Why the node is not ready (not accepting, or the broker did not answer a ping in 2 s); "" when ready."""
    if not node.accepting:
        return "not accepting connections"
    try:
        await asyncio.wait_for(node.broker.ping(), 2.0)
    except Exception as exc:
        return f"broker unreachable: {type(exc).__name__}"
    return ""


async def ready(request: web.Request) -> web.StreamResponse:
    reason = await unready_reason(_node(request))
    if reason:
        return web.json_response({"status": "unavailable", "reason": reason}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.StreamResponse:
    """The Prometheus exposition; ``trunkline_ready`` is the readiness check run for this scrape."""
    node = _node(request)
    node.metrics.ready.set(0 if await unready_reason(node) else 1)
    node.metrics.queue_limit.set(node.settings.client.queue_max_size)
    return web.Response(body=node.metrics.exposition(), content_type="text/plain", charset="utf-8")
