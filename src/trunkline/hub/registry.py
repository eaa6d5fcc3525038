"""The in-process index: channel -> local subscribers, user -> connections, id -> connection.

Fan-out lives here: the caller hands encoded bytes once and every subscriber's
``push`` callable (its outbound buffer's append) receives the same object. A
subscriber whose subscribe is still being processed is *pending*: it gets the
publication through its buffer callback instead, so recovery can merge it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import msgspec

Push = Callable[[bytes], None]
Buffer = Callable[[int, bytes], None]
K = TypeVar("K", bound=Hashable)


class Hub(Generic[K]):
    """Subscriptions of the connections of this node. ``K`` is the connection object."""

    def __init__(self) -> None:
        self._subscribers: dict[str, dict[K, Push]] = {}
        self._pending: dict[str, dict[K, Buffer]] = {}
        self._join_leave: dict[str, dict[K, Push]] = {}
        self._prefixes: dict[str, bytes] = {}
        self._by_user: dict[str, dict[K, None]] = {}
        self._by_client: dict[str, K] = {}

    # ------------------------------------------------------------ connections

    def add_connection(self, client_id: str, user: str, conn: K) -> None:
        self._by_client[client_id] = conn
        self._by_user.setdefault(user, {})[conn] = None

    def remove_connection(self, client_id: str, user: str, conn: K) -> None:
        self._by_client.pop(client_id, None)
        conns = self._by_user.get(user)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._by_user[user]

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
        first = channel not in self._subscribers and channel not in self._pending
        self._pending.setdefault(channel, {})[conn] = buffer
        return first

    def activate(self, channel: str, conn: K, push: Push, join_leave: bool) -> None:
        """Move ``conn`` from pending to live subscriber of ``channel``."""
        self._drop(self._pending, channel, conn)
        self._subscribers.setdefault(channel, {})[conn] = push
        if join_leave:
            self._join_leave.setdefault(channel, {})[conn] = push

    def remove(self, channel: str, conn: K) -> bool:
        """Remove ``conn`` from ``channel``. True if no local subscriber is left."""
        self._drop(self._pending, channel, conn)
        self._drop(self._subscribers, channel, conn)
        self._drop(self._join_leave, channel, conn)
        last = channel not in self._subscribers and channel not in self._pending
        if last:
            self._prefixes.pop(channel, None)
        return last

    @staticmethod
    def _drop(index: dict[str, dict[K, Push]] | dict[str, dict[K, Buffer]], channel: str, conn: K) -> None:
        members = index.get(channel)
        if members is not None:
            members.pop(conn, None)
            if not members:
                del index[channel]

    def channels(self) -> dict[str, int]:
        """Channel -> number of local live subscribers."""
        return {name: len(subs) for name, subs in self._subscribers.items()}

    def subscribers(self, channel: str) -> list[K]:
        return list(self._subscribers.get(channel, ()))

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._subscribers or channel in self._pending

    @property
    def num_channels(self) -> int:
        return len(self._subscribers)

    @property
    def num_subscriptions(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    # ------------------------------------------------------------ fan-out

    def _prefix(self, channel: str) -> bytes:
        prefix = self._prefixes.get(channel)
        if prefix is None:
            prefix = self._prefixes[channel] = b'{"push":{"channel":' + msgspec.json.encode(channel)
        return prefix

    def broadcast_publication(self, channel: str, publication: bytes, offset: int) -> int:
        """Write one encoded publication to every local subscriber; return the count."""
        subs = self._subscribers.get(channel)
        pending = self._pending.get(channel)
        if subs is None and pending is None:
            return 0
        data = self._prefix(channel) + b',"pub":' + publication + b"}}"
        count = 0
        if subs is not None:
            for push in subs.values():
                push(data)
            count = len(subs)
        if pending is not None:
            for buffer in list(pending.values()):
                buffer(offset, data)
        return count

    def broadcast_join_leave(self, channel: str, kind: str, info: bytes) -> int:
        subs = self._join_leave.get(channel)
        if subs is None:
            return 0
        data = self._prefix(channel) + b',"' + kind.encode() + b'":{"info":' + info + b"}}}"
        for push in list(subs.values()):
            push(data)
        return len(subs)
