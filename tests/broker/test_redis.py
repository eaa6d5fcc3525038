"""Redis-only behaviour: several nodes, outages, timeouts, presence expiry, key layout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from tests.conftest import eventually
from trunkline.broker.base import (
    ClientInfo,
    HistoryQuery,
    Publication,
    PublishOptions,
    StreamPosition,
    encode_body,
)
from trunkline.broker.redis import RedisBroker, RedisPresence, RedisUnavailable

from .conftest import Recorder, RedisServer, free_port, running

pytestmark = pytest.mark.redis

HISTORY = PublishOptions(history_size=100, history_ttl=60.0)


def rec(data: bytes) -> Publication:
    return Publication(data=data)


def at(data: bytes, offset: int, epoch: str) -> Publication:
    """The record of ``data`` as the broker delivers and stores it."""
    return Publication(data=data, offset=offset, epoch=epoch)


def started(url: str, prefix: str, **kwargs: float) -> AbstractAsyncContextManager[tuple[RedisBroker, Recorder]]:
    """A started broker (one "node") and what its handler received."""
    return running(RedisBroker(url, prefix=prefix, **kwargs))


# --- several nodes ------------------------------------------------------------------


async def test_two_nodes_share_publications_history_and_presence(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (a, a_events), started(redis_url, prefix) as (b, b_events):
        await a.subscribe("room")
        await b.subscribe("room")
        first = await a.publish("room", rec(b'{"data":1}'), HISTORY)
        second = await b.publish("room", rec(b'{"data":2}'), HISTORY)
        assert first is not None
        assert second == StreamPosition(2, first.epoch)
        await b.publish_join("room", b'{"user":"u"}')
        expected = [
            ("pub", "room", at(b'{"data":1}', 1, first.epoch)),
            ("pub", "room", at(b'{"data":2}', 2, first.epoch)),
            ("join", "room", b'{"user":"u"}'),
        ]
        assert await a_events.wait(3) == expected
        assert await b_events.wait(3) == expected

        publications, position = await b.history("room", HistoryQuery())
        assert position == second
        assert publications == [at(b'{"data":1}', 1, first.epoch), at(b'{"data":2}', 2, first.epoch)]

        await a.publish_control(b"shutdown-node-x")
        assert await b_events.wait(1, "control") == [("control", "", b"shutdown-node-x")]
        assert await a_events.wait(1, "control") == [("control", "", b"shutdown-node-x")]

        on_a = RedisPresence.from_client(a.client, prefix=prefix)
        on_b = RedisPresence.from_client(b.client, prefix=prefix)
        await on_a.add_presence("room", "c1", "u1", b'{"client":"c1"}', 60.0)
        await on_b.add_presence("room", "c2", "u2", b'{"client":"c2"}', 60.0)
        assert await on_b.presence("room") == {"c1": b'{"client":"c1"}', "c2": b'{"client":"c2"}'}
        assert await on_a.presence_stats("room") == (2, 2)
        await on_b.remove_presence("room", "c1")
        assert await on_a.presence("room") == {"c2": b'{"client":"c2"}'}
        await on_a.close()  # borrowed client: stays open
        assert await on_a.presence_stats("room") == (1, 1)
        assert a_events.of("resync") == [], "no resync without an interruption"


async def test_an_idempotent_publish_is_shared_by_the_nodes(redis_url: str, prefix: str, raw: Redis) -> None:
    """A retry through another node (as after an API timeout) publishes nothing either."""
    async with started(redis_url, prefix) as (a, a_events), started(redis_url, prefix) as (b, _):
        await a.subscribe("room")
        options = PublishOptions(history_size=10, history_ttl=60.0, idempotency_key="req-1")
        first = await a.publish("room", rec(b"1"), options)
        assert await b.publish("room", rec(b"2"), options) == first
        await b.publish_control(b"barrier")
        await a_events.wait(1, "control")
        assert first is not None
        assert a_events.publications("room") == [at(b"1", 1, first.epoch)]


async def test_subscribe_returns_once_redis_confirmed_it(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, events), started(redis_url, prefix) as (other, _):
        for n in range(30):
            await node.subscribe(f"c{n}")
            await other.publish(f"c{n}", rec(b'{"n":%d}' % n), PublishOptions())
        received = await events.wait(30, "pub")
        assert sorted(channel for _, channel, _ in received) == sorted(f"c{n}" for n in range(30))
        assert sorted(p.data for _, _, p in received) == sorted(b'{"n":%d}' % n for n in range(30))


async def test_only_subscribed_channels_are_delivered(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, events):
        await node.subscribe("yes")
        await node.subscribe("gone")
        await node.unsubscribe("gone")
        positions = [await node.publish(channel, rec(b"{}"), HISTORY) for channel in ("yes", "gone", "never")]
        await node.publish_control(b"barrier")  # comes after the rest
        await events.wait(1, "control")
        assert positions[0] is not None
        assert events.of("pub") == [("pub", "yes", at(b"{}", 1, positions[0].epoch))]


async def test_wire_format_of_the_pubsub_channel(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, events):
        await node.subscribe("room")
        async with raw.pubsub() as pubsub:
            await check_wire_format(pubsub, node, events, raw, prefix)


async def check_wire_format(pubsub: PubSub, node: RedisBroker, events: Recorder, raw: Redis, prefix: str) -> None:
    await pubsub.subscribe(f"{prefix}.client.room")
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
    x = Publication(data=b'{"data":"x"}', tags={"t": "1"}, time=42)
    y = Publication(data=b'{"data":"y"}')
    position = await node.publish("room", x, HISTORY)
    await node.publish("room", y, PublishOptions())
    await node.publish_leave("room", b'{"user":"u"}')
    assert position is not None
    seen: list[bytes] = []
    while len(seen) < 3:
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        seen.append(message["data"])
    epoch = position.epoch.encode()
    assert seen == [b"p1:" + epoch + b":" + encode_body(x), b"p0::" + encode_body(y), b'l{"user":"u"}']
    # Another implementation speaking the same format reaches the node.
    z = Publication(data=b"z", info=ClientInfo(user="u", client="c", conn_info=b"{}"))
    await raw.publish(f"{prefix}.client.room", b'j{"user":"v"}')
    await raw.publish(f"{prefix}.client.room", b"p9:e-9:" + encode_body(z))
    await raw.publish(f"{prefix}.client.room", b"p0::" + encode_body(z))
    await events.wait(6, channel="room")
    assert events.of(channel="room")[3:] == [
        ("join", "room", b'{"user":"v"}'),
        ("pub", "room", msgspec.structs.replace(z, offset=9, epoch="e-9")),
        ("pub", "room", z),
    ]


async def test_malformed_publications_are_dropped_and_delivery_goes_on(
    redis_url: str, prefix: str, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with started(redis_url, prefix) as (node, events):
        await node.subscribe("room")
        for bad in (b"p", b"p1", b"pX:e:" + encode_body(rec(b"")), b"p1:e:not msgpack", b"x?"):
            await raw.publish(f"{prefix}.client.room", bad)
        position = await node.publish("room", rec(b"ok"), HISTORY)
        assert position is not None
        assert await events.wait(1, "pub") == [("pub", "room", at(b"ok", 1, position.epoch))]
        assert len(events.events) == 1
        assert len([r for r in caplog.records if r.name == "trunkline.broker.redis"]) == 5


async def test_key_layout(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, _):
        options = PublishOptions(history_size=2, history_ttl=30.0, history_meta_ttl=300.0)
        for _ in range(3):
            await node.publish("room", rec(b'{"d":1}'), options)
        presence = RedisPresence.from_client(node.client, prefix=prefix)
        await presence.add_presence("room", "c1", "u1", b"{}", 20.0)
        stream, meta = f"{prefix}.stream.room", f"{prefix}.meta.room"
        assert await raw.xlen(stream) == 2
        entries = await raw.xrange(stream)
        assert entries is not None
        assert [entry_id for entry_id, _ in entries] == [b"2-0", b"3-0"]
        assert [fields for _, fields in entries] == [{b"d": encode_body(rec(b'{"d":1}'))}] * 2
        assert (await raw.hgetall(meta))[b"s"] == b"3"
        assert 29_000 < await raw.pttl(stream) <= 30_000
        assert 299_000 < await raw.pttl(meta) <= 300_000
        data, expire = f"{prefix}.presence.data.room", f"{prefix}.presence.expire.room"
        assert await raw.hgetall(data) == {b"c1": b"2:u1{}"}
        assert await raw.zcard(expire) == 1
        assert 19_000 < await raw.pttl(data) <= 20_000
        assert 19_000 < await raw.pttl(expire) <= 20_000

        # An idempotent result lives its ttl; the channel's length keeps channel and key apart.
        keyed = PublishOptions(history_size=2, history_ttl=30.0, idempotency_key="k.1", idempotent_result_ttl=7.0)
        position = await node.publish("room", rec(b"{}"), keyed)
        assert position is not None
        result = f"{prefix}.result.4.room.k.1"
        assert await raw.get(result) == b"4:" + position.epoch.encode()
        assert 6_000 < await raw.pttl(result) <= 7_000
        assert await node.publish("plain", rec(b"{}"), PublishOptions(idempotency_key="k")) is None
        assert await raw.get(f"{prefix}.result.5.plain.k") == b"0:"
        assert not await raw.exists(f"{prefix}.stream.plain", f"{prefix}.meta.plain"), "no history: no stream"

        # A read of a new channel creates only its metadata, with the placeholder's ttl.
        await node.history("new", HistoryQuery(limit=0, history_meta_ttl=3600.0, placeholder_ttl=9.0))
        assert 8_000 < await raw.pttl(f"{prefix}.meta.new") <= 9_000
        assert not await raw.exists(f"{prefix}.stream.new")
        # Without a placeholder ttl the metadata is left without expiry (as before this change).
        await node.history("other", HistoryQuery(limit=0))
        assert await raw.pttl(f"{prefix}.meta.other") == -1


async def test_concurrent_calls_get_their_own_replies(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, _):
        presence = RedisPresence.from_client(node.client, prefix=prefix)
        positions = await asyncio.gather(
            *(node.publish(f"c{n % 5}", rec(b'{"n":%d}' % n), HISTORY) for n in range(100)),
            *(presence.add_presence("room", f"client{n}", f"u{n % 7}", b"{}", 60.0) for n in range(50)),
        )
        for channel in range(5):
            mine = [p for n, p in enumerate(positions[:100]) if n % 5 == channel]
            assert sorted(p.offset for p in mine if p is not None) == list(range(1, 21))
        histories = await asyncio.gather(*(node.history(f"c{i}", HistoryQuery(limit=3)) for i in range(5)))
        for i, (publications, position) in enumerate(histories):
            assert position.offset == 20
            assert publications == [at(b'{"n":%d}' % (i + 5 * k), k + 1, position.epoch) for k in range(3)]
        assert await presence.presence_stats("room") == (50, 7)

        await raw.script_flush()  # as after a restart: every pipelined EVALSHA gets NOSCRIPT
        again = await asyncio.gather(*(node.publish("c0", rec(b"{}"), HISTORY) for _ in range(10)))
        assert sorted(p.offset for p in again if p is not None) == list(range(21, 31))


async def test_handler_errors_do_not_stop_delivery(redis_url: str, prefix: str, raw: Redis) -> None:
    async with started(redis_url, prefix) as (node, events):
        await node.subscribe("c")
        events.fail_next = True
        await node.publish("c", rec(b'{"n":1}'), HISTORY)
        await node.publish("c", rec(b'{"n":2}'), HISTORY)
        assert [p.offset for p in await events.wait_publications(2, "c")] == [1, 2]


async def test_a_client_returning_str_is_refused(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBroker.from_client(client)
    await client.aclose()


async def test_close_twice_and_close_without_start(redis_url: str, prefix: str) -> None:
    broker = RedisBroker(redis_url, prefix=prefix)
    await broker.close()
    broker = RedisBroker(redis_url, prefix=prefix)
    await broker.start(Recorder())
    await broker.close()
    await broker.close()
    presence = RedisPresence(redis_url, prefix=prefix)
    assert await presence.presence_stats("x") == (0, 0)
    await presence.close()
    await presence.close()


# --- presence expiry ----------------------------------------------------------------


async def test_presence_entries_expire_one_by_one(redis_url: str, prefix: str, raw: Redis) -> None:
    presence = RedisPresence(redis_url, prefix=prefix)
    data, expire = f"{prefix}.presence.data.room", f"{prefix}.presence.expire.room"
    try:
        await presence.add_presence("room", "short", "u1", b'{"c":"short"}', 0.2)
        await presence.add_presence("room", "long", "u2", b'{"c":"long"}', 30.0)
        assert await presence.presence_stats("room") == (2, 2)

        async def only_long() -> bool:
            return await presence.presence("room") == {"long": b'{"c":"long"}'}

        await eventually(only_long, timeout=10.0)
        assert await presence.presence_stats("room") == (1, 1)
        assert await raw.hlen(data) == 1, "expired entries are removed on read"
        assert await raw.zcard(expire) == 1

        # Refreshing an entry moves its expiry; the keys last as long as the longest entry.
        await presence.add_presence("room", "short", "u1", b'{"c":"short"}', 1.0)
        first = await raw.zscore(expire, "short")
        await presence.add_presence("room", "short", "u1", b'{"c":"short"}', 10.0)
        refreshed = await raw.zscore(expire, "short")
        assert first is not None
        assert refreshed is not None
        assert refreshed - first >= 9_000, "the refresh counts from now with its own ttl"
        assert set(await presence.presence("room")) == {"short", "long"}
        assert 25_000 < await raw.pttl(data) <= 30_000, "as long as the longest"

        # A ttl of 0 never expires by itself (like the memory presence).
        await presence.add_presence("room", "forever", "u3", b"{}", 0)
        assert await raw.zscore(expire, "forever") == float("inf")
        assert await raw.pttl(data) == -1
        assert await raw.pttl(expire) == -1
        await presence.remove_presence("room", "forever")
        await presence.add_presence("room", "long", "u2", b'{"c":"long"}', 30.0)  # expiries are set again
        assert 25_000 < await raw.pttl(data) <= 30_000
    finally:
        await presence.close()


async def test_whole_presence_key_expires_with_its_last_entry(redis_url: str, prefix: str, raw: Redis) -> None:
    presence = RedisPresence(redis_url, prefix=prefix)
    try:
        await presence.add_presence("room", "c1", "u1", b"{}", 0.2)
        assert 0 < await raw.pttl(f"{prefix}.presence.data.room") <= 200

        async def gone() -> bool:
            return await raw.exists(f"{prefix}.presence.data.room", f"{prefix}.presence.expire.room") == 0

        await eventually(gone, timeout=10.0)
        assert await presence.presence("room") == {}
    finally:
        await presence.close()


async def test_presence_calls_of_one_entry_apply_in_call_order(redis_url: str, prefix: str, raw: Redis) -> None:
    """add, remove, add … of one entry started in different loop turns end as the last call says."""
    presence = RedisPresence(redis_url, prefix=prefix)
    loop = asyncio.get_running_loop()
    calls: list[asyncio.Task[None]] = []
    try:
        for n in range(200):
            if n % 2 == 0:
                calls.append(loop.create_task(presence.add_presence("room", "c1", "u", b"%d" % n, 60.0)))
            else:
                calls.append(loop.create_task(presence.remove_presence("room", "c1")))
            await asyncio.sleep(0)  # the next call goes out in another loop turn (another pipeline)
        calls.append(loop.create_task(presence.add_presence("room", "c1", "u", b"last", 60.0)))
        await asyncio.gather(*calls)
        assert await presence.presence("room") == {"c1": b"last"}
        assert presence._tails == {}
    finally:
        await presence.close()


# --- outages and timeouts -------------------------------------------------------------


async def test_reconnects_after_a_redis_restart(redis_servers: Callable[[], RedisServer], prefix: str) -> None:
    server = redis_servers()
    broker = RedisBroker(server.url, prefix=prefix, connect_timeout=1.0, io_timeout=1.0)
    broker.reconnect_delay_max = 0.2
    events = Recorder()
    await broker.start(events)
    try:
        await broker.subscribe("room")
        before = await broker.publish("room", rec(b"{}"), HISTORY)
        assert before is not None
        assert before.offset == 1
        await events.wait(1, "pub")
        assert events.of("resync") == []

        server.stop()

        async def ping_fails() -> bool:
            try:
                await broker.ping()
            except RedisUnavailable:
                return True
            return False

        await eventually(ping_fails, timeout=10.0)
        with pytest.raises(RedisUnavailable):
            await broker.publish("room", rec(b"{}"), HISTORY)
        with pytest.raises(RedisUnavailable):
            await broker.history("room", HistoryQuery())
        with pytest.raises(RedisUnavailable):
            await broker.subscribe("other")

        server.start()  # same port, empty: no data, no script cache

        async def ping_works() -> bool:
            return not await ping_fails()

        await eventually(ping_works, timeout=10.0)
        # Every channel is subscribed again, then the node is told it may have missed publications.
        await events.wait(1, "resync")
        async with started(server.url, prefix) as (other, _):
            after = await other.publish("room", rec(b'{"again":1}'), HISTORY)
        assert after is not None
        assert after.offset == 1
        assert after.epoch != before.epoch, "the stream was lost, so it has a new epoch"
        assert (await events.wait(2, "pub"))[-1] == ("pub", "room", at(b'{"again":1}', 1, after.epoch))
        assert len(events.of("resync")) == 1
        await broker.subscribe("other")  # works again
        assert (await broker.history("room", HistoryQuery()))[1] == after
    finally:
        await broker.close()


async def test_ping_and_start_raise_when_redis_is_down(prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    broker = RedisBroker(url, prefix=prefix, connect_timeout=0.3, io_timeout=0.3)
    with pytest.raises(RedisUnavailable):
        await broker.ping()
    with pytest.raises(RedisUnavailable):
        await broker.start(Recorder())
    with pytest.raises(RedisUnavailable):
        await broker.publish("c", rec(b"{}"), HISTORY)
    await broker.close()
    presence = RedisPresence(url, prefix=prefix, connect_timeout=0.3, io_timeout=0.3)
    with pytest.raises(RedisUnavailable):
        await presence.presence("c")
    await presence.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_calls_give_up_on_a_silent_server(silent_server: int, prefix: str) -> None:
    url = f"redis://127.0.0.1:{silent_server}"
    broker = RedisBroker(url, prefix=prefix, connect_timeout=0.2, io_timeout=0.2)
    presence = RedisPresence.from_client(broker.client, prefix=prefix, connect_timeout=0.2, io_timeout=0.2)
    calls = [
        broker.ping(),
        broker.publish("c", rec(b"{}"), HISTORY),
        broker.publish("c", rec(b"{}"), PublishOptions()),
        broker.publish("c", rec(b"{}"), PublishOptions(idempotency_key="k")),
        broker.history("c", HistoryQuery()),
        presence.add_presence("c", "c1", "u", b"{}", 1.0),
        presence.presence_stats("c"),
    ]
    for call in calls:
        started_at = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await call
        assert time.monotonic() - started_at < 1.5
    with pytest.raises(RedisUnavailable):
        await broker.start(Recorder())
    await broker.close()


class FreezingProxy:
    """A TCP proxy to Redis whose current connections can be made to go silent."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.connections = 0
        self._frozen: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def freeze_current(self) -> None:
        """Existing connections swallow everything from now on, without closing."""
        self._frozen.update(range(self.connections))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(number, source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, number: int, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if number not in self._frozen:
                sink.write(data)
                await sink.drain()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FreezingProxy]:
    url = urlsplit(redis_url)
    proxy = FreezingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    port = await proxy.start()
    userinfo = url.netloc.rpartition("@")[0]
    proxy.url = urlunsplit(url._replace(netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"))
    yield proxy
    await proxy.close()


@pytest.fixture
def quick_pings() -> Iterator[None]:
    saved = RedisBroker.pubsub_ping_interval
    RedisBroker.pubsub_ping_interval = 0.2
    yield
    RedisBroker.pubsub_ping_interval = saved


async def test_a_silent_pubsub_connection_is_replaced(
    proxy: FreezingProxy, prefix: str, raw: Redis, quick_pings: None
) -> None:
    empty = b"p0::" + encode_body(rec(b"{}"))
    async with started(proxy.url, prefix, io_timeout=0.3, connect_timeout=0.3) as (node, events):
        await node.subscribe("room")
        await raw.publish(f"{prefix}.client.room", empty)
        await events.wait(1, "pub")
        connections = proxy.connections
        proxy.freeze_current()
        await raw.publish(f"{prefix}.client.room", empty)  # lost on the silent connection

        async def delivered_again() -> bool:
            await raw.publish(f"{prefix}.client.room", b"p0::" + encode_body(rec(b'{"late":1}')))
            return bool(events.of("pub", "room")[1:])

        await eventually(delivered_again, timeout=5.0)
        assert proxy.connections > connections, "the reader opened a new connection"
        assert all(p == rec(b'{"late":1}') for p in events.publications("room")[1:])
        await events.wait(1, "resync")


async def test_a_killed_pubsub_link_resubscribes_everything_then_resyncs(
    redis_servers: Callable[[], RedisServer], prefix: str
) -> None:
    """Issue 9 items 1-2: after CLIENT KILL TYPE pubsub, the node hears (once) that it may have missed data."""
    server = redis_servers()
    async with started(server.url, prefix, connect_timeout=1.0, io_timeout=1.0) as (node, events):
        node.reconnect_delay_max = 0.2
        channels = [f"c{n}" for n in range(1200)]  # more than one SUBSCRIBE batch
        await asyncio.gather(*(node.subscribe(channel) for channel in channels))
        client = Redis.from_url(server.url)
        try:
            assert await client.client_kill_filter(_type="pubsub") == 1  # CLIENT KILL TYPE pubsub
            await events.wait(1, "resync")
            async with client.pipeline(transaction=False) as pipeline:
                for channel in channels:
                    pipeline.publish(f"{prefix}.client.{channel}", b"p0::" + encode_body(rec(b"x")))
                await pipeline.execute()
        finally:
            await client.aclose()
        received = await events.wait(len(channels), "pub")
        assert sorted(channel for _, channel, _ in received) == sorted(channels), "all resubscribed before the resync"
        assert len(events.of("resync")) == 1
        await node.subscribe("late")  # a new channel on the new connection does not count as a resubscription
        assert len(events.of("resync")) == 1
