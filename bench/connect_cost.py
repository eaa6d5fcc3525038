"""The cost of a connection (issue 18): server CPU per connect and RSS per idle connection.

    .venv/bin/python bench/connect_cost.py                     # 3 paired rounds, about 2 minutes
    .venv/bin/python bench/connect_cost.py --conns 5000 --rounds 2 --servers trunkline,trunkline-jwt
    .venv/bin/python bench/connect_cost.py --tracemalloc        # what one idle connection keeps, by site

Servers, each started fresh for every run under ``taskset -c 0`` on a free port:

* ``trunkline``: ``bench/trunkline.toml`` (``client.insecure``), the client sends ``{"connect":{}}``;
* ``trunkline-jwt``: the same with ``insecure = false`` and an HS256 ``client.token.hmac_secret_key``;
  every client sends its own token (``sub`` = ``u<i>``, ``exp`` in an hour), made before the ramp;
* ``node-ws``: ``bench/peers/ws_server.js`` (the WebSocket handshake only).

A run opens ``--conns`` connections (100 handshakes in flight, client sockets spread over
127.0.0.1-127.0.0.16) with the load generator's picows clients (``bench/loadgen.py``) under
``taskset -c 1``. Before the measured ramp ``--warmup`` connections are opened and kept, so
one-time costs (imports, first allocations, the listener) stay out of the figures. Reported:
connects/s over the ramp, server CPU (utime+stime, all threads) per connect, and
(VmRSS 2 s after the ramp - VmRSS before it) / connections. Rounds alternate the order of the
servers, and the ratios are medians of the per-round (paired) ratios.

``--tracemalloc`` runs Trunkline (insecure) under ``tracemalloc`` and takes a snapshot at
1 000 and at 5 000 idle connections; the difference / 4 000 by allocation site is what each
connection keeps in Python objects (kernel socket buffers and allocator overhead are not in it).
Every process started here is stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
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

import run as runner  # noqa: E402  (bench/run.py: free_port, wait_listening, stop, wait_quiet)

PY = runner.PY
SECRET = "connect-cost-bench-secret-0123456789abcdef"
JWT_TOML = f'\n[client.token]\nhmac_secret_key = "{SECRET}"\n'


def _config(d: Path, jwt: bool) -> str:
    text = (BENCH / "trunkline.toml").read_text()
    if jwt:
        text = text.replace("insecure = true", "insecure = false") + JWT_TOML
    path = d / ("trunkline-jwt.toml" if jwt else "trunkline.toml")
    path.write_text(text)
    return str(path)


def checkout(rev: str, d: Path) -> Path:
    """The ``src`` directory of a detached git worktree of ``rev`` (made once, removed at exit)."""
    tree = d / f"wt-{rev}"
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True, capture_output=True
        )
    return tree / "src"


def remove_checkouts(d: Path) -> None:
    for tree in d.glob("wt-*"):
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False, capture_output=True)


def server_argv(name: str, port: int, d: Path) -> tuple[list[str], str, dict[str, str]]:
    """(argv, load generator protocol, extra environment) of one server.

    ``trunkline@REV`` / ``trunkline-jwt@REV`` run the code of git revision ``REV``
    (a worktree first on ``PYTHONPATH``): before/after pairs in one run.
    """
    if name == "node-ws":
        return [runner.NODE, str(BENCH / "peers" / "ws_server.js"), str(port)], "ws", {}
    base, _, rev = name.partition("@")
    env = {"PYTHONPATH": str(checkout(rev, d))} if rev else {}
    cfg = _config(d, jwt=base == "trunkline-jwt")
    return [PY, "-m", "trunkline", "serve", "--config", cfg, "--port", str(port)], "centrifugo", env


# --------------------------------------------------------------------------- client (core 1)


def client_main(a: argparse.Namespace) -> int:
    import gc

    import loadgen
    import uvloop

    loadgen.raise_nofile()
    gc.disable()
    tokens: list[bytes] = []
    if a.jwt:
        import jwt

        exp = int(time.time()) + 3600
        total = a.warmup + a.conns
        tokens = [jwt.encode({"sub": f"u{i}", "exp": exp}, SECRET, algorithm="HS256").encode() for i in range(total)]

    class TokenConn(loadgen.Conn):
        def __init__(self, gen: loadgen.Gen, token: bytes) -> None:
            super().__init__(gen)
            self.token = token

        def on_ws_connected(self, transport: Any) -> None:
            self.t = transport
            transport.send(loadgen.TEXT, b'{"id":1,"connect":{"token":"%s"}}' % self.token)

    args = loadgen.parse_args(
        ["--proto", a.proto, "--mode", "idle", "--port", str(a.port), "--source-ips", "16", "--conns", str(a.conns)]
    )

    def factory(gen: loadgen.Gen, offset: int) -> Any:
        if tokens:
            return lambda i: TokenConn(gen, tokens[offset + i])
        return lambda i: loadgen.Conn(gen)

    async def amain() -> dict[str, Any]:
        gen = loadgen.Gen(args)
        out: dict[str, Any] = {}
        try:
            deadline = time.monotonic() + 60
            if a.warmup:
                warm = await loadgen.open_conns(gen, a.warmup, factory(gen, 0), 100, deadline)
                out["warmup_opened"] = warm["opened"]
                await asyncio.sleep(0.5)
            rss0, cpu0 = loadgen.proc_rss_kib(a.server_pid), loadgen.proc_cpu_seconds(a.server_pid)
            deadline = time.monotonic() + a.ramp_timeout
            ramp = await loadgen.open_conns(gen, a.conns, factory(gen, a.warmup), 100, deadline)
            cpu = loadgen.proc_cpu_seconds(a.server_pid) - cpu0
            await asyncio.sleep(a.settle)
            rss1 = loadgen.proc_rss_kib(a.server_pid)
            opened = max(1, ramp["opened"])
            out.update(
                ramp=ramp,
                server_cpu_us_per_connect=round(cpu / opened * 1e6, 1),
                server_cpu_util=round(cpu / ramp["seconds"], 3) if ramp["seconds"] else 0.0,
                rss_kib_per_conn=round((rss1 - rss0) / opened, 2),
                rss_kib_before=rss0,
                rss_kib_after=rss1,
                still_open=sum(1 for c in gen.conns if c.t is not None and not c.t.is_disconnected),
                errors=dict(gen.errors.most_common(4)),
                disconnects=gen.disconnects,
            )
            return out
        finally:
            await loadgen.close_all(gen)

    print(json.dumps(uvloop.run(amain()), sort_keys=True))
    return 0


# --------------------------------------------------------------------------- one run


def run_one(name: str, a: argparse.Namespace, d: Path) -> dict[str, Any]:
    busy = runner.wait_quiet(a.quiet_wait)
    port = runner.free_port()
    argv, proto, env = server_argv(name, port, d)
    log = open(d / f"{name.replace('/', '_')}.log", "ab")  # noqa: SIM115 - closed in finally
    srv = subprocess.Popen(
        ["taskset", "-c", runner.SERVER_CORE, *argv],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **env},
    )
    gen: subprocess.Popen[bytes] | None = None
    try:
        if not runner.wait_listening(port, srv):
            return {"error": f"{name} did not start"}
        time.sleep(0.3)
        gen_argv = [
            *("taskset", "-c", runner.LOADGEN_CORE, PY, __file__, "_client"),
            *("--proto", proto, "--port", str(port), "--server-pid", str(srv.pid)),
            *("--conns", str(a.conns), "--warmup", str(a.warmup), "--settle", str(a.settle)),
            *(("--jwt",) if name.startswith("trunkline-jwt") else ()),
        ]
        gen = subprocess.Popen(
            gen_argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            out, err = gen.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            return {"error": "client timed out"}
        if gen.returncode != 0:
            return {"error": err.decode(errors="replace")[-600:]}
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["machine_busy_before"] = busy
        return result
    finally:
        if gen is not None:
            runner.stop(gen)
        runner.stop(srv)
        log.close()


# --------------------------------------------------------------------------- tracemalloc


def traced_server_main(a: argparse.Namespace) -> int:
    """Trunkline under tracemalloc; SIGUSR1 writes a snapshot to the next numbered file."""
    import runpy
    import tracemalloc

    tracemalloc.start(a.frames)
    count = [0]

    def dump(_sig: int, _frame: Any) -> None:
        count[0] += 1
        import gc

        gc.collect()
        path = Path(a.snap_dir) / f"snap{count[0]}.bin"
        types: dict[str, int] = {}
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            types[name] = types.get(name, 0) + 1
        (Path(a.snap_dir) / f"types{count[0]}.json").write_text(json.dumps(types))
        tracemalloc.take_snapshot().dump(str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["trunkline", "serve", "--config", a.config, "--port", str(a.port)]
    runpy.run_module("trunkline", run_name="__main__")
    return 0


def tracemalloc_main(a: argparse.Namespace, d: Path) -> None:
    import tracemalloc

    first, second = 1000, 5000
    port = runner.free_port()
    cfg = _config(d, jwt=False)
    argv = [PY, __file__, "_traced", "--config", cfg, "--port", str(port), "--snap-dir", str(d)]
    argv += ["--frames", str(a.frames)]
    env = {**os.environ, "PYTHONPATH": str(checkout(a.rev, d))} if a.rev else None
    log = open(d / "traced.log", "ab")  # noqa: SIM115 - closed in finally
    srv = subprocess.Popen(
        ["taskset", "-c", runner.SERVER_CORE, *argv],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    gen: subprocess.Popen[bytes] | None = None
    try:
        if not runner.wait_listening(port, srv, timeout=40):
            raise SystemExit("traced server did not start")
        gen_argv = [
            *("taskset", "-c", runner.LOADGEN_CORE, PY, __file__, "_snapclient"),
            *("--port", str(port), "--server-pid", str(srv.pid), "--snap-dir", str(d)),
            *("--first", str(first), "--second", str(second)),
        ]
        gen = subprocess.Popen(gen_argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = gen.communicate(timeout=300)
        if gen.returncode != 0:
            raise SystemExit(err.decode(errors="replace")[-800:])
        print(out.decode().strip(), file=sys.stderr)
    finally:
        if gen is not None:
            runner.stop(gen)
        runner.stop(srv)
        log.close()
    s1 = tracemalloc.Snapshot.load(str(d / "snap1.bin"))
    s2 = tracemalloc.Snapshot.load(str(d / "snap2.bin"))
    n = second - first
    stats = s2.compare_to(s1, "traceback" if a.frames > 1 else "lineno")
    total = sum(s.size_diff for s in stats)
    t1 = json.loads((d / "types1.json").read_text())
    t2 = json.loads((d / "types2.json").read_text())
    diff = sorted(((t2.get(k, 0) - t1.get(k, 0), k) for k in t2), reverse=True)
    tracked = sum(v for v, _ in diff)
    print(f"\nGC-tracked objects per idle connection: {tracked / n:.1f}\n")
    print("| objects / connection | type |")
    print("|---:|---|")
    for v, k in diff[: a.top]:
        if v / n < 0.1:
            break
        print(f"| {v / n:.2f} | {k} |")
    print(f"\nPython heap kept per idle connection: {total / n:.0f} B ({n} connections, tracemalloc)\n")
    print("| bytes / connection | blocks / connection | allocation site |")
    print("|---:|---:|---|")
    for st in stats[: a.top]:
        if st.size_diff / n < 8:
            break
        frames = list(st.traceback)
        site = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in (frames if a.frames > 1 else frames[:1]))
        print(f"| {st.size_diff / n:.0f} | {st.count_diff / n:.2f} | {site} |")


def snapclient_main(a: argparse.Namespace) -> int:
    import gc

    import loadgen
    import uvloop

    loadgen.raise_nofile()
    gc.disable()
    args = loadgen.parse_args(["--proto", "centrifugo", "--mode", "idle", "--port", str(a.port), "--source-ips", "16"])

    async def snap(k: int) -> None:
        await asyncio.sleep(1.0)
        os.kill(a.server_pid, signal.SIGUSR1)
        path = Path(a.snap_dir) / f"snap{k}.bin"
        end = time.monotonic() + 120
        while not path.exists() and time.monotonic() < end:  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.2)
        if not path.exists():
            raise SystemExit(f"no snapshot {k}")

    async def amain() -> str:
        gen = loadgen.Gen(args)
        try:
            r1 = await loadgen.open_conns(gen, a.first, lambda i: loadgen.Conn(gen), 100, time.monotonic() + 120)
            await snap(1)
            r2 = await loadgen.open_conns(
                gen, a.second - a.first, lambda i: loadgen.Conn(gen), 100, time.monotonic() + 120
            )
            await snap(2)
            return f"opened {r1['opened']} + {r2['opened']}, errors {dict(gen.errors)}"
        finally:
            await loadgen.close_all(gen)

    print(uvloop.run(amain()))
    return 0


# --------------------------------------------------------------------------- report


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def report(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> str:
    lines = [
        "| server | connects/s | server CPU µs / connect | RSS KiB / idle connection | rounds |",
        "|---|--:|--:|--:|--:|",
    ]
    keys = (("cps", lambda r: r["ramp"]["connects_per_s"]), ("cpu", lambda r: r["server_cpu_us_per_connect"]))
    keys += (("rss", lambda r: r["rss_kib_per_conn"]),)
    med: dict[str, dict[str, float | None]] = {}
    for name in names:
        ok = [r[name] for r in rounds if name in r and "error" not in r[name]]
        med[name] = {k: _median([f(r) for r in ok]) for k, f in keys}
        per = ", ".join(f"{f(r):g}" for r in ok for k, f in keys if k == "cpu")
        lines.append(f"| {name} | {med[name]['cps']} | {med[name]['cpu']} ({per}) | {med[name]['rss']} | {len(ok)} |")
    refs = ["node-ws"] if "node-ws" in names else []
    if names and names[0] != "node-ws":
        refs.append(names[0])
    for ref in refs:
        lines += ["", f"Paired ratios (median over rounds of each server ÷ {ref} in the same round):", ""]
        lines += ["| server | CPU per connect | RSS per connection | connects/s |", "|---|--:|--:|--:|"]
        for name in names:
            if name == ref:
                continue
            ratios: dict[str, list[float]] = {k: [] for k, _ in keys}
            for r in rounds:
                a, b = r.get(name, {}), r.get(ref, {})
                if "error" in a or "error" in b or not a or not b:
                    continue
                for k, f in keys:
                    if f(b):
                        ratios[k].append(f(a) / f(b))
            lines.append(
                f"| {name} | ×{_median(ratios['cpu'])} | ×{_median(ratios['rss'])} | ×{_median(ratios['cps'])} |"
            )
    return "\n".join(lines)


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_argument("cmd", nargs="?", default="bench", help=argparse.SUPPRESS)
    del sub
    p.add_argument("--servers", default="trunkline,trunkline-jwt,node-ws")
    p.add_argument("--conns", type=int, default=19000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc: frames per allocation site")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--rev", default="", help="tracemalloc: run the server code of this git revision")
    p.add_argument("--out", default="")
    # internal (the client, the traced server)
    for name in ("--proto", "--config", "--snap-dir"):
        p.add_argument(name, default="", help=argparse.SUPPRESS)
    for name in ("--port", "--server-pid", "--first", "--second"):
        p.add_argument(name, type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--jwt", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ramp-timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.conns = max(1, min(a.conns, 19000))
    a.rounds = max(1, min(a.rounds, 10))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.cmd == "_client":
        return client_main(a)
    if a.cmd == "_traced":
        return traced_server_main(a)
    if a.cmd == "_snapclient":
        return snapclient_main(a)
    _raise_nofile()  # the servers inherit it
    with tempfile.TemporaryDirectory(prefix="trunkline-connect-cost-") as tmp:
        d = Path(tmp)
        if a.tracemalloc:
            try:
                tracemalloc_main(a, d)
            finally:
                remove_checkouts(d)
            return 0
        try:
            bench(a, d)
        finally:
            remove_checkouts(d)
    return 0


def bench(a: argparse.Namespace, d: Path) -> None:
    names = [n.strip() for n in a.servers.split(",") if n.strip()]
    rounds: list[dict[str, dict[str, Any]]] = []
    for k in range(a.rounds):
        order = names if k % 2 == 0 else names[::-1]
        this: dict[str, dict[str, Any]] = {}
        for name in order:
            this[name] = run_one(name, a, d)
            r = this[name]
            brief = r.get("error") or (
                f"{r['ramp']['connects_per_s']} conn/s, {r['server_cpu_us_per_connect']} µs/connect, "
                f"{r['rss_kib_per_conn']} KiB/conn, open {r['still_open']}, errors {r['errors']}"
            )
            print(f"  round {k + 1} {name:<14} {brief}", file=sys.stderr, flush=True)
        rounds.append(this)
    text = report(rounds, names)
    print(text)
    if a.out:
        Path(a.out).write_text(json.dumps({"rounds": rounds, "table": text}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
