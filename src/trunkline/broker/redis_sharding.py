"""Consistent sharding over several independent Redis servers (``engine.redis.address`` as a list).

A channel lives on one shard, chosen by :func:`shard_index`: Centrifugo's jump
consistent hash over the FNV-1a 64 hash of the channel name, so Trunkline and
Centrifugo agree on every channel's shard, and adding a shard moves only about
1/N of the channels. Each shard is a whole :class:`~trunkline.broker.redis.RedisBroker`
(its own pool and pub/sub connection): publications, joins, leaves, history and
presence of a channel go to its shard only. Pattern subscriptions (MQTT wildcards)
are made on every shard. Control messages are listened to on every shard and each
is sent through one shard, in turn (skipping a shard that is down), so every node
gets it once.

A shard that goes away takes its channels with it until it is back; its reader
reconnects and resyncs (``handle_resync``) as a lone server's does. Nothing moves
between shards: changing the list re-maps about 1/N of the channels (their
history starts again, and clients positioned on them are told recovery failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .base import BrokerEventHandler, HistoryQuery, Publication, PublishOptions, StreamPosition
from .redis import RedisBroker, RedisPresence, RedisUnavailable

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits (Go's ``hash/fnv.New64a``)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach) of a 64-bit ``key`` into ``buckets`` (>= 1), with
    the 64-bit wrap-around and float steps of the Go version Centrifuge adapted (go-jump)."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_index(channel: str, shards: int) -> int:
    """The shard of ``channel`` among ``shards``: Centrifuge's ``consistentIndex`` (jump hash of FNV-1a 64)."""
    return jump_hash(fnv1a64(channel.encode()), shards)


class ShardedRedisBroker:
    """A :class:`~trunkline.broker.base.Broker` over independent Redis shards."""

    def __init__(self, shards: Sequence[RedisBroker]) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self._shards = list(shards)
        self._control_turn = 0

    @property
    def shards(self) -> list[RedisBroker]:
        return list(self._shards)

    def shard(self, channel: str) -> RedisBroker:
        return self._shards[shard_index(channel, len(self._shards))]

    async def start(self, handler: BrokerEventHandler) -> None:
        started: list[RedisBroker] = []
        try:
            for shard in self._shards:
                await shard.start(handler)
                started.append(shard)
        except BaseException:
            for shard in started:
                await shard.close()
            raise

    async def close(self) -> None:
        for shard in self._shards:
            await shard.close()

    async def ping(self) -> None:
        """Raise if any shard is unreachable (its channels are unavailable meanwhile)."""
        await asyncio.gather(*(shard.ping() for shard in self._shards))

    async def subscribe(self, channel: str) -> None:
        await self.shard(channel).subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.shard(channel).unsubscribe(channel)

    async def psubscribe(self, prefix: str) -> None:
        done: list[RedisBroker] = []
        try:
            for shard in self._shards:
                await shard.psubscribe(prefix)
                done.append(shard)
        except BaseException:
            for shard in done:
                await shard.punsubscribe(prefix)
            raise

    async def punsubscribe(self, prefix: str) -> None:
        for shard in self._shards:
            await shard.punsubscribe(prefix)

    async def publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        return await self.shard(channel).publish(channel, pub, options)

    async def publish_join(self, channel: str, info: bytes) -> None:
        await self.shard(channel).publish_join(channel, info)

    async def publish_leave(self, channel: str, info: bytes) -> None:
        await self.shard(channel).publish_leave(channel, info)

    async def publish_control(self, data: bytes) -> None:
        """Through one shard, the next in turn; a shard that is down passes its turn on."""
        error: RedisUnavailable | None = None
        for _ in range(len(self._shards)):
            shard = self._shards[self._control_turn % len(self._shards)]
            self._control_turn += 1
            try:
                await shard.publish_control(data)
                return
            except RedisUnavailable as exc:
                error = exc
        assert error is not None
        raise error

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        return await self.shard(channel).history(channel, query)

    async def remove_history(self, channel: str) -> None:
        await self.shard(channel).remove_history(channel)


class ShardedRedisPresence:
    """A :class:`~trunkline.broker.base.PresenceManager` over the same shards (by channel)."""

    def __init__(self, shards: Sequence[RedisPresence]) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self._shards = list(shards)

    def shard(self, channel: str) -> RedisPresence:
        return self._shards[shard_index(channel, len(self._shards))]

    async def close(self) -> None:
        for shard in self._shards:
            await shard.close()

    async def add_presence(self, channel: str, client_id: str, user: str, info: bytes, ttl: float) -> None:
        await self.shard(channel).add_presence(channel, client_id, user, info, ttl)

    async def remove_presence(self, channel: str, client_id: str) -> None:
        await self.shard(channel).remove_presence(channel, client_id)

    async def presence(self, channel: str) -> dict[str, bytes]:
        return await self.shard(channel).presence(channel)

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        return await self.shard(channel).presence_stats(channel)
