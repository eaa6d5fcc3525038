"""Prometheus metrics behind intent-named methods.

Labels are bounded: a namespace name (``""`` is shown as ``_``), a command method,
a numeric code — never a raw channel or user. Each :class:`Metrics` owns its own
registry, so several nodes (or tests) in one process do not collide.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _ns(namespace: str) -> str:
    return namespace or "_"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("trunkline_connections", "Open client connections.", ["transport"], registry=r)
        self.connects = Counter("trunkline_connects_total", "Accepted client connections.", ["transport"], registry=r)
        self.disconnects = Counter(
            "trunkline_disconnects_total", "Closed client connections by close code.", ["code"], registry=r
        )
        self.commands = Counter(
            "trunkline_commands_total", "Client commands by method and result code (0 = ok).", ["method", "code"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "trunkline_command_duration_seconds", "Time to handle a client command.", ["method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.messages_in = Counter("trunkline_frames_received_total", "WebSocket frames received.", registry=r)
        self.bytes_in = Counter("trunkline_bytes_received_total", "Bytes received in frames.", registry=r)
        self.publications = Counter(
            "trunkline_publications_total", "Publications accepted by this node.", ["namespace"], registry=r
        )
        self.deliveries = Counter(
            "trunkline_deliveries_total", "Publications queued to local subscribers.", ["namespace"], registry=r
        )
        self.fanout_seconds = Histogram(
            "trunkline_fanout_duration_seconds", "Time to queue one publication to every local subscriber.",
            ["namespace"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.broker_seconds = Histogram(
            "trunkline_broker_duration_seconds", "Broker operation latency.", ["op"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_errors = Counter("trunkline_broker_errors_total", "Failed broker operations.", ["op"], registry=r)
        self.slow = Counter("trunkline_slow_consumers_total", "Connections closed for not reading (3008).", registry=r)
        self.recoveries = Counter(
            "trunkline_recoveries_total", "Recovery attempts by outcome.", ["recovered"], registry=r
        )

    def gauge_from(self, name: str, documentation: str, fn: Callable[[], float]) -> None:
        """Register a gauge read at scrape time (subscriptions, channels, buffered bytes…)."""
        Gauge(name, documentation, registry=self.registry).set_function(fn)

    # intent-named recorders ------------------------------------------------

    def connection_opened(self, transport: str) -> None:
        self.connections.labels(transport).inc()
        self.connects.labels(transport).inc()

    def connection_closed(self, transport: str, code: int) -> None:
        self.connections.labels(transport).dec()
        self.disconnects.labels(str(code)).inc()

    def command(self, method: str, code: int, seconds: float) -> None:
        self.commands.labels(method, str(code)).inc()
        self.command_seconds.labels(method).observe(seconds)

    def received(self, size: int) -> None:
        self.messages_in.inc()
        self.bytes_in.inc(size)

    def published(self, namespace: str) -> None:
        self.publications.labels(_ns(namespace)).inc()

    def fanout(self, namespace: str, subscribers: int, seconds: float) -> None:
        ns = _ns(namespace)
        self.deliveries.labels(ns).inc(subscribers)
        self.fanout_seconds.labels(ns).observe(seconds)

    def broker_op(self, op: str, seconds: float, error: bool) -> None:
        self.broker_seconds.labels(op).observe(seconds)
        if error:
            self.broker_errors.labels(op).inc()

    def slow_consumer(self) -> None:
        self.slow.inc()

    def recovery(self, recovered: bool) -> None:
        self.recoveries.labels("true" if recovered else "false").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
