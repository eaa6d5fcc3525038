"""Issue 19 item 2: Trunkline on a real Redis Cluster (3 masters, a replica each, cluster-node-timeout 1 s).

``engine.redis.cluster_address`` names the seeds. The broker contract suite runs on the
same cluster (``test_contract.py``, the ``redis-cluster`` param); here: every key of a
channel in the channel's slot and channels spread over the three masters (checked with
CLUSTER KEYSLOT and CLUSTER NODES), pub/sub and patterns across nodes, a
centrifuge-python subscriber recovering after a dropped link with two Trunkline nodes,
and a master killed: its replica is promoted and clients are told honestly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from cent import AsyncClient, PublishRequest
from redis.asyncio.cluster import RedisCluster

from tests.conftest import API_KEY, Running, deep_merge, eventually, token
from tests.mqtt.paho_helpers import V5, V311, Paho
from tests.sdk.helpers import ClientRecorder, Recorder, TcpProxy, new_client
from trunkline.broker.base import HistoryQuery, Publication, PublishOptions
from trunkline.broker.redis import RedisBroker, RedisPresence
from trunkline.broker.redis_sharding import ShardedRedisBroker, ShardedRedisPresence
from trunkline.broker.redis_topology import make_cluster_client, make_redis_engine
from trunkline.config import RedisSettings
from trunkline.mqtt.retained import RedisRetained
from trunkline.mqtt.session import node_state

from .conftest import Recorder as BrokerRecorder
from .redis_failover import failover_under_load
from .redis_procs import ClusterDeployment, command, wait_for
from .test_redis_sharding import channels_per_shard

pytestmark = pytest.mark.redis

HISTORY = PublishOptions(history_size=100, history_ttl=60.0, idempotency_key="k")


def engine(cluster: ClusterDeployment, prefix: str) -> dict[str, Any]:
    # one entry: one cluster, its seeds comma-separated (several entries would be shards, as in Centrifugo)
    return {"engine": {"type": "redis", "redis": {"cluster_address": [",".join(cluster.seeds)], "prefix": prefix}}}


def channel_keys(prefix: str, channel: str) -> list[str]:
    tag = f"{{{channel}}}"
    return [
        f"{prefix}.stream.{tag}",
        f"{prefix}.meta.{tag}",
        f"{prefix}.result.{len(channel)}.{tag}.k",
        f"{prefix}.presence.data.{tag}",
        f"{prefix}.presence.expire.{tag}",
    ]


class PatternRecorder(BrokerRecorder):
    def handle_pattern_publication(self, channel: str, pub: Publication) -> None:
        self._record(("pattern", channel, pub))


async def test_every_key_of_a_channel_is_in_its_slot_and_channels_spread_over_three_masters(
    redis_cluster: ClusterDeployment, prefix: str
) -> None:
    client = make_cluster_client(redis_cluster.seeds, io_timeout=2.0)
    broker = RedisBroker.from_client(client, prefix, io_timeout=2.0, owns_client=True)
    presence = RedisPresence.from_client(client, prefix)
    await broker.start(BrokerRecorder())
    try:
        where: dict[str, int] = {}
        for i in range(12):
            channel = f"spread:{i}"
            await broker.publish(channel, Publication(data=b"{}"), HISTORY)
            await presence.add_presence(channel, "c1", "u1", b"{}", 60.0)
            keys = channel_keys(prefix, channel)
            slots = {redis_cluster.keyslot(key) for key in keys}
            assert slots == {redis_cluster.keyslot(f"{{{channel}}}")}, f"{channel}: one slot for all its keys"
            master = redis_cluster.master_of_slot(slots.pop())
            assert command(master, "EXISTS", *keys) == str(len(keys)), "every key is on the slot's master"
            where[channel] = master
        assert len(set(where.values())) == 3, f"channels on all three masters: {where}"
    finally:
        await broker.close()


async def test_pubsub_patterns_and_control_cross_the_cluster(redis_cluster: ClusterDeployment, prefix: str) -> None:
    """Node A's one pub/sub connection sits on one cluster node; publications of channels owned by
    all three masters, sent by node B, reach it (classic pub/sub is cluster-wide)."""
    brokers, events = [], []
    for _ in range(2):
        client = make_cluster_client(redis_cluster.seeds, io_timeout=2.0)
        broker = RedisBroker.from_client(client, prefix, io_timeout=2.0, owns_client=True)
        recorder = PatternRecorder()
        await broker.start(recorder)
        brokers.append(broker)
        events.append(recorder)
    a, b = brokers
    try:
        channels = [f"x:{i}" for i in range(9)]
        masters = {redis_cluster.master_of_slot(redis_cluster.keyslot(f"{{{c}}}")) for c in channels}
        assert len(masters) == 3
        for channel in channels:
            await a.subscribe(channel)
        await a.psubscribe("mqtt/")
        for n, channel in enumerate(channels):
            await b.publish(channel, Publication(data=b'{"n":%d}' % n), PublishOptions(history_size=10, history_ttl=60))
            await b.publish_join(channel, b"join")
        for n in range(6):
            await b.publish(f"mqtt/t{n}", Publication(data=b"{}"), PublishOptions())
        await b.publish_control(b"hello")
        for channel in channels:
            got = await events[0].wait(2, channel=channel)
            assert [kind for kind, _, _ in got] == ["pub", "join"], "one channel's feed keeps its order"
        await events[0].wait(1, "control")
        await events[1].wait(1, "control")  # the sender gets its control messages too
        patterns = await events[0].wait(6, "pattern")
        assert sorted(c for _, c, _ in patterns) == [f"mqtt/t{n}" for n in range(6)]
    finally:
        for broker in brokers:
            await broker.close()


async def test_sdk_subscriber_recovers_after_a_dropped_link_with_two_nodes_on_the_cluster(
    redis_cluster: ClusterDeployment, prefix: str, start_server: Any
) -> None:
    one: Running = await start_server(engine(redis_cluster, prefix))
    two: Running = await start_server(engine(redis_cluster, prefix))
    proxy = await TcpProxy(one.port).start()
    events = ClientRecorder()
    client = new_client(proxy.ws_url, events, token=token("42"))
    rec = Recorder()
    sub = client.new_subscription("cluster-stream", rec)
    try:
        await client.connect()
        await sub.subscribe()
        await sub.ready()
        async with AsyncClient(two.api_url, API_KEY) as api:
            for i in range(20):
                await api.publish(PublishRequest(channel="cluster-stream", data={"i": i}))
            await eventually(lambda: len(rec.publications) == 20)
            proxy.accepting = False
            proxy.cut()
            await eventually(lambda: bool(events.disconnected) or len(events.connecting) >= 2)
            for i in range(20, 120):
                await api.publish(PublishRequest(channel="cluster-stream", data={"i": i}))
            proxy.accepting = True
            await eventually(lambda: len(rec.publications) >= 120, timeout=20)
        assert [d["i"] for _, d in rec.publications] == list(range(120))
        assert [offset for offset, _ in rec.publications] == list(range(1, 121)), "in order, no gap, no duplicate"
        assert rec.subscribed[-1].was_recovering and rec.subscribed[-1].recovered
    finally:
        await client.disconnect()
        await proxy.close()


async def test_a_killed_master_is_replaced_by_its_replica_and_clients_are_told_honestly(
    redis_cluster: ClusterDeployment, prefix: str, start_server: Any
) -> None:
    """Kill -9 the master of a channel's slot under a steady publisher (50/s through the API):
    its replica is promoted (no CLUSTER FAILOVER), /ready fails meanwhile, Trunkline follows
    the new topology, and the issue-9 checker finds every acknowledged publication received
    exactly once in order or told. The master is started again (it rejoins as a replica)."""
    channel = "failover"
    slot = redis_cluster.keyslot(f"{{{channel}}}")
    victim = redis_cluster.master_of_slot(slot)
    server: Running = await start_server(engine(redis_cluster, prefix))
    broker = server.server.node.broker
    proc = redis_cluster.proc(victim)
    promoted: list[float] = []

    async def kill_master() -> None:
        killed_at = time.monotonic()
        proc.kill()
        await eventually(lambda: _ping_fails(broker), timeout=10)  # /ready: not ready meanwhile
        await asyncio.to_thread(
            wait_for, lambda: redis_cluster.master_of_slot(slot) not in (0, victim), 20, "the replica promoted"
        )
        promoted.append(time.monotonic() - killed_at)

    try:
        run = await failover_under_load(server.ws_url, server.api_url, channel, kill_master)
        assert run.problems == [], run.problems
        assert promoted and promoted[0] < 15, promoted
        await eventually(lambda: _ping_works(broker), timeout=10)  # ready again
    finally:
        if proc.process is None:
            proc.start()
            await asyncio.to_thread(wait_for, lambda: command(victim, "PING") == "PONG", 10, "restarted node")
            await asyncio.to_thread(wait_for, lambda: _rejoined(redis_cluster, victim), 30, "rejoined as a replica")


async def _ping_fails(broker: Any) -> bool:
    return not await _ping_works(broker)


async def _ping_works(broker: Any) -> bool:
    try:
        await broker.ping()
    except ConnectionError:
        return False
    return True


def _rejoined(cluster: ClusterDeployment, port: int) -> bool:
    with contextlib.suppress(OSError):
        info = command(port, "INFO", "replication")
        state = command(port, "CLUSTER", "INFO")
        return "role:slave" in info and "cluster_state:ok" in state
    return False


async def test_mqtt_retained_and_wildcards_across_two_nodes_on_the_cluster(
    redis_cluster: ClusterDeployment, prefix: str, start_server: Any
) -> None:
    """The retained store's keys share one hash tag (one slot); a ``#`` subscription on node two
    (a cluster-wide PSUBSCRIBE) hears a device publishing through node one."""
    config = deep_merge(engine(redis_cluster, prefix), {"mqtt": {"websocket": {"enabled": True}}})
    one: Running = await start_server(config)
    two: Running = await start_server(config)
    device = Paho(V5, client_id="thermo")
    watcher = Paho(V311)
    try:
        assert (await device.connect(one.port, username="dev", password=token("dev"))) == 0
        info = device.client.publish("nohistory/temp", b"21.5", qos=1, retain=True)
        await eventually(info.is_published)
        assert (await watcher.connect(two.port, username="w", password=token("w"))) == 0
        await watcher.subscribe("nohistory/#", 1)
        got = await watcher.next()
        assert (got.topic, got.payload, got.retain) == ("nohistory/temp", b"21.5", True)
        assert isinstance(node_state(two.server.node).retained, RedisRetained)
        device.client.publish("nohistory/hum", b"40", qos=1)
        got = await watcher.next()
        assert (got.topic, got.payload, got.retain) == ("nohistory/hum", b"40", False)
    finally:
        watcher.stop()
        device.stop()


async def test_several_cluster_address_entries_are_consistent_shards(
    redis_cluster: ClusterDeployment, prefix: str
) -> None:
    """Centrifugo's meaning: each entry is a cluster; two entries shard channels over two clusters
    (here both name the same cluster, which keeps every channel's keys whole either way)."""
    seeds = ",".join(redis_cluster.seeds)
    settings = RedisSettings(cluster_address=(seeds, seeds), prefix=prefix, io_timeout=2.0)
    broker, presence = make_redis_engine(settings)
    assert isinstance(broker, ShardedRedisBroker) and isinstance(presence, ShardedRedisPresence)
    assert len(broker.shards) == 2
    assert all(isinstance(shard.client, RedisCluster) for shard in broker.shards)
    events = BrokerRecorder()
    await broker.start(events)
    try:
        channels = channels_per_shard(2)
        for channel in channels:
            await broker.subscribe(channel)
            position = await broker.publish(
                channel, Publication(data=b"{}"), PublishOptions(history_size=5, history_ttl=60)
            )
            assert position is not None and position.offset == 1
            await events.wait(1, "pub", channel)
            publications, top = await broker.history(channel, HistoryQuery())
            assert top == position and len(publications) == 1
    finally:
        await broker.close()
