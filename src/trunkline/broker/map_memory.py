"""The memory map broker: map channels of one node, kept in this process (the default).

Per channel: a dict of entries (key -> the state entry, a :class:`Publication` with ``key``,
``score`` and the offset of the write that set it), the keys in page order (a sorted list of
keys, or of ``(score, key)`` for ordered maps, updated with :mod:`bisect` only when the key set
or a score changes, so rewriting a key is O(1)), a bounded change stream (a ``deque`` of
``stream_size`` that expires ``stream_ttl`` after the last write), an epoch and a top offset.

Pagination cursors are values, not indexes: ``k<key>`` (key order) or ``s<score>:<key>``
(ordered maps) name the last entry of the page, and the next page starts right after it in
the current order. A page is therefore stable while the map changes: no entry that stays put
is skipped or repeated; an entry written or moved behind the cursor during the walk is seen
in the stream phase (durable and persistent maps) or in the next snapshot (ephemeral ones).

Expiry is active, like the memory broker's: every key with a TTL has at most one entry in its
channel's heap, every channel with something to expire one entry in a global heap, and
:meth:`MemoryMapBroker.cleanup` (every ``cleanup_interval``) removes at most
``cleanup_batch_size`` expired keys per channel per run, each delivered as a removal and
appended to the stream. A channel without keys is dropped when its metadata expires
(``meta_ttl`` after the last write; an ephemeral channel, which has no stream to resume,
``placeholder_ttl`` after its last key went), and a channel created by a read alone lives
``placeholder_ttl``: subscribes and reads cannot pile up state. Idempotent results are
bounded in time (``idempotent_result_ttl``) and in number (``max_idempotent_results``).

Delivery is synchronous, in write order, to ``handler.handle_publication`` for channels this
node subscribed (:meth:`subscribe`), as the Redis map broker delivers only subscribed ones.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import msgspec

from ..config import Settings
from ..records import ClientInfo, Publication
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

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

#: how long the epoch of a channel that nobody wrote (created by a read) or of an emptied
#: ephemeral channel lives, unless written or read again
DEFAULT_PLACEHOLDER_TTL = 60.0


class _Channel:
    __slots__ = (
        "entries",
        "epoch",
        "expire_at",
        "heaped",
        "key_heap",
        "meta_expire_at",
        "order",
        "ordered",
        "scheduled",
        "scored",
        "stream",
        "stream_expire_at",
        "stream_size",
        "stream_ttl",
        "top",
    )

    def __init__(self, epoch: str, ordered: bool) -> None:
        self.epoch = epoch
        self.top = 0
        self.ordered = ordered
        self.entries: dict[str, Publication] = {}
        # page order: the sorted keys (unordered maps) or the sorted (score, key) pairs (ordered ones)
        self.order: list[str] = []
        self.scored: list[tuple[int, str]] = []
        self.expire_at: dict[str, float] = {}  # key -> deadline of keys with a ttl
        self.key_heap: list[tuple[float, str]] = []  # (deadline, key): one entry per key of heaped
        self.heaped: dict[str, float] = {}  # key -> the deadline of its one key_heap entry
        self.stream: deque[Publication] | None = None
        self.stream_expire_at = 0.0
        self.stream_size = 0  # the stream settings of the last write (a removal by expiry uses them)
        self.stream_ttl = 0.0
        self.meta_expire_at = 0.0  # 0: never
        self.scheduled = 0.0  # this channel's deadline in the global heap (0: none)

    def position(self) -> StreamPosition:
        return StreamPosition(self.top, self.epoch)

    def deadline(self) -> float:
        """The earliest moment something of this channel expires (0: nothing does)."""
        candidates = [self.meta_expire_at] if self.meta_expire_at and not self.entries else []
        if self.key_heap:
            candidates.append(self.key_heap[0][0])
        if self.stream:
            candidates.append(self.stream_expire_at)
        return min(candidates, default=0.0)

    # --- page order -------------------------------------------------------

    def insert(self, key: str, score: int) -> None:
        if self.ordered:
            bisect.insort(self.scored, (score, key))
        else:
            bisect.insort(self.order, key)

    def discard(self, key: str, score: int) -> None:
        if self.ordered:
            i = bisect.bisect_left(self.scored, (score, key))
            if i < len(self.scored) and self.scored[i] == (score, key):
                del self.scored[i]
        else:
            i = bisect.bisect_left(self.order, key)
            if i < len(self.order) and self.order[i] == key:
                del self.order[i]


class MemoryMapBroker:
    """Map channels of this node (see the module docstring)."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        cleanup_interval: float = 1.0,
        cleanup_batch_size: int = 100,
        idempotent_result_ttl: float = 300.0,
        max_idempotent_results: int = 100000,
        placeholder_ttl: float = DEFAULT_PLACEHOLDER_TTL,
    ) -> None:
        self._clock = clock
        self._cleanup_interval = cleanup_interval
        self._cleanup_batch_size = max(1, cleanup_batch_size)
        self._result_ttl = idempotent_result_ttl
        self._max_results = max(1, max_idempotent_results)
        self._placeholder_ttl = placeholder_ttl
        self._handler: BrokerEventHandler | None = None
        self._channels: dict[str, _Channel] = {}
        self._heap: list[tuple[float, str]] = []
        self._subscribed: set[str] = set()
        # (channel, idempotency key) -> (deadline, position of the first write); oldest first
        self._results: OrderedDict[tuple[str, str], tuple[float, StreamPosition]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = time.monotonic) -> MemoryMapBroker:
        """The broker of ``map_broker.type = "memory"``: ``map_broker.cleanup_*`` and
        ``channel.idempotent_result_ttl``."""
        return cls(
            clock,
            cleanup_interval=settings.map_broker.cleanup_interval,
            cleanup_batch_size=settings.map_broker.cleanup_batch_size,
            idempotent_result_ttl=settings.channel.idempotent_result_ttl,
        )

    # --- lifecycle --------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        if self._cleanup_interval > 0:
            self._task = asyncio.create_task(self._cleanup_loop(), name="trunkline-map-cleanup")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def ping(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    # --- introspection (tests, stats) -------------------------------------

    @property
    def num_channels(self) -> int:
        return len(self._channels)

    def footprint(self) -> dict[str, int]:
        """How many items every internal structure holds (a memory bound check for tests)."""
        channels = self._channels.values()
        return {
            "channels": len(self._channels),
            "heap": len(self._heap),
            "entries": sum(len(c.entries) for c in channels),
            "order": sum(len(c.order) + len(c.scored) for c in channels),
            "expiring": sum(len(c.expire_at) for c in channels),
            "key_heap": sum(len(c.key_heap) + len(c.heaped) for c in channels),
            "stream": sum(len(c.stream or ()) for c in channels),
            "results": len(self._results),
            "subscribed": len(self._subscribed),
        }

    # --- writes -----------------------------------------------------------

    async def publish(self, channel: str, write: MapWrite, options: MapOptions) -> MapResult:
        return self.publish_now(channel, write, options)

    def publish_now(self, channel: str, write: MapWrite, options: MapOptions) -> MapResult:
        """Publish without awaiting: the delivery happens before this returns."""
        now = self._clock()
        cached = self._cached(channel, write.idempotency_key, now)
        if cached is not None:
            return cached
        ch = self._channel(channel, options, now, create=True)
        assert ch is not None
        exists = write.key in ch.entries
        if write.key_mode is KeyMode.IF_NEW and exists:
            if write.refresh_ttl_on_suppress and options.key_ttl > 0:
                self._set_ttl(channel, ch, write.key, now + options.key_ttl)
            return MapResult(ch.position(), None, "key_exists")
        if write.key_mode is KeyMode.IF_EXISTS and not exists:
            return MapResult(ch.position(), None, "key_not_found")
        if not exists and options.max_keys > 0 and len(ch.entries) >= options.max_keys:
            raise MapLimitExceeded(f"channel {channel!r} holds {options.max_keys} keys")
        score = write.score if options.ordered else 0
        entry = Publication(
            data=write.data,
            info=write.info,
            tags=write.tags,
            time=int(time.time() * 1000),
            offset=self._next_offset(ch, options, now),
            epoch=ch.epoch,
            delta=write.delta,
            key=write.key,
            score=write.score,
        )
        update = entry if write.stream_data is None else msgspec.structs.replace(entry, data=write.stream_data)
        self._keep(ch, update, options, now)
        old = ch.entries.get(write.key)
        if old is None:
            ch.insert(write.key, score)
        elif ch.ordered and old.score != write.score:
            ch.discard(write.key, old.score)
            ch.insert(write.key, score)
        ch.entries[write.key] = entry
        if options.key_ttl > 0:
            self._set_ttl(channel, ch, write.key, now + options.key_ttl)
        else:
            ch.expire_at.pop(write.key, None)  # its heap entry, if any, is dropped when it comes due
        return self._written(channel, ch, update, write.idempotency_key, now)

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
        return self.remove_now(channel, key, options, info=info, tags=tags, idempotency_key=idempotency_key)

    def remove_now(
        self,
        channel: str,
        key: str,
        options: MapOptions,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str = "",
    ) -> MapResult:
        now = self._clock()
        cached = self._cached(channel, idempotency_key, now)
        if cached is not None:
            return cached
        ch = self._channel(channel, options, now, create=True)
        assert ch is not None
        if key not in ch.entries:
            return MapResult(ch.position(), None, "key_not_found")
        offset = self._next_offset(ch, options, now)
        removal = Publication(
            data=b"",
            info=info,
            tags=tags,
            time=int(time.time() * 1000),
            offset=offset,
            epoch=ch.epoch,
            key=key,
            removed=True,
        )
        self._keep(ch, removal, options, now)
        self._drop_key(ch, key)
        if not ch.entries and not options.keeps_stream:
            self._ephemeral_emptied(ch, now)
        self._schedule(channel, ch)
        return self._written(channel, ch, removal, idempotency_key, now)

    @staticmethod
    def _next_offset(ch: _Channel, options: MapOptions, now: float) -> int:
        """The offset of the write being made: the next one for durable/persistent maps, else 0.
        The write renews the channel's metadata and records its stream settings."""
        ch.meta_expire_at = now + options.meta_ttl if options.meta_ttl > 0 else 0.0
        if not options.keeps_stream:
            ch.stream_size, ch.stream_ttl = 0, 0.0
            return 0
        ch.stream_size, ch.stream_ttl = options.stream_size, options.stream_ttl
        ch.top += 1
        return ch.top

    @staticmethod
    def _keep(ch: _Channel, pub: Publication, options: MapOptions, now: float) -> None:
        """Append the write's update to the stream (durable and persistent maps)."""
        if not options.keeps_stream:
            return
        stream = ch.stream
        if stream is None or stream.maxlen != options.stream_size:
            stream = ch.stream = deque(stream or (), maxlen=options.stream_size)
        stream.append(pub)
        ch.stream_expire_at = now + options.stream_ttl

    def _written(self, channel: str, ch: _Channel, pub: Publication, idempotency_key: str, now: float) -> MapResult:
        position = ch.position() if pub.offset else StreamPosition(0, ch.epoch)
        self._schedule(channel, ch)
        if idempotency_key and self._result_ttl > 0:
            results = self._results
            results[(channel, idempotency_key)] = (now + self._result_ttl, position)
            results.move_to_end((channel, idempotency_key))
            while len(results) > self._max_results:
                results.popitem(last=False)
        self._deliver(channel, pub)
        return MapResult(position, pub)

    def _cached(self, channel: str, idempotency_key: str, now: float) -> MapResult | None:
        if not idempotency_key:
            return None
        found = self._results.get((channel, idempotency_key))
        if found is None:
            return None
        deadline, position = found
        if deadline <= now:
            del self._results[(channel, idempotency_key)]
            return None
        return MapResult(position, None, "idempotency")

    def _deliver(self, channel: str, pub: Publication) -> None:
        handler = self._handler
        if handler is not None and channel in self._subscribed:
            handler.handle_publication(channel, pub)

    def _drop_key(self, ch: _Channel, key: str) -> None:
        old = ch.entries.pop(key)
        ch.discard(key, old.score if ch.ordered else 0)
        ch.expire_at.pop(key, None)

    def _ephemeral_emptied(self, ch: _Channel, now: float) -> None:
        """An ephemeral channel without keys has nothing to resume: its epoch lives a placeholder's time."""
        if self._placeholder_ttl > 0 and (not ch.meta_expire_at or ch.meta_expire_at > now + self._placeholder_ttl):
            ch.meta_expire_at = now + self._placeholder_ttl

    def _set_ttl(self, channel: str, ch: _Channel, key: str, deadline: float) -> None:
        ch.expire_at[key] = deadline
        if key not in ch.heaped:
            ch.heaped[key] = deadline
            heapq.heappush(ch.key_heap, (deadline, key))
        # a key already in the heap keeps its (earlier) entry: when it comes due, the cleanup
        # finds the later deadline and pushes the key again, so a key has one heap entry at most
        # (also when it was removed and written again meanwhile)

    # --- channels and expiry ----------------------------------------------

    def _channel(self, channel: str, options: MapOptions | None, now: float, *, create: bool) -> _Channel | None:
        ch = self._channels.get(channel)
        if ch is not None and ch.meta_expire_at and ch.meta_expire_at <= now:
            self._expire_meta(channel, ch)
            ch = self._channels.get(channel)
        if ch is None and create:
            ch = self._channels[channel] = _Channel(new_epoch(), options.ordered if options else False)
            if self._placeholder_ttl > 0:
                ch.meta_expire_at = now + self._placeholder_ttl
            self._schedule(channel, ch)
        if ch is not None and options is not None and ch.ordered != options.ordered:
            self._reorder(ch, options.ordered)
        if ch is not None and ch.stream and ch.stream_expire_at <= now:
            ch.stream = None
        return ch

    @staticmethod
    def _reorder(ch: _Channel, ordered: bool) -> None:
        """The namespace changed between ordered and unordered (a config reload): rebuild the order."""
        ch.ordered = ordered
        ch.scored = sorted((e.score, k) for k, e in ch.entries.items()) if ordered else []
        ch.order = [] if ordered else sorted(ch.entries)

    def _expire_meta(self, channel: str, ch: _Channel) -> None:
        """The epoch and top offset expired: an empty channel goes; one with keys starts a new epoch."""
        if not ch.entries:
            del self._channels[channel]
            return
        ch.epoch = new_epoch()
        ch.top = 0
        ch.stream = None
        ch.meta_expire_at = 0.0

    def _schedule(self, channel: str, ch: _Channel) -> None:
        deadline = ch.deadline()
        if deadline and (not ch.scheduled or deadline < ch.scheduled):
            ch.scheduled = deadline
            heapq.heappush(self._heap, (deadline, channel))

    def cleanup(self) -> int:
        """Remove what is due: expired keys (at most ``cleanup_batch_size`` per channel, each
        delivered as a removal), expired streams, channels and idempotent results. Returns the
        number of keys removed. The cleanup loop calls this every ``cleanup_interval``."""
        now = self._clock()
        heap = self._heap
        due: list[str] = []
        while heap and heap[0][0] <= now:
            at, channel = heapq.heappop(heap)
            ch = self._channels.get(channel)
            if ch is not None and ch.scheduled == at:
                ch.scheduled = 0.0
                due.append(channel)
        removed = 0
        for channel in due:
            ch = self._channels.get(channel)
            if ch is None:
                continue
            removed += self._expire_keys(channel, ch, now)
            if ch.stream and ch.stream_expire_at <= now:
                ch.stream = None
            if not ch.entries and ch.meta_expire_at and ch.meta_expire_at <= now:
                del self._channels[channel]
                continue
            self._schedule(channel, ch)
        results = self._results
        while results:
            key, (deadline, _) = next(iter(results.items()))
            if deadline > now:
                break
            del results[key]
        # a dict never shrinks: once empty, let the tables of a past peak go
        if not results:
            self._results = OrderedDict()
        if not self._channels:
            self._channels = {}
        if not heap:
            self._heap = []
        return removed

    def _expire_keys(self, channel: str, ch: _Channel, now: float) -> int:
        removed = 0
        key_heap = ch.key_heap
        while key_heap and key_heap[0][0] <= now and removed < self._cleanup_batch_size:
            _, key = heapq.heappop(key_heap)
            del ch.heaped[key]
            deadline = ch.expire_at.get(key)
            if deadline is None:
                continue  # removed, or rewritten without a ttl
            if deadline > now:
                ch.heaped[key] = deadline  # refreshed since: its one entry moves on
                heapq.heappush(key_heap, (deadline, key))
                continue
            removal = Publication(data=b"", time=int(time.time() * 1000), key=key, removed=True)
            keeps = ch.stream_size > 0
            if keeps:
                ch.top += 1
                removal = msgspec.structs.replace(removal, offset=ch.top, epoch=ch.epoch)
                if ch.stream is None:
                    ch.stream = deque(maxlen=ch.stream_size)
                ch.stream.append(removal)
                ch.stream_expire_at = now + ch.stream_ttl
            else:
                removal = msgspec.structs.replace(removal, epoch=ch.epoch)
            self._drop_key(ch, key)
            removed += 1
            if not ch.entries and not keeps:
                self._ephemeral_emptied(ch, now)
            try:
                self._deliver(channel, removal)
            except Exception:
                logger.exception("map broker event handler failed on %r", channel)
        return removed

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                self.cleanup()
            except Exception:
                logger.exception("map cleanup failed")

    # --- reads ------------------------------------------------------------

    def _read_channel(self, channel: str, options: MapOptions, meta_ttl: float) -> _Channel:
        now = self._clock()
        ch = self._channel(channel, options, now, create=True)
        assert ch is not None
        if ch.top and meta_ttl > 0:
            ch.meta_expire_at = now + meta_ttl  # a read keeps a stream's epoch alive, as in Redis
        return ch

    async def read_state(self, channel: str, query: MapStateQuery, options: MapOptions) -> MapStatePage:
        return self.read_state_now(channel, query, options)

    def read_state_now(self, channel: str, query: MapStateQuery, options: MapOptions) -> MapStatePage:
        ch = self._read_channel(channel, options, options.meta_ttl)
        position = ch.position()
        if query.key:
            entry = ch.entries.get(query.key)
            return MapStatePage([self._entry(ch, entry)] if entry is not None else [], position, "")
        limit = max(1, query.limit)
        keys: list[str]
        if ch.ordered:
            ordered = ch.scored
            after = _parse_cursor(query.cursor, ordered=True)
            if query.asc:
                start = bisect.bisect_right(ordered, after) if after is not None else 0
                items = ordered[start : start + limit + 1]
            else:
                end = bisect.bisect_left(ordered, after) if after is not None else len(ordered)
                items = ordered[max(0, end - limit - 1) : end][::-1]
            more = len(items) > limit
            items = items[:limit]
            keys = [k for _, k in items]
            cursor = page_cursor(str(items[-1][0]), items[-1][1]) if more else ""
        else:
            plain = ch.order
            after_key = _parse_cursor(query.cursor, ordered=False)
            start = bisect.bisect_right(plain, after_key[1]) if after_key is not None else 0
            keys = plain[start : start + limit + 1]
            more = len(keys) > limit
            keys = keys[:limit]
            cursor = page_cursor(None, keys[-1]) if more else ""
        entries = [self._entry(ch, ch.entries[k]) for k in keys]
        return MapStatePage(entries, position, cursor)

    @staticmethod
    def _entry(ch: _Channel, entry: Publication) -> Publication:
        return entry if entry.epoch == ch.epoch else msgspec.structs.replace(entry, epoch=ch.epoch)

    async def read_stream(
        self, channel: str, query: HistoryQuery, options: MapOptions
    ) -> tuple[list[Publication], StreamPosition]:
        return self.read_stream_now(channel, query, options)

    def read_stream_now(
        self, channel: str, query: HistoryQuery, options: MapOptions
    ) -> tuple[list[Publication], StreamPosition]:
        ch = self._read_channel(channel, options, query.history_meta_ttl or options.meta_ttl)
        position = ch.position()
        since = query.since
        if query.limit == 0 or not ch.stream or (since is not None and since.epoch and since.epoch != ch.epoch):
            return [], position
        items = list(ch.stream)
        if since is not None:
            if query.reverse:
                items = [p for p in items if p.offset < since.offset] if since.offset else items
            else:
                items = [p for p in items if p.offset > since.offset]
        if query.reverse:
            items.reverse()
        if query.limit is not None and query.limit >= 0:
            items = items[: query.limit]
        return items, position

    async def stats(self, channel: str) -> int:
        ch = self._channel(channel, None, self._clock(), create=False)
        return len(ch.entries) if ch is not None else 0

    async def clear(self, channel: str) -> None:
        self._channels.pop(channel, None)  # its heap entry is skipped when it comes due


def _parse_cursor(cursor: str, *, ordered: bool) -> tuple[int, str] | None:
    """The (score, key) a cursor names; None for the first page. Key-order cursors give score 0."""
    parts = split_cursor(cursor, ordered=ordered)
    if parts is None:
        return None
    score, key = parts
    if not ordered:
        return 0, key
    try:
        return int(score), key
    except ValueError:
        raise InvalidCursor(f"not a cursor of this map: {cursor!r}") from None
