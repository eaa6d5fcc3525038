"""A stream that lost its newest publications hands their offsets out again: never a silent gap.

After a failover that lost writes not yet replicated (or a restart from an older
snapshot) the stream's top is below offsets subscribers already have, and the next
publication reuses one of them in the same epoch. Without care a positioned subscriber
would drop it as a duplicate. Here the loss is made exactly, on a real redis-server
(the newest entry deleted and the top moved back, as a replica that missed the last
write would have them); the broker must give the stream a new epoch and the node must
tell its subscribers (``recovered: false``), which the issue-9 checker verifies.
"""

from __future__ import annotations

from typing import Any

import pytest
from cent import AsyncClient
from redis.asyncio import Redis

from tests.conftest import API_KEY, Running, eventually
from tests.faults.checker import Received, Subscribed, replay
from tests.faults.test_recovery_faults import Audience, Publisher
from trunkline.broker.base import HistoryQuery, Publication, PublishOptions
from trunkline.broker.redis import RedisBroker

from .conftest import Recorder

pytestmark = pytest.mark.redis

HISTORY = PublishOptions(history_size=100, history_ttl=60.0)


async def lose_newest(client: Redis, prefix: str, channel: str) -> None:
    """What a promoted replica that missed the last write holds: one entry fewer, the top one lower."""
    top = int(await client.hget(f"{prefix}.meta.{channel}", "s"))
    await client.xdel(f"{prefix}.stream.{channel}", f"{top}-0")
    await client.execute_command("XSETID", f"{prefix}.stream.{channel}", f"{top - 1}-0")  # as if never written
    await client.hset(f"{prefix}.meta.{channel}", "s", top - 1)


async def test_the_broker_starts_a_new_epoch_when_an_offset_comes_twice(redis_url: str, prefix: str) -> None:
    broker = RedisBroker(redis_url, prefix, io_timeout=2.0)
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe("c")
        first = [await broker.publish("c", Publication(data=b'{"n":%d}' % n), HISTORY) for n in range(3)]
        await events.wait(3, "pub", "c")
        await lose_newest(broker.client, prefix, "c")
        again = await broker.publish("c", Publication(data=b'{"n":9}'), HISTORY)
        assert again is not None and first[2] is not None
        assert (again.offset, again.epoch) == (first[2].offset, first[2].epoch), "offset 3 handed out twice"
        await events.wait(1, "resync")  # the node is asked to check its positions
        _, top = await broker.history("c", HistoryQuery(limit=0))
        assert top.epoch != first[2].epoch, "the stream has a new epoch"
        assert top.offset == again.offset
        # an exact duplicate on the feed (same offset, same record) is not a reuse
        assert len(events.of("resync")) == 1
    finally:
        await broker.close()


async def test_subscribers_are_told_when_a_lost_offset_is_reused(
    redis_url: str, prefix: str, start_server: Any
) -> None:
    server: Running = await start_server(
        {"engine": {"type": "redis", "redis": {"address": redis_url, "prefix": prefix}}}
    )
    audience = Audience(server.ws_url)
    await audience.connect()
    try:
        subs = await audience.subscribe("reuse")
        async with AsyncClient(server.api_url, API_KEY) as api:
            publisher = Publisher(api)
            for _ in range(3):
                assert await publisher.publish("reuse") is not None
            acks = publisher.acks["reuse"]
            await eventually(lambda: all(len(s.events) >= 4 for s in subs))  # subscribed + 3 publications
            client = Redis.from_url(redis_url)
            try:
                await lose_newest(client, prefix, "reuse")
            finally:
                await client.aclose()
            reused = await publisher.publish("reuse")
            assert reused is not None and reused.offset == acks[2].offset, "the lost offset is handed out again"
            for _ in range(3):
                assert await publisher.publish("reuse") is not None
            acks = publisher.acks["reuse"]
        assert await audience.settle(subs, acks)
        for sub in subs:
            outcome = replay(acks, sub.events, publisher.attempted)
            # The checker takes offsets as unique in an epoch; the reused one is the only one it may
            # not place, and it must be covered by a "not recovered" resubscribe that came after it.
            assert [m.pid for m in outcome.missing] in ([], [reused.pid]), outcome.problems
            received = [e.pid for e in sub.events if isinstance(e, Received)]
            assert received[:3] == [a.pid for a in acks[:3]], "the publications before the loss, in order"
            last_before = next(i for i, e in enumerate(sub.events) if isinstance(e, Received) and e.pid == acks[2].pid)
            told = [e for e in sub.events[last_before:] if isinstance(e, Subscribed) and e.unrecovered]
            assert told, "told: a resubscribe that did not recover, after the reused offset"
            assert told[0].epoch != reused.epoch, "onto the stream's new epoch"
            after = {a.pid for a in acks if a.epoch == told[0].epoch and a.offset > told[0].offset}
            assert set(received) >= after, "and every one after the position it was told"
    finally:
        await audience.close()
