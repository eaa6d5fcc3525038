"""The Redis map broker for the contract suite: a :class:`RedisMapBroker` on the session's
redis-server, with a key prefix of the test's own (removed after it), driven on real time:
its cleanup loop is off and :meth:`MapEnv.advance` runs :meth:`RedisMapBroker.cleanup`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from trunkline.broker.map_redis import RedisMapBroker

if TYPE_CHECKING:
    from .map_env import MapEnv


@asynccontextmanager
async def redis_env(request: pytest.FixtureRequest) -> AsyncIterator[MapEnv]:
    from .conftest import Recorder, delete_keys
    from .map_env import BARRIER, MapEnv

    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("prefix")
    broker = RedisMapBroker(url, prefix=prefix, cleanup_interval=0)  # the test runs the cleanup
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe(BARRIER)
        yield MapEnv("redis", broker, events, cleanup=broker.cleanup)
    finally:
        await broker.close()
        raw = Redis.from_url(url)
        try:
            await delete_keys(raw, prefix)
        finally:
            await raw.aclose()
