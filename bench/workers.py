"""Fan-out and latency with 1 and 2 workers (issue 19): ``trunkline serve --workers N`` on Redis.

For each configuration this script starts its own ``redis-server`` (free port, no
persistence), then Trunkline, then ``bench/loadgen.py`` (the same load generator as
``bench/run.py``) against it, and stops everything it started by its pid / process group:

* ``fanout``: N subscribers on channel ``bench``; a closed loop offers publications through
  ``POST /api/publish`` as fast as the server takes them (16 in flight, at most 64 ahead of the
  slowest sampler), so the server is saturated; deliveries/s counted at the clients.
* ``latency``: the same subscribers, a fixed moderate rate (open loop), publish-to-receive
  p50/p99 from the ``ts`` in the payload, read by sampler connections while the others are
  muted (as ``latency-5000x20`` in ``bench/run.py``).

Server CPU is summed over the worker processes: the load generator runs here under
``_loadgen`` with its CPU reader pointed at the supervisor's children (``/proc/<pid>/task/*/
children``), so the window is exactly loadgen's window. The supervisor's own CPU and
``redis-server``'s are reported next to it. Configurations:

* ``memory``: one plain process, memory engine (the baseline of ``bench/run.py``);
* ``w1``: ``--workers 1`` on Redis (one process, no supervisor: that is what ``--workers 1``
  runs): server and Redis on core 0, load generator on core 1;
* ``w2``: ``--workers 2`` on Redis: nothing pinned (two workers, Redis and the load
  generator share the machine's two cores).

    .venv/bin/python bench/workers.py            # about 2.5 minutes
    .venv/bin/python bench/workers.py --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import loadgen  # bench/ is on sys.path when run as a script
from run import fmt, free_port, stop, wait_listening, wait_quiet

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
REDIS = shutil.which("redis-server") or "redis-server"
CONFIGS: dict[str, tuple[int, str]] = {  # name -> (workers, engine); workers 0 = plain serve
    "memory": (0, "memory"),
    "w1": (1, "redis"),
    "w2": (2, "redis"),
}


# --------------------------------------------------------------------------- inside the load generator


def children(pid: int) -> list[int]:
    """Direct children of a process (the supervisor's workers), from /proc."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
    return out


def _cpu(pid: int) -> float:
    try:
        return loadgen_proc_cpu(pid)
    except OSError:  # a process that exited during the window: its CPU is lost, say so in the result
        return 0.0


loadgen_proc_cpu = loadgen.proc_cpu_seconds


def patched_loadgen(argv: list[str]) -> int:
    """Run loadgen.main with server CPU = the sum over the supervisor's worker processes."""
    p = argparse.ArgumentParser()
    p.add_argument("--redis-pid", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    own, rest = p.parse_known_args(argv)
    extra: dict[str, Any] = {}

    def server_cpu(pid: int) -> float:
        kids = children(pid) if own.workers > 1 else []
        if own.workers > 1 and len(kids) != own.workers:
            extra["worker_count_mismatch"] = len(kids)
        return sum(_cpu(k) for k in kids) if kids else _cpu(pid)

    base = loadgen.Window

    class Window(base):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            self.kids = children(self.pid) if self.pid and own.workers > 1 else []
            self.k0 = [_cpu(k) for k in self.kids]
            self.sup0 = _cpu(self.pid) if self.pid else 0.0
            self.r0 = _cpu(own.redis_pid) if own.redis_pid else 0.0
            super().start()

        def stop(self) -> dict[str, Any]:
            out: dict[str, Any] = super().stop()
            dt = out["seconds"]
            if self.kids:
                out["per_worker_cpu_util"] = [
                    round((_cpu(k) - c0) / dt, 3) for k, c0 in zip(self.kids, self.k0, strict=True)
                ]
                out["supervisor_cpu_util"] = round((_cpu(self.pid) - self.sup0) / dt, 3)
            if own.redis_pid:
                out["redis_cpu_util"] = round((_cpu(own.redis_pid) - self.r0) / dt, 3)
                out["other_cpu_util"] = round(out["other_cpu_util"] - out["redis_cpu_util"], 3)
            out.update(extra)
            return out

    loadgen.proc_cpu_seconds = server_cpu
    loadgen.Window = Window
    return loadgen.main(rest)


# --------------------------------------------------------------------------- orchestration


def start_redis(logf: Any, core: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if core is not None:
        argv = ["taskset", "-c", core, *argv]
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"redis-server exited ({proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc, port
        time.sleep(0.05)
    stop(proc)
    raise SystemExit("redis-server did not answer PING within 10 s")


def write_config(tmp: Path, engine: str, redis_port: int) -> Path:
    text = (BENCH / "trunkline.toml").read_text()
    if engine == "redis":
        text += f'\n[engine]\ntype = "redis"\n\n[engine.redis]\naddress = "redis://127.0.0.1:{redis_port}/0"\n'
    path = tmp / f"trunkline-{engine}.toml"
    path.write_text(text)
    return path


def run_config(name: str, kind: str, gen_args: list[str], outdir: Path, quiet_wait: float) -> dict[str, Any]:
    workers, engine = CONFIGS[name]
    pinned = workers <= 1
    server_core, gen_core = ("0", "1") if pinned else (None, None)
    busy_before = wait_quiet(quiet_wait)
    stem = f"{kind}__{name}"
    logf = open(outdir / f"{stem}.server.log", "wb")  # noqa: SIM115 - closed in finally
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    try:
        redis_pid, redis_port = 0, 0
        if engine == "redis":
            redis, redis_port = start_redis(logf, server_core)
            procs.append(redis)
            redis_pid = redis.pid
        cfg = write_config(outdir, engine, redis_port)
        port = free_port()
        argv = [PY, "-m", "trunkline", "serve", "--config", str(cfg), "--port", str(port)]
        if workers:
            argv += ["--workers", str(workers)]
        if server_core is not None:
            argv = ["taskset", "-c", server_core, *argv]
        srv = subprocess.Popen(argv, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(srv)
        if not wait_listening(port, srv):
            return {"error": f"server did not start (exit {srv.poll()}); see {logf.name}"}
        if workers > 1:  # every worker up (each answers /health on the shared port once listening)
            end = time.monotonic() + 20
            while len(children(srv.pid)) < workers and time.monotonic() < end:
                time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.3)
        out = outdir / f"{stem}.json"
        gen_argv = [PY, str(Path(__file__).resolve()), "_loadgen", "--redis-pid", str(redis_pid)]
        gen_argv += ["--workers", str(workers), "--proto", "centrifugo", "--port", str(port)]
        gen_argv += ["--server-pid", str(srv.pid), "--out", str(out), *gen_args]
        if gen_core is not None:
            gen_argv = ["taskset", "-c", gen_core, *gen_argv]
        gen = subprocess.Popen(
            gen_argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        procs.append(gen)
        try:
            _, err = gen.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            return {"error": "load generator timed out after 120 s"}
        if gen.returncode != 0 or not out.exists():
            return {"error": f"load generator exit {gen.returncode}: {err.decode(errors='replace')[-600:]}"}
        result: dict[str, Any] = json.loads(out.read_text())
        result["machine_busy_before"] = busy_before
        result["pinning"] = "server+redis core 0, loadgen core 1" if pinned else "none (2 cores shared)"
        if srv.poll() is not None:
            result["server_exited"] = srv.returncode
        return result
    finally:
        for p in reversed(procs):
            stop(p)
        logf.close()
        print(f"  {kind:<8} {name:<7} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)


def row(name: str, r: dict[str, Any]) -> str:
    workers, engine = CONFIGS[name]
    label = f"{workers or 1} {'worker' if workers else 'process'}{'s' if workers > 1 else ''}, {engine}"
    if "error" in r:
        return f"| {label} | error: {r['error']} |"
    lat = r.get("latency_ms", {})
    util = r.get("per_worker_cpu_util")
    cells = [
        label,
        fmt(r.get("deliveries_per_s")),
        fmt(r.get("publishes_per_s")),
        fmt(r.get("server_cpu_util"), 2) + (f" ({' + '.join(fmt(u, 2) for u in util)})" if util else ""),
        fmt(r.get("server_cpu_us_per_op"), 2),
        fmt(r.get("redis_cpu_util"), 2),
        fmt(r.get("loadgen_cpu_util"), 2),
        fmt(r.get("deliveries_per_frame"), 1),
        fmt(lat.get("p50"), 2),
        fmt(lat.get("p99"), 2),
        " ".join(fmt(b, 2) for b in r.get("core_busy", [])),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| server | deliveries/s | publications/s | server CPU, cores (per worker) | server CPU µs/delivery "
    "| redis CPU | loadgen CPU | deliveries/frame | p50 ms | p99 ms | core busy |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|"
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loadgen"]:
        return patched_loadgen(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter measured windows (3 s fan-out, 5 s latency)")
    p.add_argument("--conns", type=int, default=2000, help="subscribers")
    p.add_argument("--rate", type=float, default=25.0, help="latency run: publications/s (x conns deliveries/s)")
    p.add_argument("--configs", default="memory,w1,w2", help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="seconds to wait for an idle machine per run")
    a = p.parse_args(argv)
    names = [n for n in a.configs.split(",") if n in CONFIGS]
    d, dl = ("3", "5") if a.quick else ("5", "10")
    conns = str(max(1, min(a.conns, 15000)))
    scenarios = {
        "fanout": ["--mode", "fanout", "--conns", conns, "--duration", d, "--pub-concurrency", "16", "--window", "64"],
        "latency": [
            *("--mode", "rate", "--conns", conns, "--rate", f"{a.rate:g}", "--duration", dl, "--warmup", "2"),
            *("--samplers", "200", "--mute"),
        ],
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = BENCH / "results" / f"workers-{stamp}"
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for kind, args in scenarios.items():
        for name in names:
            results[f"{kind}/{name}"] = run_config(name, kind, args, outdir, a.quiet_wait)
    lines = [f"{os.cpu_count()} cores; {conns} subscribers; results in {outdir.relative_to(ROOT)}", ""]
    offered = f"{a.rate:g} publications/s x {conns} = {a.rate * int(conns):,.0f} deliveries/s offered"
    for kind, title in (("fanout", "closed loop, saturating"), ("latency", offered)):
        lines += [f"#### {kind}-{conns} ({title})", "", HEADER]
        lines += [row(n, results[f"{kind}/{n}"]) for n in names]
        lines.append("")
    text = "\n".join(lines)
    (outdir / "summary.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (outdir / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
