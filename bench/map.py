"""Map subscriptions (issue 14): snapshot time and update fan-out, with centrifuge-js 5.8 clients.

One Trunkline server (a subprocess, memory engine and map broker) and one Node process of
centrifuge-js clients (``bench/map_clients.js``):

1. **snapshot**: a map channel of 10 000 keys (~100-byte values, written with ``mapPublish``);
   a new client subscribes with ``mapPageSize`` 1000 and the time from ``subscribe()`` to its
   ``sync`` event is taken (10 state pages, then the live reply). JSON and Protobuf clients
   alternate, several rounds after a warm-up one; the median of each (and the server's CPU
   time over the snapshot) and their paired ratio.
2. **fan-out**: 1 000 map subscribers of one channel and 1 000 stream subscribers of another
   (same Node process); a publisher client sends map updates (``mapPublish`` of 50 hot keys)
   or stream publications, 16 in flight, alternating map and stream rounds. Deliveries/s are
   counted at the clients (first send to last delivery); server CPU per delivery is the
   server process's utime+stime over the round divided by the deliveries.

The machine is shared: figures are noisy, the paired ratios (A and B alternated in one run)
are the figures to compare.

    .venv/bin/python bench/map.py [--keys 10000] [--subscribers 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import free_port, stop, wait_listening  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONFIG = """
[client]
insecure = true
command_rate_limit = 0  # the publisher and the populating client send thousands of commands a second
[http_api]
key = "bench"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_client = true
[[channel.namespaces]]
name = "maps"
subscription_type = "map"
allow_subscribe_for_client = true
[channel.namespaces.map]
mode = "durable"
key_ttl = "1h"
max_page_size = 1000
allow_publish_for_client = true
[log]
level = "warning"
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Clients:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(BENCH / "map_clients.js")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
        )

    def call(self, expect: str, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        while line := self.proc.stdout.readline():
            event: dict[str, Any] = json.loads(line)
            if event["ev"] == "error":
                raise SystemExit(f"client error: {event['message']}")
            if event["ev"] == expect:
                return event
        raise SystemExit("the client process exited")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop(self.proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--page", type=int, default=1000)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--updates", type=int, default=200, help="updates per fan-out round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "map.toml"
        config.write_text(CONFIG + f"\n[http_server]\nport = {port}\n")
        server = subprocess.Popen(
            [PY, "-m", "trunkline", "serve", "--config", str(config)],
            cwd=ROOT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        clients = Clients()
        try:
            if not wait_listening(port, server):
                raise SystemExit("the server did not start")
            url = f"ws://127.0.0.1:{port}/connection/websocket"
            common = {"url": url, "token": ""}
            done = clients.call("populated", op="populate", channel="maps:snap", keys=args.keys, bytes=100, **common)
            print(f"populated {done['keys']} keys in {done['ms'] / 1000:.1f} s\n")

            times: dict[str, list[float]] = {"json": [], "protobuf": []}
            cpus: dict[str, list[float]] = {"json": [], "protobuf": []}
            for round_ in range(args.rounds + 1):  # the first round warms up (imports, caches): not counted
                for kind in ("json", "protobuf"):
                    protobuf = kind == "protobuf"
                    cpu0 = cpu_seconds(server.pid)
                    got = clients.call(
                        "snapshot", op="snapshot", channel="maps:snap", pageSize=args.page, protobuf=protobuf, **common
                    )
                    assert got["entries"] == args.keys, got
                    if round_:
                        times[kind].append(got["ms"])
                        cpus[kind].append(cpu_seconds(server.pid) - cpu0)
            print(f"## snapshot of {args.keys} keys, page {args.page} (median of {args.rounds}, alternating)\n")
            print("| client | ms to sync | keys/s | server CPU ms per snapshot |")
            print("|---|---|---|---|")
            for kind, values in times.items():
                med = statistics.median(values)
                cpu_ms = statistics.median(cpus[kind]) * 1000
                print(f"| centrifuge-js {kind} | {med:.0f} | {args.keys / med * 1000:,.0f} | {cpu_ms:.0f} |")
            ratio = statistics.median(j / b for j, b in zip(times["json"], times["protobuf"], strict=True))
            print(f"\njson / protobuf, paired: {ratio:.2f}\n")

            for kind, channel in (("map", "maps:fan"), ("stream", "fan")):
                clients.call("subscribed", op="subscribers", channel=channel, n=args.subscribers, kind=kind, **common)
            rows: dict[str, list[tuple[float, float]]] = {"map": [], "stream": []}
            for _ in range(args.rounds):
                for kind, channel in (("map", "maps:fan"), ("stream", "fan")):
                    cpu0 = cpu_seconds(server.pid)
                    got = clients.call("blast", op="blast", channel=channel, kind=kind, count=args.updates, inflight=16)
                    cpu = cpu_seconds(server.pid) - cpu0
                    if got["deliveries"] != got["expected"]:
                        print(f"warning: {kind} round delivered {got['deliveries']} of {got['expected']}")
                    rows[kind].append((got["deliveries"] / got["seconds"], cpu / max(got["deliveries"], 1)))
            clients.call("dropped", op="drop")
            n, updates = args.subscribers, args.updates
            print(f"## fan-out to {n} subscribers, {updates} updates a round (median of {args.rounds})\n")
            print("| kind | deliveries/s | server CPU µs per delivery |")
            print("|---|---|---|")
            for kind, values in rows.items():
                rate = statistics.median(v[0] for v in values)
                cost = statistics.median(v[1] for v in values)
                print(f"| {kind} | {rate:,.0f} | {cost * 1e6:.1f} |")
            paired = statistics.median(m[1] / s[1] for m, s in zip(rows["map"], rows["stream"], strict=True))
            print(f"\nmap / stream server CPU per delivery, paired: {paired:.2f}")
        finally:
            clients.close()
            stop(server)
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
