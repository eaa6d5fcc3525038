"""Broker and presence interfaces shared by the memory and Redis implementations.

Publications cross the broker as a protocol-neutral :class:`Publication` record
(payload bytes, client info, tags, time, and the offset and epoch the stream gave
it). The memory broker hands the objects over as they are; the Redis broker ships
them in a compact binary form (msgpack, see :func:`encode_body`). Nothing below the
hub knows the client protocol: each wire format encodes a record on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..records import ClientInfo, Publication, decode_body, encode_body

__all__ = ["ClientInfo", "Publication", "decode_body", "encode_body"]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's history stream stands: its top offset and its epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How a publication is kept. History is on when both size and ttl are positive.

    A non-empty ``idempotency_key`` makes the broker remember the result for
    ``idempotent_result_ttl`` seconds: a repeat within that window publishes nothing
    and returns the first result.
    """

    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 0.0
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0

    @property
    def keeps_history(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A history read: ``limit`` None means "all" (the caller caps it), 0 means "only the position".

    ``history_meta_ttl`` extends the life of a stream that has publications; a stream
    that has none yet (created by this read to fix its epoch) lives only
    ``placeholder_ttl`` unless read again, so subscribes alone cannot pile up state.
    """

    limit: int | None = None
    since: StreamPosition | None = None
    reverse: bool = False
    history_meta_ttl: float = 0.0
    placeholder_ttl: float = 0.0


class BrokerEventHandler(Protocol):
    """The node: the broker pushes what it receives here (synchronously, in the event loop)."""

    def handle_publication(self, channel: str, pub: Publication) -> None: ...

    def handle_join(self, channel: str, info: bytes) -> None: ...

    def handle_leave(self, channel: str, info: bytes) -> None: ...

    def handle_control(self, data: bytes) -> None: ...

    def handle_resync(self) -> None:
        """The feed was interrupted and is back: publications may have been missed."""

    def handle_pattern_publication(self, channel: str, pub: Publication) -> None:
        """A publication of ``channel`` fed by a pattern subscription (:meth:`Broker.psubscribe`).

        The broker calls it in addition to :meth:`handle_publication` (memory) or
        instead of it for channels this node receives only through a pattern (Redis).
        """


class Broker(Protocol):
    """Pub/sub between nodes plus per-channel history streams."""

    async def start(self, handler: BrokerEventHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving the channel's publications, joins and leaves on this node."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def psubscribe(self, prefix: str) -> None:
        """Start receiving the publications of every channel whose name starts with ``prefix``
        (through ``handle_pattern_publication``; joins and leaves are not fed)."""

    async def punsubscribe(self, prefix: str) -> None: ...

    async def publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        """Publish ``pub`` (offset and epoch unset).

        With history, the broker gives the record the next offset and the stream's
        epoch, stores and delivers it, and returns the new position; without
        history it returns None.
        """

    async def publish_join(self, channel: str, info: bytes) -> None: ...

    async def publish_leave(self, channel: str, info: bytes) -> None: ...

    async def publish_control(self, data: bytes) -> None:
        """Send a node-to-node control message to every node (this one included)."""

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]: ...

    async def remove_history(self, channel: str) -> None: ...

    async def ping(self) -> None:
        """Raise if the backing store is unreachable (used by /ready)."""


class PresenceManager(Protocol):
    """Who is in a channel, across nodes."""

    async def add_presence(self, channel: str, client_id: str, user: str, info: bytes, ttl: float) -> None: ...

    async def remove_presence(self, channel: str, client_id: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, bytes]:
        """client id -> encoded ClientInfo."""

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """(number of clients, number of distinct users)."""
