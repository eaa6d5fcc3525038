"""One contract for every broker and presence implementation (memory and Redis).

The Redis runs need a redis-server (see conftest); delivery there is asynchronous,
so every check of what the handler got waits for it. Time: the memory broker runs
on an injected clock and expires by ``sweep()``, so its expiry checks are exact;
Redis expires in real time, so its runs use short ttls and poll (bounded) for the
expired state, and check key ttls with PTTL where "not yet" matters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from trunkline.broker.base import (
    Broker,
    ClientInfo,
    HistoryQuery,
    PresenceManager,
    Publication,
    PublishOptions,
    StreamPosition,
)
from trunkline.broker.memory import MemoryBroker, MemoryPresence
from trunkline.broker.redis import RedisBroker, RedisPresence
from trunkline.broker.redis_topology import make_cluster_client
from trunkline.hub.recovery import Recovery, decide

from .conftest import Recorder, delete_keys
from .fake_clock import FakeClock

HISTORY = PublishOptions(history_size=100, history_ttl=60.0)
HUGE = [2**63 - 1, 2**63, 2**64 - 1]  # valid uint64 client offsets past Lua's (and int64's) exact range


@dataclass
class Env:
    kind: str
    broker: Broker
    presence: PresenceManager
    events: Recorder
    clock: FakeClock | None = None
    prefix: str = ""

    @property
    def memory(self) -> MemoryBroker:
        assert isinstance(self.broker, MemoryBroker)
        return self.broker

    @property
    def redis(self) -> Redis:
        assert isinstance(self.broker, RedisBroker)
        return self.broker.client

    def key(self, kind: str, channel: str) -> str:
        if self.kind == "redis-cluster":
            channel = f"{{{channel}}}"  # the hash tag that keeps a channel's keys in one slot
        return f"{self.prefix}.{kind}.{channel}"

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the broker: the fake clock and a sweep (memory), real time (Redis)."""
        if self.clock is not None:
            self.clock.now += seconds
            self.memory.sweep()
        else:
            await asyncio.sleep(seconds)

    async def eventually(self, check: Callable[[], Awaitable[bool]], after: float) -> None:
        """``check`` holds once ``after`` seconds have passed (memory: exactly then; Redis: polled, bounded)."""
        if self.clock is not None:
            await self.advance(after)
            assert await check()
            return
        deadline = time.monotonic() + after + 5.0
        while not await check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)

    async def settled(self) -> None:
        """Every event published so far has reached the handler (a control message comes after them).

        In a cluster each channel's messages leave from its slot's master, and only the
        messages of one origin keep their order: the barrier is sent through every master.
        """
        before = len(self.events.of("control"))
        if self.kind != "redis-cluster":
            await self.broker.publish_control(b"barrier")
            await self.events.wait(before + 1, "control")
            return
        cluster = cast("RedisCluster", self.redis)
        primaries = cluster.get_primaries()
        for node in primaries:
            await cluster.execute_command("PUBLISH", f"{self.prefix}.control", b"barrier", target_nodes=node)
        await self.events.wait(before + len(primaries), "control")


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
async def env(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Env]:
    events = Recorder()
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryBroker(clock=clock, sweep_interval=3600.0)  # the test sweeps
        await memory.start(events)
        yield Env("memory", memory, MemoryPresence(), events, clock=clock)
        await memory.close()
        return
    if request.param == "redis-cluster":
        seeds = request.getfixturevalue("redis_cluster").seeds
        client = make_cluster_client(seeds, io_timeout=2.0)
        broker = RedisBroker.from_client(client, prefix=prefix, io_timeout=2.0, owns_client=True)
    else:
        broker = RedisBroker(request.getfixturevalue("redis_url"), prefix=prefix, io_timeout=2.0)
    await broker.start(events)
    try:
        presence = RedisPresence.from_client(broker.client, prefix=prefix)
        yield Env(request.param, broker, presence, events, prefix=prefix)
    finally:
        await delete_keys(broker.client, prefix)
        await broker.close()


def pub(n: int) -> Publication:
    return Publication(data=b'{"n":%d}' % n)


def stored(n: int, offset: int, epoch: str) -> Publication:
    """``pub(n)`` as the broker keeps and delivers it: with its stream position."""
    return msgspec.structs.replace(pub(n), offset=offset, epoch=epoch)


async def publish_many(env: Env, channel: str, count: int, options: PublishOptions = HISTORY) -> list[StreamPosition]:
    positions = []
    for n in range(1, count + 1):
        position = await env.broker.publish(channel, pub(n), options)
        assert position is not None
        positions.append(position)
    return positions


async def offsets(env: Env, channel: str, query: HistoryQuery | None = None) -> list[int]:
    publications, _ = await env.broker.history(channel, query or HistoryQuery())
    return [p.offset for p in publications]


# --- publish and offsets ----------------------------------------------------


async def test_publish_without_history_has_no_offset(env: Env) -> None:
    await env.broker.subscribe("plain")
    assert await env.broker.publish("plain", pub(1), PublishOptions()) is None
    assert await env.events.wait_publications(1) == [pub(1)], "no offset, no epoch"
    publications, position = await env.broker.history("plain", HistoryQuery())
    assert publications == []
    assert position.offset == 0
    assert position.epoch


async def test_history_size_or_ttl_zero_means_no_history(env: Env) -> None:
    assert await env.broker.publish("c", pub(1), PublishOptions(history_size=10)) is None
    assert await env.broker.publish("c", pub(2), PublishOptions(history_ttl=10.0)) is None
    publications, position = await env.broker.history("c", HistoryQuery())
    assert (publications, position.offset) == ([], 0)


async def test_offsets_grow_by_one_within_one_epoch(env: Env) -> None:
    positions = await publish_many(env, "c", 5)
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1
    publications, position = await env.broker.history("c", HistoryQuery())
    assert position == positions[-1]
    assert publications == [stored(n, n, position.epoch) for n in range(1, 6)]


async def test_the_stream_position_is_set_on_the_delivered_and_stored_records(env: Env) -> None:
    await env.broker.subscribe("c")
    first = await env.broker.publish("c", pub(7), HISTORY)
    await env.broker.publish("c", Publication(data=b""), HISTORY)
    assert first is not None
    epoch = first.epoch
    expected = [stored(7, 1, epoch), Publication(data=b"", offset=2, epoch=epoch)]
    assert await env.events.wait_publications(2, "c") == expected
    publications, _ = await env.broker.history("c", HistoryQuery())
    assert publications == expected


async def test_every_field_of_a_record_survives_the_broker(env: Env) -> None:
    await env.broker.subscribe("c")
    info = ClientInfo(user="u:1", client="c-1", conn_info=b'{"name":"\xc3\xa9"}', chan_info=b"\x00\xff")
    record = Publication(data=b"\x00binary\xff{", info=info, tags={"k": "v", "é": ""}, time=1_700_000_000_123)
    anonymous = Publication(data=b"{}", info=ClientInfo(user="", client="c-2"))
    position = await env.broker.publish("c", record, HISTORY)
    await env.broker.publish("c", anonymous, HISTORY)
    await env.broker.publish("c", record, PublishOptions())
    assert position is not None
    expected = [
        msgspec.structs.replace(record, offset=1, epoch=position.epoch),
        msgspec.structs.replace(anonymous, offset=2, epoch=position.epoch),
        record,
    ]
    assert await env.events.wait_publications(3, "c") == expected
    publications, _ = await env.broker.history("c", HistoryQuery())
    assert publications == expected[:2]


async def test_channels_have_their_own_streams(env: Env) -> None:
    a = await publish_many(env, "a", 3)
    b = await publish_many(env, "b", 1)
    assert [p.offset for p in a] == [1, 2, 3]
    assert [p.offset for p in b] == [1]
    assert a[0].epoch != b[0].epoch


async def test_unknown_channel_gets_a_stable_epoch(env: Env) -> None:
    publications, first = await env.broker.history("new", HistoryQuery())
    assert publications == []
    assert first.offset == 0
    assert first.epoch
    _, again = await env.broker.history("new", HistoryQuery(limit=0))
    assert again == first
    position = await env.broker.publish("new", pub(1), HISTORY)
    assert position == StreamPosition(1, first.epoch)


async def test_unicode_channel_names(env: Env) -> None:
    channel = "chat:комната#42"
    await env.broker.subscribe(channel)
    position = await env.broker.publish(channel, pub(1), HISTORY)
    assert position is not None
    assert position.offset == 1
    assert await env.events.wait_publications(1, channel) == [stored(1, 1, position.epoch)]
    assert await offsets(env, channel) == [1]


# --- history queries ----------------------------------------------------------

ALL = list(range(1, 11))
QUERIES = [
    pytest.param(None, None, False, ALL, id="all"),
    pytest.param(-1, None, False, ALL, id="negative-limit-is-all"),
    pytest.param(3, None, False, [1, 2, 3], id="limit"),
    pytest.param(0, None, False, [], id="limit-0-position-only"),
    pytest.param(0, 4, True, [], id="limit-0-ignores-since"),
    pytest.param(None, 4, False, [5, 6, 7, 8, 9, 10], id="since"),
    pytest.param(2, 4, False, [5, 6], id="since-limit"),
    pytest.param(None, 0, False, ALL, id="since-0"),
    pytest.param(None, 9, False, [10], id="since-below-top"),
    pytest.param(None, 10, False, [], id="since-top"),
    pytest.param(None, 20, False, [], id="since-beyond-top"),
    pytest.param(None, None, True, ALL[::-1], id="reverse"),
    pytest.param(3, None, True, [10, 9, 8], id="reverse-limit"),
    pytest.param(None, 4, True, [3, 2, 1], id="reverse-since"),
    pytest.param(2, 4, True, [3, 2], id="reverse-since-limit"),
    pytest.param(None, 0, True, ALL[::-1], id="reverse-since-0-is-from-top"),
    pytest.param(None, 1, True, [], id="reverse-since-1"),
    pytest.param(None, 10, True, ALL[:-1][::-1], id="reverse-since-top"),
    pytest.param(None, 11, True, ALL[::-1], id="reverse-since-just-beyond-top"),
    pytest.param(None, 20, True, ALL[::-1], id="reverse-since-beyond-top"),
    *(pytest.param(None, h, False, [], id=f"since-{h}") for h in HUGE),
    *(pytest.param(3, h, False, [], id=f"since-{h}-limit") for h in HUGE),
    *(pytest.param(None, h, True, ALL[::-1], id=f"reverse-since-{h}") for h in HUGE),
    *(pytest.param(2, h, True, [10, 9], id=f"reverse-since-{h}-limit") for h in HUGE),
]


@pytest.mark.parametrize(("limit", "since", "reverse", "expected"), QUERIES)
async def test_history_query(
    env: Env, limit: int | None, since: int | None, reverse: bool, expected: list[int]
) -> None:
    top = (await publish_many(env, "c", 10))[-1]
    query = HistoryQuery(
        limit=limit, since=None if since is None else StreamPosition(since, top.epoch), reverse=reverse
    )
    publications, position = await env.broker.history("c", query)
    assert position == top
    assert publications == [stored(n, n, top.epoch) for n in expected]


@pytest.mark.parametrize("since", HUGE)
async def test_an_offset_past_int64_gets_an_answer_never_an_error(env: Env, since: int) -> None:
    """Issue 9 item 10: a uint64 recovery offset the stream never reached is simply "nothing newer"."""
    top = (await publish_many(env, "c", 3))[-1]
    for epoch in (top.epoch, "", "other"):
        position = StreamPosition(since, epoch)
        for limit in (None, 0, 1, 1000):
            publications, got = await env.broker.history("c", HistoryQuery(limit=limit, since=position))
            assert (publications, got) == ([], top)
        # as recovery reads it: not recovered (the client is ahead of the stream), never an error
        publications, got = await env.broker.history("c", HistoryQuery(limit=100, since=position, history_meta_ttl=60))
        assert decide(position, publications, got) == Recovery(False, [])
    # a stream without publications, read and created at such an offset
    publications, empty = await env.broker.history("fresh", HistoryQuery(since=StreamPosition(since, "")))
    assert publications == []
    assert empty.offset == 0
    assert empty.epoch
    publications, again = await env.broker.history(
        "fresh", HistoryQuery(since=StreamPosition(since, empty.epoch), reverse=True)
    )
    assert (publications, again) == ([], empty)
    # and the stream carries on normally afterwards
    assert await env.broker.publish("c", pub(4), HISTORY) == StreamPosition(4, top.epoch)
    assert await offsets(env, "c", HistoryQuery(since=StreamPosition(3, top.epoch))) == [4]


async def test_history_is_trimmed_to_its_size(env: Env) -> None:
    options = PublishOptions(history_size=3, history_ttl=60.0)
    await publish_many(env, "c", 5, options)
    publications, position = await env.broker.history("c", HistoryQuery())
    assert [p.offset for p in publications] == [3, 4, 5]
    assert position.offset == 5


# --- expiry -------------------------------------------------------------------


async def test_history_expires_ttl_after_the_last_publish(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=1.0)
    first = await env.broker.publish("c", pub(1), options)
    assert first is not None
    await env.advance(0.5)
    await env.broker.publish("c", pub(2), options)
    await env.advance(0.6)  # 1.1 s after the first, 0.6 s after the last
    assert await offsets(env, "c") == [1, 2]

    async def expired() -> bool:
        return await offsets(env, "c") == []

    await env.eventually(expired, after=0.5)
    _, position = await env.broker.history("c", HistoryQuery())
    assert position == StreamPosition(2, first.epoch), "the position outlives the publications"
    assert await env.broker.publish("c", pub(3), options) == StreamPosition(3, first.epoch)


async def test_expired_metadata_starts_a_new_epoch(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=0.2, history_meta_ttl=0.4)
    old = (await publish_many(env, "c", 2, options))[-1]

    async def new_stream() -> bool:
        publications, position = await env.broker.history("c", HistoryQuery())
        return not publications and position.offset == 0 and position.epoch != old.epoch

    await env.eventually(new_stream, after=0.5)
    _, position = await env.broker.history("c", HistoryQuery())
    assert await env.broker.publish("c", pub(1), options) == StreamPosition(1, position.epoch)


async def test_history_reads_keep_the_metadata_alive(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=60.0, history_meta_ttl=1.0)
    first = await env.broker.publish("c", pub(1), options)
    for _ in range(4):  # 1.2 s in all
        await env.advance(0.3)
        _, position = await env.broker.history("c", HistoryQuery(limit=0, history_meta_ttl=1.0))
        assert position == first


async def test_remove_history_keeps_the_position(env: Env) -> None:
    top = (await publish_many(env, "c", 3))[-1]
    await env.broker.remove_history("c")
    publications, position = await env.broker.history("c", HistoryQuery())
    assert publications == []
    assert position == top
    assert await env.broker.publish("c", pub(4), HISTORY) == StreamPosition(4, top.epoch)
    assert await offsets(env, "c") == [4]
    await env.broker.remove_history("never-published")


# --- placeholder streams (issue 9 item 6) -------------------------------------------

PLACEHOLDER_TTL = 0.3
SUBSCRIBE_READ = HistoryQuery(limit=0, history_meta_ttl=720 * 3600.0, placeholder_ttl=PLACEHOLDER_TTL)


async def stream_exists(env: Env, channel: str) -> bool:
    """Whether the broker holds any state for ``channel``'s stream (looked at without reading it)."""
    if env.kind == "memory":
        return channel in env.memory._streams
    return bool(await env.redis.exists(env.key("meta", channel), env.key("stream", channel)))


async def test_a_read_of_a_new_channel_creates_a_short_lived_placeholder(env: Env) -> None:
    publications, first = await env.broker.history("new", SUBSCRIBE_READ)
    assert publications == []
    assert first.offset == 0
    assert first.epoch
    _, again = await env.broker.history("new", HistoryQuery(limit=0))  # no ttl: leaves the expiry alone
    assert again == first, "the epoch is fixed while the placeholder lives"
    if env.kind == "memory":
        assert env.memory.num_streams == 1
    else:
        assert 0 < await env.redis.pttl(env.key("meta", "new")) <= PLACEHOLDER_TTL * 1000
        assert not await env.redis.exists(env.key("stream", "new"))

    async def gone() -> bool:
        return not await stream_exists(env, "new")

    await env.eventually(gone, after=PLACEHOLDER_TTL + 0.05)
    if env.kind == "memory":
        assert env.memory.num_streams == 0
    _, later = await env.broker.history("new", SUBSCRIBE_READ)
    assert later.offset == 0
    assert later.epoch != first.epoch, "a new placeholder, a new epoch"


async def test_reading_a_placeholder_again_extends_it(env: Env) -> None:
    _, first = await env.broker.history("new", SUBSCRIBE_READ)
    if env.kind == "memory":
        for _ in range(5):  # 0.2 s apart: each read renews the 0.3 s
            await env.advance(0.2)
            _, position = await env.broker.history("new", SUBSCRIBE_READ)
            assert position == first
        await env.advance(PLACEHOLDER_TTL + 0.01)
        assert env.memory.num_streams == 0
    else:
        meta = env.key("meta", "new")
        await env.redis.pexpire(meta, 50)  # as if most of its life had passed
        _, position = await env.broker.history("new", SUBSCRIBE_READ)
        assert position == first
        assert 50 < await env.redis.pttl(meta) <= PLACEHOLDER_TTL * 1000


async def test_a_publication_gives_a_placeholder_the_full_metadata_ttl(env: Env) -> None:
    _, placeholder = await env.broker.history("c", SUBSCRIBE_READ)
    options = PublishOptions(history_size=10, history_ttl=60.0, history_meta_ttl=60.0)
    assert await env.broker.publish("c", pub(1), options) == StreamPosition(1, placeholder.epoch), (
        "the publication continues the stream the read created"
    )
    # Subscribe reads of a stream with publications extend it by the metadata ttl, not the placeholder's.
    _, position = await env.broker.history("c", dataclasses.replace(SUBSCRIBE_READ, history_meta_ttl=60.0))
    assert position == StreamPosition(1, placeholder.epoch)
    if env.kind == "memory":
        await env.advance(30.0)
        assert env.memory.num_streams == 1
        _, position = await env.broker.history("c", HistoryQuery(limit=0))
        assert position == StreamPosition(1, placeholder.epoch)
        await env.advance(30.1)
        assert env.memory.num_streams == 0
    else:
        assert PLACEHOLDER_TTL * 1000 < 59_000 < await env.redis.pttl(env.key("meta", "c")) <= 60_000


async def test_a_publication_without_metadata_ttl_makes_a_placeholder_permanent(env: Env) -> None:
    _, placeholder = await env.broker.history("c", SUBSCRIBE_READ)
    await env.broker.publish("c", pub(1), PublishOptions(history_size=10, history_ttl=60.0))
    if env.kind == "memory":
        await env.advance(10 * 24 * 3600.0)
        assert env.memory.num_streams == 1
    else:
        assert await env.redis.pttl(env.key("meta", "c")) == -1, "no expiry"
    _, position = await env.broker.history("c", HistoryQuery(limit=0))
    assert position == StreamPosition(1, placeholder.epoch)


async def test_subscribe_reads_of_many_channels_leave_no_lasting_state(env: Env) -> None:
    """Issue 9 item 6: 20 000 distinct channels read at subscribe leave nothing that outlives the placeholder ttl."""
    count = 4_000 if env.kind == "redis-cluster" else 20_000  # the cluster: the same checks, spread over 3 masters
    ttl = 120.0  # Redis: long enough to inspect every key before any expires
    query = dataclasses.replace(SUBSCRIBE_READ, placeholder_ttl=ttl)
    for start in range(0, count, 1000):
        replies = await asyncio.gather(*(env.broker.history(f"s{i}", query) for i in range(start, start + 1000)))
        assert all(not pubs and top.offset == 0 and top.epoch for pubs, top in replies)
    if env.kind == "memory":
        memory = env.memory
        assert memory.num_streams == count
        await env.advance(ttl - 1.0)
        assert memory.num_streams == count
        await env.advance(1.01)
        assert memory.num_streams == 0
        assert memory._heap == [], "nothing left to sweep either"
        return
    client = env.redis
    keys = [key async for key in client.scan_iter(match=f"{env.prefix}.*", count=5000)]
    assert len(keys) == count
    assert all(key.startswith(f"{env.prefix}.meta.".encode()) for key in keys), "a read creates no stream"
    async with client.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.pttl(key)
        ttls = await pipeline.execute()
    assert all(0 < t <= ttl * 1000 for t in ttls), "every key expires within the placeholder ttl"


# --- active expiry (memory; issue 9 item 5) ------------------------------------------


def test_expired_history_frees_its_memory_without_reads() -> None:
    """600 channels × 60 KB with history_ttl 2 s: the sweep frees them; nobody reads the channels."""
    clock = FakeClock()
    broker = MemoryBroker(clock=clock, sweep_interval=3600.0)  # not started: no loop, no handler
    options = PublishOptions(history_size=10, history_ttl=2.0, history_meta_ttl=30.0)
    size = 60_000
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(600):
            broker.publish_now(f"ch{n}", Publication(data=(b"%05d" % n) * (size // 5)), options)
        held = tracemalloc.get_traced_memory()[0] - baseline
        assert held > 600 * size
        streams = broker._streams
        clock.now += 1.99
        broker.sweep()
        assert all(s.items for s in streams.values()), "not expired before the ttl"
        clock.now += 0.02
        broker.sweep()
        assert broker.num_streams == 600, "the positions stay (metadata ttl 30 s)"
        assert all(not s.items for s in streams.values())
        freed = tracemalloc.get_traced_memory()[0] - baseline
        assert freed < 1_000_000, f"{freed} bytes still held after the sweep (from {held})"
        clock.now += 28.0
        broker.sweep()
        assert broker.num_streams == 0, "streams whose metadata expired are removed"
        assert broker._heap == []
        assert tracemalloc.get_traced_memory()[0] - baseline < 200_000
    finally:
        tracemalloc.stop()
    _, position = broker.history_now("ch0", HistoryQuery())
    assert position.offset == 0


def test_the_sweep_heap_holds_one_deadline_per_stream() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock, sweep_interval=3600.0)
    options = PublishOptions(history_size=5, history_ttl=2.0, history_meta_ttl=30.0)
    for step in range(1000):
        clock.now += 0.01
        broker.publish_now(f"c{step % 3}", pub(step), options)
        broker.history_now(f"c{step % 3}", HistoryQuery(limit=0, history_meta_ttl=30.0))
    assert len(broker._heap) <= 3 * 2
    clock.now += 1.9
    broker.sweep()
    assert all(s.items for s in broker._streams.values()), "the ttl counts from the last publication"
    clock.now += 0.2
    broker.sweep()
    assert all(not s.items for s in broker._streams.values())
    assert broker.num_streams == 3
    assert len(broker._heap) == 3, "each stream is due once more: its metadata"


# --- idempotent publishing (issue 9 item 4) --------------------------------------------


def keyed(key: str, ttl: float = 60.0, options: PublishOptions = HISTORY) -> PublishOptions:
    return dataclasses.replace(options, idempotency_key=key, idempotent_result_ttl=ttl)


async def test_a_repeated_idempotency_key_publishes_once(env: Env) -> None:
    for channel in ("c", "d"):
        await env.broker.subscribe(channel)
    first = await env.broker.publish("c", pub(1), keyed("k"))
    assert first is not None
    assert await env.broker.publish("c", pub(2), keyed("k")) == first, "the first result, nothing published"
    assert await env.broker.publish("c", pub(3), keyed("other")) == StreamPosition(2, first.epoch)
    d = await env.broker.publish("d", pub(4), keyed("k"))
    assert d is not None
    assert d.offset == 1, "keys are per channel"
    assert await env.broker.publish("c", pub(5), HISTORY) == StreamPosition(3, first.epoch)
    assert await env.broker.publish("c", pub(6), keyed("k")) == first
    await env.settled()
    epoch = first.epoch
    assert env.events.publications("c") == [stored(1, 1, epoch), stored(3, 2, epoch), stored(5, 3, epoch)]
    assert env.events.publications("d") == [stored(4, 1, d.epoch)]
    publications, _ = await env.broker.history("c", HistoryQuery())
    assert publications == env.events.publications("c")


async def test_idempotency_keys_do_not_collide_across_channels(env: Env) -> None:
    """Channel and key are kept apart: ("a.b", "c") and ("a", "b.c") are two different publishes."""
    first = await env.broker.publish("a.b", pub(1), keyed("c"))
    second = await env.broker.publish("a", pub(2), keyed("b.c"))
    assert first is not None
    assert second is not None
    assert second.offset == 1
    assert second.epoch != first.epoch
    assert await offsets(env, "a") == [1]


async def test_an_idempotent_result_is_forgotten_after_its_ttl(env: Env) -> None:
    await env.broker.subscribe("c")
    ttl = 0.2
    first = await env.broker.publish("c", pub(1), keyed("k", ttl))
    assert first is not None
    assert await env.broker.publish("c", pub(1), keyed("k", ttl)) == first
    if env.kind == "memory":
        await env.advance(ttl - 0.01)
        assert await env.broker.publish("c", pub(1), keyed("k", ttl)) == first, "still within the ttl"
    published: list[StreamPosition | None] = []

    async def published_again() -> bool:
        position = await env.broker.publish("c", pub(1), keyed("k", ttl))
        published.append(position)
        return position != first

    await env.eventually(published_again, after=ttl + 0.02)
    assert published[-1] == StreamPosition(2, first.epoch)
    assert all(p == first for p in published[:-1]), "every repeat within the ttl published nothing"
    assert await offsets(env, "c") == [1, 2]
    await env.settled()
    assert [p.offset for p in env.events.publications("c")] == [1, 2]


async def test_idempotency_without_history(env: Env) -> None:
    await env.broker.subscribe("plain")
    options = PublishOptions(idempotency_key="k", idempotent_result_ttl=60.0)
    assert await env.broker.publish("plain", pub(1), options) is None
    assert await env.broker.publish("plain", pub(2), options) is None
    assert await env.broker.publish("plain", pub(3), dataclasses.replace(options, idempotency_key="k2")) is None
    await env.settled()
    assert env.events.publications("plain") == [pub(1), pub(3)]
    publications, position = await env.broker.history("plain", HistoryQuery())
    assert (publications, position.offset) == ([], 0)


async def test_an_idempotency_key_with_ttl_zero_is_not_remembered(env: Env) -> None:
    first = await env.broker.publish("c", pub(1), keyed("k", 0.0))
    second = await env.broker.publish("c", pub(2), keyed("k", 0.0))
    assert first is not None
    assert second == StreamPosition(2, first.epoch)


# --- delivery to the handler ------------------------------------------------------


async def test_publications_arrive_in_offset_order(env: Env) -> None:
    await env.broker.subscribe("c")
    positions = await asyncio.gather(*(env.broker.publish("c", pub(n), HISTORY) for n in range(50)))
    assert sorted(p.offset for p in positions if p is not None) == list(range(1, 51))
    received = await env.events.wait_publications(50, "c")
    assert [p.offset for p in received] == list(range(1, 51))
    assert {p.epoch for p in received} == {p.epoch for p in positions if p is not None}
    assert sorted(p.data for p in received) == sorted(pub(n).data for n in range(50))


async def test_publications_joins_and_leaves_of_a_channel_stay_in_order(env: Env) -> None:
    await env.broker.subscribe("c")
    expected: list[tuple[str, str, object]] = []
    for n in range(1, 21):
        if n % 3 == 0:
            await env.broker.publish_join("c", b'{"user":"%d"}' % n)
            expected.append(("join", "c", b'{"user":"%d"}' % n))
        elif n % 3 == 1:
            position = await env.broker.publish("c", pub(n), HISTORY)
            assert position is not None
            expected.append(("pub", "c", stored(n, position.offset, position.epoch)))
        else:
            await env.broker.publish_leave("c", b'{"user":"%d"}' % n)
            expected.append(("leave", "c", b'{"user":"%d"}' % n))
    assert await env.events.wait(20, channel="c") == expected


async def test_join_leave_and_control_are_delivered(env: Env) -> None:
    await env.broker.subscribe("room")
    await env.broker.publish_join("room", b'{"user":"u1","client":"c1"}')
    await env.broker.publish_leave("room", b'{"user":"u1","client":"c1"}')
    await env.broker.publish_control(b"\x00control\xff")
    events = await env.events.wait(3)
    if env.kind == "redis-cluster":  # control leaves from another node than the room's messages: no order between them
        events = sorted(events, key=lambda e: e[0] == "control")
    assert events == [
        ("join", "room", b'{"user":"u1","client":"c1"}'),
        ("leave", "room", b'{"user":"u1","client":"c1"}'),
        ("control", "", b"\x00control\xff"),
    ]


async def test_subscribe_and_unsubscribe_are_idempotent_per_call(env: Env) -> None:
    await env.broker.subscribe("a")
    await env.broker.unsubscribe("a")
    await env.broker.unsubscribe("a")
    await env.broker.subscribe("a")
    await env.broker.publish("a", pub(1), PublishOptions())
    assert await env.events.wait_publications(1, "a") == [pub(1)]


# --- presence -----------------------------------------------------------------------


async def test_presence_add_remove_and_stats(env: Env) -> None:
    presence = env.presence
    assert await presence.presence("room") == {}
    assert await presence.presence_stats("room") == (0, 0)
    await presence.add_presence("room", "c1", "u1", b'{"user":"u1","client":"c1"}', 60.0)
    await presence.add_presence("room", "c2", "u1", b'{"user":"u1","client":"c2"}', 60.0)
    await presence.add_presence("room", "c3", "u2", b'{"user":"u2","client":"c3"}', 60.0)
    await presence.add_presence("room", "c4", "", b'{"user":"","client":"c4"}', 60.0)
    assert await presence.presence("room") == {
        "c1": b'{"user":"u1","client":"c1"}',
        "c2": b'{"user":"u1","client":"c2"}',
        "c3": b'{"user":"u2","client":"c3"}',
        "c4": b'{"user":"","client":"c4"}',
    }
    assert await presence.presence_stats("room") == (4, 3), "anonymous '' counts as a user"
    await presence.remove_presence("room", "c2")
    assert await presence.presence_stats("room") == (3, 3)
    await presence.remove_presence("room", "c1")
    assert await presence.presence_stats("room") == (2, 2)
    await presence.remove_presence("room", "unknown")
    await presence.remove_presence("empty", "unknown")
    assert await presence.presence("other") == {}


async def test_presence_add_again_replaces_the_entry(env: Env) -> None:
    await env.presence.add_presence("room", "c1", "u1", b'{"v":1}', 60.0)
    await env.presence.add_presence("room", "c1", "u2", b'{"v":2}', 60.0)
    assert await env.presence.presence("room") == {"c1": b'{"v":2}'}
    assert await env.presence.presence_stats("room") == (1, 1)


async def test_presence_keeps_bytes_and_names_intact(env: Env) -> None:
    info = b'12:{"user":"a:b","x":"\\u00e9"}'
    await env.presence.add_presence("чат", "клиент", "a:b", info, 60.0)
    await env.presence.add_presence("чат", "c2", "3:ab", b"", 60.0)
    await env.presence.add_presence("чат", "c3", "Юзер", b"{}", 60.0)
    assert await env.presence.presence("чат") == {"клиент": info, "c2": b"", "c3": b"{}"}
    assert await env.presence.presence_stats("чат") == (3, 3)


PRESENCE_CYCLES = 5_000


async def test_join_leave_cycles_issued_without_waiting_leave_no_entry(env: Env) -> None:
    """Issue 9 item 8: each remove is issued a loop turn after its add, without awaiting it; none overtakes."""
    presence = env.presence
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    def leave(client_id: str) -> None:
        tasks.append(loop.create_task(presence.remove_presence("room", client_id)))

    for batch in range(0, PRESENCE_CYCLES, 500):
        for i in range(batch, batch + 500):
            client_id = f"client-{i}"
            tasks.append(loop.create_task(presence.add_presence("room", client_id, f"u{i % 10}", b"{}", 60.0)))
            loop.call_soon(leave, client_id)  # the next loop turn: another pipeline, another connection
        await asyncio.gather(*tasks)  # the adds; the removes join the list meanwhile
        await asyncio.gather(*tasks)  # and the removes
        tasks.clear()
    assert await presence.presence("room") == {}
    assert await presence.presence_stats("room") == (0, 0)
    if env.kind != "memory":
        assert await env.redis.exists(env.key("presence.data", "room"), env.key("presence.expire", "room")) == 0
        assert isinstance(presence, RedisPresence)
        assert presence._tails == {}, "no ordering state is left behind"
