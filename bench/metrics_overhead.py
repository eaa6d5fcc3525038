"""Overhead of metrics on the publish path, with and without (in-process, server CPU only).

    .venv/bin/python bench/metrics_overhead.py [--subscribers 1000] [--publications 500] [--repeat 5]

One node (memory broker) publishes into a channel with N local subscribers whose
writers send to a no-op transport, so the figure is the server's own CPU per
publication and per delivered message, without the kernel's send (~10 us per write
on the reference machine, which makes the relative overhead smaller in practice).
Each publication gets its own event-loop turn, so every subscriber's writer flushes
once per publication: the worst case for the per-write counters.

"without": a Metrics whose recorders do nothing (and no write-latency sampling);
"with": the real Metrics (Prometheus counters and histograms, outbound counters,
publish-to-write sampling).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from trunkline.config import settings_from_mapping
from trunkline.node import Node
from trunkline.observe.metrics import Metrics, Outbound
from trunkline.transport.writer import Writer

CHANNEL = "bench"


class NullMetrics(Metrics):
    """Metrics that record nothing: the "without" case."""

    def __init__(self) -> None:
        super().__init__()
        self.outbound = Outbound()  # writers still add to plain ints; no histogram behind it

    def connection_opened(self, transport: str) -> None: ...
    def connection_closed(self, transport: str, code: int) -> None: ...
    def command(self, method: str, code: int, seconds: float) -> None: ...
    def received(self, size: int) -> None: ...
    def published(self, namespace: str) -> None: ...
    def fanout(self, namespace: str, subscribers: int, seconds: float) -> None: ...
    def broker_op(self, op: str, seconds: float, error: bool) -> None: ...
    def sample_write(self, now: float) -> bool:
        return False


class Conn:
    __slots__ = ("writer",)

    def __init__(self, writer: Writer) -> None:
        self.writer = writer


async def _send(frame: bytes) -> None:
    return None


async def run(metrics: Metrics, subscribers: int, publications: int) -> float:
    """CPU seconds per publication."""
    settings = settings_from_mapping({"channel": {"without_namespace": {}}})
    node = Node(settings, metrics=metrics)
    await node.broker.start(node)
    kwargs = {"counters": metrics.outbound} if "counters" in Writer.__init__.__code__.co_varnames else {}
    writers = []
    for _ in range(subscribers):
        w = Writer(_send, 1 << 30, lambda: None, lambda e: None, **kwargs)
        w.start()
        writers.append(w)
        node.hub.activate(CHANNEL, Conn(w), w.push, False)
    data = b'{"text":"' + b"x" * 80 + b'"}'
    for _ in range(50):  # warm up
        await node.publish(CHANNEL, data)
        await asyncio.sleep(0)
    started = time.process_time()
    for _ in range(publications):
        await node.publish(CHANNEL, data)
        await asyncio.sleep(0)  # let every writer flush this publication
    await asyncio.sleep(0)
    elapsed = time.process_time() - started
    for w in writers:
        w.abort()
    await node.broker.close()
    return elapsed / publications


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, nargs="*", default=[1, 100, 1000])
    ap.add_argument("--publications", type=int, default=0, help="default: ~1M deliveries per run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print("| subscribers | without metrics | with metrics | overhead |")
    print("|---|---|---|---|")
    for n in args.subscribers:
        pubs = args.publications or max(200, min(20000, 300_000 // n))
        results: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            results["without"].append(uvloop.run(run(NullMetrics(), n, pubs)))
            results["with"].append(uvloop.run(run(Metrics(), n, pubs)))
        without = statistics.median(results["without"])
        with_ = statistics.median(results["with"])
        per = f"{without * 1e6:.1f} us/pub ({without * 1e6 / n:.2f} us/msg)"
        per2 = f"{with_ * 1e6:.1f} us/pub ({with_ * 1e6 / n:.2f} us/msg)"
        print(f"| {n} | {per} | {per2} | {100 * (with_ - without) / without:+.1f}% |")


if __name__ == "__main__":
    main()
