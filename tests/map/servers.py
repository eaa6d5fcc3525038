"""A Trunkline server on the memory map broker or on Redis, for fixtures parametrized over both."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.conftest import Running


async def start_on_map_broker(
    request: pytest.FixtureRequest,
    start_server: Callable[..., Awaitable[Running]],
    config: dict[str, Any],
    tag: str,
    *,
    on_engine: bool = False,
) -> Running:
    """A server of a copy of ``config`` on the map broker ``request.param`` names ("memory" or
    "redis": the session's redis-server under a prefix of its own starting with ``tag``; with
    ``on_engine`` the engine is on it too and the map broker uses engine.redis). Asserts which
    map broker the node got."""
    config = json.loads(json.dumps(config))
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        redis = {"address": url, "prefix": f"{tag}-{uuid.uuid4().hex[:8]}"}  # the server is shared by the run
        if on_engine:
            config["engine"] = {"type": "redis", "redis": redis}
            config["map_broker"] = {"type": "redis"}  # on engine.redis
        else:
            config.setdefault("map_broker", {}).update({"type": "redis", "redis": redis})
    srv = await start_server(config)
    expected = "RedisMapBroker" if request.param == "redis" else "MemoryMapBroker"
    assert type(srv.server.node.map_broker).__name__ == expected
    return srv
