"""Redis map broker only: several nodes on one Redis, expiry delivered once, a Redis restart,
the key layout (one hash slot per channel), cursors and stream entries written by the cleanup.

The behaviour both map brokers share is in test_map_contract.py (run on Redis too)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.conftest import Running
from tests.conftest import eventually as poll
from tests.shared_poll.wsclient import WsClient
from trunkline.app import Server
from trunkline.broker.base import HistoryQuery, Publication, encode_body
from trunkline.broker.map_base import KeyMode, MapOptions, MapStateQuery, MapWrite
from trunkline.broker.map_factory import make_map_broker
from trunkline.broker.map_memory import InvalidCursor, MemoryMapBroker
from trunkline.broker.map_redis import (
    RedisMapBroker,
    _decode_entries,
    _parse_cursor,
    decode_update,
    hash_tag,
    keyslot,
    slot_tag,
)
from trunkline.broker.redis import RedisUnavailable
from trunkline.broker.redis_topology import make_cluster_client
from trunkline.config import Settings, settings_from_mapping
from trunkline.errors import StartupError

from .conftest import Recorder, RedisServer, delete_keys, free_port, running
from .redis_procs import ClusterDeployment, SentinelDeployment, command

pytestmark = pytest.mark.redis

DURABLE = MapOptions(stream_size=100, stream_ttl=60.0)
ORDERED = MapOptions(stream_size=100, stream_ttl=60.0, ordered=True)


def node(url: str, prefix: str, **kwargs: Any) -> AbstractAsyncContextManager[tuple[RedisMapBroker, Recorder]]:
    """A started map broker (one "node") and what its handler received."""
    return running(RedisMapBroker(url, prefix=prefix, **kwargs))


def w(key: str, data: bytes = b"{}", score: int = 0) -> MapWrite:
    return MapWrite(key=key, data=data, score=score)


# --- several nodes --------------------------------------------------------------------


async def test_two_nodes_receive_every_update_in_stream_order(redis_url: str, prefix: str, raw: Redis) -> None:
    async with node(redis_url, prefix) as (a, a_events), node(redis_url, prefix) as (b, b_events):
        await a.subscribe("board")
        await b.subscribe("board")
        # Both nodes write concurrently; Redis orders the writes, and both see that one order.
        writes = [(a if i % 2 else b).publish("board", w(f"k{i % 7}", b'{"n":%d}' % i), DURABLE) for i in range(40)]
        results = await asyncio.gather(*writes)
        results.append(await b.remove("board", "k3", DURABLE))
        assert all(r.publication is not None for r in results)
        seen_a = await a_events.wait_publications(41, "board")
        seen_b = await b_events.wait_publications(41, "board")
        assert [p.offset for p in seen_a] == list(range(1, 42)), "offsets strictly increase, nothing missed"
        assert seen_a == seen_b, "both nodes get the same updates in the same order"
        stream, top = await b.read_stream("board", HistoryQuery(), DURABLE)
        assert stream == seen_a, "delivery order is stream order"
        assert top.offset == 41
        assert seen_a[-1].removed and seen_a[-1].key == "k3"
        # the engine broker's pub/sub names are not used: nothing arrives as an engine publication
        assert a_events.of("pub", "board") == a_events.of("pub")


async def test_expiry_is_delivered_once_with_two_nodes_cleaning_up(redis_url: str, prefix: str, raw: Redis) -> None:
    options = MapOptions(stream_size=100, stream_ttl=60.0, key_ttl=0.3)
    async with (
        node(redis_url, prefix, cleanup_interval=0.02) as (a, a_events),
        node(redis_url, prefix, cleanup_interval=0.02) as (b, b_events),
    ):
        await a.subscribe("cursors")
        await b.subscribe("cursors")
        for i in range(20):
            await (a if i % 2 else b).publish("cursors", w(f"user{i}"), options)
        await a.publish("cursors", w("kept"), MapOptions(stream_size=100, stream_ttl=60.0))  # no ttl: stays

        async def all_expired() -> bool:
            return await a.stats("cursors") == 1

        await poll(all_expired, timeout=10.0)
        removals_a = [p for p in await a_events.wait_publications(41, "cursors") if p.removed]
        removals_b = [p for p in await b_events.wait_publications(41, "cursors") if p.removed]
        assert sorted(p.key for p in removals_a) == sorted(f"user{i}" for i in range(20)), "each removal once"
        assert removals_a == removals_b
        assert [p.offset for p in removals_a] == list(range(22, 42))
        # a few more cleanup cycles deliver nothing more
        for _ in range(5):
            assert await a.cleanup() == 0
        assert len(a_events.publications("cursors")) == 41
        assert len(b_events.publications("cursors")) == 41
        page = await b.read_state("cursors", MapStateQuery(), options)
        assert [e.key for e in page.entries] == ["kept"]
        # the removals are in the stream too (written by the cleanup script, without a record)
        stream, _ = await a.read_stream("cursors", HistoryQuery(), options)
        assert stream[21:] == removals_a
        assert all(p.data == b"" and p.time > 0 for p in stream[21:])
        assert await raw.zscore(f"{prefix}.map.cleanup", "cursors") is None, "nothing left to expire"


async def test_republishing_a_key_postpones_its_expiry(redis_url: str, prefix: str, raw: Redis) -> None:
    options = MapOptions(key_ttl=1.0)
    async with node(redis_url, prefix, cleanup_interval=0) as (broker, _):
        expire_key = broker.keys("live")["expire"]
        await broker.publish("live", w("k"), options)
        first = await raw.zscore(expire_key, "k")
        await asyncio.sleep(0.6)
        await broker.publish("live", w("k", b'{"again":1}'), options)
        renewed_at = time.monotonic()
        second = await raw.zscore(expire_key, "k")
        assert first is not None and second is not None and second - first >= 500
        await asyncio.sleep(0.5)  # past the first deadline, before the second
        if time.monotonic() - renewed_at < 0.9:  # (a stalled machine proves nothing here)
            assert await broker.cleanup() == 0
            assert await broker.stats("live") == 1

        async def gone() -> bool:
            return await broker.cleanup() == 1

        await poll(gone, timeout=10.0)
        assert await broker.stats("live") == 0


async def test_writes_of_one_key_apply_in_the_order_they_were_made(redis_url: str, prefix: str, raw: Redis) -> None:
    """Writes made in different loop turns go out on different connections; those of one key
    must still apply in order (a presence leave must not overtake its join)."""
    async with node(redis_url, prefix) as (broker, _):
        for round_ in range(20):
            key = f"client{round_}"
            join = asyncio.ensure_future(broker.publish("presence", w(key), DURABLE))
            await asyncio.sleep(0)  # the next loop turn: another pipeline
            leave = asyncio.ensure_future(broker.remove("presence", key, DURABLE))
            await asyncio.sleep(0)
            again = asyncio.ensure_future(broker.publish("presence", w(key, b'{"back":1}'), DURABLE))
            results = await asyncio.gather(join, leave, again)
            assert [r.suppressed for r in results] == ["", "", ""], "each write saw the one before it"
            assert [r.position.offset for r in results] == [3 * round_ + 1, 3 * round_ + 2, 3 * round_ + 3]
        assert await broker.stats("presence") == 20
        assert broker._tails == {}, "nothing left waiting"


async def test_a_position_check_never_shortens_the_epoch_of_a_map_with_keys(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    """An ephemeral map's top stays 0; reading its position must not give its epoch a
    placeholder's life (its subscribers would be told to re-sync for nothing)."""
    async with node(redis_url, prefix) as (broker, _):
        ephemeral = MapOptions()
        first = await broker.publish("eph", w("k"), ephemeral)
        meta = broker.keys("eph")["meta"]
        assert await raw.pttl(meta) == -1
        query = HistoryQuery(limit=0, placeholder_ttl=0.2)
        _, top = await broker.read_stream("eph", query, ephemeral)
        assert top == first.position
        assert await raw.pttl(meta) == -1, "the epoch of a channel with keys is kept"
        # a channel nobody wrote: its epoch lives a placeholder's time only
        _, empty = await broker.read_stream("nobody", query, ephemeral)
        assert empty.offset == 0 and empty.epoch
        assert 0 < await raw.pttl(broker.keys("nobody")["meta"]) <= 200


async def test_suppressed_writes_to_new_channels_leave_only_placeholders(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    """Removing a missing key or an if_exists write creates the channel's epoch (the answer has
    a position) but must not keep it: nothing was written."""
    async with node(redis_url, prefix) as (broker, _):
        gone = await broker.remove("nobody1", "k", DURABLE)
        missing = await broker.publish("nobody2", MapWrite(key="k", data=b"{}", key_mode=KeyMode.IF_EXISTS), DURABLE)
        assert gone.suppressed == missing.suppressed == "key_not_found"
        assert gone.position.epoch and missing.position.epoch
        for channel in ("nobody1", "nobody2"):
            assert 0 < await raw.pttl(broker.keys(channel)["meta"]) <= 60_000
        written = await broker.publish("somebody", w("k"), DURABLE)
        assert written.publication is not None
        assert await raw.pttl(broker.keys("somebody")["meta"]) == -1, "a written channel keeps its epoch (meta_ttl 0)"


# --- outages ---------------------------------------------------------------------------


async def test_a_redis_restart_resyncs_and_updates_flow_again(
    redis_servers: Callable[[], RedisServer], prefix: str
) -> None:
    server = redis_servers()
    broker = RedisMapBroker(server.url, prefix=prefix, connect_timeout=1.0, io_timeout=1.0)
    broker._feed.reconnect_delay_max = 0.2
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe("board")
        before = await broker.publish("board", w("a"), DURABLE)
        await events.wait(1, "pub")
        assert events.of("resync") == []

        server.stop()

        async def ping_fails() -> bool:
            try:
                await broker.ping()
            except RedisUnavailable:
                return True
            return False

        await poll(ping_fails, timeout=10.0)
        with pytest.raises(RedisUnavailable):
            await broker.publish("board", w("b"), DURABLE)
        with pytest.raises(RedisUnavailable):
            await broker.read_state("board", MapStateQuery(), DURABLE)

        server.start()  # same port, empty: no data, no script cache
        await events.wait(1, "resync")
        after = await broker.publish("board", w("c"), DURABLE)
        assert after.position.offset == 1
        assert after.position.epoch != before.position.epoch, "the state was lost: a new epoch tells clients"
        pubs = await events.wait_publications(2, "board")
        assert pubs[-1].key == "c"
        assert len(events.of("resync")) == 1
    finally:
        await broker.close()


# --- key layout ------------------------------------------------------------------------


def _crc16(data: bytes) -> int:
    """CRC16-XMODEM, the checksum Redis Cluster takes modulo 16384 for a key's slot."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def spec_keyslot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (the hash-tag rule of the cluster specification)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % 16384


def test_crc16_matches_the_cluster_specification() -> None:
    assert _crc16(b"123456789") == 0x31C3  # the specification's test vector
    assert spec_keyslot("{user1000}.following") == spec_keyslot("{user1000}.followers")


@given(st.text(max_size=30))
def test_every_key_of_a_channel_is_in_one_slot(channel: str) -> None:
    broker = RedisMapBroker(prefix="tl")
    names = [*broker.keys(channel).values(), broker._result_key(channel, "idem}{key")]
    assert len({spec_keyslot(name) for name in names}) == 1
    assert keyslot(names[0]) == spec_keyslot(names[0])
    tag = hash_tag(channel)
    assert tag and "}" not in tag
    assert all(f"{{{tag}}}" in name for name in names)


def test_every_slot_has_a_tag_that_hashes_to_it() -> None:
    assert all(spec_keyslot(f"P.map.cleanup.{{{slot_tag(slot)}}}") == slot for slot in range(0, 16384, 7))
    assert keyslot("{" + slot_tag(16383) + "}") == 16383


@given(st.text(max_size=12), st.text(max_size=12))
def test_two_channels_never_share_a_key(one: str, other: str) -> None:
    if one != other:
        assert hash_tag(one) != hash_tag(other)


async def test_the_keys_hash_to_one_slot_in_redis_itself(redis_url: str, prefix: str, raw: Redis) -> None:
    """Written keys are where :meth:`keys` says (the slot check above covers their names)."""
    async with node(redis_url, prefix) as (broker, _):
        channel = "odd}{channel%"
        await broker.publish(
            channel, MapWrite(key="k", data=b"{}", idempotency_key="i"), MapOptions(100, 60.0, key_ttl=60.0)
        )
        found = sorted([k.decode() async for k in raw.scan_iter(match=f"{prefix}.map.{{*", count=1000)])
        names = broker.keys(channel)
        expected = sorted([names["state"], names["order"], names["expire"], names["stream"], names["meta"]])
        assert found == sorted([*expected, broker._result_key(channel, "i")])
        assert len({spec_keyslot(k) for k in found}) == 1


# --- cursors and decoding -------------------------------------------------------------------


async def test_an_ordered_page_resumes_after_its_cursor_even_when_that_key_moved(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    async with node(redis_url, prefix) as (broker, _):
        for i in range(10):
            await broker.publish("top", w(f"k{i}", score=i // 2), ORDERED)  # pairs of equal scores
        first = await broker.read_state("top", MapStateQuery(limit=3), ORDERED)
        assert [e.key for e in first.entries] == ["k9", "k8", "k7"], "score then key, descending"
        order_key = broker.keys("top")["order"]
        before = await raw.zrange(order_key, 0, -1, withscores=True)
        # the cursor's key moves away, then is removed: the next page still starts after it
        await broker.publish("top", w("k7", score=100), ORDERED)
        second = await broker.read_state("top", MapStateQuery(limit=3, cursor=first.cursor), ORDERED)
        assert [e.key for e in second.entries] == ["k6", "k5", "k4"]
        await broker.remove("top", "k4", ORDERED)
        third = await broker.read_state("top", MapStateQuery(limit=3, cursor=second.cursor), ORDERED)
        assert [e.key for e in third.entries] == ["k3", "k2", "k1"]
        after = await raw.zrange(order_key, 0, -1, withscores=True)
        assert len(after) == len(before) - 1, "the read put nothing into the order set"
        asc = await broker.read_state("top", MapStateQuery(limit=4, asc=True), ORDERED)
        assert [e.key for e in asc.entries] == ["k0", "k1", "k2", "k3"]


async def test_unordered_pages_come_in_key_order_with_exact_sizes(redis_url: str, prefix: str, raw: Redis) -> None:
    async with node(redis_url, prefix) as (broker, _):
        keys = [f"key-{i:03d}" for i in range(250)]
        for key in reversed(keys):
            await broker.publish("big", w(key), DURABLE)
        seen: list[str] = []
        cursor = ""
        for _ in range(10):
            page = await broker.read_state("big", MapStateQuery(limit=100, cursor=cursor), DURABLE)
            assert len(page.entries) == (100 if len(seen) < 200 else 50)
            seen += [e.key for e in page.entries]
            cursor = page.cursor
            if not cursor:
                break
        assert seen == keys


@pytest.mark.parametrize("cursor", ["x", "k", "s", "sabc:k", "snan:k", "s1"])
async def test_a_foreign_cursor_is_refused(redis_url: str, prefix: str, raw: Redis, cursor: str) -> None:
    async with node(redis_url, prefix) as (broker, _):
        options = ORDERED if cursor.startswith("s") or cursor == "x" else DURABLE
        if cursor == "k":  # an empty key after the marker is a valid key-order cursor
            page = await broker.read_state("c", MapStateQuery(cursor=cursor), options)
            assert page.entries == []
            return
        with pytest.raises(InvalidCursor):
            await broker.read_state("c", MapStateQuery(cursor=cursor), options)


@given(st.binary(max_size=40))
def test_decode_update_never_crashes_unexpectedly(payload: bytes) -> None:
    try:
        pub = decode_update(payload)
    except (ValueError, UnicodeDecodeError):
        return
    except Exception as exc:  # msgspec's DecodeError is a ValueError too
        raise AssertionError(f"unexpected {exc!r}") from exc
    assert isinstance(pub, Publication)


def test_a_removal_by_expiry_decodes_with_its_position() -> None:
    pub = decode_update(b"x7:ab12:1700000000000:user:1")
    assert pub == Publication(data=b"", key="user:1", removed=True, time=1700000000000, offset=7, epoch="ab12")


@given(st.lists(st.tuples(st.integers(0, 2**53), st.text(max_size=8), st.binary(max_size=20)), max_size=8))
def test_a_packed_state_page_decodes_to_its_entries(items: list[tuple[int, str, bytes]]) -> None:
    records = [Publication(data=data, key=key, offset=offset, epoch="e") for offset, key, data in items]
    values = [b"%d:%b" % (p.offset, encode_body(msgspec.structs.replace(p, offset=0, epoch=""))) for p in records]
    packed = b"".join(b"%d:%b" % (len(v), v) for v in values)
    assert _decode_entries(packed, "e") == records


@given(st.text(max_size=20), st.booleans())
def test_parse_cursor_accepts_only_its_own_shapes(cursor: str, ordered: bool) -> None:
    try:
        score, key = _parse_cursor(cursor, ordered=ordered)
    except InvalidCursor:
        return
    if not cursor:
        assert (score, key) == ("", "")
    elif ordered:
        assert cursor == f"s{score}:{key}" and not math.isnan(float(score))
    else:
        assert cursor == f"k{key}" and score == ""


# --- Redis Cluster -------------------------------------------------------------------------


@asynccontextmanager
async def cluster_node(seeds: list[str], prefix: str, **kwargs: Any) -> AsyncIterator[tuple[RedisMapBroker, Recorder]]:
    client = make_cluster_client(seeds, io_timeout=2.0)
    broker = RedisMapBroker(prefix=prefix, io_timeout=2.0, client=client, owns_client=True, **kwargs)
    events = Recorder()
    await broker.start(events)
    try:
        yield broker, events
    finally:
        await delete_keys(broker.client, prefix)
        await broker.close()


async def test_in_a_cluster_every_key_of_a_channel_is_in_the_slot_cluster_keyslot_names(
    redis_cluster: ClusterDeployment, prefix: str
) -> None:
    async with cluster_node(redis_cluster.seeds, prefix) as (broker, _):
        for channel in ("board", "odd}{name%", "", "chat:#42"):
            names = [
                *broker.keys(channel).values(),
                broker._result_key(channel, "i"),
                broker._registration_key(channel),
            ]
            slots = {redis_cluster.keyslot(name) for name in names}
            assert slots == {keyslot(names[0])}, channel


async def test_in_a_cluster_expiries_across_slots_are_delivered_once_with_two_nodes(
    redis_cluster: ClusterDeployment, prefix: str
) -> None:
    options = MapOptions(stream_size=10, stream_ttl=60.0, key_ttl=0.3)
    channels = [f"room{i}" for i in range(6)]
    async with (
        cluster_node(redis_cluster.seeds, prefix, cleanup_interval=0.02) as (a, a_events),
        cluster_node(redis_cluster.seeds, prefix, cleanup_interval=0.02) as (b, b_events),
    ):
        assert len({a._slot(c) for c in channels}) == len(channels), "six slots, so several registrations"
        for channel in channels:
            await a.subscribe(channel)
            await b.subscribe(channel)
            await (a if channel[-1] in "024" else b).publish(channel, w("k"), options)

        async def all_expired() -> bool:
            return all([await a.stats(c) == 0 for c in channels])

        await poll(all_expired, timeout=10.0)
        for events in (a_events, b_events):
            for channel in channels:
                pubs = await events.wait_publications(2, channel)
                assert [(p.key, p.removed, p.offset) for p in pubs] == [("k", False, 1), ("k", True, 2)]
        for _ in range(3):
            assert await a.cleanup() == 0
        assert len(a_events.publications()) == len(b_events.publications()) == 12


# --- settings --------------------------------------------------------------------------------


async def test_make_map_broker_follows_map_broker_type(redis_url: str) -> None:
    assert isinstance(make_map_broker(settings_from_mapping({})), MemoryMapBroker)
    own = make_map_broker(
        settings_from_mapping(
            {
                "map_broker": {
                    "type": "redis",
                    "redis": {"address": redis_url, "prefix": "own"},
                    "cleanup_interval": "3s",
                },
                "channel": {"idempotent_result_ttl": "7s"},
            }
        )
    )
    assert isinstance(own, RedisMapBroker)
    assert (own._prefix, own._cleanup_interval, own._result_ttl) == ("own", 3.0, 7.0)
    await own.ping()  # the address is used
    await own.close()
    engine = make_map_broker(
        settings_from_mapping({"map_broker": {"type": "redis"}, "engine": {"redis": {"prefix": "e"}}})
    )
    assert isinstance(engine, RedisMapBroker)
    assert engine._prefix == "e", "no map_broker.redis address: engine.redis"
    await engine.close()


async def test_sharded_addresses_are_refused_and_a_cluster_is_accepted() -> None:
    sharded = settings_from_mapping(
        {"map_broker": {"type": "redis", "redis": {"address": "redis://127.0.0.1:1,redis://127.0.0.1:2"}}}
    )
    with pytest.raises(StartupError) as raised:
        make_map_broker(sharded)
    assert raised.value.setting == "map_broker.redis.address"
    cluster = make_map_broker(
        settings_from_mapping(
            {"map_broker": {"type": "redis"}, "engine": {"redis": {"cluster_address": ["127.0.0.1:1"]}}}
        )
    )
    assert isinstance(cluster, RedisMapBroker) and cluster._cluster
    await cluster.close()


async def test_a_cluster_or_sentinel_entry_is_one_deployment_as_the_engine_reads_it() -> None:
    """An entry's nodes are comma-separated (Centrifugo's form); several entries are shards: refused."""
    seeds = make_map_broker(
        settings_from_mapping(
            {"map_broker": {"type": "redis"}, "engine": {"redis": {"cluster_address": ["127.0.0.1:1, 127.0.0.1:2"]}}}
        )
    )
    assert isinstance(seeds, RedisMapBroker)
    assert sorted(n.name for n in seeds.client.nodes_manager.startup_nodes.values()) == ["127.0.0.1:1", "127.0.0.1:2"]
    await seeds.close()
    for key, value in (
        ("cluster_address", ["127.0.0.1:1", "127.0.0.1:2"]),
        ("sentinel_address", ["127.0.0.1:3", "127.0.0.1:4"]),
    ):
        redis: dict[str, Any] = {key: value, "sentinel_master_name": "m"}
        with pytest.raises(StartupError) as raised:
            make_map_broker(settings_from_mapping({"map_broker": {"type": "redis", "redis": redis}}))
        assert raised.value.setting == f"map_broker.redis.{key}"


async def test_an_unreachable_map_redis_stops_the_server_with_the_setting_named() -> None:
    settings = settings_from_mapping(
        {
            "http_server": {"port": free_port(), "address": "127.0.0.1"},
            "map_broker": {
                "type": "redis",
                "redis": {
                    "address": f"redis://127.0.0.1:{free_port()}",
                    "connect_timeout": "0.3s",
                    "io_timeout": "0.3s",
                },
            },
        }
    )
    server = Server(settings)
    with pytest.raises(StartupError) as raised:
        await server.start()
    assert raised.value.setting == "map_broker.redis.address"
    assert "map channels cannot reach" in raised.value.message


# --- two servers on one Redis ------------------------------------------------------------------


def _two_node_config(redis_url: str, prefix: str) -> dict[str, Any]:
    writable = {"allow_publish_for_client": True, "allow_remove_for_client": True}
    return {
        "map_broker": {"type": "redis", "redis": {"address": redis_url, "prefix": prefix}, "cleanup_interval": "50ms"},
        "channel": {
            "namespaces": [
                {
                    "name": "board",
                    "allow_subscribe_for_client": True,
                    "subscription_type": "map",
                    "map": {"mode": "durable", "key_ttl": "60s", **writable},
                },
                {
                    "name": "live",
                    "allow_subscribe_for_client": True,
                    "subscription_type": "map",
                    "map": {"mode": "ephemeral", "key_ttl": "300ms", **writable},
                },
            ]
        },
    }


async def test_two_servers_on_one_redis_share_state_and_live_updates(
    start_server: Callable[..., Awaitable[Running]], redis_url: str, prefix: str, raw: Redis
) -> None:
    config = _two_node_config(redis_url, prefix)
    a, b = await start_server(config), await start_server(config)
    for i in range(3):
        await a.server.node.map_publish("board:1", w(f"k{i}", b'{"v":%d}' % i))
    client = await WsClient.connect(b, "alice")
    try:
        sub = {"channel": "board:1", "type": 1, "flag": 1}
        state = (await client.call("subscribe", {**sub, "phase": 2}))["subscribe"]
        assert [e["key"] for e in state["state"]] == ["k0", "k1", "k2"], "server b reads what a wrote"
        epoch, offset = state["epoch"], state["offset"]
        live = (await client.call("subscribe", {**sub, "phase": 1, "epoch": epoch, "offset": offset}))["subscribe"]
        assert "phase" not in live and live["epoch"] == epoch
        await a.server.node.map_publish("board:1", w("k1", b'{"v":"new"}'))
        await a.server.node.map_remove("board:1", "k0")
        await poll(lambda: len(client.updates("board:1")) == 2)
        assert [(u["key"], u.get("data"), u.get("removed", False), u["offset"]) for u in client.updates("board:1")] == [
            ("k1", {"v": "new"}, False, 4),
            ("k0", None, True, 5),
        ], "a's writes reach b's subscriber live, in order"
        # A client write on b reaches the state a reads; an expiry is delivered once though both servers clean up.
        reply = await client.call("publish", {"channel": "board:1", "type": 1, "key": "k9", "data": {"v": 9}})
        assert "error" not in reply, reply
        page = await a.server.node.map_read_state("board:1", MapStateQuery())
        assert [e.key for e in page.entries] == ["k1", "k2", "k9"]
        eph = (await client.call("subscribe", {"channel": "live:1", "type": 1, "flag": 1, "phase": 2}))["subscribe"]
        assert "phase" not in eph, "an ephemeral map goes live with its only page"
        await a.server.node.map_publish("live:1", w("cursor"))
        removals = await poll(lambda: [u for u in client.updates("live:1") if u.get("removed")], timeout=5.0)
        for _ in range(5):  # several more cleanup rounds of both servers
            await asyncio.sleep(0.06)
        assert len([u for u in client.updates("live:1") if u.get("removed")]) == len(removals) == 1
    finally:
        await client.close()


# --- Sentinel ----------------------------------------------------------------------------------

SENTINEL_PASSWORD = "map-sentinel-secret"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(Path(tmp_path_factory.mktemp("map-sentinel")), sentinel_password=SENTINEL_PASSWORD)
    try:
        yield deployment
    finally:
        deployment.stop()


def _on_sentinel(sentinel: SentinelDeployment, prefix: str, **redis: Any) -> Settings:
    section = {
        "sentinel_address": [",".join(sentinel.addresses)],  # one entry: one master's sentinels
        "sentinel_master_name": sentinel.MASTER,
        "sentinel_user": "default",
        "sentinel_password": SENTINEL_PASSWORD,
        "prefix": prefix,
        "connect_timeout": "0.25s",
        "io_timeout": "0.25s",
        **redis,
    }
    return settings_from_mapping({"map_broker": {"type": "redis", "redis": section}})


async def test_the_map_broker_finds_its_master_through_map_broker_redis_sentinels(
    sentinel: SentinelDeployment, prefix: str
) -> None:
    broker = make_map_broker(_on_sentinel(sentinel, prefix))
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe("board")
        result = await broker.publish("board", w("k"), DURABLE)
        assert (await events.wait_publications(1, "board")) == [result.publication]
        port = sentinel.master_port()
        assert command(port, "HLEN", f"{prefix}.map.{{board}}.state") == "1", "written on the master the sentinels name"
    finally:
        await broker.clear("board")
        await broker.close()
    for wrong in (
        {"sentinel_password": "wrong"},
        {"sentinel_user": "nobody"},
        {"sentinel_master_name": "nosuchmaster"},
    ):
        bad = make_map_broker(_on_sentinel(sentinel, prefix, **wrong))
        with pytest.raises(RedisUnavailable):
            await bad.start(Recorder())
        await bad.close()
