"""The in-process index: channel -> local subscribers, user -> connections, id -> connection.

Fan-out lives here, protocol-neutral. A subscriber registers with its *wire
shape* (JSON or Protobuf, bidirectional or not…): an object that encodes a
channel's publications and join/leave events for that wire. ``broadcast``
encodes a publication at most once per shape present on the channel and hands
the same bytes to every subscriber of that shape, through its ``push`` callable
(its outbound buffer's append).

Positioned subscribers (recovery or positioning on) are kept apart from the
others: a publication reaches them only if it continues their stream position
(:mod:`trunkline.hub.position`); after a gap they are returned to the caller, who
must make them resubscribe. A subscriber whose subscribe is still being processed
is *pending*: it gets the publication records through its buffer callback, so
recovery can merge them. A pending positioned subscriber that joined from a
stream top this node has not reached yet *waits* until it has.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar, cast

from ..broker.base import Publication
from ..records import Undeliverable
from .delta import DeltaShape, DeltaState, is_delta
from .position import Position, Verdict

Push = Callable[[bytes], None]
Buffer = Callable[[Publication], None]
#: Called once a waiting subscriber may go live (True) or has missed publications (False).
Resume = Callable[[bool], None]
K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class WireShape(Hashable, Protocol):
    """How one wire format encodes what a channel fans out (one instance per format)."""

    def publication(self, channel: str, pub: Publication) -> bytes: ...

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes: ...


class _Channel(Generic[K]):
    __slots__ = ("delta", "join_leave", "live", "pending", "position", "positioned", "waiting")

    def __init__(self) -> None:
        self.live: dict[WireShape, dict[K, Push]] = {}
        self.positioned: dict[WireShape, dict[K, Push]] = {}
        self.pending: dict[K, Buffer] = {}
        self.waiting: dict[K, tuple[int, str, Resume]] = {}
        self.join_leave: dict[WireShape, dict[K, Push]] = {}
        self.position = Position()
        #: the channel's delta subscribers' state (:mod:`trunkline.hub.delta`), while it has any
        self.delta: DeltaState[K] | None = None

    def empty(self) -> bool:
        return not (self.live or self.positioned or self.pending)

    def count(self) -> int:
        return sum(len(m) for m in self.live.values()) + sum(len(m) for m in self.positioned.values())

    def members(self) -> list[K]:
        out: list[K] = []
        for group in (self.live, self.positioned):
            for members in group.values():
                out.extend(members)
        return out


class HubObserver(Protocol[K_contra]):
    """Told what happens in the hub (the dashboard's event log). Each call must be cheap and never raise."""

    def connection_added(self, conn: K_contra) -> None: ...

    def connection_removed(self, conn: K_contra) -> None: ...

    def subscribed(self, channel: str, conn: K_contra) -> None: ...

    def unsubscribed(self, channel: str, conn: K_contra) -> None: ...

    def published(self, channel: str, pub: Publication) -> None: ...


def _drop(index: dict[WireShape, dict[K, Push]], conn: K) -> None:
    for shape, members in list(index.items()):
        if members.pop(conn, None) is not None and not members:
            del index[shape]


class Hub(Generic[K]):
    """Subscriptions of the connections of this node. ``K`` is the connection object."""

    def __init__(self) -> None:
        #: called with the subscribers whose wire format cannot carry a publication
        self.on_undeliverable: Callable[[str, list[K]], None] | None = None
        #: told of connections, subscriptions and publications (None: nobody watches)
        self.observer: HubObserver[K] | None = None
        self._channels: dict[str, _Channel[K]] = {}
        self._by_user: dict[str, dict[K, None]] = {}
        self._by_client: dict[str, K] = {}

    # ------------------------------------------------------------ connections

    def add_connection(self, client_id: str, user: str, conn: K) -> None:
        self._by_client[client_id] = conn
        self._by_user.setdefault(user, {})[conn] = None
        if self.observer is not None:
            self.observer.connection_added(conn)

    def remove_connection(self, client_id: str, user: str, conn: K) -> None:
        self._by_client.pop(client_id, None)
        conns = self._by_user.get(user)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._by_user[user]
        if self.observer is not None:
            self.observer.connection_removed(conn)

    def connection(self, client_id: str) -> K | None:
        return self._by_client.get(client_id)

    def user_connections(self, user: str) -> list[K]:
        return list(self._by_user.get(user, ()))

    def connections(self) -> list[K]:
        return list(self._by_client.values())

    @property
    def num_clients(self) -> int:
        return len(self._by_client)

    @property
    def num_users(self) -> int:
        return len(self._by_user)

    # ------------------------------------------------------------ subscriptions

    def add_pending(self, channel: str, conn: K, buffer: Buffer) -> bool:
        """Start buffering ``channel`` for ``conn``. True if the channel is new on this node."""
        ch = self._channels.get(channel)
        first = ch is None
        if ch is None:
            ch = self._channels[channel] = _Channel()
        ch.pending[conn] = buffer
        return first

    def activate(
        self, channel: str, conn: K, shape: WireShape, push: Push, *, positioned: bool = False, join_leave: bool = False
    ) -> None:
        """Move ``conn`` from pending to live subscriber of ``channel``."""
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel()
        ch.pending.pop(conn, None)
        ch.waiting.pop(conn, None)
        group = ch.positioned if positioned else ch.live
        group.setdefault(shape, {})[conn] = push
        if positioned and is_delta(shape):
            if ch.delta is None:
                ch.delta = DeltaState()
            ch.delta.fresh[conn] = None  # owed a full publication first
        if join_leave:
            ch.join_leave.setdefault(shape, {})[conn] = push
        if self.observer is not None:
            self.observer.subscribed(channel, conn)

    def join_position(self, channel: str, conn: K, offset: int, epoch: str, resume: Resume) -> tuple[bool, list[K]]:
        """A pending ``conn`` was positioned at ``offset``/``epoch`` by a stream read.

        Returns ``(ready, missed)``: ``ready`` False means this node has not yet
        received the publications up to ``offset`` and ``conn`` waits (``resume`` is
        called later); ``missed`` are positioned subscribers left behind by a newer
        epoch, which the caller must resubscribe.
        """
        ch = self._channels.get(channel)
        if ch is None:
            return True, []
        position = ch.position
        engaged = bool(ch.positioned or ch.waiting)
        if position.offset is None or (not engaged and (epoch != position.epoch or offset > position.offset)):
            position.offset, position.epoch = offset, epoch  # nobody else to keep in step with
            return True, []
        if epoch != position.epoch:
            return True, self.declare(channel, offset, epoch)
        if offset > position.offset:
            ch.waiting[conn] = (offset, epoch, resume)
            return False, []
        return True, []  # the buffer holds what came after ``offset``

    def delta_based(self, channel: str, conn: K, base: Publication) -> bool:
        """A live delta subscriber's subscribe reply ended with ``base`` (recovery): its next may be a patch."""
        ch = self._channels.get(channel)
        if ch is None or ch.delta is None:
            return False
        return ch.delta.based(conn, base, ch.position.offset, ch.position.epoch)

    def is_pending(self, channel: str, conn: K) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and conn in ch.pending

    def declare(self, channel: str, offset: int, epoch: str) -> list[K]:
        """The stream stands at ``offset``/``epoch`` though this node saw less: publications were lost.

        Positioned subscribers (and waiters that were behind) are dropped from the
        channel and returned; the position moves to the stream's.
        """
        ch = self._channels.get(channel)
        if ch is None:
            return []
        missed = self._take_positioned(ch)
        ch.position.offset, ch.position.epoch = offset, epoch
        self._resume_waiters(ch, declared=True)
        return missed

    def position(self, channel: str) -> tuple[int, str] | None:
        """The stream position of ``channel``'s positioned subscribers, if it has any (or waiters)."""
        ch = self._channels.get(channel)
        if ch is None or (not ch.positioned and not ch.waiting) or ch.position.offset is None:
            return None
        return ch.position.offset, ch.position.epoch

    def positioned_channels(self) -> list[str]:
        return [name for name, ch in self._channels.items() if ch.positioned or ch.waiting]

    def remove(self, channel: str, conn: K) -> bool:
        """Remove ``conn`` from ``channel``. True if no local subscriber is left."""
        ch = self._channels.get(channel)
        if ch is None:
            return True
        ch.pending.pop(conn, None)
        ch.waiting.pop(conn, None)
        if self.observer is not None and any(conn in m for g in (ch.live, ch.positioned) for m in g.values()):
            self.observer.unsubscribed(channel, conn)
        _drop(ch.live, conn)
        _drop(ch.positioned, conn)
        _drop(ch.join_leave, conn)
        if ch.delta is not None:
            ch.delta.fresh.pop(conn, None)
            if not any(is_delta(shape) for shape in ch.positioned):
                ch.delta = None
        if ch.empty():
            del self._channels[channel]
            return True
        return False

    def channels(self) -> dict[str, int]:
        """Channel -> number of local live subscribers."""
        return {name: n for name, ch in self._channels.items() if (n := ch.count())}

    def subscribers(self, channel: str) -> list[K]:
        ch = self._channels.get(channel)
        return ch.members() if ch is not None else []

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    @property
    def num_channels(self) -> int:
        return sum(1 for ch in self._channels.values() if ch.live or ch.positioned)

    @property
    def num_subscriptions(self) -> int:
        return sum(ch.count() for ch in self._channels.values())

    # ------------------------------------------------------------ fan-out

    def broadcast(self, channel: str, pub: Publication) -> tuple[int, list[K]]:
        """Deliver one publication to every local subscriber.

        Returns how many live subscribers got it and the positioned subscribers that
        missed publications before it (they did not get it; they must resubscribe).
        """
        if self.observer is not None:
            self.observer.published(channel, pub)
        ch = self._channels.get(channel)
        if ch is None:
            return 0, []
        encoded: dict[WireShape, bytes | None] = {}
        refused: list[K] = []
        count = self._deliver(ch.live, channel, pub, encoded, refused)
        missed: list[K] = []
        verdict = ch.position.advance(pub.offset, pub.epoch) if pub.offset else Verdict.NEXT
        if verdict is Verdict.NEXT:
            delta = ch.delta
            count += self._deliver(ch.positioned, channel, pub, encoded, refused, delta=delta)
            if delta is not None:
                delta.delivered(pub)
        elif verdict is Verdict.GAP:
            missed = self._take_positioned(ch)
        if ch.pending:
            for buffer in list(ch.pending.values()):
                buffer(pub)
        if ch.waiting and pub.offset:
            self._resume_waiters(ch, declared=False)
        if refused and self.on_undeliverable is not None:
            self.on_undeliverable(channel, refused)
        return count, missed

    def _deliver(
        self,
        group: dict[WireShape, dict[K, Push]],
        channel: str,
        pub: Publication,
        encoded: dict[WireShape, bytes | None],
        refused: list[K],
        *,
        delta: DeltaState[K] | None = None,
    ) -> int:
        """Push ``pub`` to every member of ``group``, encoding it at most once per shape.

        Delta shapes (only with ``delta``, the channel's delta state) get a patch or the full form.
        """
        count = 0
        for shape, members in group.items():
            if delta is not None and is_delta(shape):
                count += delta.deliver(cast(DeltaShape, shape), members, channel, pub, refused)
                continue
            data = encoded[shape] if shape in encoded else self._encode(shape, channel, pub)
            encoded[shape] = data
            if data is None:
                refused.extend(members)
                continue
            for push in members.values():
                push(data)
            count += len(members)
        return count

    @staticmethod
    def _encode(shape: WireShape, channel: str, pub: Publication) -> bytes | None:
        try:
            return shape.publication(channel, pub)
        except Undeliverable:
            return None

    @staticmethod
    def _take_positioned(ch: _Channel[K]) -> list[K]:
        missed = [conn for members in ch.positioned.values() for conn in members]
        for conn in missed:
            _drop(ch.join_leave, conn)
        ch.positioned.clear()
        ch.delta = None
        return missed

    @staticmethod
    def _resume_waiters(ch: _Channel[K], *, declared: bool) -> None:
        """Let waiters whose position the channel has reached go live (or tell them they missed data)."""
        position = ch.position
        current = position.offset
        assert current is not None
        for conn, (offset, epoch, resume) in list(ch.waiting.items()):
            if epoch != position.epoch:
                del ch.waiting[conn]
                resume(False)
            elif offset <= current:
                del ch.waiting[conn]
                # after a declared gap only a waiter exactly at the new top has everything
                resume(not declared or offset == current)

    def broadcast_join_leave(self, channel: str, kind: str, info: bytes) -> int:
        ch = self._channels.get(channel)
        if ch is None or not ch.join_leave:
            return 0
        count = 0
        for shape, members in list(ch.join_leave.items()):
            data = shape.join_leave(channel, kind, info)
            for push in list(members.values()):
                push(data)
            count += len(members)
        return count
