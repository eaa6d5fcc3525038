"""The Redis map broker: keyed channel state, its change stream and delivery between nodes.

Layout (``P`` is the configured prefix, ``T`` the channel as a hash tag, see :func:`hash_tag`;
every key of one channel carries ``{T}``, so all of them live in one Redis Cluster slot):

- ``P.map.{T}.state``: hash key -> ``<offset>:<record>`` (the offset of the write that set
  the key, then :func:`~trunkline.records.encode_body`'s msgpack of the entry);
- ``P.map.{T}.order``: zset key -> score (the score for ordered maps, 0 for unordered ones,
  whose pages then come in key order by ``ZRANGEBYLEX``);
- ``P.map.{T}.expire``: zset key -> expiry time (Redis' clock, ms), keys with a ``key_ttl``;
- ``P.map.{T}.stream``: the change stream (XADD ids ``<offset>-0``; field ``d`` holds a record,
  or ``k`` and ``t`` the key and time of a removal by expiry), durable and persistent maps;
- ``P.map.{T}.meta``: hash ``e`` epoch, ``s`` top offset (and the stream settings the cleanup
  needs); ``P.map.{T}.result.<idempotency key>``: ``<offset>:<epoch>`` of an idempotent write;
- ``P.map.cleanup``: zset channel -> earliest key expiry, of every channel with expiring keys
  (in a Redis Cluster one per slot, ``P.map.cleanup.{S}`` with a tag ``S`` of the channel's
  slot, so the scripts touch one slot only; the set ``P.map.cleanup.slots`` names the slots
  that have one);
- pub/sub ``P.map.{T}.updates``: the channel's updates, ``p<offset>:<epoch>:<record>``, or
  ``x<offset>:<epoch>:<time>:<key>`` for a removal by expiry. The names differ from the engine
  broker's (``P.client.<channel>``), so a map update never arrives twice.

Every write is one Lua script (``lua/map_publish.lua``): the key-mode and ``max_keys`` checks,
the offset, the stream append, the state change, the expiry bookkeeping, the idempotent result
and the PUBLISH happen atomically, so updates reach every node in stream order. Expired keys
are removed by ``lua/map_cleanup.lua``, which each node runs every ``cleanup_interval`` for the
channels the registration says are due; being atomic, a removal is delivered once however many
nodes run it. The pub/sub reader is :class:`~trunkline.broker.redis.RedisBroker`'s (bounded
reconnect backoff, resubscribe, then ``handler.handle_resync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from binascii import crc_hqx
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..config import RedisSettings, Settings
from ..errors import StartupError
from ..records import ClientInfo, Publication, decode_body, encode_body
from .base import BrokerEventHandler, HistoryQuery, StreamPosition
from .map_base import (
    InvalidCursor,
    KeyMode,
    MapLimitExceeded,
    MapOptions,
    MapResult,
    MapStatePage,
    MapStateQuery,
    MapWrite,
    page_cursor,
    split_cursor,
)
from .memory import new_epoch
from .redis import DEFAULT_ADDRESS, RedisBroker, RedisUnavailable, _ms, _Script, make_client
from .redis_topology import make_cluster_client, make_sentinel_client, shard_nodes

logger = logging.getLogger(__name__)

_PUBLISH = _Script.load("map_publish")
_CLEANUP = _Script.load("map_cleanup")
_STATE = _Script.load("map_state")
_DUE = _Script.load("map_due")
_STREAM = _Script.load("map_stream", then="stream_range")

#: how many due channels one cleanup cycle takes from a registration
CLEANUP_CHANNELS_PER_CYCLE = 1000
#: Redis Cluster: how long this node trusts that a slot is in the registration slot set
SLOT_NOTE_TTL = 60.0
SLOTS = 16384

_MODES = {KeyMode.REPLACE: "", KeyMode.IF_NEW: "if_new", KeyMode.IF_EXISTS: "if_exists"}


def hash_tag(channel: str) -> str:
    """``channel`` as the hash tag of its keys: ``%`` and ``}`` escaped, so the tag ends where it
    should and two channels never share a key name; ``%`` alone for the empty name."""
    return channel.replace("%", "%25").replace("}", "%7D") or "%"


def map_redis_settings(settings: Settings) -> tuple[str, RedisSettings]:
    """The section the map broker's Redis comes from and its settings: ``map_broker.redis`` when
    it names a server (``address``, ``cluster_address`` or ``sentinel_address``), else ``engine.redis``."""
    r = settings.map_broker_redis
    return ("map_broker.redis" if r is settings.map_broker.redis else "engine.redis"), r


def keyslot(key: str) -> int:
    """The Redis Cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, or of the whole key."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc_hqx(raw, 0) % SLOTS


_slot_tags: list[str] = []


def slot_tag(slot: int) -> str:
    """A short hash tag of ``slot``: ``{<tag>}`` hashes to it (the table is built once, ~0.1 s)."""
    if not _slot_tags:
        table = [""] * SLOTS
        missing, n = SLOTS, 0
        while missing:
            text = str(n)
            s = crc_hqx(text.encode(), 0) % SLOTS
            if not table[s]:
                table[s] = text
                missing -= 1
            n += 1
        _slot_tags.extend(table)
    return _slot_tags[slot]


def _now_ms() -> int:
    return int(time.time() * 1000)


class MapRedisUnavailable(RedisUnavailable):
    """The map broker's Redis could not be reached when it started (the engine's may be fine)."""


class _MapFeed(RedisBroker):
    """The engine broker's pub/sub reader, on the map broker's own channel names and messages."""

    def _pubsub_name(self, channel: str) -> bytes:
        return f"{self._prefix}.map.{{{hash_tag(channel)}}}.updates".encode()

    def _dispatch(self, response: list[Any]) -> None:
        if response[0] != b"message":
            super()._dispatch(response)  # subscribe confirmations, resync after a reconnect
            return
        name: bytes = response[1]
        handler = self._handler
        channel = self._channels.get(name)
        if handler is None or channel is None:
            return  # the readiness marker, or unsubscribed meanwhile
        try:
            pub = decode_update(response[2])
        except Exception:
            logger.exception("undecodable map update on %r", name)
            return
        try:
            handler.handle_publication(channel, pub)
        except Exception:
            logger.exception("broker event handler failed on %r", name)


def decode_update(payload: bytes) -> Publication:
    """A pub/sub message of a map channel as the publication it delivers."""
    marker = payload[:1]
    colon = payload.index(b":", 1)
    end = payload.index(b":", colon + 1)
    offset = int(payload[1:colon])
    epoch = payload[colon + 1 : end].decode()
    if marker == b"p":
        return decode_body(payload[end + 1 :], offset, epoch)
    if marker == b"x":
        sep = payload.index(b":", end + 1)
        when = int(payload[end + 1 : sep])
        return _removal(payload[sep + 1 :].decode(), when, offset, epoch)
    raise ValueError(f"unknown map update type {marker!r}")


def _removal(key: str, when: int, offset: int, epoch: str) -> Publication:
    return Publication(data=b"", key=key, removed=True, time=when, offset=offset, epoch=epoch)


def _stream_entry(entry_id: bytes, fields: list[bytes], epoch: str) -> Publication:
    offset = int(entry_id.partition(b"-")[0])
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    if b"d" in values:
        return decode_body(values[b"d"], offset, epoch)
    return _removal(values[b"k"].decode(), int(values[b"t"]), offset, epoch)


class RedisMapBroker:
    """Map channels kept in Redis, shared by every node on it (see the module docstring)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        prefix: str = "trunkline",
        connect_timeout: float = 5.0,
        io_timeout: float = 4.0,
        *,
        cleanup_interval: float = 1.0,
        cleanup_batch_size: int = 100,
        idempotent_result_ttl: float = 300.0,
        placeholder_ttl: float = 60.0,
        client: Redis | None = None,
        owns_client: bool = False,
    ) -> None:
        """Connect to ``address``, or use ``client`` (``close`` leaves it open unless ``owns_client``)."""
        if client is None:
            client, owns_client = make_client(address, connect_timeout, io_timeout), True
        self._client = client
        self._feed = _MapFeed.from_client(client, prefix, connect_timeout, io_timeout, owns_client=owns_client)
        self._feed._control = f"{prefix}.map.ready".encode()  # the reader's readiness marker (never published)
        self._prefix = prefix
        # Redis Cluster: a registration per slot (in the slot of its channels' keys, so the
        # scripts stay in one slot) and a set naming the slots that have one.
        self._cluster = isinstance(client, RedisCluster)
        self._cleanup_key = f"{prefix}.map.cleanup"
        self._slots_key = f"{prefix}.map.cleanup.slots"
        self._noted_slots: dict[int, float] = {}  # slot -> when this node last added it to the set
        if self._cluster:
            slot_tag(0)  # build the table now, not in the middle of a write
        self._cleanup_interval = cleanup_interval
        self._cleanup_batch_size = max(1, cleanup_batch_size)
        self._result_ttl = idempotent_result_ttl
        self._placeholder_ttl = placeholder_ttl
        self._cleanup_task: asyncio.Task[None] | None = None
        # (channel, key) -> the write of that key this node issued last, until it is done
        self._tails: dict[tuple[str, str], asyncio.Future[None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisMapBroker:
        """The broker of ``map_broker.type = "redis"``: the Redis of :func:`map_redis_settings`,
        ``map_broker.cleanup_*``, ``channel.idempotent_result_ttl``.

        One server, Sentinel or a Redis Cluster (one ``cluster_address`` / ``sentinel_address``
        entry, its nodes comma-separated, as the engine reads it); several addresses or entries
        (client-side sharding) are refused with a :class:`StartupError` naming the setting.
        """
        section, r = map_redis_settings(settings)
        client: Redis | None
        if len(r.cluster_address) > 1 or len(r.sentinel_address) > 1:
            key = "cluster_address" if r.cluster_address else "sentinel_address"
            raise StartupError(f"{section}.{key}", "map channels need one Redis (sharding is not supported)")
        if r.cluster_address:
            seeds = shard_nodes(r.cluster_address[0])  # one entry: a cluster's seeds, comma-separated
            client = make_cluster_client(seeds, r.connect_timeout, r.io_timeout, master_url=r.address)
            address = ""
        elif r.sentinel_address:
            client = make_sentinel_client(
                shard_nodes(r.sentinel_address[0]),
                r.sentinel_master_name,
                r.connect_timeout,
                r.io_timeout,
                sentinel_user=r.sentinel_user,
                sentinel_password=r.sentinel_password,
                master_url=r.address,
            )
            address = ""
        else:
            urls = r.addresses
            if len(urls) != 1:
                raise StartupError(
                    f"{section}.address", "map channels need one Redis address (sharding is not supported)"
                )
            client, address = None, urls[0]
        return cls(
            address,
            r.prefix,
            r.connect_timeout,
            r.io_timeout,
            cleanup_interval=settings.map_broker.cleanup_interval,
            cleanup_batch_size=settings.map_broker.cleanup_batch_size,
            idempotent_result_ttl=settings.channel.idempotent_result_ttl,
            client=client,
            owns_client=True,
        )

    @property
    def client(self) -> Redis:
        return self._client

    # --- keys -------------------------------------------------------------

    def keys(self, channel: str) -> dict[str, str]:
        """The names of the channel's keys (state, order, expire, stream, meta) and pub/sub channel."""
        base = f"{self._prefix}.map.{{{hash_tag(channel)}}}"
        return {
            "state": f"{base}.state",
            "order": f"{base}.order",
            "expire": f"{base}.expire",
            "stream": f"{base}.stream",
            "meta": f"{base}.meta",
            "updates": f"{base}.updates",
        }

    def _slot(self, channel: str) -> int:
        return keyslot(f"{self._prefix}.map.{{{hash_tag(channel)}}}")

    def _registration_key(self, channel: str) -> str:
        """The cleanup registration that holds ``channel`` (one, or one per slot in a cluster)."""
        if not self._cluster:
            return self._cleanup_key
        return self._slot_registration_key(self._slot(channel))

    def _slot_registration_key(self, slot: int) -> str:
        return f"{self._cleanup_key}.{{{slot_tag(slot)}}}"

    async def _note_slot(self, channel: str) -> None:
        """Cluster: make sure the cleanup finds the registration of ``channel``'s slot (before
        a key with a ttl is written there; trusted for ``SLOT_NOTE_TTL``, then added again)."""
        slot = self._slot(channel)
        now = time.monotonic()
        if now - self._noted_slots.get(slot, -SLOT_NOTE_TTL) < SLOT_NOTE_TTL:
            return
        await self._feed._call("SADD", self._slots_key, slot)
        self._noted_slots[slot] = now

    def _result_key(self, channel: str, idempotency_key: str) -> str:
        return f"{self._prefix}.map.{{{hash_tag(channel)}}}.result.{idempotency_key}"

    # --- lifecycle --------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect the pub/sub reader (raise :class:`MapRedisUnavailable` if it cannot), start the cleanup."""
        try:
            await self._feed.start(handler)
        except RedisUnavailable as exc:
            raise MapRedisUnavailable(str(exc)) from exc
        if self._cleanup_interval > 0:
            self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="trunkline-map-cleanup")

    async def close(self) -> None:
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await self._feed.close()

    async def ping(self) -> None:
        await self._feed.ping()

    async def subscribe(self, channel: str) -> None:
        """Subscribe to the channel's updates and wait for Redis to confirm."""
        await self._feed.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._feed.unsubscribe(channel)

    # --- writes -----------------------------------------------------------

    async def publish(self, channel: str, write: MapWrite, options: MapOptions) -> MapResult:
        pub = Publication(
            data=write.data,
            info=write.info,
            tags=write.tags,
            time=_now_ms(),
            delta=write.delta,
            key=write.key,
            score=write.score,
        )
        state_record = encode_body(pub)
        if write.stream_data is not None:
            pub = msgspec.structs.replace(pub, data=write.stream_data)  # the update streamed and delivered
            stream_record = encode_body(pub)
        else:
            stream_record = b""
        return await self._write(
            channel,
            pub,
            options,
            mode=_MODES[write.key_mode],
            state_record=state_record,
            stream_record=stream_record,
            idempotency_key=write.idempotency_key,
            refresh=write.refresh_ttl_on_suppress,
        )

    async def remove(
        self,
        channel: str,
        key: str,
        options: MapOptions,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str = "",
    ) -> MapResult:
        pub = Publication(data=b"", info=info, tags=tags, time=_now_ms(), key=key, removed=True)
        return await self._write(
            channel,
            pub,
            options,
            mode="remove",
            state_record=b"",
            stream_record=encode_body(pub),
            idempotency_key=idempotency_key,
            refresh=False,
        )

    async def _write(
        self,
        channel: str,
        pub: Publication,
        options: MapOptions,
        *,
        mode: str,
        state_record: bytes,
        stream_record: bytes,
        idempotency_key: str,
        refresh: bool,
    ) -> MapResult:
        k = self.keys(channel)
        keeps_stream = options.keeps_stream
        async with self._in_order(channel, pub.key):
            if self._cluster and options.key_ttl > 0 and mode != "remove":
                await self._note_slot(channel)
            status, offset, epoch = await self._feed._eval(
                _PUBLISH,
                (
                    k["state"],
                    k["order"],
                    k["expire"],
                    k["stream"],
                    k["meta"],
                    self._result_key(channel, idempotency_key),
                    self._registration_key(channel),
                ),
                (
                    pub.key,
                    state_record,
                    stream_record,
                    mode,
                    pub.score if options.ordered else 0,
                    _ms(options.key_ttl),
                    options.stream_size if keeps_stream else 0,
                    _ms(options.stream_ttl) if keeps_stream else 0,
                    _ms(options.meta_ttl),
                    new_epoch(),
                    k["updates"],
                    _ms(self._result_ttl) if idempotency_key else 0,
                    max(0, options.max_keys),
                    1 if refresh else 0,
                    channel,
                    _ms(self._placeholder_ttl),
                ),
            )
        position = StreamPosition(int(offset), epoch.decode())
        result = status.decode()
        if result == "ok":
            return MapResult(position, msgspec.structs.replace(pub, offset=position.offset, epoch=position.epoch))
        if result == "limit":
            raise MapLimitExceeded(f"channel {channel!r} holds {options.max_keys} keys")
        return MapResult(position, None, result)

    @contextlib.asynccontextmanager
    async def _in_order(self, channel: str, key: str) -> AsyncIterator[None]:
        """Run after the previous write of the same key from this node has finished.

        Writes made in different loop turns travel in different pipelines on different
        connections, so a remove could overtake the write before it (a presence leave
        overtaking its join would leave a ghost key until its ttl); chaining the writes of
        one key keeps the order they were made in. Writes of other keys still pipeline.
        """
        tail = (channel, key)
        previous = self._tails.get(tail)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[tail] = done
        try:
            if previous is not None:
                await asyncio.wait([previous])
            yield
        finally:
            done.set_result(None)
            if self._tails.get(tail) is done:
                del self._tails[tail]

    # --- reads ------------------------------------------------------------

    async def read_state(self, channel: str, query: MapStateQuery, options: MapOptions) -> MapStatePage:
        k = self.keys(channel)
        if query.key:
            order, cursor_score, cursor_key = "key", "", query.key
        elif options.ordered:
            order = "asc" if query.asc else "desc"
            cursor_score, cursor_key = _parse_cursor(query.cursor, ordered=True)
        else:
            order = "lex"
            cursor_score, cursor_key = _parse_cursor(query.cursor, ordered=False)
        top, epoch_bytes, packed, more, next_score, next_key = await self._feed._eval(
            _STATE,
            (k["state"], k["order"], k["meta"]),
            (
                new_epoch(),
                _ms(options.meta_ttl),
                _ms(self._placeholder_ttl),
                order,
                max(1, query.limit),
                cursor_score,
                cursor_key,
            ),
        )
        epoch = epoch_bytes.decode()
        entries = _decode_entries(packed, epoch)
        cursor = ""
        if int(more):
            cursor = page_cursor(next_score.decode() if order != "lex" else None, next_key.decode())
        return MapStatePage(entries, StreamPosition(int(top), epoch), cursor)

    async def read_stream(
        self, channel: str, query: HistoryQuery, options: MapOptions
    ) -> tuple[list[Publication], StreamPosition]:
        k = self.keys(channel)
        limit = -1 if query.limit is None or query.limit < 0 else query.limit
        since = -1 if query.since is None else query.since.offset
        top, epoch_bytes, entries = await self._feed._eval(
            _STREAM,
            (k["stream"], k["meta"], k["state"]),
            (
                new_epoch(),
                _ms(query.history_meta_ttl or options.meta_ttl),
                limit,
                str(since),
                1 if query.reverse else 0,
                _ms(query.placeholder_ttl or self._placeholder_ttl),
            ),
        )
        epoch = epoch_bytes.decode()
        if query.since is not None and query.since.epoch and query.since.epoch != epoch:
            return [], StreamPosition(int(top), epoch)
        return [_stream_entry(entry_id, fields, epoch) for entry_id, fields in entries], StreamPosition(int(top), epoch)

    async def stats(self, channel: str) -> int:
        return int(await self._feed._call("HLEN", self.keys(channel)["state"]))

    async def clear(self, channel: str) -> None:
        k = self.keys(channel)
        await self._feed._call("DEL", k["state"], k["order"], k["expire"], k["stream"], k["meta"])
        await self._feed._call("ZREM", self._registration_key(channel), channel)

    # --- expiry -----------------------------------------------------------

    async def cleanup(self) -> int:
        """Remove the expired keys of every due channel (at most ``cleanup_batch_size`` each);
        the number removed. The loop calls this every ``cleanup_interval``."""
        if self._cluster:
            slots = await self._feed._call("SMEMBERS", self._slots_key)
            registrations = [self._slot_registration_key(int(slot)) for slot in slots]
        else:
            registrations = [self._cleanup_key]
        found = await asyncio.gather(
            *(self._feed._eval(_DUE, (key,), (CLEANUP_CHANNELS_PER_CYCLE,)) for key in registrations)
        )
        due = [name.decode() for names in found for name in names]
        if not due:
            return 0
        counts = await asyncio.gather(*(self._cleanup_channel(channel) for channel in due))
        return sum(counts)

    async def _cleanup_channel(self, channel: str) -> int:
        k = self.keys(channel)
        removed = await self._feed._eval(
            _CLEANUP,
            (k["state"], k["order"], k["expire"], k["stream"], k["meta"], self._registration_key(channel)),
            (self._cleanup_batch_size, new_epoch(), k["updates"], channel, _ms(self._placeholder_ttl)),
        )
        return int(removed)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self.cleanup()
            except RedisUnavailable as exc:
                logger.warning("map cleanup skipped: %r", exc)
            except Exception:
                logger.exception("map cleanup failed")


def _decode_entries(packed: bytes, epoch: str) -> list[Publication]:
    """The entries of ``lua/map_state.lua``'s page: ``<length>:<offset>:<record>`` each."""
    entries = []
    i, end = 0, len(packed)
    while i < end:
        colon = packed.index(b":", i)
        stop = colon + 1 + int(packed[i:colon])
        sep = packed.index(b":", colon + 1, stop)
        entries.append(decode_body(packed[sep + 1 : stop], int(packed[colon + 1 : sep]), epoch))
        i = stop
    return entries


def _parse_cursor(cursor: str, *, ordered: bool) -> tuple[str, str]:
    """(score text, key) of a cursor, ``("", "")`` for the first page; an ordered cursor's score
    must be a number (``map_state.lua`` compares it as one)."""
    parts = split_cursor(cursor, ordered=ordered)
    if parts is None:
        return "", ""
    score, key = parts
    if ordered:
        try:
            value = float(score)
        except ValueError:
            raise InvalidCursor(f"not a cursor of this map: {cursor!r}") from None
        if math.isnan(value):
            raise InvalidCursor(f"not a cursor of this map: {cursor!r}")
    return score, key
