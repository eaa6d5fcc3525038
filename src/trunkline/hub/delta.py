"""Delta subscribers of one channel on this node: the base of the next patch, who needs a full one.

Delta subscribers are positioned (delta needs a stream), so every one of them on a
channel has received the same publications: the last publication the hub delivered
to them is everybody's base, and the patch of the next one is computed **once per
channel** (:meth:`DeltaState.patch`), whatever the number of subscribers and wire
shapes. A patch is used only when the base is the publication right before
(same epoch, previous offset); anything else goes full.

A subscriber that has just joined holds no base the hub knows of: it is *fresh*
and its first publication is full — unless its subscribe reply ended with the
publication at the channel's position (recovery), which is then its base
(:meth:`DeltaState.based`). After a gap the hub drops every positioned subscriber
(they resubscribe and recover) and this state with them, so a patch never reaches a
client against something it did not receive.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from ..protocol.delta import patch as make_patch
from ..records import Publication, Undeliverable

Push = Callable[[bytes], None]
K = TypeVar("K", bound=Hashable)


class DeltaShape(Hashable, Protocol):
    """A wire shape that can carry a publication as a patch (``protocol.delta``)."""

    delta: bool

    def publication(self, channel: str, pub: Publication) -> bytes: ...

    def delta_publication(self, channel: str, pub: Publication, patch: bytes) -> bytes: ...


def is_delta(shape: object) -> bool:
    return getattr(shape, "delta", False) is True


class DeltaState(Generic[K]):
    """Per channel: the publication its delta subscribers saw last and those still owed a full one."""

    __slots__ = ("_for", "_patch", "fresh", "last")

    def __init__(self) -> None:
        self.fresh: dict[K, None] = {}
        self.last: Publication | None = None
        self._for: Publication | None = None
        self._patch: bytes | None = None

    def patch(self, pub: Publication) -> bytes | None:
        """The patch of ``pub`` against :attr:`last`, computed once per publication (None: full)."""
        if self._for is not pub:
            last = self.last
            follows = last is not None and pub.offset and last.epoch == pub.epoch and last.offset == pub.offset - 1
            self._patch = make_patch(last if follows else None, pub)
            self._for = pub
        return self._patch

    def deliver(
        self, shape: DeltaShape, members: dict[K, Push], channel: str, pub: Publication, refused: list[K]
    ) -> int:
        """Push ``pub`` to the members of one delta shape: a patch, or full to the fresh and without a patch."""
        patch = self.patch(pub)
        fresh = self.fresh
        try:
            full = shape.publication(channel, pub) if patch is None or fresh else b""
            patched = shape.delta_publication(channel, pub, patch) if patch is not None else b""
        except Undeliverable:
            refused.extend(members)
            return 0
        if patch is None:
            for push in members.values():
                push(full)
        elif not fresh:
            for push in members.values():
                push(patched)
        else:
            for conn, push in members.items():
                push(full if conn in fresh else patched)
        return len(members)

    def delivered(self, pub: Publication) -> None:
        """``pub`` reached every delta subscriber: it is their base now, and nobody is fresh."""
        self.last = pub
        self.fresh.clear()
        self._for = self._patch = None

    def based(self, conn: K, base: Publication, offset: int | None, epoch: str) -> bool:
        """``conn`` ended its subscribe with ``base``; if that is the channel's position it needs no full one.

        Safe only when every other delta subscriber that is not fresh holds the same
        base: that is :attr:`last` when it is the publication at the position, and
        nobody when nothing was delivered yet (``last`` None).
        """
        if conn not in self.fresh or base.offset != offset or base.epoch != epoch:
            return False
        last = self.last
        if last is None:
            self.last = base
        elif last.offset != base.offset or last.epoch != base.epoch:
            return False
        del self.fresh[conn]
        return True
