"""The Redis map broker for the contract suite: a :class:`RedisMapBroker` on the session's
redis-server (``redis``) or Redis Cluster (``redis-cluster``), with a key prefix of the test's
own (removed after it), driven on real time: its cleanup loop is off and
:meth:`MapEnv.advance` runs :meth:`RedisMapBroker.cleanup`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from trunkline.broker.map_redis import RedisMapBroker
from trunkline.broker.redis_topology import make_cluster_client

if TYPE_CHECKING:
    from .map_env import MapEnv


@asynccontextmanager
async def redis_env(request: pytest.FixtureRequest) -> AsyncIterator[MapEnv]:
    url: str = request.getfixturevalue("redis_url")
    async with _env(request, "redis", RedisMapBroker(url, prefix=request.getfixturevalue("prefix"))) as env:
        yield env


@asynccontextmanager
async def redis_cluster_env(request: pytest.FixtureRequest) -> AsyncIterator[MapEnv]:
    seeds = request.getfixturevalue("redis_cluster").seeds
    client = make_cluster_client(seeds, io_timeout=2.0)
    broker = RedisMapBroker(prefix=request.getfixturevalue("prefix"), io_timeout=2.0, client=client, owns_client=True)
    async with _env(request, "redis-cluster", broker) as env:
        yield env


@asynccontextmanager
async def _env(request: pytest.FixtureRequest, kind: str, broker: RedisMapBroker) -> AsyncIterator[MapEnv]:
    from .conftest import Recorder, delete_keys
    from .map_env import BARRIER, MapEnv

    broker._cleanup_interval = 0  # the test runs the cleanup
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe(BARRIER)
        yield MapEnv(kind, broker, events, cleanup=broker.cleanup)
    finally:
        await delete_keys(broker.client, request.getfixturevalue("prefix"))
        await broker.close()
