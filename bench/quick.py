"""Quick bench mode (issue 18's regression guard): the key ratios in under 2 minutes.

    .venv/bin/python bench/quick.py                  # Trunkline and node-ws, short windows
    .venv/bin/python bench/quick.py --servers trunkline

It runs shortened versions of bench/run.py's scenarios with the same machinery (fresh
server per run under ``taskset -c 0``, the load generator under ``taskset -c 1``) and
prints one table: each key figure for Trunkline and node-ws, their ratio, and the goal
of issue 18 where it has one. The windows are short, so the figures are noisier than
``make bench``'s; use it to catch a regression, not to quote. Results go to
``bench/results/quick-<timestamp>/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py, beside this file

BUDGET = 110.0  # seconds: stop starting runs after this


def scenarios() -> list[run.Scenario]:
    return [
        run.Scenario(
            "fanout-5000",
            "fanout",
            ("--mode", "fanout", "--conns", "5000", "--duration", "2", "--warmup", "1", "--pub-concurrency", "16"),
            estimate=9,
        ),
        run.Scenario(
            "latency-5000x20",
            "latency",
            (
                "--mode",
                "rate",
                "--conns",
                "5000",
                "--rate",
                "20",
                "--duration",
                "3",
                "--warmup",
                "1",
                "--samplers",
                "250",
                "--mute",
            ),
            estimate=12,
        ),
        run.Scenario(
            "rr-100", "rr", ("--mode", "rr", "--conns", "100", "--duration", "2", "--warmup", "1"), estimate=5
        ),
        run.Scenario(
            "publishers-1000",
            "channels",
            (
                "--mode",
                "publishers",
                "--conns",
                str(run.PUB_CONNS),
                "--rate",
                str(run.PUB_RATE),
                "--group-size",
                str(run.PUB_ROOM),
                "--duration",
                "2",
                "--warmup",
                "1",
            ),
            estimate=7,
        ),
        run.Scenario(
            "connects-3000",
            "idle",
            ("--mode", "idle", "--conns", "3000", "--ramp-concurrency", "100", "--source-ips", "16", "--settle", "1"),
            estimate=7,
        ),
    ]


#: (scenario, label, how to read it from a result, lower is better, issue-18 goal)
ROWS: list[tuple[str, str, Any, bool, str]] = [
    ("fanout-5000", "fan-out 5000: deliveries/s", lambda r: r.get("deliveries_per_s"), False, ""),
    ("fanout-5000", "fan-out 5000: server CPU µs / delivery", lambda r: r.get(run.CPU_M), True, ""),
    ("latency-5000x20", "latency 5000×20/s: p50 ms", lambda r: r.get("latency_ms", {}).get("p50"), True, ""),
    ("latency-5000x20", "latency 5000×20/s: p99 ms", lambda r: r.get("latency_ms", {}).get("p99"), True, "≤ 50"),
    ("latency-5000x20", "latency 5000×20/s: p99.9 ms", lambda r: r.get("latency_ms", {}).get("p999"), True, "≤ 80"),
    ("latency-5000x20", "latency 5000×20/s: missed", lambda r: r.get("missed"), True, "0"),
    ("rr-100", "request/response: server CPU µs / ack", lambda r: r.get("server_cpu_us_per_op"), True, "≤ 10"),
    (
        "publishers-1000",
        "many publishers: p99 ms",
        lambda r: r.get("latency_ms", {}).get("p99"),
        True,
        "",
    ),
    ("publishers-1000", "many publishers: server CPU µs / delivery", lambda r: r.get("server_cpu_us_per_op"), True, ""),
    ("connects-3000", "connects: server CPU µs / connect", lambda r: r.get("server_cpu_us_per_connect"), True, "≤ 120"),
    ("connects-3000", "idle: RSS KiB / connection", lambda r: r.get("rss_kib_per_conn"), True, ""),
]


def report(results: dict[str, dict[str, dict[str, Any]]], servers: list[str]) -> str:
    other = next((s for s in servers if s != "trunkline"), "")
    head = "| figure | trunkline |" + (f" {other} | Trunkline ahead by (>1: ahead) |" if other else "")
    lines = [head + " goal |", "|---|---:|" + ("---:|---:|" if other else "") + "---|"]
    for sc, label, get, lower, goal in ROWS:
        row = results.get(sc, {})
        t = row.get("trunkline", {})
        tv = get(t) if "error" not in t else None
        cells = [label, run.fmt(tv, 2) if tv is not None else "-"]
        if other:
            o = row.get(other, {})
            ov = get(o) if "error" not in o else None
            cells.append(run.fmt(ov, 2) if ov is not None else "-")
            if tv and ov:
                cells.append(f"{(ov / tv if lower else tv / ov):.2f}x")
            else:
                cells.append("-")
        cells.append(goal)
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for sc, row in results.items():
        for name, r in row.items():
            if "error" in r:
                notes.append(f"{sc}/{name}: error: {r['error'][:200]}")
            elif r.get("other_cpu_util", 0) > 0.15:
                notes.append(f"{sc}/{name}: CONTENDED (other processes used {r['other_cpu_util']:.2f} cores)")
            if r.get("lost") or r.get("muted_short_after_drain"):
                notes.append(f"{sc}/{name}: lost {r.get('lost')}, muted short {r.get('muted_short_after_drain')}")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def command_path() -> str:
    """The publish command's path alone (``bench/command_path.py``), on the server's core."""
    script = str(run.BENCH / "command_path.py")
    argv = ["taskset", "-c", "0", run.PY, script, "--rounds", "3", "--commands", "10000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return f"publish command path: failed ({last[0]})"
    return done.stdout.strip() + " — `rr-100`'s µs / ack minus this is the socket's share"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="trunkline,node-ws", help="trunkline and at most one peer")
    p.add_argument("--results", default=str(run.BENCH / "results"))
    a = p.parse_args(argv)
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in servers:
        if s not in run.SERVERS:
            p.error(f"unknown server {s!r}")
    if "trunkline" not in servers:
        p.error("trunkline must be one of the servers")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if any(run.SERVERS[s].argv[0] == run.NODE for s in servers) and not (run.BENCH / "peers" / "node_modules").exists():
        print("bench/peers/node_modules missing: run `npm ci --ignore-scripts --prefix bench/peers`", file=sys.stderr)
        return 2
    outdir = Path(a.results) / time.strftime("quick-%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: list[str] = []
    for sc in scenarios():
        for name in servers:
            if time.monotonic() - started + sc.estimate > BUDGET:
                skipped.append(f"{sc.name}/{name}")
                continue
            results.setdefault(sc.name, {})[name] = run.run_one(run.SERVERS[name], sc, outdir, quiet_wait=0.0)
    text = report(results, servers)
    text += "\n" + command_path() + "\n"
    if skipped:
        text += f"\nSkipped (budget {BUDGET:.0f} s): {', '.join(skipped)}\n"
    (outdir / "quick.md").write_text(text)
    print(text)
    print(f"total {time.monotonic() - started:.1f} s; results in {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
