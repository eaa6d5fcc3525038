"""In-memory broker and presence: one process, nothing to install (the default).

It keeps the same contract as the Redis implementation: history bounded by size
and ttl, a fresh random epoch whenever a stream is created (so a restart is
reported as "not recovered", never as a silent gap). Publications stay objects.

Expiry is active: a heap of deadlines is swept every ``sweep_interval`` seconds,
so expired items and streams free their memory whether or not anyone reads them
again. A stream created by a read (a subscribe fixing its epoch) is a
*placeholder* that lives only ``placeholder_ttl`` unless read again or published to.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
from collections import deque
from collections.abc import Callable

import msgspec

from .base import (
    BrokerEventHandler,
    HistoryQuery,
    Publication,
    PublishOptions,
    StreamPosition,
)

Clock = Callable[[], float]


def new_epoch() -> str:
    return secrets.token_hex(4)


class _Stream:
    __slots__ = ("epoch", "items", "items_expire_at", "meta_expire_at", "scheduled", "top")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.top = 0
        self.items: deque[Publication] | None = None
        self.items_expire_at = 0.0
        self.meta_expire_at = 0.0
        self.scheduled = 0.0  # deadline of this stream's entry in the sweep heap (0: none)

    def deadline(self) -> float:
        at = self.meta_expire_at
        if self.items and (not at or self.items_expire_at < at):
            at = self.items_expire_at
        return at


class MemoryBroker:
    """Single-node pub/sub with per-channel history streams."""

    def __init__(self, clock: Clock = time.monotonic, sweep_interval: float = 1.0) -> None:
        self._clock = clock
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[str, _Stream] = {}
        self._heap: list[tuple[float, str]] = []
        self._results: dict[tuple[str, str], tuple[float, StreamPosition | None]] = {}
        self._results_expiry: deque[tuple[float, tuple[str, str]]] = deque()
        self._sweep_interval = sweep_interval
        self._sweep_task: asyncio.Task[None] | None = None
        self._patterns: dict[str, int] = {}  # prefix -> psubscribe calls not yet undone

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        self._sweep_task = asyncio.create_task(self._sweep_loop())

    async def close(self) -> None:
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            self._sweep_task = None

    async def ping(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def psubscribe(self, prefix: str) -> None:
        self._patterns[prefix] = self._patterns.get(prefix, 0) + 1

    async def punsubscribe(self, prefix: str) -> None:
        count = self._patterns.pop(prefix, 0) - 1
        if count > 0:
            self._patterns[prefix] = count

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ expiry

    def _schedule(self, channel: str, stream: _Stream) -> None:
        deadline = stream.deadline()
        if deadline and (not stream.scheduled or deadline < stream.scheduled):
            stream.scheduled = deadline
            heapq.heappush(self._heap, (deadline, channel))

    def _expire(self, channel: str, stream: _Stream, now: float) -> bool:
        """Apply what is due; False when the stream itself is gone."""
        if stream.meta_expire_at and stream.meta_expire_at <= now:
            del self._streams[channel]
            return False
        if stream.items and stream.items_expire_at <= now:
            stream.items = None
        return True

    def sweep(self) -> None:
        """Drop every expired item, stream and idempotent result (the loop calls this)."""
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, channel = heapq.heappop(heap)
            stream = self._streams.get(channel)
            if stream is None or stream.scheduled != at:
                continue  # superseded by an earlier deadline, or gone
            stream.scheduled = 0.0
            if self._expire(channel, stream, now):
                self._schedule(channel, stream)
        expiry = self._results_expiry
        while expiry and expiry[0][0] <= now:
            at, key = expiry.popleft()
            if self._results.get(key, (0.0, None))[0] == at:
                del self._results[key]

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep()

    def _stream(self, channel: str, query: HistoryQuery | None, create: bool) -> _Stream | None:
        now = self._clock()
        stream = self._streams.get(channel)
        if stream is not None and not self._expire(channel, stream, now):
            stream = None
        if stream is None and create:
            stream = self._streams[channel] = _Stream(new_epoch())
        if stream is not None and query is not None:
            ttl = query.history_meta_ttl if stream.top else query.placeholder_ttl
            if ttl > 0:
                stream.meta_expire_at = now + ttl
                self._schedule(channel, stream)
        return stream

    # ------------------------------------------------------------------ publishing

    async def publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        return self.publish_now(channel, pub, options)

    def publish_now(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        """Publish without awaiting: the fan-out happens before this returns."""
        key = (channel, options.idempotency_key)
        if options.idempotency_key and key in self._results:
            at, position = self._results[key]
            if at > self._clock():
                return position
        position = self._publish(channel, pub, options)
        if options.idempotency_key and options.idempotent_result_ttl > 0:
            at = self._clock() + options.idempotent_result_ttl
            self._results[key] = (at, position)
            self._results_expiry.append((at, key))
        return position

    def _publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        handler = self._handler
        if not options.keeps_history:
            if handler is not None:
                handler.handle_publication(channel, pub)
                if self._patterns:
                    handler.handle_pattern_publication(channel, pub)
            return None
        stream = self._stream(channel, None, create=True)
        assert stream is not None
        now = self._clock()
        stream.top += 1
        pub = msgspec.structs.replace(pub, offset=stream.top, epoch=stream.epoch)
        items = stream.items
        if items is None:
            items = stream.items = deque()
        items.append(pub)
        while len(items) > options.history_size:
            items.popleft()
        stream.items_expire_at = now + options.history_ttl
        if options.history_meta_ttl > 0:
            stream.meta_expire_at = now + options.history_meta_ttl
        else:
            stream.meta_expire_at = 0.0  # no metadata ttl: the stream's epoch and top never expire
        self._schedule(channel, stream)
        if handler is not None:
            handler.handle_publication(channel, pub)
            if self._patterns:
                handler.handle_pattern_publication(channel, pub)
        return StreamPosition(stream.top, stream.epoch)

    async def publish_join(self, channel: str, info: bytes) -> None:
        if self._handler is not None:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: bytes) -> None:
        if self._handler is not None:
            self._handler.handle_leave(channel, info)

    async def publish_control(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.handle_control(data)

    # ------------------------------------------------------------------ history

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        return self.history_now(channel, query)

    def history_now(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        stream = self._stream(channel, query, create=True)
        assert stream is not None
        position = StreamPosition(stream.top, stream.epoch)
        if query.limit == 0 or not stream.items:
            return [], position
        items = list(stream.items)
        if query.since is not None:
            since = query.since.offset
            if query.reverse:
                items = [p for p in items if p.offset < since] if since else items
            else:
                items = [p for p in items if p.offset > since]
        if query.reverse:
            items.reverse()
        if query.limit is not None and query.limit >= 0:
            items = items[: query.limit]
        return items, position

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.items = None


class MemoryPresence:
    """Presence kept in this process."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, tuple[str, bytes]]] = {}

    async def add_presence(self, channel: str, client_id: str, user: str, info: bytes, ttl: float) -> None:
        self._channels.setdefault(channel, {})[client_id] = (user, info)

    async def remove_presence(self, channel: str, client_id: str) -> None:
        members = self._channels.get(channel)
        if members is None:
            return
        members.pop(client_id, None)
        if not members:
            del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, bytes]:
        return {cid: info for cid, (_, info) in self._channels.get(channel, {}).items()}

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        members = self._channels.get(channel, {})
        return len(members), len({user for user, _ in members.values()})
