"""Prometheus metrics behind intent-named methods.

Labels are bounded: a namespace name (``""`` is shown as ``_``), a command method,
a numeric code, a broker operation — never a raw channel or user. Each
:class:`Metrics` owns its own registry, so several nodes (or tests) in one process
do not collide.

Hot-path figures (commands, frames in, publications, deliveries, fan-out, broker
operations) are kept as plain numbers in :class:`CounterVec` and
:class:`HistogramVec` — a dict update and a ``bisect`` each, no lock, several times
cheaper than ``prometheus_client``'s thread-safe values — and turned into metric
families when ``/metrics`` is scraped. That is safe because the node runs on one
thread, the event loop's, and the scrape handler runs on it too. Rare events
(connects, disconnects, slow consumers, recoveries) use ``prometheus_client``
objects directly.

Two more sources, both read only when scraped:

- gauges computed from the hub (:meth:`Metrics.track_hub`): subscriptions,
  channels, users, bytes waiting in outbound buffers — nothing to maintain;
- the outbound totals (:class:`Outbound`), plain integer attributes that every
  connection's writer adds to once per write, and the publish-to-write latency,
  which a writer observes for the publications the node samples (at most one per
  ``WRITE_SAMPLE_INTERVAL``, on at most about ``WRITE_SAMPLE_SUBSCRIBERS`` of their
  subscribers).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from .. import __version__

# No ``*_created`` series: one extra series per counter and histogram label set, which
# Prometheus does not need (process-wide switch of prometheus_client, like its
# PROMETHEUS_DISABLE_CREATED_SERIES environment variable).
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: Proxy requests cross the network to the application: milliseconds to the proxy's timeout.
PROXY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: At most one publication per this many seconds has its publish-to-write latency measured.
WRITE_SAMPLE_INTERVAL = 0.01
#: A sampled publication is timed on at most about this many of its subscribers (evenly spread).
WRITE_SAMPLE_SUBSCRIBERS = 64

#: Server API method label values (``api/methods.py``'s table, plus the legacy ``POST /api``);
#: anything else is counted as ``"unknown"``, so a client cannot grow the label set.
API_METHODS = frozenset(
    {
        "publish",
        "broadcast",
        "subscribe",
        "unsubscribe",
        "disconnect",
        "refresh",
        "presence",
        "presence_stats",
        "history",
        "history_remove",
        "channels",
        "info",
        "shared_poll_publish",
        "batch",
        "legacy",
    }
)


class _Writer(Protocol):
    @property
    def buffered(self) -> int: ...


class _Connection(Protocol):
    @property
    def writer(self) -> _Writer: ...


class SharedPollView(Protocol):
    """What the scrape-time shared-poll gauges read from the node's shared-poll channels."""

    @property
    def num_channels(self) -> int: ...

    @property
    def num_keys(self) -> int: ...


class HubView(Protocol):
    """What the scrape-time gauges read from the node's hub."""

    @property
    def num_subscriptions(self) -> int: ...

    @property
    def num_channels(self) -> int: ...

    @property
    def num_users(self) -> int: ...

    def connections(self) -> Sequence[_Connection]: ...


class Outbound:
    """Totals of what the writers of one node wrote. Incremented in place, read at scrape time.

    A writer holds a reference and does ``out.bytes += n`` — an attribute add on a
    slotted object, cheaper than any Prometheus call on the per-write path.
    """

    __slots__ = ("_observe", "bytes", "frames", "messages")

    def __init__(self, observe_write: Callable[[float], None] | None = None) -> None:
        self.messages = 0  # protocol messages (replies and pushes) written
        self.frames = 0  # WebSocket frames written (several messages per frame)
        self.bytes = 0  # payload bytes of those frames
        self._observe = observe_write

    def observe_write(self, seconds: float) -> None:
        """A sampled publication reached the socket ``seconds`` after it entered the node."""
        if self._observe is not None:
            self._observe(seconds)


class CounterVec:
    """A counter family kept as plain numbers, keyed by a tuple of label values (any hashables, ``str``-ed)."""

    __slots__ = ("documentation", "labelnames", "name", "values")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[Hashable, ...], float] = {}

    def inc(self, key: tuple[Hashable, ...] = (), amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def get(self, *key: Hashable) -> float:
        return self.values.get(key, 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in self.values.items():
            fam.add_metric([str(k) for k in key], value)
        return fam


class HistogramVec:
    """A histogram family kept as plain numbers: per label tuple, one count per bucket then the sum."""

    __slots__ = ("bounds", "documentation", "labelnames", "name", "series")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[tuple[Hashable, ...], list[float]] = {}

    def observe(self, key: tuple[Hashable, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value (le)
        series[-1] += value

    def count(self, *key: Hashable) -> float:
        series = self.series.get(key)
        return sum(series[:-1]) if series is not None else 0.0

    def cumulative(self) -> dict[float, float]:
        """Every label set summed: upper bound (``inf`` last) -> observations at or below it."""
        per_bucket = [0.0] * (len(self.bounds) + 1)
        for series in self.series.values():
            for i, n in enumerate(series[:-1]):
                per_bucket[i] += n
        out: dict[float, float] = {}
        running = 0.0
        for bound, n in zip((*self.bounds, float("inf")), per_bucket, strict=True):
            running += n
            out[bound] = running
        return out

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, series in self.series.items():
            buckets = []
            running = 0.0
            for bound, n in zip((*self.bounds, float("inf")), series[:-1], strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            fam.add_metric([str(k) for k in key], buckets, sum_value=series[-1])
        return fam


class _Families:
    """Exports the plain-number families and the outbound totals at scrape time."""

    def __init__(self, vecs: Sequence[CounterVec | HistogramVec], out: Outbound | None) -> None:
        self._vecs = vecs
        self._out = out

    def collect(self) -> Iterator[Metric]:
        for vec in self._vecs:
            yield vec.family()
        out = self._out
        if out is None:
            return
        yield CounterMetricFamily(
            "trunkline_messages_sent", "Protocol messages (replies and pushes) written to clients.", value=out.messages
        )
        yield CounterMetricFamily("trunkline_frames_sent", "WebSocket frames written to clients.", value=out.frames)
        yield CounterMetricFamily("trunkline_bytes_sent", "Bytes written to clients in frames.", value=out.bytes)

    def describe(self) -> Iterator[Metric]:
        return self.collect()  # the names, for the registry's duplicate check


@dataclass(slots=True)
class Snapshot:
    """Totals at one instant, for computing rates and windowed quantiles (:mod:`.stats`)."""

    commands: float = 0.0
    frames_in: float = 0.0
    bytes_in: float = 0.0
    messages_out: float = 0.0
    bytes_out: float = 0.0
    publications: dict[str, float] = field(default_factory=dict)
    deliveries: dict[str, float] = field(default_factory=dict)
    #: cumulative bucket counts (upper bound -> count), every method summed; ``inf`` is the total
    command_buckets: dict[float, float] = field(default_factory=dict)
    write_buckets: dict[float, float] = field(default_factory=dict)
    #: server API commands executed (each command of a batch or legacy request counts)
    api_commands: float = 0.0


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # rare events: prometheus_client objects
        self.connections = Gauge("trunkline_connections", "Open client connections.", ["transport"], registry=r)
        self.connects = Counter("trunkline_connects_total", "Accepted client connections.", ["transport"], registry=r)
        self.disconnects = Counter(
            "trunkline_disconnects_total", "Closed client connections by close code.", ["code"], registry=r
        )
        # their label children, bound once (labels() costs more than inc() on every connect)
        self._per_transport: dict[str, tuple[Gauge, Counter]] = {}
        self._per_code: dict[int, Counter] = {}
        self.slow = Counter("trunkline_slow_consumers_total", "Connections closed for not reading (3008).", registry=r)
        self.transport_requests = Counter(
            "trunkline_transport_requests_total",
            "Requests to the HTTP transports (http_stream, sse, emulation, uni_*) by transport and HTTP status; "
            "a stream counts when it ends.",
            ["transport", "status"],
            registry=r,
        )
        self.recoveries = Counter(
            "trunkline_recoveries_total", "Recovery attempts by outcome.", ["recovered"], registry=r
        )
        self.stream_gaps = Counter(
            "trunkline_stream_gaps_total",
            "Positioned subscribers told to resubscribe (2500) because this node missed publications.",
            ["namespace"],
            registry=r,
        )
        self.malformed_requests = Counter(
            "trunkline_http_malformed_requests_total",
            "HTTP requests refused by the HTTP parser (bad request line or headers, not HTTP at all).",
            registry=r,
        )
        self.logs_suppressed = Counter(
            "trunkline_log_suppressed_total",
            "Log lines left out by a rate limit (repeated failures, malformed requests), by logger.",
            ["logger"],
            registry=r,
        )
        Gauge("trunkline_build_info", "Always 1; the version is a label.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        # the proxy to the application backend: labels are proxy names from the config (bounded)
        self.proxy_requests = Counter(
            "trunkline_proxy_requests_total",
            "Requests to the application backend's proxies, by proxy name, event and result.",
            ["proxy", "event", "result"],
            registry=r,
        )
        self.proxy_seconds = Histogram(
            "trunkline_proxy_duration_seconds",
            "Time a proxy request to the application backend took, by proxy name and event.",
            ["proxy", "event"],
            buckets=PROXY_BUCKETS,
            registry=r,
        )
        self.proxy_requests_in_flight = Gauge(
            "trunkline_proxy_in_flight", "Proxy requests waiting for the backend, by proxy name.", ["proxy"], registry=r
        )
        # shared-poll subscriptions: labels are namespace names from the config (bounded)
        self.shared_poll_refreshes = Counter(
            "trunkline_shared_poll_refreshes_total",
            "Shared-poll refresh proxy calls (one batch of tracked keys each), by namespace and result.",
            ["namespace", "result"],
            registry=r,
        )
        self.shared_poll_errors = Counter(
            "trunkline_shared_poll_errors_total",
            "Shared-poll refresh calls that failed (timeout, unavailable, status, invalid, overloaded, error).",
            ["namespace"],
            registry=r,
        )
        self.shared_poll_keys_polled = Counter(
            "trunkline_shared_poll_polled_keys_total",
            "Keys asked for in shared-poll refresh calls, by namespace.",
            ["namespace"],
            registry=r,
        )
        self.shared_poll_updates = Counter(
            "trunkline_shared_poll_updates_total",
            "Changed shared-poll items pushed (each encoded once per client protocol), by namespace.",
            ["namespace"],
            registry=r,
        )
        self.shared_poll_deliveries = Counter(
            "trunkline_shared_poll_deliveries_total",
            "Shared-poll item pushes appended to connections, by namespace.",
            ["namespace"],
            registry=r,
        )

        # hot path: plain numbers, exported at scrape time
        self.commands = CounterVec(
            "trunkline_commands", "Client commands by method and result code (0 = ok).", ["method", "code"]
        )
        self.command_seconds = HistogramVec(
            "trunkline_command_duration_seconds", "Time to handle a client command.", ["method"]
        )
        self.messages_in = CounterVec("trunkline_frames_received", "WebSocket frames received.")
        self.bytes_in = CounterVec("trunkline_bytes_received", "Bytes received in frames.")
        self.publications = CounterVec("trunkline_publications", "Publications accepted by this node.", ["namespace"])
        self.deliveries = CounterVec("trunkline_deliveries", "Publications queued to local subscribers.", ["namespace"])
        self.fanout_seconds = HistogramVec(
            "trunkline_fanout_duration_seconds",
            "Time to queue one publication to every local subscriber.",
            ["namespace"],
        )
        self.write_seconds = HistogramVec(
            "trunkline_publish_to_write_seconds",
            "Time from a publication entering the node (from the broker) to its frame being written "
            "to a subscriber's socket; sampled.",
        )
        self.broker_seconds = HistogramVec("trunkline_broker_duration_seconds", "Broker operation latency.", ["op"])
        self.broker_errors = CounterVec("trunkline_broker_errors", "Failed broker operations.", ["op"])
        #: shared by every connection's writer (``Writer(..., counters=metrics.outbound)``)
        self.outbound = Outbound(self._observe_write)
        # server API: per HTTP request (method, result, HTTP status class) and per executed command
        self.api_requests = CounterVec(
            "trunkline_api_requests",
            "Server API HTTP requests by method, result (ok or the error code answered) and HTTP status class.",
            ["method", "result", "status"],
        )
        self.api_request_seconds = HistogramVec(
            "trunkline_api_request_duration_seconds",
            "Time to answer a server API HTTP request (body read included).",
            ["method"],
        )
        self.api_commands = CounterVec(
            "trunkline_api_commands",
            "Server API commands executed by method and result (ok or error code); each command of a batch counts.",
            ["method", "result"],
        )
        r.register(_Families((self.api_requests, self.api_request_seconds, self.api_commands), None))
        # MQTT traffic, by protocol (mqtt3.1.1 / mqtt5) and packet type
        self.protocol_packets = CounterVec(
            "trunkline_protocol_packets",
            "Packets of a non-Centrifugo client protocol by protocol, direction (in/out) and packet type.",
            ["protocol", "direction", "type"],
        )
        self.protocol_dropped = CounterVec(
            "trunkline_protocol_dropped_messages",
            "Messages not delivered to a client by protocol and reason (queue_full, too_large, not_authorized; "
            "persistent MQTT sessions: history_gap, stream_reset, expired, positions_evicted).",
            ["protocol", "reason"],
        )
        r.register(_Families((self.protocol_packets, self.protocol_dropped), None))
        self.ready = Gauge(
            "trunkline_ready",
            "1 when the node accepts connections and its broker answered the readiness check at this scrape.",
            registry=r,
        )
        self.queue_limit = Gauge(
            "trunkline_outbound_buffer_limit_bytes",
            "client.queue_max_size: an outbound buffer past this many bytes closes its connection (3008).",
            registry=r,
        )
        vecs = (
            self.commands,
            self.command_seconds,
            self.messages_in,
            self.bytes_in,
            self.publications,
            self.deliveries,
            self.fanout_seconds,
            self.write_seconds,
            self.broker_seconds,
            self.broker_errors,
        )
        r.register(_Families(vecs, self.outbound))

        # read from the hub at scrape time
        self._hub: HubView | None = None
        self.gauge_from("trunkline_subscriptions", "Live subscriptions on this node.", self._subscriptions)
        self.gauge_from("trunkline_channels", "Channels with at least one local subscriber.", self._channels)
        self.gauge_from("trunkline_users", "Distinct users connected to this node.", self._users)
        self.gauge_from(
            "trunkline_outbound_buffered_bytes",
            "Bytes waiting in outbound buffers, summed over connections.",
            self._buffered_total,
        )
        self.gauge_from(
            "trunkline_outbound_buffered_max_bytes",
            "Bytes waiting in the fullest outbound buffer.",
            self._buffered_max,
        )
        self._shared_poll: SharedPollView | None = None
        self.gauge_from(
            "trunkline_shared_poll_channels", "Shared-poll channels active on this node.", self._poll_channels
        )
        self.gauge_from(
            "trunkline_shared_poll_keys",
            "Keys held by this node's shared-poll channels (tracked, or kept after the last untrack).",
            self._poll_keys,
        )
        ProcessCollector(registry=r)
        self._last_write_sample = float("-inf")

    def gauge_from(self, name: str, documentation: str, fn: Callable[[], float]) -> None:
        """Register a gauge read at scrape time (subscriptions, channels, buffered bytes…)."""
        Gauge(name, documentation, registry=self.registry).set_function(fn)

    def track_shared_poll(self, view: SharedPollView) -> None:
        self._shared_poll = view

    def _poll_channels(self) -> float:
        return float(self._shared_poll.num_channels) if self._shared_poll is not None else 0.0

    def _poll_keys(self) -> float:
        return float(self._shared_poll.num_keys) if self._shared_poll is not None else 0.0

    def track_hub(self, hub: HubView) -> None:
        """Read the scrape-time gauges from ``hub`` (the node calls this once; calling again re-points)."""
        self._hub = hub

    def _subscriptions(self) -> float:
        return self._hub.num_subscriptions if self._hub is not None else 0

    def _channels(self) -> float:
        return self._hub.num_channels if self._hub is not None else 0

    def _users(self) -> float:
        return self._hub.num_users if self._hub is not None else 0

    def _buffered_total(self) -> float:
        return sum(c.writer.buffered for c in self._hub.connections()) if self._hub is not None else 0

    def _buffered_max(self) -> float:
        if self._hub is None:
            return 0
        return max((c.writer.buffered for c in self._hub.connections()), default=0)

    # intent-named recorders ------------------------------------------------

    def _transport_children(self, transport: str) -> tuple[Gauge, Counter]:
        bound = self._per_transport.get(transport)
        if bound is None:
            bound = self._per_transport[transport] = (
                self.connections.labels(transport),
                self.connects.labels(transport),
            )
        return bound

    def connection_opened(self, transport: str) -> None:
        open_now, opened = self._transport_children(transport)
        open_now.inc()
        opened.inc()

    def connection_closed(self, transport: str, code: int) -> None:
        self._transport_children(transport)[0].dec()
        closed = self._per_code.get(code)
        if closed is None:
            closed = self.disconnects.labels(str(code))
            if len(self._per_code) < 256:  # close codes are a small set; never grow without bound
                self._per_code[code] = closed
        closed.inc()

    def transport_request(self, transport: str, status: int) -> None:
        """One answered request of an HTTP transport (``transport`` is one of a fixed set of names)."""
        self.transport_requests.labels(transport, str(status)).inc()

    def command(self, method: str, code: int, seconds: float) -> None:
        self.commands.inc((method, code))
        self.command_seconds.observe((method,), seconds)

    def received(self, size: int) -> None:
        self.messages_in.inc()
        self.bytes_in.inc((), size)

    def published(self, namespace: str) -> None:
        self.publications.inc((namespace or "_",))

    def fanout(self, namespace: str, subscribers: int, seconds: float) -> None:
        key = (namespace or "_",)
        self.deliveries.inc(key, subscribers)
        self.fanout_seconds.observe(key, seconds)

    def broker_op(self, op: str, seconds: float, error: bool) -> None:
        self.broker_seconds.observe((op,), seconds)
        if error:
            self.broker_errors.inc((op,))

    def broker_timer(self, op: str) -> BrokerTimer:
        """Time a broker call: ``with metrics.broker_timer("history"): await broker.history(...)``.

        An exception counts as an error of ``op``; a cancellation counts as nothing.
        """
        return BrokerTimer(self, op)

    def slow_consumer(self) -> None:
        self.slow.inc()

    def protocol_packet(self, protocol: str, direction: str, kind: str) -> None:
        """One packet of an MQTT connection (``protocol`` is ``mqtt3.1.1`` or ``mqtt5``)."""
        self.protocol_packets.inc((protocol, direction, kind))

    def protocol_drop(self, protocol: str, reason: str, count: int = 1) -> None:
        self.protocol_dropped.inc((protocol, reason), count)

    def api_request(self, method: str, result: str, status: int, seconds: float) -> None:
        """A server API HTTP request was answered; ``method`` outside :data:`API_METHODS` counts as unknown."""
        name = method if method in API_METHODS else "unknown"
        self.api_requests.inc((name, result, f"{status // 100}xx"))
        self.api_request_seconds.observe((name,), seconds)

    def api_command(self, method: str, result: str) -> None:
        """One server API command ran (``result``: ``"ok"`` or its error code)."""
        self.api_commands.inc((method if method in API_METHODS else "unknown", result))

    def malformed_request(self) -> None:
        self.malformed_requests.inc()

    def log_suppressed(self, logger: str) -> None:
        """A log line of ``logger`` (a logger name: bounded) was left out by a rate limit."""
        self.logs_suppressed.labels(logger).inc()

    def proxy_request(self, proxy: str, event: str, result: str, seconds: float) -> None:
        """A proxy request ended; result: ok, error, disconnect, timeout, unavailable, status, invalid, overloaded."""
        self.proxy_requests.labels(proxy, event, result).inc()
        if result != "overloaded":
            self.proxy_seconds.labels(proxy, event).observe(seconds)

    def proxy_in_flight(self, proxy: str, delta: int) -> None:
        self.proxy_requests_in_flight.labels(proxy).inc(delta)

    def shared_poll_refresh(self, namespace: str, result: str, keys: int) -> None:
        """A shared-poll refresh call ended; result: ok, error, or the proxy failure kind."""
        ns = namespace or "default"
        self.shared_poll_refreshes.labels(ns, result).inc()
        self.shared_poll_keys_polled.labels(ns).inc(keys)
        if result != "ok":
            self.shared_poll_errors.labels(ns).inc()

    def shared_poll_pushed(self, namespace: str, items: int, deliveries: int) -> None:
        ns = namespace or "default"
        self.shared_poll_updates.labels(ns).inc(items)
        self.shared_poll_deliveries.labels(ns).inc(deliveries)

    def recovery(self, recovered: bool) -> None:
        self.recoveries.labels("true" if recovered else "false").inc()

    def stream_gap(self, namespace: str, subscribers: int) -> None:
        self.stream_gaps.labels(namespace).inc(subscribers)

    def sample_write(self, now: float) -> bool:
        """Whether the publication entering the node at ``now`` (``perf_counter``) should be timed to the socket.

        Time-based: at most one publication per ``WRITE_SAMPLE_INTERVAL``, so the cost
        stays bounded at any publication rate while quiet nodes time every one.
        """
        if now - self._last_write_sample < WRITE_SAMPLE_INTERVAL:
            return False
        self._last_write_sample = now
        return True

    def _observe_write(self, seconds: float) -> None:
        self.write_seconds.observe((), seconds)

    # reading ----------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> Snapshot:
        """Current totals, for the dashboard's rates and windowed quantiles."""
        return Snapshot(
            commands=self.commands.total(),
            frames_in=self.messages_in.total(),
            bytes_in=self.bytes_in.total(),
            messages_out=self.outbound.messages,
            bytes_out=self.outbound.bytes,
            publications={str(key[0]): n for key, n in self.publications.values.items()},
            deliveries={str(key[0]): n for key, n in self.deliveries.values.items()},
            command_buckets=self.command_seconds.cumulative(),
            write_buckets=self.write_seconds.cumulative(),
            api_commands=self.api_commands.total(),
        )


class BrokerTimer:
    """The context manager of :meth:`Metrics.broker_timer` (a class: cheaper than ``@contextmanager``)."""

    __slots__ = ("_metrics", "_op", "_started")

    def __init__(self, metrics: Metrics, op: str) -> None:
        self._metrics = metrics
        self._op = op
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None or issubclass(exc_type, Exception):
            self._metrics.broker_op(self._op, time.perf_counter() - self._started, exc_type is not None)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative ``buckets`` (upper bound -> count); None without samples."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: report its bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
