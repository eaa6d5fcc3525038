"""The ``map_broker`` fixture: one started map broker per implementation, for the contract suite.

``MAP_BROKERS`` maps a name to a factory (an async context manager that yields a
:class:`MapEnv`); the fixture is parametrized over its keys, with the marks of
``MAP_BROKER_MARKS``. To run the contract on another broker, add its factory (and marks)
here. Time: a memory broker runs on a :class:`FakeClock` that :meth:`MapEnv.advance` moves
(then it runs the cleanup), so expiry is exact; a broker without a fake clock sleeps for real,
so the contract uses short ttls and :meth:`MapEnv.eventually` polls, bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from trunkline.broker.map_base import MapBroker, MapOptions, MapWrite
from trunkline.broker.map_memory import MemoryMapBroker

from .fake_clock import FakeClock
from .map_env_redis import redis_cluster_env, redis_env

if TYPE_CHECKING:  # conftest imports this module for its fixture; Recorder is imported when used
    from .conftest import Recorder

BARRIER = "__map_barrier"


@dataclass
class MapEnv:
    kind: str
    broker: MapBroker
    events: Recorder
    clock: FakeClock | None = None
    #: runs the broker's expiry now (memory: ``cleanup()``; others: their own), awaited
    cleanup: Callable[[], Awaitable[Any]] | None = None

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the broker, then run its cleanup once."""
        if self.clock is not None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)
        if self.cleanup is not None:
            await self.cleanup()

    async def eventually(self, check: Callable[[], Awaitable[bool]], after: float) -> None:
        """``check`` holds once ``after`` seconds have passed (fake clock: exactly then; else polled)."""
        await self.advance(after)
        if self.clock is not None:
            assert await check()
            return
        deadline = time.monotonic() + 5.0
        while not await check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)
            if self.cleanup is not None:
                await self.cleanup()

    async def settled(self) -> None:
        """Every update written so far has reached the handler: a barrier write comes after them."""
        before = len(self.events.publications(BARRIER))
        await self.broker.publish(BARRIER, MapWrite(key="b", data=b"{}"), MapOptions())
        await self.events.wait_publications(before + 1, BARRIER)


@asynccontextmanager
async def memory_env(request: pytest.FixtureRequest) -> AsyncIterator[MapEnv]:
    from .conftest import Recorder

    clock = FakeClock()
    broker = MemoryMapBroker(clock, cleanup_interval=0)  # the test runs the cleanup

    async def cleanup() -> int:
        return broker.cleanup()

    events = Recorder()
    await broker.start(events)
    await broker.subscribe(BARRIER)
    try:
        yield MapEnv("memory", broker, events, clock=clock, cleanup=cleanup)
    finally:
        await broker.close()


MapEnvFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[MapEnv]]

#: every map broker the contract runs on
MAP_BROKERS: dict[str, MapEnvFactory] = {"memory": memory_env, "redis": redis_env, "redis-cluster": redis_cluster_env}
MAP_BROKER_MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "redis": (pytest.mark.redis,),
    "redis-cluster": (pytest.mark.redis,),
}


@pytest.fixture(params=[pytest.param(name, marks=MAP_BROKER_MARKS.get(name, ())) for name in MAP_BROKERS])
async def map_broker(request: pytest.FixtureRequest) -> AsyncIterator[MapEnv]:
    async with MAP_BROKERS[request.param](request) as env:
        yield env
