"""Retained messages: one behaviour suite for the memory store and the Redis store.

The Redis store runs against a real redis-server (the session's ``redis_url``);
every store gets a key prefix of its own. Time is a manual clock: expiry needs no
sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.broker.conftest import free_port
from tests.manual_clock import ManualClock
from trunkline.broker.redis import RedisUnavailable
from trunkline.mqtt.filters import matches
from trunkline.mqtt.retained import (
    MemoryRetained,
    RedisRetained,
    Retained,
    RetainedFull,
    RetainedLimits,
    RetainedMessage,
    RetainedStore,
    decode_message,
    encode_message,
    expiry_deadline,
    stored_size,
)
from trunkline.records import ClientInfo

Factory = Callable[..., Awaitable[RetainedStore]]


def msg(payload: bytes = b"x", **kw: Any) -> RetainedMessage:
    return RetainedMessage(payload, **kw)


async def _drop_prefix(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}.*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Factory]:
    """Factory: ``await make_store(limits=..., prefix=...)``; stores with one prefix share their data."""
    stores: list[RetainedStore] = []
    clients: list[tuple[Redis, str]] = []
    default_prefix = f"tltest-{uuid.uuid4().hex[:12]}"

    async def make(limits: RetainedLimits | None = None, prefix: str = default_prefix) -> RetainedStore:
        store: RetainedStore
        if request.param == "memory":
            store = MemoryRetained(limits, clock)
        else:
            url: str = request.getfixturevalue("redis_url")
            client = Redis.from_url(url)
            clients.append((client, prefix))
            store = RedisRetained.from_client(client, prefix, limits=limits, clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    for client, prefix in clients:
        await _drop_prefix(client, prefix)
        await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=1_700_000_000.0)


INFO = ClientInfo("user-1", "client-1", b'{"device":"esp32"}', None)
FULL = RetainedMessage(
    b"\x00\x01binary",
    qos=1,
    payload_format=0,
    content_type="application/octet-stream",
    response_topic="replies/dev1",
    correlation_data=b"\xff\x00",
    user_properties=(("a", "1"), ("a", "2"), ("é", "ü")),
    expires_at=None,
    info=INFO,
    time=1_700_000_000_123,
)


async def test_set_get_keeps_every_field(make_store: Factory) -> None:
    store = await make_store()
    assert await store.get("sensors/dev1/temp") is None
    await store.set("sensors/dev1/temp", FULL)
    assert await store.get("sensors/dev1/temp") == FULL
    assert await store.get("sensors/dev1") is None  # a parent level is not a topic
    assert await store.get("sensors/dev1/temp/x") is None
    assert await store.stats() == (1, stored_size("sensors/dev1/temp", encode_message(FULL)))


async def test_empty_payload_deletes(make_store: Factory) -> None:
    store = await make_store()
    await store.set("a/b", msg(b"1"))
    await store.set("a/c", msg(b"2"))
    await store.set("a/b", msg(b""))
    assert await store.get("a/b") is None
    assert [r.topic for r in await store.matching("a/#")] == ["a/c"]
    await store.set("never/set", msg(b""))  # deleting what is not there is fine
    await store.set("a/c", msg(b""))
    assert await store.stats() == (0, 0)
    assert await store.matching("#") == []


async def test_replace_keeps_one_message_and_counts_bytes(make_store: Factory) -> None:
    store = await make_store()
    await store.set("t", msg(b"short"))
    await store.set("t", msg(b"a much longer payload", qos=2))
    assert await store.get("t") == msg(b"a much longer payload", qos=2)
    assert await store.stats() == (1, stored_size("t", encode_message(msg(b"a much longer payload", qos=2))))
    await store.set("t", msg(b"s"))
    assert await store.stats() == (1, stored_size("t", encode_message(msg(b"s"))))


TOPICS = [
    "sport",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport/tennis/player2",
    "sport/",
    "sports/x",
    "sport-x/y",
    "$SYS/monitor/Clients",
    "$SYS",
    "/finance",
    "finance",
    "a//b",
    "a/$x",
    "é/ü",
]
FILTERS = [
    "#",
    "+",
    "+/+",
    "/+",
    "sport/#",
    "sport/+",
    "sport/tennis/+",
    "sport/tennis/player1/#",
    "sport/+/player1",
    "+/tennis/#",
    "$SYS/#",
    "$SYS/monitor/+",
    "+/monitor/Clients",
    "a/+/b",
    "a/#",
    "é/+",
    "finance",
    "nothing/#",
]


async def test_matching_gives_exactly_the_matching_topics(make_store: Factory) -> None:
    store = await make_store()
    for i, topic in enumerate(TOPICS):
        await store.set(topic, msg(str(i).encode()))
    for topic_filter in FILTERS:
        expected = sorted(t for t in TOPICS if matches(topic_filter, t))
        found = await store.matching(topic_filter)
        assert [r.topic for r in found] == expected, topic_filter
        for r in found:
            assert isinstance(r, Retained)
            assert r.message.payload == str(TOPICS.index(r.topic)).encode()


async def test_wildcards_skip_dollar_topics(make_store: Factory) -> None:
    store = await make_store()
    await store.set("$SYS/uptime", msg(b"1"))
    await store.set("x", msg(b"2"))
    assert [r.topic for r in await store.matching("#")] == ["x"]
    assert [r.topic for r in await store.matching("+/uptime")] == []
    assert [r.topic for r in await store.matching("$SYS/+")] == ["$SYS/uptime"]


async def test_expiry(make_store: Factory, clock: ManualClock) -> None:
    store = await make_store()
    deadline = expiry_deadline(10, clock.time())
    await store.set("e/1", msg(b"soon", expires_at=deadline))
    await store.set("e/2", msg(b"forever"))
    clock.advance(0.5)
    got = await store.get("e/1")
    assert got is not None and got.remaining_expiry(clock.time()) == 10  # 9.5 s left, rounded up
    clock.advance(4.5)
    got = await store.get("e/1")
    assert got is not None and got.remaining_expiry(clock.time()) == 5
    assert await store.get("e/2") is not None and msg().remaining_expiry(clock.time()) is None
    clock.advance(5)  # exactly at the deadline: expired
    assert await store.get("e/1") is None
    assert [r.topic for r in await store.matching("e/#")] == ["e/2"]
    assert await store.matching("e/1") == []
    # the next set drops it for good
    await store.set("e/3", msg(b"z"))
    count, _ = await store.stats()
    assert count == 2


async def test_purge(make_store: Factory, clock: ManualClock) -> None:
    store = await make_store()
    for i in range(5):
        await store.set(f"p/{i}", msg(b"x", expires_at=clock.time() + i + 1))
    clock.advance(3)
    assert await store.purge() == 3
    assert await store.stats() == (2, 2 * stored_size("p/0", encode_message(msg(b"x", expires_at=clock.time()))))
    assert [r.topic for r in await store.matching("p/+")] == ["p/3", "p/4"]


async def test_replacing_an_expiring_message_with_a_permanent_one(make_store: Factory, clock: ManualClock) -> None:
    store = await make_store()
    await store.set("t", msg(b"1", expires_at=clock.time() + 1))
    await store.set("t", msg(b"2"))
    clock.advance(5)
    await store.set("other", msg(b"3"))  # purges what expired: not "t" any more
    assert await store.get("t") == msg(b"2")
    assert (await store.stats())[0] == 2


async def test_count_limit_refuses_new_topics_and_evicts_nothing(make_store: Factory) -> None:
    store = await make_store(RetainedLimits(max_count=2))
    await store.set("a", msg(b"1"))
    await store.set("b", msg(b"2"))
    with pytest.raises(RetainedFull, match="2 messages") as info:
        await store.set("c", msg(b"3"))
    assert info.value.limit == "count"
    assert await store.get("c") is None
    assert [r.topic for r in await store.matching("#")] == ["a", "b"]
    await store.set("a", msg(b"replaced"))  # replacing is not a new topic
    assert await store.get("a") == msg(b"replaced")
    await store.set("a", msg(b""))
    await store.set("c", msg(b"3"))
    assert [r.topic for r in await store.matching("#")] == ["b", "c"]


async def test_bytes_limit(make_store: Factory) -> None:
    small = stored_size("a", encode_message(msg(b"x" * 10)))
    store = await make_store(RetainedLimits(max_bytes=small * 2))
    await store.set("a", msg(b"x" * 10))
    await store.set("b", msg(b"x" * 10))
    with pytest.raises(RetainedFull, match="bytes") as info:
        await store.set("a", msg(b"x" * 11))  # growing past the bound
    assert info.value.limit == "bytes"
    assert await store.get("a") == msg(b"x" * 10)
    await store.set("a", msg(b"x" * 5))  # shrinking always fits
    await store.set("b", msg(b"x" * 15))  # the room freed by "a"
    with pytest.raises(RetainedFull):
        await store.set("c", msg(b"x"))
    assert await store.stats() == (2, small * 2)


async def test_expired_messages_make_room(make_store: Factory, clock: ManualClock) -> None:
    store = await make_store(RetainedLimits(max_count=1))
    await store.set("old", msg(b"1", expires_at=clock.time() + 1))
    with pytest.raises(RetainedFull):
        await store.set("new", msg(b"2"))
    clock.advance(1)
    await store.set("new", msg(b"2"))
    assert [r.topic for r in await store.matching("#")] == ["new"]


async def test_unicode_topics_and_lexical_neighbours(make_store: Factory) -> None:
    """Topics that sort right after "<literal>/" in bytes are not mistaken for children."""
    store = await make_store()
    for topic in ["a/b", "a0", "a.b", "a/", "a", "a/\U0001f600", "ab/c", "a\u00e9/x"]:
        await store.set(topic, msg(topic.encode()))
    assert [r.topic for r in await store.matching("a/#")] == ["a", "a/", "a/b", "a/\U0001f600"]
    assert [r.topic for r in await store.matching("a/+")] == ["a/", "a/b", "a/\U0001f600"]
    assert [r.topic for r in await store.matching("a\u00e9/+")] == ["a\u00e9/x"]


def test_remaining_expiry_and_record_round_trip() -> None:
    message = msg(expires_at=100.0)
    assert message.remaining_expiry(99.9) == 1
    assert message.remaining_expiry(100.0) == 0
    assert message.expired(100.0) and not message.expired(99.99)
    assert expiry_deadline(None, 5.0) is None
    assert decode_message(encode_message(FULL)) == FULL


def test_limits_must_not_be_negative() -> None:
    for field in ("max_count", "max_bytes", "max_payload_size"):
        with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
            RetainedLimits(**{field: -1})


async def test_payload_limit(make_store: Factory) -> None:
    store = await make_store(RetainedLimits(max_payload_size=4))
    await store.set("t", msg(b"1234"))
    with pytest.raises(RetainedFull, match="5 bytes, more than 4") as info:
        await store.set("t", msg(b"12345"))
    assert info.value.limit == "payload"
    assert await store.get("t") == msg(b"1234")
    await store.set("t", msg(b""))  # deleting is never refused
    assert await store.get("t") is None


async def test_zero_means_no_limit(make_store: Factory) -> None:
    store = await make_store(RetainedLimits(max_count=0, max_bytes=0))
    for i in range(50):
        await store.set(f"n/{i}", msg(b"x" * 100))
    assert (await store.stats())[0] == 50
    assert len(await store.matching("n/+")) == 50


# --- Redis only ------------------------------------------------------------------


async def test_redis_nodes_share_messages_and_limits(redis_url: str, clock: ManualClock) -> None:
    prefix = f"tltest-{uuid.uuid4().hex[:12]}"
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    limits = RetainedLimits(max_count=2)
    node1 = RedisRetained.from_client(one, prefix, limits=limits, clock=clock)
    node2 = RedisRetained.from_client(two, prefix, limits=limits, clock=clock)
    other = RedisRetained.from_client(two, prefix + "-other", limits=limits, clock=clock)
    try:
        await node1.set("dev/1", msg(b"from node 1"))
        await node2.set("dev/2", msg(b"from node 2"))
        assert [r.message.payload for r in await node2.matching("dev/+")] == [b"from node 1", b"from node 2"]
        with pytest.raises(RetainedFull):
            await node1.set("dev/3", msg(b"x"))
        await node2.set("dev/1", msg(b""))
        assert await node1.get("dev/1") is None
        assert await other.matching("#") == []
    finally:
        await _drop_prefix(one, prefix)
        await one.aclose()
        await two.aclose()


async def test_redis_matching_pages_through_the_index(redis_url: str, clock: ManualClock) -> None:
    prefix = f"tltest-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(redis_url)
    store = RedisRetained.from_client(client, prefix, clock=clock)
    store.page = 3
    try:
        topics = [f"many/{i:02d}" for i in range(10)] + ["many"]
        for topic in topics:
            await store.set(topic, msg(b"x"))
        assert [r.topic for r in await store.matching("many/#")] == sorted(topics)
        assert len(await store.matching("#")) == 11
        assert len(await store.matching("+/+")) == 10
    finally:
        await _drop_prefix(client, prefix)
        await client.aclose()


async def test_redis_unreachable_raises_redis_unavailable(clock: ManualClock) -> None:
    store = RedisRetained(f"redis://127.0.0.1:{free_port()}/0", "x", clock=clock, connect_timeout=0.5, io_timeout=0.5)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(RedisUnavailable):
                await store.set("a", msg())
            with pytest.raises(RedisUnavailable):
                await store.matching("#")
    finally:
        await store.close()


def test_redis_client_must_return_bytes() -> None:
    with pytest.raises(ValueError, match="bytes"):
        RedisRetained.from_client(Redis(decode_responses=True))


# --- hypothesis: the stores against a model ----------------------------------------

LEVEL = st.sampled_from(["a", "b", "", "$s", "é"])
TOPIC = st.lists(LEVEL, min_size=1, max_size=3).map("/".join).filter(bool)
FILTER = st.one_of(
    TOPIC,
    st.lists(st.sampled_from(["a", "b", "", "+", "$s"]), min_size=1, max_size=3).map(
        lambda levels: "/".join(levels) or "+"
    ),
    st.lists(st.sampled_from(["a", "b", "", "+"]), max_size=2).map(lambda levels: "/".join([*levels, "#"])),
)
OP = st.tuples(TOPIC, st.binary(max_size=3), st.sampled_from([None, 1, 3]), st.floats(0, 2))


async def _check_against_model(store: RetainedStore, clock: ManualClock, ops: list[Any], filters: list[str]) -> None:
    model: dict[str, RetainedMessage] = {}
    for topic, payload, ttl, step in ops:
        message = msg(payload, expires_at=expiry_deadline(ttl, clock.time()))
        await store.set(topic, message)
        if payload:
            model[topic] = message
        else:
            model.pop(topic, None)
        clock.advance(step)
        now = clock.time()
        live = {t: m for t, m in model.items() if not m.expired(now)}
        assert await store.get(topic) == live.get(topic)
        for topic_filter in filters:
            expected = [Retained(t, live[t]) for t in sorted(live) if matches(topic_filter, t)]
            assert await store.matching(topic_filter) == expected, topic_filter


@settings(max_examples=150, deadline=None)
@given(st.lists(OP, max_size=25), st.lists(FILTER, min_size=1, max_size=4))
def test_memory_store_against_model(ops: list[Any], filters: list[str]) -> None:
    clock = ManualClock(wall=1_700_000_000.0)
    asyncio.run(_check_against_model(MemoryRetained(clock=clock), clock, ops, filters))


@pytest.mark.redis
@settings(max_examples=30, deadline=None)
@given(ops=st.lists(OP, max_size=15), filters=st.lists(FILTER, min_size=1, max_size=3))
def test_redis_store_against_model(redis_url: str, ops: list[Any], filters: list[str]) -> None:
    async def run() -> None:
        clock = ManualClock(wall=1_700_000_000.0)
        prefix = f"tltest-{uuid.uuid4().hex[:12]}"
        client = Redis.from_url(redis_url)
        try:
            await _check_against_model(RedisRetained.from_client(client, prefix, clock=clock), clock, ops, filters)
        finally:
            await _drop_prefix(client, prefix)
            await client.aclose()

    asyncio.run(run())
