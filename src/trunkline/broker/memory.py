"""In-memory broker and presence: one process, nothing to install (the default).

It keeps the same contract as the Redis implementation: bytes at the boundary,
history bounded by size and ttl, a fresh random epoch whenever a stream is created
(so a restart is reported as "not recovered", never as a silent gap).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import (
    BrokerEventHandler,
    HistoryQuery,
    PublishOptions,
    StreamPosition,
    StreamPublication,
    with_offset,
)

Clock = Callable[[], float]


def new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass(slots=True)
class _Stream:
    epoch: str
    top: int = 0
    items: deque[StreamPublication] = field(default_factory=deque)
    items_expire_at: float = 0.0
    meta_expire_at: float = 0.0


class MemoryBroker:
    """Single-node pub/sub with per-channel history streams."""

    def __init__(self, clock: Clock = time.monotonic, cleanup_interval: float = 60.0) -> None:
        self._clock = clock
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[str, _Stream] = {}
        self._cleanup_interval = cleanup_interval
        self._cleanup_task: asyncio.Task[None] | None = None

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        self._cleanup_task = asyncio.create_task(self._cleanup_loop())

    async def close(self) -> None:
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            self._cleanup_task = None

    async def ping(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    def _stream(self, channel: str, meta_ttl: float, create: bool) -> _Stream | None:
        now = self._clock()
        stream = self._streams.get(channel)
        if stream is not None and stream.meta_expire_at and stream.meta_expire_at < now:
            del self._streams[channel]
            stream = None
        if stream is not None and stream.items and stream.items_expire_at < now:
            stream.items.clear()
        if stream is None and create:
            stream = self._streams[channel] = _Stream(epoch=new_epoch())
        if stream is not None and meta_ttl > 0:
            stream.meta_expire_at = now + meta_ttl
        return stream

    async def publish(self, channel: str, data: bytes, options: PublishOptions) -> StreamPosition | None:
        return self.publish_now(channel, data, options)

    def publish_now(self, channel: str, data: bytes, options: PublishOptions) -> StreamPosition | None:
        """Publish without awaiting: the fan-out happens before this returns."""
        handler = self._handler
        if not options.keeps_history:
            if handler is not None:
                handler.handle_publication(channel, data, 0)
            return None
        stream = self._stream(channel, options.history_meta_ttl, create=True)
        assert stream is not None
        stream.top += 1
        data = with_offset(data, stream.top)
        stream.items.append(StreamPublication(stream.top, data))
        while len(stream.items) > options.history_size:
            stream.items.popleft()
        stream.items_expire_at = self._clock() + options.history_ttl
        if handler is not None:
            handler.handle_publication(channel, data, stream.top)
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

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[StreamPublication], StreamPosition]:
        return self.history_now(channel, query)

    def history_now(self, channel: str, query: HistoryQuery) -> tuple[list[StreamPublication], StreamPosition]:
        stream = self._stream(channel, query.history_meta_ttl, create=True)
        assert stream is not None
        position = StreamPosition(stream.top, stream.epoch)
        if query.limit == 0:
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
            stream.items.clear()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            now = self._clock()
            for name in [n for n, s in self._streams.items() if s.meta_expire_at and s.meta_expire_at < now]:
                del self._streams[name]


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
