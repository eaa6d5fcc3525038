"""The dashboard's live event log: connects, disconnects (with codes), subscribes, sampled publications.

:class:`EventLog` is the hub's observer (:class:`~trunkline.hub.registry.HubObserver`):
the hub tells it of every connection added and removed, live subscribe and
unsubscribe and publication of this node. Each call costs a few attribute reads and,
within the budget, one small dict. Bounded everywhere:

- a *budget per flush* for each kind of event (``BUDGET``; publications get the
  smallest): what passes it is only counted, and the batch says how many of each
  kind were left out, so a node with thousands of reconnects a second sends the
  admin a few dozen rows and a count, not a flood;
- one publication per ``FLUSH_INTERVAL`` on ``__trunkline:events`` to this node's
  admin subscribers (straight through the hub, never the broker: every node reports
  to the dashboards connected to it), only when something happened;
- the last ``KEEP`` events in a ring buffer, so a dashboard opened later starts
  with the recent past (``GET /dashboard/events``).

The dashboards' own admin connections, subscribers that are no connection (a long
poll waiting on a channel), and the ``__trunkline:`` channels are left out.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .. import errors as E
from ..records import Publication

if TYPE_CHECKING:
    from ..contracts import Connection
    from ..node import Node

#: ``trunkline.node.SYSTEM_PREFIX + "events"`` (spelled out, as ``stats.STATS_CHANNEL``).
EVENTS_CHANNEL = "__trunkline:events"
_SYSTEM_PREFIX = "__trunkline:"
FLUSH_INTERVAL = 0.5
KEEP = 500
#: events of each kind kept per flush interval; the rest are counted, not kept
BUDGET: dict[str, int] = {"connect": 25, "disconnect": 25, "subscribe": 25, "unsubscribe": 25, "publication": 3}
PREVIEW = 120  # bytes of a publication's data shown

_encoder = msgspec.json.Encoder()
#: disconnect code -> Trunkline's reason for it (the session keeps the code only)
REASONS: dict[int, str] = {
    value.code: value.reason for value in vars(E).values() if isinstance(value, E.Disconnect) and value.reason
}
REASONS.setdefault(3000, "connection closed")


def _close_code(conn: Any) -> int:
    code = getattr(conn, "close_code", None)
    if not isinstance(code, int):
        code = getattr(conn, "_close_code", 0)  # an MQTT session
    return code if isinstance(code, int) else 0


def _transport(conn: Any) -> str:
    info = getattr(getattr(conn, "transport", None), "info", None)
    name = getattr(info, "name", "")
    return name if isinstance(name, str) else ""


def _preview(data: bytes) -> str:
    text = data[:PREVIEW].decode("utf-8", "replace")
    return text + "…" if len(data) > PREVIEW else text


class EventLog:
    """Turns hub notifications into bounded batches of event rows."""

    def __init__(self, node: Node, keep: int = KEEP, now: Callable[[], float] = time.time) -> None:
        self.node = node
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._now = now
        self._seq = 0
        self._batch: list[dict[str, Any]] = []
        self._used: dict[str, int] = dict.fromkeys(BUDGET, 0)
        self._skipped: dict[str, int] = dict.fromkeys(BUDGET, 0)

    # ----------------------------------------------------------- HubObserver

    def connection_added(self, conn: Connection) -> None:
        if self._budget("connect", conn):
            self._add(
                {
                    "type": "connect",
                    "client": conn.client_id,
                    "user": conn.user,
                    "transport": _transport(conn),
                    "remote": str(getattr(conn, "remote", "") or ""),
                }
            )

    def connection_removed(self, conn: Connection) -> None:
        if self._budget("disconnect", conn):
            code = _close_code(conn)
            self._add(
                {
                    "type": "disconnect",
                    "client": conn.client_id,
                    "user": conn.user,
                    "transport": _transport(conn),
                    "code": code,
                    "reason": REASONS.get(code, ""),
                }
            )

    def subscribed(self, channel: str, conn: Connection) -> None:
        if not channel.startswith(_SYSTEM_PREFIX) and self._budget("subscribe", conn):
            self._add({"type": "subscribe", "channel": channel, "client": conn.client_id, "user": conn.user})

    def unsubscribed(self, channel: str, conn: Connection) -> None:
        if not channel.startswith(_SYSTEM_PREFIX) and self._budget("unsubscribe", conn):
            self._add({"type": "unsubscribe", "channel": channel, "client": conn.client_id, "user": conn.user})

    def published(self, channel: str, pub: Publication) -> None:
        # the common case on a busy node (budget spent) first: one lookup, one compare, one add
        used = self._used
        if used["publication"] >= BUDGET["publication"]:
            if not channel.startswith(_SYSTEM_PREFIX):
                self._skipped["publication"] += 1
            return
        if channel.startswith(_SYSTEM_PREFIX):
            return
        used["publication"] += 1
        event: dict[str, Any] = {"type": "publication", "channel": channel, "size": len(pub.data)}
        if pub.offset:
            event["offset"] = pub.offset
        if pub.info is not None:
            event["user"] = pub.info.user
            event["client"] = pub.info.client
        event["data"] = _preview(pub.data)
        self._add(event)

    # ----------------------------------------------------------- batches

    def _budget(self, kind: str, conn: Connection | None) -> bool:
        # the dashboards' own connections, and subscribers that are no connection (a long poll's waiter)
        if conn is not None and (getattr(conn, "is_admin", False) or not conn.client_id):
            return False
        if self._used[kind] >= BUDGET[kind]:
            self._skipped[kind] += 1
            return False
        self._used[kind] += 1
        return True

    def _add(self, event: dict[str, Any]) -> None:
        self._seq += 1
        event["seq"] = self._seq
        event["time"] = round(self._now(), 3)
        self._batch.append(event)
        self.recent.append(event)

    def flush(self) -> dict[str, Any] | None:
        """The batch since the last flush (None if nothing happened); starts the next budget."""
        skipped = {kind: n for kind, n in self._skipped.items() if n}
        if not self._batch and not skipped:
            return None
        batch = {"node": self.node.uid, "events": self._batch, "skipped": skipped}
        self._batch = []
        self._used = dict.fromkeys(BUDGET, 0)
        self._skipped = dict.fromkeys(BUDGET, 0)
        return batch

    def publish(self, batch: dict[str, Any]) -> int:
        """Write ``batch`` to this node's admin subscribers of the events channel; returns how many."""
        hub = self.node.hub
        if not hub.has_subscribers(EVENTS_CHANNEL):
            return 0
        count, _ = hub.broadcast(EVENTS_CHANNEL, Publication(data=_encoder.encode(batch)))
        return count


_running: weakref.WeakKeyDictionary[Node, tuple[EventLog, asyncio.Task[None]]] = weakref.WeakKeyDictionary()


async def run_events(events: EventLog, interval: float = FLUSH_INTERVAL) -> None:
    """Flush every ``interval`` seconds until cancelled; the hub stops reporting then."""
    try:
        while True:
            await asyncio.sleep(interval)
            batch = events.flush()
            if batch is not None:
                events.publish(batch)
    finally:
        if events.node.hub.observer is events:
            events.node.hub.observer = None


def start_events(node: Node, interval: float = FLUSH_INTERVAL) -> asyncio.Task[None]:
    """Make an :class:`EventLog` the node's hub observer and start flushing it (once per node)."""
    running = _running.get(node)
    if running is not None and not running[1].done():
        return running[1]
    events = EventLog(node)
    node.hub.observer = events
    task: asyncio.Task[None] = node.spawn(run_events(events, interval))
    _running[node] = (events, task)
    return task


def recent(node: Node) -> list[dict[str, Any]]:
    """The node's latest events, oldest first (empty when the log is not running)."""
    running = _running.get(node)
    return list(running[0].recent) if running is not None else []
