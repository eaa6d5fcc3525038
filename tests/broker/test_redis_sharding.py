"""Issue 19 item 2: consistent sharding over independent Redis servers (``engine.redis.address`` as a list).

The shard of a channel is Centrifuge's ``consistentIndex``: jump consistent hash over the
FNV-1a 64 hash of the name (checked against the published test vectors of both), so a
Trunkline node and a Centrifugo node map every channel to the same shard. On two real
redis-servers: channels land on both, publications cross between two Trunkline nodes,
history, presence and recovery work on each shard, and control messages (the node list)
reach every node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cent import AsyncClient, HistoryRequest, InfoRequest, PresenceStatsRequest, PublishRequest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running, eventually, token
from tests.sdk.helpers import Recorder, TcpProxy, new_client
from trunkline.broker.redis_sharding import ShardedRedisBroker, fnv1a64, jump_hash, shard_index
from trunkline.broker.redis_topology import make_redis_engine
from trunkline.config import RedisSettings, load_settings
from trunkline.errors import ConfigError

from .conftest import Recorder as BrokerRecorder
from .conftest import RedisServer
from .redis_procs import command

# go-jump's test vectors (key, buckets, bucket), which Centrifuge's consistentIndex reproduces
JUMP_VECTORS = [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520)]
# FNV-1a 64 reference values (the FNV authors' test suite)
FNV_VECTORS = [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)]


@pytest.mark.parametrize(("key", "buckets", "expected"), JUMP_VECTORS)
def test_jump_hash_matches_the_reference_vectors(key: int, buckets: int, expected: int) -> None:
    assert jump_hash(key, buckets) == expected


@pytest.mark.parametrize(("data", "expected"), FNV_VECTORS)
def test_fnv1a64_matches_the_reference_values(data: bytes, expected: int) -> None:
    assert fnv1a64(data) == expected


@given(st.text(max_size=64), st.integers(min_value=1, max_value=64))
def test_a_new_shard_only_takes_channels_never_shuffles_them(channel: str, shards: int) -> None:
    """Consistency: going from N to N+1 shards, a channel stays where it was or moves to the new shard."""
    before = shard_index(channel, shards)
    after = shard_index(channel, shards + 1)
    assert 0 <= before < shards
    assert after in (before, shards)


def test_jump_hash_refuses_zero_buckets() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)


# --- configuration ------------------------------------------------------------


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(str(path), env=env or {})


def test_address_as_a_list_or_comma_separated_means_shards(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[engine.redis]\naddress = ["redis://a:6379", "redis://:pw@b:6380/1"]\n')
    assert settings.engine.redis.addresses == ("redis://a:6379", "redis://:pw@b:6380/1")
    from_env = load_settings(None, env={"TRUNKLINE_ENGINE_REDIS_ADDRESS": "redis://a:1, redis://b:2"})
    assert from_env.engine.redis.addresses == ("redis://a:1", "redis://b:2")
    assert load_settings(None, env={}).engine.redis.addresses == ("redis://127.0.0.1:6379",)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[engine.redis]\naddress = ["redis://a:1", "http://b:2"]\n', "engine.redis.address", "redis://"),
        ('[engine.redis]\ncluster_address = ["a b"]\n', "engine.redis.cluster_address", "host:port"),
        ('[engine.redis]\ncluster_address = ["a:1,b:2", "c:3,"]\n', "engine.redis.cluster_address", "host:port"),
        ('[engine.redis]\nsentinel_address = ["a:1"]\n', "engine.redis.sentinel_master_name", "required"),
        (
            '[engine.redis]\ncluster_address = ["a:1"]\nsentinel_address = ["b:2"]\nsentinel_master_name = "m"\n',
            "engine.redis.sentinel_address",
            "not both",
        ),
        (
            '[engine.redis]\naddress = ["redis://a:1", "redis://b:2"]\ncluster_address = ["c:3"]\n',
            "engine.redis.address",
            "cannot go with",
        ),
        (
            '[engine]\ntype = "nats"\n[engine.nats]\nhistory = "redis"\n[engine.redis]\ncluster_address = ["c:3"]\n',
            "engine.nats.history",
            "one Redis server",
        ),
    ],
)
def test_topology_mistakes_are_named(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
    assert words in info.value.message


def test_passwords_of_every_shard_and_the_sentinels_are_masked(tmp_path: Path) -> None:
    text = (
        '[engine.redis]\naddress = ["redis://u:one@a:1", "redis://:two@b:2"]\n'
        'sentinel_password = "three"\nsentinel_address = []\n'
    )
    shown = repr(_load(tmp_path, text).masked_dict())
    assert "one" not in shown and "two" not in shown and "three" not in shown
    assert "redis://u:***@a:1" in shown and "redis://:***@b:2" in shown


# --- two real shards ----------------------------------------------------------------


def shards_engine(servers: list[RedisServer], prefix: str) -> dict[str, Any]:
    return {"engine": {"type": "redis", "redis": {"address": [s.url for s in servers], "prefix": prefix}}}


def channels_per_shard(count: int) -> list[str]:
    """Channel names, alternating between shard 0 and shard 1."""
    found: dict[int, list[str]] = {0: [], 1: []}
    n = 0
    while min(len(v) for v in found.values()) < count:
        found[shard_index(f"shard-{n}", 2)].append(f"shard-{n}")
        n += 1
    return [c for pair in zip(found[0][:count], found[1][:count], strict=True) for c in pair]


async def test_two_shards_channels_land_on_both_and_cross_between_nodes(
    redis_servers: Callable[[], RedisServer], prefix: str, start_server: Any
) -> None:
    servers = [redis_servers(), redis_servers()]
    config = shards_engine(servers, prefix)
    one: Running = await start_server(config)
    two: Running = await start_server(config)
    channels = channels_per_shard(2)
    proxy = await TcpProxy(one.port).start()
    client = new_client(proxy.ws_url, token=token("42"))
    recorders = {c: Recorder() for c in channels}
    subs = [client.new_subscription(c, recorders[c]) for c in channels]
    try:
        await client.connect()
        for sub in subs:
            await sub.subscribe()
            await sub.ready()
        async with AsyncClient(two.api_url, API_KEY) as api:
            for channel in channels:
                for i in range(5):
                    await api.publish(PublishRequest(channel=channel, data={"i": i}))
            await eventually(lambda: all(len(r.publications) == 5 for r in recorders.values()))

            # every channel's keys are on its own shard, and only there
            for channel in channels:
                home = servers[shard_index(channel, 2)].port
                other = servers[1 - shard_index(channel, 2)].port
                assert command(home, "EXISTS", f"{prefix}.stream.{channel}") == "1"
                assert command(other, "EXISTS", f"{prefix}.stream.{channel}") == "0"
                history = await api.history(HistoryRequest(channel=channel, limit=10))
                assert [p.data["i"] for p in history.publications] == list(range(5))
                stats = await api.presence_stats(PresenceStatsRequest(channel=channel))
                assert stats.num_clients == 1, "presence of the subscriber on node one, read through node two"

            # a dropped link: recovery reads each channel's shard
            proxy.accepting = False
            proxy.cut()
            await asyncio.sleep(0)
            for channel in channels:
                await api.publish(PublishRequest(channel=channel, data={"i": 5}))
            proxy.accepting = True
            await eventually(lambda: all(len(r.publications) == 6 for r in recorders.values()), timeout=15)
            assert all(r.subscribed[-1].recovered for r in recorders.values())

            # control messages reach every node: each lists both
            info = await eventually(lambda: _two_nodes(api), timeout=10)
            assert len(info) == 2
    finally:
        await client.disconnect()
        await proxy.close()


async def _two_nodes(api: AsyncClient) -> list[Any] | None:
    result = await api.info(InfoRequest())
    return result.nodes if len(result.nodes) == 2 else None


async def test_control_goes_through_the_next_live_shard_when_one_is_down(
    redis_servers: Callable[[], RedisServer], prefix: str
) -> None:
    servers = [redis_servers(), redis_servers()]
    settings = RedisSettings(
        address=",".join(s.url for s in servers), prefix=prefix, connect_timeout=0.5, io_timeout=0.5
    )
    broker, _ = make_redis_engine(settings)
    assert isinstance(broker, ShardedRedisBroker)
    events = BrokerRecorder()
    await broker.start(events)
    try:
        for n in range(4):
            await broker.publish_control(b"c%d" % n)
        got = await events.wait(4, "control")
        assert sorted(e[2] for e in got) == [b"c0", b"c1", b"c2", b"c3"], "each once, through either shard"
        servers[0].stop()
        for n in range(4, 8):
            await broker.publish_control(b"c%d" % n)
        got = await events.wait(8, "control")
        assert len(got) == 8, "the live shard carried every control message"
        with pytest.raises(ConnectionError):
            await broker.ping()
    finally:
        await broker.close()
