"""The map broker contract: keyed channel state, its change stream and the delivery of changes.

A channel of a map namespace (``subscription_type = "map"``, ``map_clients``, ``map_users``)
holds a *state*: one entry per key (a :class:`Publication` with ``key`` set). Every accepted
write changes the state, may append to the channel's *stream* (durable and persistent maps) and
is delivered as an update — a publication with ``key`` set, and ``removed=True`` with empty data
for a removal — to ``handler.handle_publication`` on every node subscribed to the channel.
Clients read the state page by page (:meth:`MapBroker.read_state`), catch up from the stream
(:meth:`MapBroker.read_stream`) and then go live; docs/map.md describes the whole protocol.

The broker expires keys itself (``key_ttl``) and delivers every expiry as a removal. Stream
offsets strictly increase per channel; the epoch changes when a channel's stream is lost, which
tells clients to re-sync from a state snapshot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ..records import ClientInfo, Publication
from .base import BrokerEventHandler, HistoryQuery, StreamPosition

__all__ = [
    "InvalidCursor",
    "KeyMode",
    "MapBroker",
    "MapLimitExceeded",
    "MapOptions",
    "MapResult",
    "MapStatePage",
    "MapStateQuery",
    "MapWrite",
    "page_cursor",
    "split_cursor",
]


class KeyMode(enum.Enum):
    """When a publish may write its key: always, only a new key, or only an existing one."""

    REPLACE = ""
    IF_NEW = "if_new"
    IF_EXISTS = "if_exists"


@dataclass(frozen=True, slots=True)
class MapOptions:
    """A map namespace's settings, resolved (``trunkline.hub.map_options.map_options`` builds it).

    ``stream_size`` 0 means an ephemeral map: no stream is kept and every offset stays 0 (the
    epoch is still set). ``key_ttl`` 0 means keys never expire; ``max_keys`` 0 means no limit.
    ``meta_ttl`` is how long a channel's epoch and top offset outlive its last write.
    """

    stream_size: int = 0
    stream_ttl: float = 0.0
    meta_ttl: float = 0.0
    key_ttl: float = 0.0
    max_keys: int = 0
    ordered: bool = False

    @property
    def keeps_stream(self) -> bool:
        """Durable and persistent maps keep a change stream (both size and ttl positive)."""
        return self.stream_size > 0 and self.stream_ttl > 0


@dataclass(frozen=True, slots=True)
class MapWrite:
    """One publish of a key.

    ``stream_data``, when set, is what the stream entry and the live update carry instead of
    ``data`` (the state keeps ``data``). A non-empty ``idempotency_key`` makes a repeat within
    the broker's idempotency window a no-op answered with the first result (``suppressed ==
    "idempotency"``). ``refresh_ttl_on_suppress``: an ``IF_NEW`` write of an existing key still
    renews that key's TTL (map_users presence keeps a user while any connection refreshes it).
    """

    key: str
    data: bytes
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    key_mode: KeyMode = KeyMode.REPLACE
    score: int = 0
    stream_data: bytes | None = None
    idempotency_key: str = ""
    delta: bool = False
    refresh_ttl_on_suppress: bool = False


@dataclass(frozen=True, slots=True)
class MapResult:
    """What a write did.

    ``position`` is the channel's stream position after the write (offset 0 for ephemeral
    maps; the epoch is always set). ``publication`` is the update that was delivered, None when
    the write was suppressed; ``suppressed`` then says why: ``"key_exists"`` (``IF_NEW``),
    ``"key_not_found"`` (``IF_EXISTS``, or removing a missing key) or ``"idempotency"``.
    """

    position: StreamPosition
    publication: Publication | None
    suppressed: str = ""


class MapLimitExceeded(Exception):
    """A write of a new key into a channel that already holds ``max_keys`` keys (error 106)."""


@dataclass(frozen=True, slots=True)
class MapStateQuery:
    """One page of a channel's state.

    ``cursor`` is the opaque value a previous page returned (``""``: the first page). ``key``
    non-empty reads that key only (zero or one entry). ``asc`` orders an ordered map by
    ascending score (default: descending); unordered maps are in key order. A cursor the broker
    did not hand out makes ``read_state`` raise ``ValueError`` (the node answers 107).
    """

    cursor: str = ""
    limit: int = 100
    key: str = ""
    asc: bool = False


@dataclass(frozen=True, slots=True)
class MapStatePage:
    """Entries (key, data, info, score and the offset of the write that set each), the stream
    top when the page was read, and the cursor of the next page (``""``: this was the last)."""

    entries: list[Publication]
    position: StreamPosition
    cursor: str


class InvalidCursor(ValueError):
    """A state cursor this broker did not hand out."""


def page_cursor(score: str | None, key: str) -> str:
    """The cursor naming a page's last entry: ``s<score>:<key>`` (ordered maps, the score as
    text) or ``k<key>`` (key order, ``score`` None). Cursors are values, not indexes."""
    return f"k{key}" if score is None else f"s{score}:{key}"


def split_cursor(cursor: str, *, ordered: bool) -> tuple[str, str] | None:
    """(score text, key) of a :func:`page_cursor` (score text ``""`` in key order); None for
    the first page (``""``). Raises :class:`InvalidCursor` for another form; the broker checks
    the score text as its own scores are."""
    if not cursor:
        return None
    if not ordered:
        if cursor[0] != "k":
            raise InvalidCursor(f"not a cursor of this map: {cursor!r}")
        return "", cursor[1:]
    score, colon, key = cursor[1:].partition(":")
    if cursor[0] != "s" or not colon:
        raise InvalidCursor(f"not a cursor of this map: {cursor!r}")
    return score, key


class MapBroker(Protocol):
    """Keyed channel state + change stream + delivery of changes between nodes.

    Every accepted write (publish, remove, and a key removed by TTL expiry) reaches
    ``handler.handle_publication(channel, pub)`` on every node subscribed to the channel
    (memory: synchronously, in write order). ``read_stream`` has the semantics of
    :meth:`~trunkline.broker.base.Broker.history` (``since``/``limit``/``reverse``).
    """

    async def start(self, handler: BrokerEventHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """This node wants the channel's live updates."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, write: MapWrite, options: MapOptions) -> MapResult:
        """Write a key; raises :class:`MapLimitExceeded` for a new key into a full channel."""

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
        """Remove a key; a missing key is suppressed with ``"key_not_found"`` (nothing delivered)."""

    async def read_state(self, channel: str, query: MapStateQuery, options: MapOptions) -> MapStatePage: ...

    async def read_stream(
        self, channel: str, query: HistoryQuery, options: MapOptions
    ) -> tuple[list[Publication], StreamPosition]:
        """The stream entries after ``query.since`` and the current position, as ``Broker.history``
        (nothing is raised: the caller compares). A ``since`` of another epoch (the stream was
        lost) gives no entries; a first entry past ``since.offset + 1`` means the stream no longer
        covers the client's position. ``limit`` 0 gives only the position."""

    async def stats(self, channel: str) -> int:
        """The number of keys of the channel."""

    async def clear(self, channel: str) -> None:
        """Drop the channel's state and stream (a new epoch starts with the next write)."""

    async def ping(self) -> None:
        """Raise if the backing store is unreachable."""
