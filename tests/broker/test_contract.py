"""One contract for every broker and presence implementation (memory and Redis).

The Redis runs need a redis-server (see conftest); delivery there is asynchronous,
so every check of what the handler got waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from trunkline.broker.base import (
    Broker,
    HistoryQuery,
    PresenceManager,
    PublishOptions,
    StreamPosition,
    with_offset,
)
from trunkline.broker.memory import MemoryBroker, MemoryPresence
from trunkline.broker.redis import RedisBroker, RedisPresence

from .conftest import Recorder, delete_keys

HISTORY = PublishOptions(history_size=100, history_ttl=60.0)


@dataclass
class Env:
    kind: str
    broker: Broker
    presence: PresenceManager
    events: Recorder


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def env(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Env]:
    events = Recorder()
    if request.param == "memory":
        memory = MemoryBroker()
        await memory.start(events)
        yield Env("memory", memory, MemoryPresence(), events)
        await memory.close()
        return
    url = request.getfixturevalue("redis_url")
    broker = RedisBroker(url, prefix=prefix, io_timeout=2.0)
    await broker.start(events)
    try:
        yield Env("redis", broker, RedisPresence.from_client(broker.client, prefix=prefix), events)
    finally:
        await delete_keys(broker.client, prefix)
        await broker.close()


def pub(n: int) -> bytes:
    return b'{"data":{"n":%d}}' % n


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
    assert await env.events.wait(1, "pub") == [("pub", "plain", pub(1), 0)]
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
    assert [(p.offset, p.data) for p in publications] == [(n, with_offset(pub(n), n)) for n in range(1, 6)]


async def test_offset_is_inserted_into_the_delivered_bytes(env: Env) -> None:
    await env.broker.subscribe("c")
    await env.broker.publish("c", pub(7), HISTORY)
    await env.broker.publish("c", b"{}", HISTORY)
    assert await env.events.wait(2, "pub") == [
        ("pub", "c", b'{"data":{"n":7},"offset":1}', 1),
        ("pub", "c", b'{"offset":2}', 2),
    ]
    publications, _ = await env.broker.history("c", HistoryQuery())
    assert [p.data for p in publications] == [b'{"data":{"n":7},"offset":1}', b'{"offset":2}']


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
    assert await env.events.wait(1, "pub", channel) == [("pub", channel, with_offset(pub(1), 1), 1)]
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
    pytest.param(None, 10, False, [], id="since-top"),
    pytest.param(None, 20, False, [], id="since-beyond-top"),
    pytest.param(None, None, True, ALL[::-1], id="reverse"),
    pytest.param(3, None, True, [10, 9, 8], id="reverse-limit"),
    pytest.param(None, 4, True, [3, 2, 1], id="reverse-since"),
    pytest.param(2, 4, True, [3, 2], id="reverse-since-limit"),
    pytest.param(None, 0, True, ALL[::-1], id="reverse-since-0-is-from-top"),
    pytest.param(None, 1, True, [], id="reverse-since-1"),
    pytest.param(None, 20, True, ALL[::-1], id="reverse-since-beyond-top"),
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
    assert [p.offset for p in publications] == expected
    assert [p.data for p in publications] == [with_offset(pub(n), n) for n in expected]


async def test_history_is_trimmed_to_its_size(env: Env) -> None:
    options = PublishOptions(history_size=3, history_ttl=60.0)
    await publish_many(env, "c", 5, options)
    publications, position = await env.broker.history("c", HistoryQuery())
    assert [p.offset for p in publications] == [3, 4, 5]
    assert position.offset == 5


async def test_history_expires_ttl_after_the_last_publish(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=0.6)
    first = await env.broker.publish("c", pub(1), options)
    await asyncio.sleep(0.35)
    await env.broker.publish("c", pub(2), options)
    await asyncio.sleep(0.35)  # 0.7 s after the first, 0.35 s after the last
    assert await offsets(env, "c") == [1, 2]
    await asyncio.sleep(0.4)
    publications, position = await env.broker.history("c", HistoryQuery())
    assert publications == []
    assert first is not None
    assert position == StreamPosition(2, first.epoch), "the position outlives the publications"
    assert await env.broker.publish("c", pub(3), options) == StreamPosition(3, first.epoch)


async def test_expired_metadata_starts_a_new_epoch(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=0.2, history_meta_ttl=0.4)
    old = (await publish_many(env, "c", 2, options))[-1]
    await asyncio.sleep(0.6)
    publications, position = await env.broker.history("c", HistoryQuery())
    assert publications == []
    assert position.offset == 0
    assert position.epoch != old.epoch
    assert await env.broker.publish("c", pub(1), options) == StreamPosition(1, position.epoch)


async def test_history_reads_keep_the_metadata_alive(env: Env) -> None:
    options = PublishOptions(history_size=10, history_ttl=60.0, history_meta_ttl=1.0)
    first = await env.broker.publish("c", pub(1), options)
    for _ in range(4):  # 1.2 s in all
        await asyncio.sleep(0.3)
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


# --- delivery to the handler ------------------------------------------------------


async def test_publications_arrive_in_offset_order(env: Env) -> None:
    await env.broker.subscribe("c")
    positions = await asyncio.gather(*(env.broker.publish("c", pub(n), HISTORY) for n in range(50)))
    assert sorted(p.offset for p in positions if p is not None) == list(range(1, 51))
    events = await env.events.wait(50, "pub", "c")
    assert [offset for _, _, _, offset in events] == list(range(1, 51))
    assert all(data.endswith(b',"offset":%d}' % offset) for _, _, data, offset in events)


async def test_publications_joins_and_leaves_of_a_channel_stay_in_order(env: Env) -> None:
    await env.broker.subscribe("c")
    expected = []
    for n in range(1, 21):
        if n % 3 == 0:
            await env.broker.publish_join("c", b'{"user":"%d"}' % n)
            expected.append(("join", "c", b'{"user":"%d"}' % n, 0))
        elif n % 3 == 1:
            position = await env.broker.publish("c", pub(n), HISTORY)
            assert position is not None
            expected.append(("pub", "c", with_offset(pub(n), position.offset), position.offset))
        else:
            await env.broker.publish_leave("c", b'{"user":"%d"}' % n)
            expected.append(("leave", "c", b'{"user":"%d"}' % n, 0))
    assert await env.events.wait(20, channel="c") == expected


async def test_join_leave_and_control_are_delivered(env: Env) -> None:
    await env.broker.subscribe("room")
    await env.broker.publish_join("room", b'{"user":"u1","client":"c1"}')
    await env.broker.publish_leave("room", b'{"user":"u1","client":"c1"}')
    await env.broker.publish_control(b"\x00control\xff")
    assert await env.events.wait(3) == [
        ("join", "room", b'{"user":"u1","client":"c1"}', 0),
        ("leave", "room", b'{"user":"u1","client":"c1"}', 0),
        ("control", "", b"\x00control\xff", 0),
    ]


async def test_subscribe_and_unsubscribe_are_idempotent_per_call(env: Env) -> None:
    await env.broker.subscribe("a")
    await env.broker.unsubscribe("a")
    await env.broker.unsubscribe("a")
    await env.broker.subscribe("a")
    await env.broker.publish("a", pub(1), PublishOptions())
    assert await env.events.wait(1, "pub", "a") == [("pub", "a", pub(1), 0)]


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
