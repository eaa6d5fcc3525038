"""Live node figures for the dashboard, published every second on ``__trunkline:stats``.

A task per node reads the node's :class:`~trunkline.observe.metrics.Metrics` once per
second, turns the totals into rates (messages in and out per second, publications,
deliveries per namespace) and windowed latency quantiles (p50 and p99 of command
handling and of publish-to-write over the last ``LATENCY_WINDOW`` seconds), adds the
hub's counts, the node list (each worker of ``serve --workers`` is a node, with its
``worker`` index) and the whole server's connections and subscriptions summed over those
nodes (``server``; another node's figures are as fresh as its last announcement, at most
5 s old), and writes one compact JSON publication straight to
the *local* subscribers of the channel through the hub — never through the broker,
so every node reports to the dashboards connected to it. Only admin connections may
subscribe to ``__trunkline:`` channels.

"Messages in" counts client commands and server API commands (each command of a
batch), so publications made through the API show. The dashboards' own admin
connections are left out of this node's connections, users, subscriptions and
channels (:func:`admin_share`); they still count in ``/metrics`` and in ``info``. Every
node whose stats task runs says in its node info how many of its figures are admin
connections (``admin``: ``num_clients``, ``num_users``, ``num_subs``, ``num_channels``), so
every node's row leaves its own dashboards out, not only this node's.

The last ``KEEP`` documents stay in memory so a dashboard opened later can draw the
recent past at once (:func:`recent`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec

from ..records import Publication
from .admin_events import EVENTS_CHANNEL
from .metrics import Snapshot, quantile

if TYPE_CHECKING:
    from ..node import Node

#: ``trunkline.node.SYSTEM_PREFIX + "stats"`` (spelled out: the node imports this module).
STATS_CHANNEL = "__trunkline:stats"
INTERVAL = 1.0
LATENCY_WINDOW = 10  # seconds of samples behind each quantile
TOP_NAMESPACES = 5
KEEP = 300  # documents kept for a dashboard that opens late

_encoder = msgspec.json.Encoder()
_COUNTS = ("num_clients", "num_users", "num_subs", "num_channels")
_NODE_FIELDS = ("uid", "name", "worker", "version", "num_clients", "num_users", "num_subs", "num_channels", "uptime")
#: the channels a dashboard subscribes to (only admin connections may): its stats and its event log
ADMIN_CHANNELS = (STATS_CHANNEL, EVENTS_CHANNEL)
#: the ``sub`` of dashboard tokens (``dashboard.admin_token``)
ADMIN_USER = "admin"


def admin_share(node: Node) -> tuple[int, int, int, int]:
    """What this node's admin (dashboard) connections add: connections, users, subscriptions, channels.

    Reads only the ``admin`` user's connections and the ``ADMIN_CHANNELS``, not every
    connection, so it costs nothing on a busy node. A regular user who is also called
    ``admin`` keeps being counted as a user.
    """
    hub = node.hub
    named = hub.user_connections(ADMIN_USER)
    admins = sum(1 for conn in named if getattr(conn, "is_admin", False))
    if not admins:
        return 0, 0, 0, 0
    users = 1 if admins == len(named) else 0
    subscribers = [len(hub.subscribers(channel)) for channel in ADMIN_CHANNELS]
    return admins, users, sum(subscribers), sum(1 for n in subscribers if n)


class NodeStats:
    """Turns successive metric snapshots of one node into dashboard documents."""

    def __init__(self, node: Node, keep: int = KEEP) -> None:
        self.node = node
        self._snapshots: deque[tuple[float, Snapshot]] = deque(maxlen=LATENCY_WINDOW + 1)
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def tick(self, now: float | None = None) -> dict[str, Any]:
        """Take a snapshot and return the document describing the last interval."""
        node = self.node
        mono = time.monotonic() if now is None else now
        snap = node.metrics.snapshot()
        prev_at, prev = self._snapshots[-1] if self._snapshots else (mono, snap)
        oldest = self._snapshots[0][1] if self._snapshots else snap
        self._snapshots.append((mono, snap))
        elapsed = mono - prev_at
        scale = 1.0 / elapsed if elapsed > 0 else 0.0

        def rate(current: float, before: float) -> float:
            return round(max(current - before, 0.0) * scale, 2)

        rows: list[tuple[str, float, float, float]] = []  # namespace, deliveries/s, publications/s, deliveries
        for ns in {**snap.deliveries, **snap.publications}:
            delivered = snap.deliveries.get(ns, 0.0)
            rows.append(
                (
                    ns,
                    rate(delivered, prev.deliveries.get(ns, 0.0)),
                    rate(snap.publications.get(ns, 0.0), prev.publications.get(ns, 0.0)),
                    delivered,
                )
            )
        rows.sort(key=lambda row: (-row[1], -row[2], -row[3], row[0]))
        namespaces = [
            {"namespace": ns, "deliveries_per_sec": dps, "publications_per_sec": pps, "deliveries": int(total)}
            for ns, dps, pps, total in rows[:TOP_NAMESPACES]
        ]

        hub = node.hub
        admins, admin_users, admin_subs, admin_channels = admin_share(node)
        doc: dict[str, Any] = {
            "node": node.uid,
            "name": node.name,
            "version": node.version,
            "time": round(time.time(), 3),
            "uptime": int(time.time() - node.started_at),
            "connections": hub.num_clients - admins,
            "users": hub.num_users - admin_users,
            "subscriptions": hub.num_subscriptions - admin_subs,
            "channels": hub.num_channels - admin_channels,
            "messages_in_per_sec": rate(snap.commands + snap.api_commands, prev.commands + prev.api_commands),
            "messages_out_per_sec": rate(snap.messages_out, prev.messages_out),
            "bytes_in_per_sec": rate(snap.bytes_in, prev.bytes_in),
            "bytes_out_per_sec": rate(snap.bytes_out, prev.bytes_out),
            "publications_per_sec": rate(sum(snap.publications.values()), sum(prev.publications.values())),
            "deliveries_per_sec": rate(sum(snap.deliveries.values()), sum(prev.deliveries.values())),
            "latency_ms": {
                "command_p50": _ms(quantile(0.5, _delta(snap.command_buckets, oldest.command_buckets))),
                "command_p99": _ms(quantile(0.99, _delta(snap.command_buckets, oldest.command_buckets))),
                "delivery_p50": _ms(quantile(0.5, _delta(snap.write_buckets, oldest.write_buckets))),
                "delivery_p99": _ms(quantile(0.99, _delta(snap.write_buckets, oldest.write_buckets))),
            },
            "top_namespaces": namespaces,
            "nodes": [_node_row(info) for info in node.nodes()],
        }
        doc["server"] = server_totals(doc["nodes"])
        self.recent.append(doc)
        return doc

    def publish(self, doc: dict[str, Any]) -> int:
        """Write ``doc`` to this node's admin subscribers of the stats channel; returns how many."""
        hub = self.node.hub
        if not hub.has_subscribers(STATS_CHANNEL):
            return 0
        count, _ = hub.broadcast(STATS_CHANNEL, Publication(data=_encoder.encode(doc)))
        return count


def server_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The whole server's connections and subscriptions: the sum over its nodes (every worker, every host).

    Users and channels are left out: one user or channel on two nodes is one, not two, and
    the node info does not say which they are.
    """

    def total(key: str) -> int:
        return sum(value for row in rows if isinstance(value := row.get(key), int))

    return {"nodes": len(rows), "connections": total("num_clients"), "subscriptions": total("num_subs")}


def admin_info(node: Node) -> dict[str, int]:
    """The ``admin`` field of the node info: what its dashboards add to its counts (see :func:`admin_share`)."""
    return dict(zip(_COUNTS, admin_share(node), strict=True))


def _node_row(info: dict[str, Any]) -> dict[str, Any]:
    """A node of the cluster for the nodes table, its admin connections (its ``admin`` field) left out."""
    row = {k: info.get(k) for k in _NODE_FIELDS}
    share = info.get("admin")
    if isinstance(share, dict):
        for key in _COUNTS:
            value, minus = row.get(key), share.get(key)
            if isinstance(value, int) and isinstance(minus, int) and minus > 0:
                row[key] = max(value - minus, 0)
    return row


def _delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {bound: count - before.get(bound, 0.0) for bound, count in now.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


_running: weakref.WeakKeyDictionary[Node, tuple[NodeStats, asyncio.Task[None]]] = weakref.WeakKeyDictionary()


async def run_stats(stats: NodeStats, interval: float = INTERVAL) -> None:
    """Tick every ``interval`` seconds (on a fixed schedule) until cancelled."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        stats.publish(stats.tick())
        next_at += interval
        delay = next_at - loop.time()
        if delay < 0:  # fell behind (a busy loop): skip the missed ticks
            next_at = loop.time()
            delay = 0.0
        await asyncio.sleep(delay)


def start_stats(node: Node, interval: float = INTERVAL) -> asyncio.Task[None]:
    """Start the node's stats task (once; a second call returns the running task).

    The task is spawned through ``node.spawn``, so ``Node.shutdown`` cancels it with
    the node's other background tasks.
    """
    running = _running.get(node)
    if running is not None and not running[1].done():
        return running[1]
    stats = NodeStats(node)
    node.info_fields["admin"] = lambda: admin_info(node)
    task: asyncio.Task[None] = node.spawn(run_stats(stats, interval))
    _running[node] = (stats, task)
    return task


def recent(node: Node) -> list[dict[str, Any]]:
    """The documents the node's stats task published lately, oldest first (empty if not running)."""
    running = _running.get(node)
    return list(running[0].recent) if running is not None else []
