"""Redis broker and presence: many nodes share pub/sub, history and presence.

Layout (every name starts with the configured prefix, ``trunkline`` by default):

- ``<prefix>.client.<channel>``: the pub/sub channel of a Trunkline channel. Its
  messages carry a one-byte type marker so publications, joins and leaves of one
  channel stay in one ordered feed: ``p<offset>:<epoch>:<record>`` (``p0::<record>``
  without history; the record is :func:`~trunkline.broker.base.encode_body`'s
  msgpack), ``j<info>``, ``l<info>``.
- ``<prefix>.control``: node-to-node control messages, always subscribed.
- ``<prefix>.stream.<channel>``: the history stream (XADD ids ``<offset>-0``; each
  entry's field ``d`` holds the record).
- ``<prefix>.meta.<channel>``: the stream's metadata hash, ``e`` epoch and ``s`` top
  offset. A stream without publications (created by a subscribe's read) expires
  after the placeholder ttl unless read again.
- ``<prefix>.result.<len(channel)>.<channel>.<key>``: the result of an idempotent
  publish (the length keeps channel and key apart: ``a.b`` + ``c`` is not ``a`` + ``b.c``).
- ``<prefix>.presence.data.<channel>`` (hash client id -> ``<len(user)>:<user><info>``)
  and ``<prefix>.presence.expire.<channel>`` (zset client id -> expiry time, server
  clock in ms). Reads drop expired entries first. Adds and removes of one
  connection in one channel are applied in the order they were made.

Publishing into history is one Lua script (``lua/publish.lua``): the offset
increment, the epoch creation, the append, the trim, both expiries and the
PUBLISH happen atomically, so offsets on the pub/sub feed are in order. The
semantics are those of :mod:`trunkline.broker.memory`.

Every call on the shared client raises :class:`RedisUnavailable` when Redis cannot
be reached or does not answer within ``connect_timeout + io_timeout``. The pub/sub
reader reconnects by itself with a bounded backoff and resubscribes every channel;
publications sent while it was away are lost. Once every channel is subscribed
again the broker calls the node's ``handle_resync``, which checks each positioned
channel against its stream top (and offsets and epochs of later publications show
any other gap).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import (
    BrokerEventHandler,
    HistoryQuery,
    Publication,
    PublishOptions,
    StreamPosition,
    decode_body,
    encode_body,
)
from .memory import new_epoch

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "redis://127.0.0.1:6379"
POOL_SIZE = 64
SUBSCRIBE_BATCH = 512

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class _Script:
    source: bytes
    sha: str

    @classmethod
    def load(cls, name: str, *, then: str = "") -> _Script:
        """The script ``lua/<name>.lua``, followed by ``lua/<then>.lua`` when given (a shared tail)."""
        lua = resources.files(__package__ or "trunkline.broker") / "lua"
        source = (lua / f"{name}.lua").read_bytes()
        if then:
            source += b"\n" + (lua / f"{then}.lua").read_bytes()
        return cls(source, hashlib.sha1(source, usedforsecurity=False).hexdigest())


_PUBLISH = _Script.load("publish")
_HISTORY = _Script.load("history", then="stream_range")
_PRESENCE_ADD = _Script.load("presence_add")
_PRESENCE_REMOVE = _Script.load("presence_remove")
_PRESENCE_GET = _Script.load("presence_get")
_PUBLISH_PLAIN = _Script.load("publish_plain")
_ROTATE_EPOCH = _Script.load("rotate_epoch")


def _ms(seconds: float) -> int:
    """A positive ttl in whole milliseconds (at least 1), 0 for "none"."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def connection_kwargs(client: Redis) -> dict[str, Any]:
    """The keyword arguments new connections of ``client`` get (a :class:`RedisCluster` too)."""
    if isinstance(client, RedisCluster):
        return dict(client.get_connection_kwargs())
    return dict(client.connection_pool.connection_kwargs)


def make_client(
    address: str = DEFAULT_ADDRESS, connect_timeout: float = 5.0, io_timeout: float = 4.0, pool_size: int = POOL_SIZE
) -> Redis:
    """A client for ``address`` that both the broker and presence can share.

    Commands are never retried: a retry after a connection broke mid-command could
    run a publication twice. Stale pooled connections (after a Redis restart) are
    replaced when they are checked out, so a failure reaches the caller only when
    Redis really is unreachable.
    """
    pool = BlockingConnectionPool.from_url(
        address,
        max_connections=pool_size,
        timeout=io_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=io_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return Redis.from_pool(pool)


class _Pipeliner:
    """Send the commands issued in one event-loop turn as one pipeline.

    Each call gets its own reply (or its own error, such as NOSCRIPT); a lone
    command goes out as a plain command. Several pipelines may be in flight, each
    on its own pooled connection, so only commands of one turn keep their order
    on the wire (concurrent callers have no order to keep).
    """

    MAX_BATCH = 1000

    def __init__(self, client: Redis, deadline: float) -> None:
        self._client = client
        self._execute = cast("Callable[..., Awaitable[Any]]", client.execute_command)
        self._deadline = deadline
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if self._closed:  # a late call (say a presence removal during shutdown) opens no new connection
            reply.set_exception(RedisUnavailable("redis client closed"))
            return reply
        self._pending.append((args, reply))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return reply

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), self.MAX_BATCH):
            task = asyncio.create_task(self._flush(pending[i : i + self.MAX_BATCH]))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                if len(batch) == 1:
                    try:
                        results = [await self._execute(*batch[0][0])]
                    except ResponseError as exc:
                        results = [exc]
                else:
                    async with self._client.pipeline(transaction=False) as pipeline:
                        for args, _ in batch:
                            pipeline.execute_command(*args)
                        results = await pipeline.execute(raise_on_error=False)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RedisUnavailable("redis client closed")
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, reply), result in zip(batch, results, strict=True):
            if reply.done():
                continue  # the caller gave up
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    async def close(self) -> None:
        """Fail what is queued or in flight, and every later call."""
        self._closed = True
        pending, self._pending = self._pending, []
        for _, reply in pending:
            if not reply.done():
                reply.set_exception(RedisUnavailable("redis client closed"))
        flushes = list(self._flushes)
        for task in flushes:
            task.cancel()
        if flushes:
            await asyncio.wait(flushes)


_PIPELINERS: weakref.WeakKeyDictionary[Redis, _Pipeliner] = weakref.WeakKeyDictionary()


class _RedisUser:
    """Shared plumbing: the client, its ownership, deadlines and script calls."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        connect_timeout: float,
        io_timeout: float,
        owns_client: bool,
    ) -> None:
        if connection_kwargs(client).get("decode_responses"):
            raise ValueError("the Redis client must return bytes (decode_responses=False)")
        self._client = client
        # In a Redis Cluster every key of a channel carries the hash tag {channel}: one slot.
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._prefix = prefix
        self._connect_timeout = connect_timeout
        self._io_timeout = io_timeout
        self._deadline = connect_timeout + io_timeout
        self._owns_client = owns_client
        # One pipeliner per client: the broker and the presence (and anything else) sharing a
        # client share its pipelines, and the owner's close stops them all.
        pipeliner = _PIPELINERS.get(client)
        if pipeliner is None:
            pipeliner = _PIPELINERS[client] = _Pipeliner(client, self._deadline)
        self._pipeliner = pipeliner

    @property
    def client(self) -> Redis:
        """The shared client: a :class:`RedisCluster` (same command API) with ``engine.redis.cluster_address``."""
        return self._client

    def _tag(self, channel: str) -> str:
        """``channel`` as it appears in key names: ``{channel}`` (a hash tag) in a cluster."""
        return f"{{{channel}}}" if self._cluster is not None else channel

    def _result_key(self, channel: str, idempotency_key: str) -> str:
        return f"{self._prefix}.result.{len(channel)}.{self._tag(channel)}.{idempotency_key}"

    async def _close_client(self) -> None:
        if self._owns_client:
            self._owns_client = False
            await self._pipeliner.close()
            _PIPELINERS.pop(self._client, None)
            await self._client.aclose()
            # A Sentinel-managed pool: the clients of the sentinels themselves.
            manager = getattr(self._client.connection_pool, "sentinel_manager", None) if not self._cluster else None
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()

    async def _call(self, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                return await self._pipeliner.submit(args)
        except _UNAVAILABLE as exc:
            raise RedisUnavailable(f"redis {args[0]} failed: {exc!r}") from exc

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                try:
                    return await self._pipeliner.submit(("EVALSHA", script.sha, len(keys), *keys, *args))
                except NoScriptError:
                    # The script cache is empty after a restart; EVAL loads it again.
                    return await self._pipeliner.submit(("EVAL", script.source, len(keys), *keys, *args))
        except _UNAVAILABLE as exc:
            raise RedisUnavailable(f"redis script failed: {exc!r}") from exc


class RedisBroker(_RedisUser):
    """Pub/sub between nodes plus per-channel history streams, kept in Redis."""

    reconnect_delay_min = 0.05
    reconnect_delay_max = 5.0
    pubsub_ping_interval = 5.0

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        prefix: str = "trunkline",
        connect_timeout: float = 5.0,
        io_timeout: float = 4.0,
    ) -> None:
        client = make_client(address, connect_timeout, io_timeout)
        super().__init__(client, prefix, connect_timeout, io_timeout, owns_client=True)
        self._init_pubsub()

    @classmethod
    def from_client(
        cls,
        client: Redis,
        prefix: str = "trunkline",
        connect_timeout: float = 5.0,
        io_timeout: float = 4.0,
        *,
        owns_client: bool = False,
    ) -> RedisBroker:
        """A broker on a client owned by the caller (``close`` leaves it open unless ``owns_client``).

        ``client`` may be a :class:`RedisCluster` (see :mod:`.redis_topology`) or a
        Sentinel-managed client; the pub/sub reader then follows the cluster's nodes
        or the current master on every reconnect.
        """
        self = cls.__new__(cls)
        _RedisUser.__init__(self, client, prefix, connect_timeout, io_timeout, owns_client=owns_client)
        self._init_pubsub()
        return self

    def _init_pubsub(self) -> None:
        self._handler: BrokerEventHandler | None = None
        self._channel_prefix = f"{self._prefix}.client."
        self._control = f"{self._prefix}.control".encode()
        # pub/sub name -> Trunkline channel, for every channel this node wants
        self._channels: dict[bytes, str] = {}
        self._sub_waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._connected_once = False
        self._resubscribing = 0  # SUBSCRIBE confirmations still expected after a reconnect
        # glob pattern -> channel prefix, for every pattern subscription this node wants
        self._patterns: dict[bytes, str] = {}
        self._psub_waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._pubsub_turn = 0  # which cluster node the next pub/sub connection goes to
        # pub/sub name -> (offset, epoch, hash of the record) of the last publication with history seen
        self._last_seen: dict[bytes, tuple[int, str, int]] = {}
        self._rotations: set[asyncio.Task[None]] = set()

    # --- keys -------------------------------------------------------------

    def _pubsub_name(self, channel: str) -> bytes:
        return (self._channel_prefix + channel).encode()

    def _pattern_name(self, prefix: str) -> bytes:
        """The Redis glob of every pub/sub channel of Trunkline channels starting with ``prefix``."""
        escaped = "".join("\\" + c if c in "\\*?[]" else c for c in self._channel_prefix + prefix)
        return (escaped + "*").encode()

    def _stream_keys(self, channel: str) -> tuple[str, str]:
        tag = self._tag(channel)
        return f"{self._prefix}.stream.{tag}", f"{self._prefix}.meta.{tag}"

    # --- lifecycle --------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect the pub/sub reader; raise :class:`RedisUnavailable` if it cannot."""
        if self._reader is not None:
            raise RuntimeError("broker already started")
        self._handler = handler
        self._reader = asyncio.create_task(self._run_pubsub(), name="trunkline-redis-pubsub")
        try:
            async with asyncio.timeout(self._deadline):
                await self._ready.wait()
        except TimeoutError:
            await self._stop_reader()
            raise RedisUnavailable(f"redis pub/sub did not connect: {self._last_error!r}") from None

    async def close(self) -> None:
        await self._stop_reader()
        await self._close_client()

    async def _stop_reader(self) -> None:
        rotations = list(self._rotations)
        for task in rotations:
            task.cancel()
        if rotations:
            await asyncio.wait(rotations)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])
        self._ready.clear()

    async def ping(self) -> None:
        """Raise if Redis is unreachable or, once started, the pub/sub feed is down.

        In a cluster every master is asked: a master that is down makes its slots unavailable.
        """
        if self._reader is not None and not self._ready.is_set():
            raise RedisUnavailable(f"redis pub/sub is reconnecting: {self._last_error!r}")
        if self._cluster is None:
            await self._call("PING")
            return
        try:
            async with asyncio.timeout(self._deadline):
                await self._cluster.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
        except (*_UNAVAILABLE, RedisError) as exc:
            raise RedisUnavailable(f"redis cluster PING failed: {exc!r}") from exc

    # --- pub/sub ----------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait for Redis to confirm, so no later publication is missed."""
        name = self._pubsub_name(channel)
        self._channels[name] = channel
        conn = self._conn
        if conn is None or not self._ready.is_set():
            del self._channels[name]
            raise RedisUnavailable(f"redis pub/sub is not connected: {self._last_error!r}")
        confirmed = asyncio.get_running_loop().create_future()
        self._sub_waiters.setdefault(name, deque()).append(confirmed)
        try:
            async with asyncio.timeout(self._io_timeout):
                await conn.send_command("SUBSCRIBE", name, check_health=False)
                await confirmed
        except BaseException as exc:
            # The (now cancelled) waiter stays queued: it still stands for the SUBSCRIBE
            # sent on this connection, so later confirmations keep matching their calls.
            # Should Redis apply it after all, the channel's messages are dropped.
            if self._channels.get(name) == channel:
                del self._channels[name]
            if isinstance(exc, _UNAVAILABLE):
                raise RedisUnavailable(f"redis SUBSCRIBE failed: {exc!r}") from exc
            raise

    async def unsubscribe(self, channel: str) -> None:
        name = self._pubsub_name(channel)
        if self._channels.pop(name, None) is None:
            return
        self._last_seen.pop(name, None)
        conn = self._conn
        if conn is None:
            return  # the next connection will not subscribe it
        try:
            async with asyncio.timeout(self._io_timeout):
                await conn.send_command("UNSUBSCRIBE", name, check_health=False)
        except _UNAVAILABLE as exc:
            # The connection is broken; the reader reconnects without this channel.
            logger.debug("redis UNSUBSCRIBE %s failed: %r", channel, exc)

    async def psubscribe(self, prefix: str) -> None:
        """Pattern-subscribe the channels starting with ``prefix``; waits for Redis to confirm."""
        name = self._pattern_name(prefix)
        self._patterns[name] = prefix
        conn = self._conn
        if conn is None or not self._ready.is_set():
            del self._patterns[name]
            raise RedisUnavailable(f"redis pub/sub is not connected: {self._last_error!r}")
        confirmed = asyncio.get_running_loop().create_future()
        self._psub_waiters.setdefault(name, deque()).append(confirmed)
        try:
            async with asyncio.timeout(self._io_timeout):
                await conn.send_command("PSUBSCRIBE", name, check_health=False)
                await confirmed
        except BaseException as exc:
            if self._patterns.get(name) == prefix:
                del self._patterns[name]
            if isinstance(exc, _UNAVAILABLE):
                raise RedisUnavailable(f"redis PSUBSCRIBE failed: {exc!r}") from exc
            raise

    async def punsubscribe(self, prefix: str) -> None:
        name = self._pattern_name(prefix)
        if self._patterns.pop(name, None) is None:
            return
        conn = self._conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(self._io_timeout):
                await conn.send_command("PUNSUBSCRIBE", name, check_health=False)
        except _UNAVAILABLE as exc:
            logger.debug("redis PUNSUBSCRIBE %s failed: %r", prefix, exc)

    def _new_pubsub_connection(self) -> AbstractConnection:
        if self._cluster is not None:
            return self._new_cluster_pubsub_connection(self._cluster)
        pool = self._client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # RESP2 (pub/sub messages are plain arrays), no retries behind the reader's
        # back, and none of RESP3's maintenance notifications.
        kwargs.update(
            protocol=2,
            decode_responses=False,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=None,
            maint_notifications_pool_handler=None,
        )
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection

    def _new_cluster_pubsub_connection(self, cluster: RedisCluster) -> AbstractConnection:
        """A connection to the next known cluster node, in turn (a reconnect tries another node).

        Classic pub/sub is cluster-wide: a PUBLISH on any node reaches subscribers on
        every node, replicas included, so one connection to any node hears every channel.
        """
        nodes = cluster.get_nodes() or list(cluster.nodes_manager.startup_nodes.values())
        node = nodes[self._pubsub_turn % len(nodes)]
        self._pubsub_turn += 1
        kwargs = dict(node.connection_kwargs)
        kwargs.update(protocol=2, decode_responses=False, retry=Retry(NoBackoff(), 0))
        for name in ("maint_notifications_config", "maint_notifications_pool_handler"):
            kwargs.pop(name, None)
        connection: AbstractConnection = node.connection_class(**kwargs)
        return connection

    async def _run_pubsub(self) -> None:
        """Keep one pub/sub connection up: connect, subscribe everything, read."""
        delay = self.reconnect_delay_min
        while True:
            conn: AbstractConnection | None = None
            try:
                conn = self._new_pubsub_connection()
                async with asyncio.timeout(self._deadline):
                    await cast("Callable[[], Awaitable[None]]", conn.connect)()
                self._conn = conn
                names = [self._control, *self._channels]
                self._resubscribing = len(names) if self._connected_once else 0
                self._connected_once = True
                async with asyncio.timeout(self._deadline):
                    for i in range(0, len(names), SUBSCRIBE_BATCH):
                        await conn.send_command("SUBSCRIBE", *names[i : i + SUBSCRIBE_BATCH], check_health=False)
                    patterns = list(self._patterns)
                    for i in range(0, len(patterns), SUBSCRIBE_BATCH):
                        await conn.send_command("PSUBSCRIBE", *patterns[i : i + SUBSCRIBE_BATCH], check_health=False)
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = exc
                if self._ready.is_set():
                    logger.warning("redis pub/sub connection lost: %r; reconnecting", exc)
                    delay = self.reconnect_delay_min
                else:
                    logger.warning("redis pub/sub connection failed: %r; retrying in %.2fs", exc, delay)
            finally:
                self._conn = None
                self._ready.clear()
                self._fail_waiters(RedisUnavailable(f"redis pub/sub connection lost: {self._last_error!r}"))
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.reconnect_delay_max)

    async def _read(self, conn: AbstractConnection) -> None:
        """Dispatch messages in arrival order; PING when idle, give up if no answer."""
        waiting_pong = False
        while True:
            timeout = self._io_timeout if waiting_pong else self.pubsub_ping_interval
            response = await conn.read_response(timeout=timeout, disconnect_on_error=False, push_request=True)
            if response is None:
                if waiting_pong:
                    raise RedisUnavailable("redis pub/sub did not answer PING")
                await conn.send_command("PING", check_health=False)
                waiting_pong = True
                continue
            waiting_pong = False
            self._dispatch(response)

    def _dispatch(self, response: list[Any]) -> None:
        kind = response[0]
        if kind == b"message":
            name: bytes = response[1]
            payload: bytes = response[2]
            handler = self._handler
            if handler is None:
                return
            try:
                if name == self._control:
                    handler.handle_control(payload)
                    return
                channel = self._channels.get(name)
                if channel is None:
                    return  # unsubscribed meanwhile
                marker = payload[:1]
                if marker == b"p":
                    colon = payload.index(b":", 1)
                    end = payload.index(b":", colon + 1)
                    offset = int(payload[1:colon])
                    epoch = payload[colon + 1 : end].decode()
                    if offset:
                        self._check_reuse(name, channel, offset, epoch, payload)
                    handler.handle_publication(channel, decode_body(payload[end + 1 :], offset, epoch))
                elif marker == b"j":
                    handler.handle_join(channel, payload[1:])
                elif marker == b"l":
                    handler.handle_leave(channel, payload[1:])
                else:
                    logger.warning("unknown redis pub/sub message type %r on %r", marker, name)
            except Exception:
                logger.exception("broker event handler failed on %r", name)
        elif kind == b"pmessage":
            self._dispatch_pattern(response[1], response[2], response[3])
        elif kind == b"psubscribe":
            pwaiters = self._psub_waiters.get(response[1])
            if pwaiters:
                pwaiter = pwaiters.popleft()
                if not pwaiters:
                    del self._psub_waiters[response[1]]
                if not pwaiter.done():
                    pwaiter.set_result(None)
        elif kind == b"subscribe":
            name = response[1]
            if name == self._control:
                self._ready.set()
            if self._resubscribing:
                self._resubscribing -= 1
                if not self._resubscribing and self._handler is not None:
                    try:
                        self._handler.handle_resync()
                    except Exception:
                        logger.exception("broker event handler failed on resync")
            waiters = self._sub_waiters.get(name)
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._sub_waiters[name]
                if not waiter.done():
                    waiter.set_result(None)

    def _check_reuse(self, name: bytes, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        """Notice an offset handed out twice in one epoch: the stream lost publications.

        A master that dies before its replica has its last writes (replication is
        asynchronous), or a Redis restarted from an older snapshot, leaves the stream
        below offsets that subscribers already have; the next publications then reuse
        them, and a subscriber positioned on one would skip its new publication as a
        duplicate. So the stream gets a new epoch (compare-and-set) and the node checks
        its positions: subscribers are told they did not recover, never left with a gap.
        """
        digest = hash(payload)
        last = self._last_seen.get(name)
        self._last_seen[name] = (offset, epoch, digest)
        if last is None or last[1] != epoch or offset > last[0] or (offset == last[0] and digest == last[2]):
            return
        logger.warning(
            "redis stream of %r handed out offset %d of epoch %s again: starting a new epoch", channel, offset, epoch
        )
        task = asyncio.get_running_loop().create_task(self._rotate_epoch(channel, epoch))
        self._rotations.add(task)
        task.add_done_callback(self._rotations.discard)

    async def _rotate_epoch(self, channel: str, epoch: str) -> None:
        try:
            await self._eval(_ROTATE_EPOCH, self._stream_keys(channel)[1:], (epoch, new_epoch()))
        except RedisUnavailable as exc:
            logger.warning("cannot start a new epoch for %r: %r (the next position check will see it)", channel, exc)
        handler = self._handler
        if handler is not None:
            handler.handle_resync()

    def _dispatch_pattern(self, pattern: bytes, name: bytes, payload: bytes) -> None:
        """A publication that arrived through a pattern subscription (joins and leaves are not fed)."""
        handler = self._handler
        if handler is None or pattern not in self._patterns or payload[:1] != b"p":
            return
        try:
            channel = name.decode()[len(self._channel_prefix) :]
            colon = payload.index(b":", 1)
            end = payload.index(b":", colon + 1)
            pub = decode_body(payload[end + 1 :], int(payload[1:colon]), payload[colon + 1 : end].decode())
            handler.handle_pattern_publication(channel, pub)
        except Exception:
            logger.exception("broker event handler failed on a pattern publication of %r", name)

    def _fail_waiters(self, exc: Exception) -> None:
        pwaiters, self._psub_waiters = self._psub_waiters, {}
        for queue in pwaiters.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(exc)
        waiters, self._sub_waiters = self._sub_waiters, {}
        for queue in waiters.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(exc)

    # --- publishing -------------------------------------------------------

    async def publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        body = encode_body(pub)
        if not options.keeps_history and not options.idempotency_key:
            await self._publish(channel, b"p0::" + body)
            return None
        stream_key, meta_key = self._stream_keys(channel)
        result_key = self._result_key(channel, options.idempotency_key)
        offset, epoch, _ = await self._eval(
            _PUBLISH,
            (stream_key, meta_key, result_key),
            (
                body,
                options.history_size if options.keeps_history else 0,
                _ms(options.history_ttl),
                _ms(options.history_meta_ttl),
                new_epoch(),
                self._pubsub_name(channel),
                _ms(options.idempotent_result_ttl) if options.idempotency_key else 0,
            ),
        )
        if not options.keeps_history or not int(offset):
            return None
        return StreamPosition(int(offset), epoch.decode())

    async def publish_join(self, channel: str, info: bytes) -> None:
        await self._publish(channel, b"j" + info)

    async def publish_leave(self, channel: str, info: bytes) -> None:
        await self._publish(channel, b"l" + info)

    async def _publish(self, channel: str, message: bytes) -> None:
        """A plain PUBLISH; in a cluster through the channel's slot node, so one channel's feed keeps its order."""
        if self._cluster is None:
            await self._call("PUBLISH", self._pubsub_name(channel), message)
        else:
            await self._eval(_PUBLISH_PLAIN, self._stream_keys(channel)[1:], (self._pubsub_name(channel), message))

    async def publish_control(self, data: bytes) -> None:
        await self._call("PUBLISH", self._control, data)

    # --- history ----------------------------------------------------------

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        limit = -1 if query.limit is None or query.limit < 0 else query.limit
        since = -1 if query.since is None else query.since.offset
        top, epoch_bytes, entries = await self._eval(
            _HISTORY,
            self._stream_keys(channel),
            (
                new_epoch(),
                _ms(query.history_meta_ttl),
                limit,
                str(since),
                1 if query.reverse else 0,
                _ms(query.placeholder_ttl),
            ),
        )
        epoch = epoch_bytes.decode()
        publications = [decode_body(fields[1], int(entry_id.partition(b"-")[0]), epoch) for entry_id, fields in entries]
        return publications, StreamPosition(int(top), epoch)

    async def remove_history(self, channel: str) -> None:
        stream_key, _ = self._stream_keys(channel)
        await self._call("DEL", stream_key)


class RedisPresence(_RedisUser):
    """Presence shared by every node, each entry expiring ``ttl`` after its last add."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        prefix: str = "trunkline",
        connect_timeout: float = 5.0,
        io_timeout: float = 4.0,
    ) -> None:
        client = make_client(address, connect_timeout, io_timeout)
        super().__init__(client, prefix, connect_timeout, io_timeout, owns_client=True)
        self._tails: dict[tuple[str, str], asyncio.Future[None]] = {}

    @classmethod
    def from_client(
        cls, client: Redis, prefix: str = "trunkline", connect_timeout: float = 5.0, io_timeout: float = 4.0
    ) -> RedisPresence:
        """Presence on a client owned by the caller (e.g. ``broker.client``)."""
        self = cls.__new__(cls)
        _RedisUser.__init__(self, client, prefix, connect_timeout, io_timeout, owns_client=False)
        self._tails = {}
        return self

    async def close(self) -> None:
        """Close the client if this object created it."""
        await self._close_client()

    def _keys(self, channel: str) -> tuple[str, str]:
        tag = self._tag(channel)
        return f"{self._prefix}.presence.data.{tag}", f"{self._prefix}.presence.expire.{tag}"

    async def add_presence(self, channel: str, client_id: str, user: str, info: bytes, ttl: float) -> None:
        """Add or refresh an entry; ``ttl`` <= 0 means it never expires on its own."""
        user_bytes = user.encode()
        value = b"%d:%b%b" % (len(user_bytes), user_bytes, info)
        await self._in_order((channel, client_id), _PRESENCE_ADD, self._keys(channel), (client_id, value, _ms(ttl)))

    async def remove_presence(self, channel: str, client_id: str) -> None:
        await self._in_order((channel, client_id), _PRESENCE_REMOVE, self._keys(channel), (client_id,))

    async def _in_order(self, key: tuple[str, str], script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script after the previous one for the same entry has finished.

        Calls made in different loop turns travel in different pipelines on
        different connections, so a remove could overtake the add before it and
        leave a ghost entry until its ttl; chaining them per entry keeps their order.
        """
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        try:
            if previous is not None:
                await asyncio.wait([previous])
            return await self._eval(script, keys, args)
        finally:
            done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]

    async def presence(self, channel: str) -> dict[str, bytes]:
        flat = await self._eval(_PRESENCE_GET, self._keys(channel), ("all",))
        result: dict[str, bytes] = {}
        for i in range(0, len(flat), 2):
            value: bytes = flat[i + 1]
            colon = value.index(b":")
            result[flat[i].decode()] = value[colon + 1 + int(value[:colon]) :]
        return result

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        clients, users = await self._eval(_PRESENCE_GET, self._keys(channel), ("stats",))
        return int(clients), int(users)
