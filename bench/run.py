"""Run the issue-6 benchmark: Trunkline and its peers, side by side, in under 10 minutes.

    .venv/bin/python bench/run.py                    # everything
    .venv/bin/python bench/run.py --servers trunkline,node-ws --scenarios fanout-5000,rr-100

Each server is started fresh for each scenario, pinned with ``taskset -c 0``; the load
generator (bench/loadgen.py) runs pinned with ``taskset -c 1``; everything listens on
127.0.0.1.  Results: one JSON file per (scenario, server) and summary.json/summary.md in
bench/results/<timestamp>/ (git-ignored), and the markdown tables on stdout.  Every process
started here is stopped in a ``finally`` (by the process group this script created).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
NODE = shutil.which("node") or "node"
SERVER_CORE, LOADGEN_CORE = "0", "1"
TIME_BUDGET = 570.0  # seconds; the whole run stays under 10 minutes


@dataclass(frozen=True)
class Server:
    name: str
    proto: str
    argv: tuple[str, ...]  # "{port}" is replaced
    label: str
    tls_argv: tuple[str, ...] = ()  # the same server with TLS; "{port}", "{config}", "{cert}", "{key}" replaced


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server(
            "trunkline",
            "centrifugo",
            (PY, "-m", "trunkline", "serve", "--config", str(BENCH / "trunkline.toml"), "--port", "{port}"),
            "Trunkline (aiohttp+uvloop)",
            (PY, "-m", "trunkline", "serve", "--config", "{config}", "--port", "{port}"),
        ),
        Server(
            "node-ws",
            "ws",
            (NODE, str(BENCH / "peers" / "ws_server.js"), "{port}"),
            "Node ws",
            (NODE, str(BENCH / "peers" / "ws_server.js"), "{port}", "{cert}", "{key}"),
        ),
        Server(
            "socketio-node", "sio", (NODE, str(BENCH / "peers" / "socketio_server.js"), "{port}"), "Socket.IO (Node)"
        ),
        Server(
            "python-socketio",
            "sio",
            (PY, str(BENCH / "peers" / "pysio_server.py"), "{port}"),
            "python-socketio (aiohttp+uvloop)",
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # fanout | latency | rr | idle | ceiling | channels | tls
    args: tuple[str, ...]
    servers: tuple[str, ...] = ()  # empty: all
    timeout: float = 120.0
    notes: str = ""
    estimate: float = 15.0  # typical seconds per server, for the time budget


CPU_M = "server_cpu_s_per_million_deliveries"
IDLE_CONNS = 19000  # the container's hard RLIMIT_NOFILE is 20000 for server and load generator alike
CH_RATE, CH_GROUP_RATE, CH_GROUP_SIZE = 2000, 200, 100  # channels-10000: offered personal and group publications/s
PUB_CONNS, PUB_RATE, PUB_ROOM = 1000, 2, 10  # publishers-1000: clients, publications/s each, clients per room
TLS_CONNS = 3000


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and server certificate made with trustme (in a temp dir removed at exit)."""

    ca: str
    cert: str
    key: str
    config: str  # bench/trunkline.toml plus [http_server.tls]

    @classmethod
    def make(cls, d: Path) -> TlsFiles:
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(d / "ca.pem"))
        leaf.private_key_pem.write_to_path(str(d / "key.pem"))
        (d / "cert.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        config = (BENCH / "trunkline.toml").read_text() + (
            f'\n[http_server.tls]\nenabled = true\ncert_pem_file = "{d / "cert.pem"}"\n'
            f'key_pem_file = "{d / "key.pem"}"\n'
        )
        (d / "trunkline-tls.toml").write_text(config)
        return cls(str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"), str(d / "trunkline-tls.toml"))


def scenarios(scale: float) -> list[Scenario]:
    """In order of importance: when the time budget runs out, the last ones are skipped."""
    d = f"{5.0 * scale:g}"
    dl = f"{10.0 * scale:g}"
    idle = ("--mode", "idle", "--conns", str(IDLE_CONNS))
    # "as fast as the server takes them": 16 publications in flight, up to 64 ahead of the slowest sampler
    offer = ("--pub-concurrency", "16", "--window", "64")
    lat = ("--mode", "rate", "--conns", "5000", "--rate", "20", "--duration", dl, "--warmup", "2")
    return [
        Scenario(
            "fanout-5000", "fanout", ("--mode", "fanout", "--conns", "5000", "--duration", d, *offer), estimate=14
        ),
        Scenario(
            "latency-5000x20",
            "latency",
            (*lat, "--samplers", "250", "--mute"),
            notes="5000 subscribers x 20 publications/s = 100000 deliveries/s offered",
            estimate=18 + 10 * scale,
        ),
        Scenario("rr-100", "rr", ("--mode", "rr", "--conns", "100", "--duration", d), estimate=8),
        Scenario(
            "publishers-1000",
            "channels",
            (
                "--mode",
                "publishers",
                "--conns",
                str(PUB_CONNS),
                "--rate",
                str(PUB_RATE),
                "--group-size",
                str(PUB_ROOM),
                "--duration",
                d,
                "--warmup",
                "2",
            ),
            notes=(
                f"many publishers: {PUB_CONNS} clients each publishing {PUB_RATE}/s into its room, "
                f"{PUB_CONNS // PUB_ROOM} rooms of {PUB_ROOM}; {PUB_CONNS * PUB_RATE} publications/s = "
                f"{PUB_CONNS * PUB_RATE * PUB_ROOM} deliveries/s offered"
            ),
            estimate=12 + 5 * scale,
        ),
        Scenario(
            f"idle-{IDLE_CONNS}",
            "idle",
            (*idle, "--ramp-concurrency", "100", "--ramp-timeout", "40", "--source-ips", "16"),
            timeout=90.0,
            estimate=25,
        ),
        Scenario("fanout-1000", "fanout", ("--mode", "fanout", "--conns", "1000", "--duration", d, *offer), estimate=9),
        Scenario(
            "fanout-10000", "fanout", ("--mode", "fanout", "--conns", "10000", "--duration", d, *offer), estimate=20
        ),
        Scenario(
            "fanout-5000-wspub",
            "fanout",
            ("--mode", "fanout", "--conns", "5000", "--duration", d, "--publish", "ws", *offer),
            servers=("trunkline",),
            notes="Trunkline publishing with client-side publish over WebSocket instead of POST /api/publish",
            estimate=12,
        ),
        Scenario(
            "loadgen-ceiling",
            "ceiling",
            ("--mode", "fanout", "--conns", "1000", "--duration", d, "--publish-query", "?batch=10", "--window", "64"),
            servers=("node-ws",),
            notes="node-ws sending 10 publications per frame: the load generator's own limit",
            estimate=9,
        ),
        Scenario(
            "channels-10000",
            "channels",
            (
                "--mode",
                "channels",
                "--conns",
                "10000",
                "--rate",
                str(CH_RATE),
                "--group-rate",
                str(CH_GROUP_RATE),
                "--group-size",
                str(CH_GROUP_SIZE),
                "--duration",
                d,
                "--warmup",
                "2",
                "--ramp-concurrency",
                "100",
                "--source-ips",
                "16",
            ),
            notes=(
                f"10000 personal channels + 100 groups of {CH_GROUP_SIZE}; {CH_RATE} personal + {CH_GROUP_RATE} "
                f"group publications/s = {CH_RATE + CH_GROUP_RATE * CH_GROUP_SIZE} deliveries/s offered"
            ),
            timeout=150.0,
            estimate=22 + 5 * scale,
        ),
        Scenario(
            "connects-tls",
            "tls",
            (
                "--mode",
                "idle",
                "--conns",
                str(TLS_CONNS),
                "--ramp-concurrency",
                "100",
                "--ramp-timeout",
                "40",
                "--source-ips",
                "16",
                "--settle",
                "0.5",
            ),
            servers=("trunkline", "node-ws"),
            notes=f"{TLS_CONNS} connections, 100 handshakes in flight, plain then TLS (wss, TLS 1.3, ECDSA P-256)",
            timeout=60.0,
            estimate=12,
        ),
    ]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0, tls: TlsFiles | None = None
) -> bool:
    """Poll until the server answers any HTTP request (bounded)."""
    end = time.monotonic() + timeout
    ctx = ssl.create_default_context(cafile=tls.ca) if tls else None
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            conn: http.client.HTTPConnection = (
                http.client.HTTPSConnection("127.0.0.1", port, timeout=1.0, context=ctx)
                if ctx
                else http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            )
            conn.request("GET", "/health")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this script started (and its process group, created by us)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def busy_cores(interval: float = 0.5) -> float:
    """Cores' worth of CPU the whole machine used over `interval` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)

    b0, _ = sample()
    time.sleep(interval)
    b1, _ = sample()
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / interval


def wait_quiet(max_wait: float, threshold: float = 0.2) -> float:
    """Wait (bounded) until other processes use less than `threshold` cores; return the last reading."""
    end = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > threshold and time.monotonic() < end:
        busy = busy_cores()
    return round(busy, 2)


def run_one(
    server: Server, sc: Scenario, outdir: Path, quiet_wait: float, attempt: int = 0, *, tls: TlsFiles | None = None
) -> dict[str, Any]:
    busy_before = wait_quiet(quiet_wait)
    port = free_port()
    subst = {"{port}": str(port)}
    if tls is not None:
        subst.update({"{config}": tls.config, "{cert}": tls.cert, "{key}": tls.key})
    argv = ["taskset", "-c", SERVER_CORE]
    for a in server.tls_argv if tls is not None else server.argv:
        argv.append(subst.get(a, a.replace("{port}", str(port))))
    stem = f"{sc.name}__{server.name}" + (".tls" if tls else "") + (f".{attempt + 1}" if attempt else "")
    log = open(outdir / f"{stem}.server.log", "wb")  # noqa: SIM115 - closed in finally
    srv = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gen: subprocess.Popen[bytes] | None = None
    out = outdir / f"{stem}.json"
    t0 = time.monotonic()
    try:
        if not wait_listening(port, srv, tls=tls):
            return {"error": f"server did not start (exit {srv.poll()}); see {log.name}"}
        time.sleep(0.3)
        gen_argv = [
            "taskset",
            "-c",
            LOADGEN_CORE,
            PY,
            str(BENCH / "loadgen.py"),
            "--proto",
            server.proto,
            "--port",
            str(port),
            "--server-pid",
            str(srv.pid),
            "--out",
            str(out),
            *sc.args,
            *(("--tls-ca", tls.ca) if tls is not None else ()),
        ]
        gen = subprocess.Popen(
            gen_argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            _, err = gen.communicate(timeout=sc.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"load generator timed out after {sc.timeout:.0f} s"}
        if gen.returncode != 0 or not out.exists():
            return {"error": f"load generator exit {gen.returncode}: {err.decode(errors='replace')[-600:]}"}
        result: dict[str, Any] = json.loads(out.read_text())
        result["machine_busy_before"] = busy_before
        out.write_text(json.dumps(result, sort_keys=True) + "\n")
        if srv.poll() is not None:
            result["server_exited"] = srv.returncode
        return result
    finally:
        if gen is not None:
            stop(gen)
        stop(srv)
        log.close()
        elapsed = time.monotonic() - t0
        label = sc.name + (" (tls)" if tls else "")
        print(f"  {label:<20} {server.name:<16} {elapsed:5.1f} s", file=sys.stderr, flush=True)


def run_tls_pair(
    server: Server, sc: Scenario, outdir: Path, quiet_wait: float, attempt: int, *, tls: TlsFiles
) -> dict[str, Any]:
    """connects-tls: the same ramp without TLS, then with TLS; the row is the TLS run plus ``plain``."""
    plain = run_one(server, sc, outdir, quiet_wait, attempt)
    if "error" in plain:
        return {"error": f"plain: {plain['error']}"}
    r = run_one(server, sc, outdir, quiet_wait, attempt, tls=tls)
    if "error" in r:
        return r
    r["plain"] = plain
    # the least contended of the two decides whether a repeat is needed
    r["other_cpu_util"] = max(r.get("other_cpu_util", 0), plain.get("other_cpu_util", 0))
    return r


# --------------------------------------------------------------------------- tables


def fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return f"{v:,.{nd}f}"
    return str(v)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(sc: Scenario, rows: dict[str, dict[str, Any]]) -> str:
    ref_name = "trunkline" if "error" not in rows.get("trunkline", {"error": 1}) else "node-ws"
    ref = rows.get(ref_name, {})
    who = "Trunkline" if ref_name == "trunkline" else "node-ws"
    lines = [f"### {sc.name}" + (f" ({sc.notes})" if sc.notes else ""), ""]

    def lat(r: dict[str, Any], k: str) -> Any:
        return r.get("latency_ms", {}).get(k)

    if sc.kind in ("fanout", "ceiling"):
        lines += [
            f"| server | subscribers | deliveries/s | server CPU | server CPU s / 1M deliveries | loadgen CPU "
            f"| deliveries / frame | p50 ms | p99 ms | {who} ÷ this (deliveries/s) | this ÷ {who} (CPU/delivery) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            lines.append(
                f"| {name} | {fmt(r.get('subscribers'))} | {fmt(r.get('deliveries_per_s'))} "
                f"| {fmt(r.get('server_cpu_util', 0) * 100)}% | {fmt(r.get(CPU_M), 2)} "
                f"| {fmt(r.get('loadgen_cpu_util', 0) * 100)}% | {fmt(r.get('deliveries_per_frame'), 2)} "
                f"| {fmt(lat(r, 'p50'), 1)} | {fmt(lat(r, 'p99'), 1)} "
                f"| {ratio(ref.get('deliveries_per_s'), r.get('deliveries_per_s'))} "
                f"| {ratio(r.get(CPU_M), ref.get(CPU_M))} |"
            )
    elif sc.kind == "latency":
        lines += [
            f"| server | deliveries/s (100000 offered) | publishes/s | p50 ms | p99 ms | p99.9 ms | max ms "
            f"| server CPU | missed | this ÷ {who} (p99) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            lines.append(
                f"| {name} | {fmt(r.get('deliveries_per_s'))} | {fmt(r.get('publishes_per_s'), 1)} "
                f"| {fmt(lat(r, 'p50'), 2)} | {fmt(lat(r, 'p99'), 2)} | {fmt(lat(r, 'p999'), 2)} "
                f"| {fmt(lat(r, 'max'), 1)} "
                f"| {fmt(r.get('server_cpu_util', 0) * 100)}% | {fmt(r.get('missed'))} "
                f"| {ratio(lat(r, 'p99'), lat(ref, 'p99'))} |"
            )
    elif sc.kind == "rr":
        lines += [
            f"| server | acks/s | p50 ms | p99 ms | p99.9 ms | server CPU | server CPU µs / ack | loadgen CPU "
            f"| {who} ÷ this (acks/s) | this ÷ {who} (CPU/ack) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            lines.append(
                f"| {name} | {fmt(r.get('acks_per_s'))} | {fmt(lat(r, 'p50'), 2)} | {fmt(lat(r, 'p99'), 2)} "
                f"| {fmt(lat(r, 'p999'), 2)} | {fmt(r.get('server_cpu_util', 0) * 100)}% "
                f"| {fmt(r.get('server_cpu_us_per_op'), 1)} | {fmt(r.get('loadgen_cpu_util', 0) * 100)}% "
                f"| {ratio(ref.get('acks_per_s'), r.get('acks_per_s'))} "
                f"| {ratio(r.get('server_cpu_us_per_op'), ref.get('server_cpu_us_per_op'))} |"
            )
    elif sc.kind == "idle":
        lines += [
            f"| server | connections | connects/s | server CPU µs / connect | RSS KiB / idle connection "
            f"| {who} ÷ this (connects/s) | this ÷ {who} (CPU/connect) | this ÷ {who} (RSS/conn) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            c = r.get("connect", {})
            lines.append(
                f"| {name} | {fmt(c.get('opened'))} | {fmt(c.get('connects_per_s'))} "
                f"| {fmt(r.get('server_cpu_us_per_connect'))} | {fmt(r.get('rss_kib_per_conn'), 2)} "
                f"| {ratio(ref.get('connect', {}).get('connects_per_s'), c.get('connects_per_s'))} "
                f"| {ratio(r.get('server_cpu_us_per_connect'), ref.get('server_cpu_us_per_connect'))} "
                f"| {ratio(r.get('rss_kib_per_conn'), ref.get('rss_kib_per_conn'))} |"
            )
    elif sc.kind == "channels":
        offered = next((r.get("offered_deliveries_per_s") for r in rows.values() if "error" not in r), None)
        lines += [
            f"| server | connections | deliveries/s ({fmt(offered)} offered) | publications/s | p50 ms | p99 ms "
            f"| p99.9 ms | server CPU | server CPU µs / delivery | loadgen CPU | lost | missed "
            f"| {who} ÷ this (deliveries/s) | this ÷ {who} (p99) | this ÷ {who} (CPU/delivery) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            lines.append(
                f"| {name} | {fmt(r.get('subscribers'))} | {fmt(r.get('deliveries_per_s'))} "
                f"| {fmt(r.get('publishes_per_s'))} | {fmt(lat(r, 'p50'), 2)} | {fmt(lat(r, 'p99'), 2)} "
                f"| {fmt(lat(r, 'p999'), 2)} | {fmt(r.get('server_cpu_util', 0) * 100)}% "
                f"| {fmt(r.get('server_cpu_us_per_op'), 1)} | {fmt(r.get('loadgen_cpu_util', 0) * 100)}% "
                f"| {fmt(r.get('lost'))} | {fmt(r.get('missed'))} "
                f"| {ratio(ref.get('deliveries_per_s'), r.get('deliveries_per_s'))} "
                f"| {ratio(lat(r, 'p99'), lat(ref, 'p99'))} "
                f"| {ratio(r.get('server_cpu_us_per_op'), ref.get('server_cpu_us_per_op'))} |"
            )
    elif sc.kind == "tls":
        lines += [
            f"| server | connections | plain connects/s | TLS connects/s | TLS ÷ plain (connects/s) "
            f"| plain server CPU µs / connect | TLS server CPU µs / connect | TLS server CPU | TLS loadgen CPU "
            f"| {who} ÷ this (TLS connects/s) | this ÷ {who} (TLS CPU/connect) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} |")
                continue
            c, pl = r.get("connect", {}), r.get("plain", {})
            pc = pl.get("connect", {})
            lines.append(
                f"| {name} | {fmt(c.get('opened'))} | {fmt(pc.get('connects_per_s'))} | {fmt(c.get('connects_per_s'))} "
                f"| {ratio(c.get('connects_per_s'), pc.get('connects_per_s'))} "
                f"| {fmt(pl.get('server_cpu_us_per_connect'))} | {fmt(r.get('server_cpu_us_per_connect'))} "
                f"| {fmt(r.get('server_cpu_util', 0) * 100)}% | {fmt(c.get('loadgen_cpu_util', 0) * 100)}% "
                f"| {ratio(ref.get('connect', {}).get('connects_per_s'), c.get('connects_per_s'))} "
                f"| {ratio(r.get('server_cpu_us_per_connect'), ref.get('server_cpu_us_per_connect'))} |"
            )
    for name, r in rows.items():
        keys = (
            "disconnects",
            "pub_errors",
            "close_codes",
            "errors",
            "server_exited",
            "muted_short_after_drain",
            "lost",
        )
        problems = {k: r[k] for k in keys if r.get(k)}
        if problems:
            lines.append(f"\n{name}: {json.dumps(problems)[:400]}")
        gen_cpu = r.get("loadgen_cpu_util") or r.get("connect", {}).get("loadgen_cpu_util", 0)
        if gen_cpu > 0.9:
            lines.append(f"\n{name}: LOADGEN-BOUND - the load generator used {gen_cpu:.0%} of its core.")
        if r.get("other_cpu_util", 0) > 0.15:
            lines.append(
                f"\n{name}: CONTENDED - other processes used {r['other_cpu_util']:.2f} cores during the window "
                f"(core busy {r.get('core_busy')}); figures are low."
            )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "server_core": SERVER_CORE,
        "loadgen_core": LOADGEN_CORE,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of: " + ", ".join(SERVERS))
    p.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply measured durations (0.2 .. 2)")
    p.add_argument("--budget", type=float, default=TIME_BUDGET, help="seconds for the whole run")
    p.add_argument(
        "--quiet-wait", type=float, default=5.0, help="max seconds to wait for an idle machine before each run"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="on a shared machine: run each (scenario, server) up to N times, keep the least contended run",
    )
    p.add_argument("--results", default=str(BENCH / "results"))
    a = p.parse_args(argv)
    scale = min(2.0, max(0.2, a.scale))
    wanted_servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in wanted_servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    all_sc = scenarios(scale)
    if a.scenarios:
        names = {s.strip() for s in a.scenarios.split(",")}
        unknown = names - {s.name for s in all_sc}
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        all_sc = [s for s in all_sc if s.name in names]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not (BENCH / "peers" / "node_modules").exists() and any(SERVERS[s].argv[0] == NODE for s in wanted_servers):
        print("bench/peers/node_modules missing: run `npm ci --ignore-scripts --prefix bench/peers`", file=sys.stderr)
        return 2

    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = Path(a.results) / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {"machine": machine(), "started": stamp, "scenarios": {}}
    md: list[str] = [
        f"## Trunkline benchmark {stamp}",
        "",
        f"Machine: {summary['machine']['cpu']}, {summary['machine']['cores']} cores; "
        f"server pinned to core {SERVER_CORE}, "
        f"load generator to core {LOADGEN_CORE}; 127.0.0.1; 100-byte JSON payloads.",
        "",
    ]
    skipped: list[str] = []
    tls_dir: tempfile.TemporaryDirectory[str] | None = None
    tls: TlsFiles | None = None
    try:
        for sc in all_sc:
            rows: dict[str, dict[str, Any]] = {}
            for name in wanted_servers:
                if sc.servers and name not in sc.servers:
                    continue
                if time.monotonic() - started + sc.estimate > a.budget:
                    skipped.append(f"{sc.name}/{name}")
                    continue
                if sc.kind == "tls" and tls is None:
                    tls_dir = tempfile.TemporaryDirectory(prefix="trunkline-bench-tls-")
                    tls = TlsFiles.make(Path(tls_dir.name))
                best: dict[str, Any] | None = None
                for attempt in range(max(1, a.repeat)):
                    if attempt and time.monotonic() - started + sc.estimate > a.budget:
                        break
                    if sc.kind == "tls":
                        assert tls is not None
                        r = run_tls_pair(SERVERS[name], sc, outdir, a.quiet_wait, attempt, tls=tls)
                    else:
                        r = run_one(SERVERS[name], sc, outdir, a.quiet_wait, attempt)
                    r["attempt"] = attempt + 1
                    if best is None or (
                        "error" not in r and r.get("other_cpu_util", 0) < best.get("other_cpu_util", 9)
                    ):
                        best = r
                    if "error" in r or r.get("other_cpu_util", 0) <= 0.15:
                        break
                assert best is not None
                rows[name] = best
            if not rows:
                continue
            summary["scenarios"][sc.name] = {"kind": sc.kind, "args": sc.args, "notes": sc.notes, "results": rows}
            text = table(sc, rows)
            md.append(text)
            print(text, flush=True)
    finally:
        if tls_dir is not None:
            tls_dir.cleanup()
    if skipped:
        md.append(f"Skipped (time budget {a.budget:.0f} s): {', '.join(skipped)}\n")
        print(md[-1])
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    (outdir / "summary.md").write_text("\n".join(md))
    latest = Path(a.results) / "latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(stamp)
    print(f"total {summary['elapsed_s']} s; results in {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
