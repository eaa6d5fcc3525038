"""The memory map broker beyond the contract: cleanup batches and interval, its settings, memory
bounds once everything expired, and a model check of random publish/remove/expire sequences."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkline.broker.base import HistoryQuery
from trunkline.broker.map_base import KeyMode, MapLimitExceeded, MapOptions, MapStateQuery, MapWrite
from trunkline.broker.map_memory import MemoryMapBroker
from trunkline.config import settings_from_mapping
from trunkline.errors import ClientError
from trunkline.hub.map_options import map_options
from trunkline.node import Node
from trunkline.records import Publication

from .conftest import Recorder
from .map_env import FakeClock

DURABLE = MapOptions(stream_size=100, stream_ttl=60.0, meta_ttl=600.0, key_ttl=10.0)
EPHEMERAL = MapOptions(meta_ttl=600.0, key_ttl=10.0)


async def started(**kwargs: Any) -> tuple[MemoryMapBroker, Recorder, FakeClock]:
    clock = FakeClock()
    broker = MemoryMapBroker(clock, cleanup_interval=0, **kwargs)
    events = Recorder()
    await broker.start(events)
    return broker, events, clock


def w(key: str, data: bytes = b"{}", **kwargs: Any) -> MapWrite:
    return MapWrite(key=key, data=data, **kwargs)


def all_keys(broker: MemoryMapBroker, channel: str, options: MapOptions) -> list[str]:
    found: list[str] = []
    cursor = ""
    for _ in range(10000):
        page = broker.read_state_now(channel, MapStateQuery(cursor=cursor, limit=7), options)
        found += [e.key for e in page.entries]
        cursor = page.cursor
        if not cursor:
            return found
    raise AssertionError("pagination did not end")


async def test_cleanup_removes_at_most_cleanup_batch_size_keys_per_channel_per_run() -> None:
    broker, events, clock = await started(cleanup_batch_size=100)
    await broker.subscribe("c1")
    for i in range(250):
        broker.publish_now("c1", w(f"k{i:03d}"), DURABLE)
        broker.publish_now("c2", w(f"k{i:03d}"), DURABLE)
    clock.now += 11
    assert broker.cleanup() == 200  # 100 from each channel
    assert await broker.stats("c1") == 150 and await broker.stats("c2") == 150
    assert broker.cleanup() == 200
    assert broker.cleanup() == 100
    assert broker.cleanup() == 0
    removals = [p for p in events.publications("c1") if p.removed]
    assert len(removals) == 250 and {p.key for p in removals} == {f"k{i:03d}" for i in range(250)}
    assert [p.offset for p in removals] == list(range(251, 501)), "each expiry is a stream entry"
    await broker.close()


async def test_cleanup_interval_drives_the_cleanup() -> None:
    """Real time: with map_broker.cleanup_interval 50ms a key of ttl 100ms is removed by itself."""
    fast = MemoryMapBroker.from_settings(settings_from_mapping({"map_broker": {"cleanup_interval": "50ms"}}))
    slow = MemoryMapBroker.from_settings(settings_from_mapping({"map_broker": {"cleanup_interval": "1h"}}))
    events = Recorder()
    opts = MapOptions(key_ttl=0.1)
    for broker in (fast, slow):
        await broker.start(events)
        await broker.subscribe("c1")
    try:
        fast.publish_now("c1", w("a"), opts)
        slow.publish_now("c1", w("a"), opts)
        removals = await events.wait_publications(3, "c1", timeout=5.0)
        assert removals[2].removed and removals[2].key == "a"
        assert await fast.stats("c1") == 0
        assert await slow.stats("c1") == 1, "no cleanup ran on the slow one"
    finally:
        await fast.close()
        await slow.close()


async def test_from_settings_uses_the_batch_size_and_the_idempotent_result_ttl() -> None:
    s = settings_from_mapping({"map_broker": {"cleanup_batch_size": 2}, "channel": {"idempotent_result_ttl": "10s"}})
    clock = FakeClock()
    broker = MemoryMapBroker.from_settings(s, clock=clock)
    for i in range(5):
        broker.publish_now("c1", w(f"k{i}"), DURABLE)
    clock.now += 11
    assert broker.cleanup() == 2, "map_broker.cleanup_batch_size"
    first = broker.publish_now("c2", w("a", idempotency_key="x"), DURABLE)
    clock.now += 5
    assert broker.publish_now("c2", w("a", idempotency_key="x"), DURABLE).suppressed == "idempotency"
    clock.now += 6
    again = broker.publish_now("c2", w("a", idempotency_key="x"), DURABLE)
    assert again.suppressed == "" and again.position.offset == first.position.offset + 1


async def test_namespace_map_settings_take_effect_in_the_broker() -> None:
    """From the config through hub/map_options into the broker: key_ttl, max_keys, ordered,
    stream_size, stream_ttl and meta_ttl of channel.namespaces[].map."""
    s = settings_from_mapping(
        {
            "channel": {
                "namespaces": [
                    {
                        "name": "m1",
                        "subscription_type": "map",
                        "map": {
                            "mode": "durable",
                            "key_ttl": "30s",
                            "max_keys": 3,
                            "ordered": True,
                            "stream_size": 2,
                            "stream_ttl": "20s",
                            "meta_ttl": "100s",
                        },
                    }
                ]
            }
        }
    )
    ns = s.namespace("m1")
    assert ns is not None
    opts = map_options(ns, s.channel.history_meta_ttl)
    broker, _, clock = await started()
    for key, score in (("a", 1), ("b", 3), ("c", 2)):
        broker.publish_now("m1:x", w(key, score=score), opts)
    try:
        broker.publish_now("m1:x", w("d"), opts)
        raise AssertionError("max_keys 3 lets a fourth key in")
    except MapLimitExceeded:
        pass
    assert [e.key for e in broker.read_state_now("m1:x", MapStateQuery(), opts).entries] == ["b", "c", "a"], "ordered"
    stream, top = broker.read_stream_now("m1:x", HistoryQuery(), opts)
    assert [p.offset for p in stream] == [2, 3] and top.offset == 3, "stream_size 2"
    clock.now += 21
    assert broker.read_stream_now("m1:x", HistoryQuery(), opts)[0] == [], "stream_ttl 20s"
    clock.now += 10  # 31 s after the writes: key_ttl 30s
    assert broker.cleanup() == 3 and await broker.stats("m1:x") == 0
    epoch = top.epoch
    clock.now += 100  # meta_ttl 100s after the last write (the expiries were writes too)
    broker.cleanup()
    assert broker.num_channels == 0
    assert broker.read_state_now("m1:x", MapStateQuery(), opts).position.epoch != epoch


async def test_subscription_type_decides_which_channels_are_maps() -> None:
    """A namespace with subscription_type "map" keeps its channels in the node's map broker; a
    "stream" one (the default) is no map: its channels cannot take map writes (107)."""
    s = settings_from_mapping(
        {
            "channel": {
                "namespaces": [
                    {"name": "m1", "subscription_type": "map", "map": {"mode": "persistent"}},
                    {"name": "s1", "subscription_type": "stream"},
                ]
            }
        }
    )
    broker = MemoryMapBroker()
    node = Node(s, map_broker=broker)
    assert node.map_channel_options("m1:x") is not None
    assert node.map_channel_options("s1:x") is None
    result = await node.map_publish("m1:x", w("a"))
    assert result.publication is not None and await broker.stats("m1:x") == 1
    with pytest.raises(ClientError) as info:
        await node.map_publish("s1:x", w("a"))
    assert info.value.code == 107
    assert await broker.stats("s1:x") == 0


async def test_a_rewritten_key_keeps_one_heap_entry() -> None:
    broker, _, clock = await started()
    for i in range(1000):
        clock.now += 0.05
        broker.publish_now("c1", w("cursor", b'{"x":%d}' % i), EPHEMERAL)
    assert broker.footprint()["key_heap"] == 2  # one heap entry + its deadline
    clock.now += 9.9
    assert broker.cleanup() == 0, "rewritten 0.05 s ago: not expired"
    assert broker.footprint()["key_heap"] == 2
    clock.now += 0.2
    assert broker.cleanup() == 1
    for _ in range(100):  # removed and written again before its old entry came due
        broker.publish_now("c1", w("again"), EPHEMERAL)
        broker.remove_now("c1", "again", EPHEMERAL)
        clock.now += 0.01
    broker.publish_now("c1", w("again"), EPHEMERAL)
    assert broker.footprint()["key_heap"] == 2  # one heap entry + its deadline


async def test_an_emptied_ephemeral_channel_is_dropped_after_the_placeholder_ttl() -> None:
    broker, _, clock = await started(placeholder_ttl=5.0)
    first = broker.publish_now("e1", w("a"), EPHEMERAL)
    broker.remove_now("e1", "a", EPHEMERAL)
    clock.now += 4
    broker.cleanup()
    assert broker.num_channels == 1
    assert broker.publish_now("e1", w("b"), EPHEMERAL).position.epoch == first.position.epoch
    broker.remove_now("e1", "b", EPHEMERAL)
    clock.now += 5.1
    broker.cleanup()
    assert broker.num_channels == 0


async def test_a_persistent_channel_whose_meta_expired_keeps_its_keys_under_a_new_epoch() -> None:
    broker, _, clock = await started()
    persistent = MapOptions(stream_size=10, stream_ttl=5.0, meta_ttl=50.0)
    first = broker.publish_now("p1", w("a"), persistent)
    clock.now += 51
    broker.cleanup()
    page = broker.read_state_now("p1", MapStateQuery(), persistent)
    assert [e.key for e in page.entries] == ["a"]
    assert page.position.epoch != first.position.epoch and page.position.offset == 0
    assert page.entries[0].epoch == page.position.epoch


async def test_handler_failure_does_not_stop_the_cleanup() -> None:
    broker, events, clock = await started()
    await broker.subscribe("c1")
    broker.publish_now("c1", w("a"), DURABLE)
    broker.publish_now("c1", w("b"), DURABLE)
    events.fail_next = True
    clock.now += 11
    assert broker.cleanup() == 2
    assert [p.key for p in events.publications("c1") if p.removed] == ["a", "b"]


async def test_idempotent_results_are_bounded_in_number() -> None:
    broker, _, _ = await started(max_idempotent_results=10)
    for i in range(100):
        broker.publish_now("c1", w("a", idempotency_key=f"op-{i}"), DURABLE)
    assert broker.footprint()["results"] == 10
    assert broker.publish_now("c1", w("a", idempotency_key="op-99"), DURABLE).suppressed == "idempotency"
    assert broker.publish_now("c1", w("a", idempotency_key="op-0"), DURABLE).suppressed == ""


async def test_everything_is_freed_once_it_expired() -> None:
    """Many channels, keys, streams, reads and idempotent results: after every ttl nothing is left."""
    broker, _, clock = await started(placeholder_ttl=30.0, idempotent_result_ttl=60.0)
    for c in range(3):
        await broker.subscribe(f"warm{c}")

    def fill() -> None:
        for c in range(300):
            for k in range(5):
                broker.publish_now(f"d{c}", w(f"k{k}", b"x" * 50, idempotency_key=f"i{c}-{k}"), DURABLE)
                broker.publish_now(f"e{c}", w(f"k{k}", b"x" * 50), EPHEMERAL)
            broker.read_state_now(f"read-only{c}", MapStateQuery(), DURABLE)
            broker.read_stream_now(f"stream-only{c}", HistoryQuery(), DURABLE)

    def drain() -> None:
        for _ in range(4):  # key ttl, then the stream, the placeholders, the meta
            clock.now += 700
            for _ in range(20):  # batches
                if not broker.cleanup():
                    break

    fill()  # warm-up: the first allocation of every structure
    drain()
    assert broker.footprint() == {
        "channels": 0,
        "heap": 0,
        "entries": 0,
        "order": 0,
        "expiring": 0,
        "key_heap": 0,
        "stream": 0,
        "results": 0,
        "subscribed": 3,
    }
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()
        full = tracemalloc.get_traced_memory()[0]
        drain()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    used, left = full - before, after - before
    assert used > 1_000_000, f"the fill is visible ({used} bytes)"
    # what remains is CPython's free lists (small tuples and floats, at most ~120 KB), not broker state
    assert left < min(150_000, used // 10), f"{left} of {used} bytes left behind after every ttl"
    assert broker.footprint()["channels"] == 0


# --- a model of random sequences --------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), KEYS, st.sampled_from(list(KeyMode)), st.integers(0, 3)),
        st.tuples(st.just("remove"), KEYS),
        st.tuples(st.just("advance"), st.floats(0.1, 6.0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, ordered=st.booleans(), keeps_stream=st.booleans())
def test_random_sequences_match_a_model(ops: list[tuple[Any, ...]], ordered: bool, keeps_stream: bool) -> None:
    asyncio.run(_check_model(ops, ordered, keeps_stream))


async def _check_model(ops: list[tuple[Any, ...]], ordered: bool, keeps_stream: bool) -> None:
    opts = MapOptions(
        stream_size=1000 if keeps_stream else 0,
        stream_ttl=1000.0 if keeps_stream else 0.0,
        meta_ttl=1000.0,
        key_ttl=5.0,
        max_keys=4,
        ordered=ordered,
    )
    broker, events, clock = await started(cleanup_batch_size=1000)
    await broker.subscribe("m")
    model: dict[str, tuple[bytes, int, float]] = {}  # key -> (data, score, deadline)
    for n, op in enumerate(ops):
        if op[0] == "publish":
            _, key, mode, score = op
            data = b'{"n":%d}' % n
            exists = key in model
            try:
                result = broker.publish_now("m", w(key, data, key_mode=mode, score=score), opts)
            except MapLimitExceeded:
                assert not exists and len(model) == 4
                continue
            if (mode is KeyMode.IF_NEW and exists) or (mode is KeyMode.IF_EXISTS and not exists):
                assert result.publication is None
            else:
                assert result.publication is not None
                model[key] = (data, score, clock.now + 5.0)
        elif op[0] == "remove":
            result = broker.remove_now("m", op[1], opts)
            assert (result.publication is not None) == (model.pop(op[1], None) is not None)
        else:
            clock.now += op[1]
            broker.cleanup()
            model = {k: v for k, v in model.items() if v[2] > clock.now}
        page = broker.read_state_now("m", MapStateQuery(limit=100), opts)
        got = {e.key: (e.data, e.score) for e in page.entries}
        assert got == {k: (v[0], v[1]) for k, v in model.items()}
        expected_order = (
            [k for _, k in sorted(((v[1], k) for k, v in model.items()), reverse=True)] if ordered else sorted(model)
        )
        assert [e.key for e in page.entries] == expected_order
        assert all_keys(broker, "m", opts) == expected_order
    # a subscriber that applies every delivered update in order holds the same state
    replica: dict[str, bytes] = {}
    for pub in events.publications("m"):
        _apply(replica, pub)
    assert replica == {k: v[0] for k, v in model.items()}
    offsets = [p.offset for p in events.publications("m")]
    if keeps_stream:
        assert offsets == list(range(1, len(offsets) + 1))
        stream, _ = broker.read_stream_now("m", HistoryQuery(), opts)
        assert stream == events.publications("m")
    else:
        assert set(offsets) <= {0}
    await broker.close()


def _apply(replica: dict[str, bytes], pub: Publication) -> None:
    if pub.removed:
        replica.pop(pub.key, None)
    else:
        replica[pub.key] = pub.data


async def test_write_cost_is_flat_in_the_number_of_keys() -> None:
    """Updating existing keys costs the same with 100 or 20000 keys (no re-sort per write)."""
    broker, _, _ = await started()
    opts = MapOptions(key_ttl=60.0)
    for n_keys in (100, 20000):
        for i in range(n_keys):
            broker.publish_now(f"size{n_keys}", w(f"k{i:06d}"), opts)

    def cost(n_keys: int) -> float:
        channel = f"size{n_keys}"
        start = time.perf_counter()
        for i in range(3000):
            broker.publish_now(channel, w(f"k{(i * 7919) % n_keys:06d}"), opts)
        return time.perf_counter() - start

    small: list[float] = []
    big: list[float] = []
    for _ in range(3):  # alternated, the best of each: the machine is shared
        small.append(cost(100))
        big.append(cost(20000))
    assert min(big) < min(small) * 3, (small, big)


WALK_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("page"), st.integers(1, 4)),
        st.tuples(st.just("write"), st.integers(0, 40), st.integers(-5, 5)),
        st.tuples(st.just("remove"), st.integers(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(
    initial=st.dictionaries(st.integers(0, 40), st.integers(-5, 5), max_size=25),
    ops=WALK_OPS,
    ordered=st.booleans(),
    asc=st.booleans(),
)
def test_a_walk_through_the_pages_is_stable_while_the_map_changes(
    initial: dict[int, int], ops: list[tuple[Any, ...]], ordered: bool, asc: bool
) -> None:
    """Keys that nobody touches during the walk come exactly once and in order; in key order no
    key ever comes twice."""
    opts = MapOptions(stream_size=10, stream_ttl=60.0, meta_ttl=600.0, ordered=ordered)
    broker = MemoryMapBroker(FakeClock(), cleanup_interval=0)
    for k, score in initial.items():
        broker.publish_now("m", w(f"k{k:02d}", score=score), opts)
    touched: set[str] = set()
    seen: list[str] = []
    cursor = ""
    done = False

    def page(limit: int) -> bool:
        nonlocal cursor
        result = broker.read_state_now("m", MapStateQuery(cursor=cursor, limit=limit, asc=asc), opts)
        assert len(result.entries) <= limit
        seen.extend(e.key for e in result.entries)
        cursor = result.cursor
        return not cursor

    for op in ops:
        if done:
            break
        if op[0] == "page":
            done = page(op[1])
        elif op[0] == "write":
            touched.add(f"k{op[1]:02d}")
            broker.publish_now("m", w(f"k{op[1]:02d}", score=op[2]), opts)
        else:
            touched.add(f"k{op[1]:02d}")
            broker.remove_now("m", f"k{op[1]:02d}", opts)
    for _ in range(100):
        if done:
            break
        done = page(3)
    assert done
    untouched = {f"k{k:02d}": score for k, score in initial.items() if f"k{k:02d}" not in touched}
    stable = [key for key in seen if key in untouched]
    assert sorted(stable) == sorted(untouched), "every untouched key exactly once"
    if ordered:
        expected = sorted(untouched, key=lambda key: (untouched[key], key), reverse=not asc)
    else:
        expected = sorted(untouched)
        assert len(seen) == len(set(seen)), "in key order no key comes twice"
    assert stable == expected, "in the map's order"
