"""Shared-poll channels on this node: who tracks which key, and what changed (no I/O).

A shared-poll channel (``subscription_type = "shared_poll"``) is a set of keys the node's
connections *track*. :class:`PollChannel` keeps, per key, the latest version and data the
backend gave and, per tracking connection, the version that connection holds. The poller asks
the backend for :meth:`PollChannel.poll_items` (the union of every connection's keys, once per
key however many connections track it) and hands the answer to :meth:`PollChannel.apply`, which
returns only the items that changed, each with the connections that do not hold it yet.

Change detection: in ``versioned`` mode by the backend's ``version`` (an item with a version not
above the one held is unchanged); in ``versionless`` mode by content (the item's bytes against the
held ones), the node then numbering changes itself (synthetic versions, valid for this channel
state's ``epoch`` only). ``removed: true`` removes the key for everyone. Keys nobody tracks are
never polled; their version and data are *kept* for ``keep`` seconds (the namespace's
``channel_shutdown_delay``), so a client that reconnects, or scrolls back, within that time tracks
them again from the version it holds and gets no duplicate. Everything is bounded: keys per
connection (``max_keys_per_connection``) and keys per channel (``max_keys_per_channel``, kept keys
included: the oldest kept ones make room first).
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["Change", "LimitExceeded", "PollChannel", "PolledItem"]


class LimitExceeded(Exception):
    """A track would pass ``max_keys_per_connection`` or ``max_keys_per_channel``."""


@dataclass(frozen=True, slots=True)
class PolledItem:
    """One item of a backend answer (refresh proxy) or of a direct publish."""

    key: str
    data: bytes | None = None  # None: no data (versioned mode: unchanged)
    version: int = 0
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Change(Generic[K]):
    """An item to push and the connections to push it to."""

    key: str
    version: int
    data: bytes
    removed: bool
    targets: tuple[K, ...]


class _Key(Generic[K]):
    __slots__ = ("data", "fresh", "holders", "version")

    def __init__(self) -> None:
        self.version = 0  # 0: no data yet
        self.data: bytes | None = None
        self.fresh = False  # set by a direct publish: the next timer cycle skips the key
        self.holders: dict[K, int] = {}  # connection -> version it holds


class PollChannel(Generic[K]):
    """One shared-poll channel's tracked keys on this node."""

    __slots__ = (
        "_counter",
        "_expiry",
        "_keys",
        "_left",
        "by_conn",
        "epoch",
        "keep",
        "max_keys",
        "max_keys_per_connection",
        "members",
        "versioned",
    )

    def __init__(self, *, versioned: bool, max_keys: int, max_keys_per_connection: int, keep: float = 0.0) -> None:
        self.versioned = versioned
        self.keep = keep
        self.max_keys = max_keys
        self.max_keys_per_connection = max_keys_per_connection
        #: versionless: names this state's synthetic versions (a new state, a new epoch);
        #: versioned: the backend's epoch ("" until it sends one)
        self.epoch = "" if versioned else secrets.token_hex(6)
        self._counter = 0
        self._keys: dict[str, _Key[K]] = {}
        #: keys nobody tracks any more, kept until ``keep`` seconds after this time (insertion order: oldest first)
        self._left: dict[str, float] = {}
        self.by_conn: dict[K, set[str]] = {}
        #: the connections subscribed to the channel (tracking keys or not)
        self.members: set[K] = set()
        #: connection -> key -> ``exp`` of the signature it was tracked with (only exp > 0)
        self._expiry: dict[K, dict[str, int]] = {}

    # ------------------------------------------------------------------ tracking

    def __len__(self) -> int:
        """Keys held, tracked or kept (what ``max_keys_per_channel`` bounds)."""
        return len(self._keys)

    def keys(self) -> list[str]:
        """The tracked keys."""
        return [k for k, entry in self._keys.items() if entry.holders]

    def tracked_by(self, conn: K) -> set[str]:
        return self.by_conn.get(conn, set())

    def check_room(self, conn: K, keys: Iterable[str]) -> None:
        """Raise LimitExceeded when tracking ``keys`` would pass a bound (nothing changes)."""
        mine = self.by_conn.get(conn, set())
        new_for_conn = {k for k in keys if k not in mine}
        if len(mine) + len(new_for_conn) > self.max_keys_per_connection:
            raise LimitExceeded("max_keys_per_connection")
        new_for_channel = sum(1 for k in new_for_conn if k not in self._keys)
        if not self.max_keys or len(self._keys) + new_for_channel <= self.max_keys:
            return
        if len(self._keys) - len(self._left) + new_for_channel > self.max_keys:
            raise LimitExceeded("max_keys_per_channel")
        while self._left and len(self._keys) + new_for_channel > self.max_keys:  # the oldest kept keys go
            key = next(iter(self._left))
            del self._left[key]
            del self._keys[key]

    def track(self, conn: K, key: str, version: int) -> bool:
        """``conn`` holds ``version`` of ``key``; True when the key is new on this node (cold)."""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key()
        elif self._left.pop(key, None) is not None and entry.data is not None:
            entry.holders[conn] = version  # kept: the node has its data, no need to poll it now
            self.by_conn.setdefault(conn, set()).add(key)
            return False
        cold = not entry.holders and entry.data is None
        entry.holders[conn] = version
        self.by_conn.setdefault(conn, set()).add(key)
        return cold

    def set_expiry(self, conn: K, keys: Iterable[str], exp: int) -> None:
        """The signature ``conn`` tracked ``keys`` with expires at ``exp`` (0: never)."""
        if exp:
            self._expiry.setdefault(conn, {}).update(dict.fromkeys(keys, exp))
        elif conn in self._expiry:
            mine = self._expiry[conn]
            for key in keys:
                mine.pop(key, None)

    def expired(self, now: float, delay: float) -> list[tuple[K, list[str]]]:
        """Tracks whose signature expired more than ``delay`` seconds ago (not refreshed)."""
        out: list[tuple[K, list[str]]] = []
        for conn, mine in self._expiry.items():
            gone = [key for key, exp in mine.items() if now > exp + delay]
            if gone:
                out.append((conn, gone))
        return out

    def untrack(self, conn: K, key: str, now: float = 0.0) -> None:
        """``conn`` stops tracking ``key`` (at ``now``, for the time a key nobody tracks is kept)."""
        self._forget(conn, key)
        entry = self._keys.get(key)
        if entry is not None and entry.holders.pop(conn, None) is not None and not entry.holders:
            if self.keep > 0 and entry.data is not None:
                self._left[key] = now
            else:
                del self._keys[key]

    def drop(self, conn: K, now: float = 0.0) -> None:
        """``conn`` left the channel (unsubscribe, disconnect): untrack all its keys."""
        self.members.discard(conn)
        for key in list(self.by_conn.get(conn, ())):
            self.untrack(conn, key, now)

    def sweep(self, now: float) -> int:
        """Forget the keys nobody has tracked for ``keep`` seconds; how many went."""
        gone = [key for key, left in self._left.items() if now - left >= self.keep]
        for key in gone:
            del self._left[key]
            del self._keys[key]
        return len(gone)

    @property
    def idle(self) -> bool:
        """No connection is subscribed: the state may go (after ``channel_shutdown_delay``)."""
        return not self.members

    def cached(self, conn: K, keys: Iterable[str]) -> list[Change[K]]:
        """Items the node holds newer than ``conn`` does (the track reply carries them)."""
        out: list[Change[K]] = []
        for key in keys:
            entry = self._keys.get(key)
            if entry is None or entry.data is None or conn not in entry.holders:
                continue
            if entry.version > entry.holders[conn]:
                entry.holders[conn] = entry.version
                out.append(Change(key, entry.version, entry.data, False, (conn,)))
        return out

    # ------------------------------------------------------------------ polling

    def poll_items(self) -> list[tuple[str, int]]:
        """(key, version held) of every tracked key, sorted; keys fresh from a publish skip one cycle."""
        out: list[tuple[str, int]] = []
        for key, entry in self._keys.items():
            if not entry.holders:  # kept, not tracked: not polled
                continue
            if entry.fresh:
                entry.fresh = False
                continue
            out.append((key, entry.version))
        out.sort()
        return out

    def versions(self, keys: Iterable[str]) -> list[tuple[str, int]]:
        """(key, version held) of those of ``keys`` still tracked (a cold-key poll)."""
        return [(k, self._keys[k].version) for k in keys if k in self._keys and self._keys[k].holders]

    def apply(self, items: Iterable[PolledItem], epoch: str = "") -> tuple[list[Change[K]], bool]:
        """The changes of a backend answer, and whether the backend's epoch changed (a reset).

        After a reset (versioned mode, an epoch other than the one held; an empty epoch never
        resets) every version and
        cached item is gone: the caller unsubscribes the channel's connections with 2500 so
        they resubscribe and track again from version 0.
        """
        if self.versioned and epoch and epoch != self.epoch:  # "" never invalidates
            reset = bool(self.epoch) or any(e.version for e in self._keys.values())
            self.epoch = epoch
            if reset:
                for entry in self._keys.values():
                    entry.version, entry.data = 0, None
                return [], True
        changes: list[Change[K]] = []
        for item in items:
            found = self._keys.get(item.key)
            if found is None or not found.holders:  # untracked meanwhile, or a key nobody asked for
                continue
            entry = found
            if item.removed:
                changes.append(Change(item.key, 0, b"", True, tuple(entry.holders)))
                self._remove(item.key, entry)
                continue
            if item.data is None:
                continue
            if self.versioned:
                if item.version <= entry.version:
                    continue
                version = item.version
            else:
                if entry.data is not None and entry.data == item.data:
                    continue
                self._counter += 1
                version = self._counter
            changes.append(self._set(item.key, entry, version, item.data))
        return changes, False

    def publish(self, key: str, version: int, data: bytes) -> Change[K] | None:
        """A direct publish (versioned mode): the change, or None when stale or untracked here."""
        entry = self._keys.get(key)
        if entry is None or not entry.holders or version <= entry.version:
            return None
        entry.fresh = True
        return self._set(key, entry, version, data)

    def _set(self, key: str, entry: _Key[K], version: int, data: bytes) -> Change[K]:
        entry.version, entry.data = version, data
        targets = tuple(c for c, held in entry.holders.items() if held < version)
        for conn in targets:
            entry.holders[conn] = version
        return Change(key, version, data, False, targets)

    def _remove(self, key: str, entry: _Key[K]) -> None:
        for conn in entry.holders:
            self._forget(conn, key)
        del self._keys[key]

    def _forget(self, conn: K, key: str) -> None:
        """Drop ``key`` from ``conn``'s signature expiries and tracked keys (emptied ones go)."""
        exp = self._expiry.get(conn)
        if exp is not None:
            exp.pop(key, None)
            if not exp:
                del self._expiry[conn]
        mine = self.by_conn.get(conn)
        if mine is not None:
            mine.discard(key)
            if not mine:
                del self.by_conn[conn]
