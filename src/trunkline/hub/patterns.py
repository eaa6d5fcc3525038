"""Pattern subscribers: connections that receive every channel whose name passes a matcher.

The hub delivers per exact channel. A protocol with wildcard subscriptions (MQTT
``sensors/+/temp``) registers here instead, with a channel-name *prefix* (what the
broker must feed this node: every channel that starts with it) and a *matcher*, a
hashable predicate on the full channel name (the exact filter rule, kept by the
protocol). One matcher object stands for one filter and may be shared by many
connections: a publication runs each distinct matcher of a matching prefix once,
then is encoded at most once per wire shape present, as in
:meth:`~trunkline.hub.registry.Hub.broadcast`.

Pattern subscribers are never positioned: they have no stream position to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from ..records import Publication, Undeliverable
from .registry import Push, WireShape

K = TypeVar("K", bound=Hashable)


class Matcher(Hashable, Protocol):
    def __call__(self, channel: str) -> bool:
        """Whether a publication of ``channel`` goes to this pattern's subscribers."""


_Members = dict[WireShape, dict[K, Push]]


class Patterns(Generic[K]):
    """Pattern subscriptions of this node's connections, by prefix and matcher."""

    __slots__ = ("_by_prefix", "_count")

    def __init__(self) -> None:
        self._by_prefix: dict[str, dict[Matcher, _Members[K]]] = {}
        self._count = 0

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def __len__(self) -> int:
        """Pattern subscriptions (one per connection and matcher)."""
        return self._count

    @property
    def prefixes(self) -> list[str]:
        return list(self._by_prefix)

    def add(self, prefix: str, matcher: Matcher, conn: K, shape: WireShape, push: Push) -> bool:
        """Register ``conn`` (replacing an earlier registration with the same matcher).

        True when ``prefix`` is new on this node (the broker must start feeding it).
        """
        matchers = self._by_prefix.get(prefix)
        first = matchers is None
        if matchers is None:
            matchers = self._by_prefix[prefix] = {}
        members = matchers.setdefault(matcher, {})
        for group in members.values():
            if group.pop(conn, None) is not None:
                self._count -= 1
        for empty in [s for s, group in members.items() if not group]:
            del members[empty]
        members.setdefault(shape, {})[conn] = push
        self._count += 1
        return first

    def remove(self, prefix: str, matcher: Matcher, conn: K) -> bool:
        """Unregister ``conn``. True when no pattern subscriber of ``prefix`` is left."""
        matchers = self._by_prefix.get(prefix)
        if matchers is None:
            return False
        members = matchers.get(matcher)
        if members is not None:
            for shape, group in list(members.items()):
                if group.pop(conn, None) is not None:
                    self._count -= 1
                    if not group:
                        del members[shape]
            if not members:
                del matchers[matcher]
        if not matchers:
            del self._by_prefix[prefix]
            return True
        return False

    def broadcast(self, channel: str, pub: Publication, on_refused: Callable[[list[K]], None] | None = None) -> int:
        """Deliver ``pub`` of ``channel`` to every matching pattern subscriber; return how many got it."""
        count = 0
        encoded: dict[WireShape, bytes | None] = {}
        refused: list[K] = []
        for prefix, matchers in self._by_prefix.items():
            if not channel.startswith(prefix):
                continue
            for matcher, members in matchers.items():
                if not matcher(channel):
                    continue
                for shape, group in members.items():
                    if shape in encoded:
                        data = encoded[shape]
                    else:
                        try:
                            data = shape.publication(channel, pub)
                        except Undeliverable:
                            data = None
                        encoded[shape] = data
                    if data is None:
                        refused.extend(group)
                        continue
                    for push in group.values():
                        push(data)
                    count += len(group)
        if refused and on_refused is not None:
            on_refused(refused)
        return count
