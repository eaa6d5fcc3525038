"""Broker and presence interfaces shared by the memory and Redis implementations.

Publications cross the broker boundary as bytes: the JSON encoding of a protocol
``Publication`` (with its offset when the channel keeps history). A node builds the
push for its subscribers by wrapping those bytes once, whatever broker delivered
them, so the memory broker behaves exactly like the network one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's history stream stands: its top offset and its epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class StreamPublication:
    """One publication as stored in history: its offset and its encoded bytes."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How a publication is kept. History is on when both size and ttl are positive."""

    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 0.0
    idempotency_key: str = ""

    @property
    def keeps_history(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A history read: ``limit`` None means "all" (the caller caps it), 0 means "only the position"."""

    limit: int | None = None
    since: StreamPosition | None = None
    reverse: bool = False
    history_meta_ttl: float = 0.0


class BrokerEventHandler(Protocol):
    """The node: the broker pushes what it receives here (synchronously, in the event loop)."""

    def handle_publication(self, channel: str, data: bytes, offset: int) -> None: ...

    def handle_join(self, channel: str, info: bytes) -> None: ...

    def handle_leave(self, channel: str, info: bytes) -> None: ...

    def handle_control(self, data: bytes) -> None: ...


class Broker(Protocol):
    """Pub/sub between nodes plus per-channel history streams."""

    async def start(self, handler: BrokerEventHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving the channel's publications, joins and leaves on this node."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, data: bytes, options: PublishOptions) -> StreamPosition | None:
        """Publish ``data`` (an encoded Publication without offset).

        With history, the broker sets the next offset into the stored and delivered
        bytes and returns the new position; without history it returns None.
        """

    async def publish_join(self, channel: str, info: bytes) -> None: ...

    async def publish_leave(self, channel: str, info: bytes) -> None: ...

    async def publish_control(self, data: bytes) -> None:
        """Send a node-to-node control message to every node (this one included)."""

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[StreamPublication], StreamPosition]: ...

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


def with_offset(data: bytes, offset: int) -> bytes:
    """Insert ``"offset":N`` into an encoded Publication object (``{...}``)."""
    if data == b"{}":
        return b'{"offset":%d}' % offset
    return data[:-1] + b',"offset":%d}' % offset
