"""Fan-out by transport: WebSocket, HTTP-streaming (bidirectional emulation) and unidirectional SSE.

    .venv/bin/python bench/fanout_transports.py            # 1000 subscribers, 10 s windows, 3 rounds (~3 min)
    .venv/bin/python bench/fanout_transports.py --quick    # a smoke run (200 subscribers, 3 s, 1 round)
    .venv/bin/python bench/fanout_transports.py --transports websocket,uni_sse --subscribers 2000

One invocation runs, round after round, on a fresh server each time, N subscribers of one
channel over each of:

* ``websocket``: the Centrifugo JSON protocol on ``/connection/websocket`` (``connect`` and
  ``subscribe`` in one frame; raw picows clients, as bench/fanout_formats.py);
* ``http_stream``: ``POST /connection/http_stream`` with the connect command, then the subscribe
  command through ``POST /emulation`` with the session and node of the connect reply (as
  centrifuge-js does); the response is a newline-delimited JSON stream read by aiohttp; server
  pings ``{}`` are answered with ``{}`` through ``/emulation``;
* ``uni_sse``: ``GET /connection/uni_sse?cf_connect={"token": ...}`` whose token carries
  ``channels: ["bench"]`` (a server-side subscription); the body is SSE ``data:`` frames, read by
  aiohttp; nothing is ever sent back.

The setup is bench/fanout_formats.py's and reuses its code (imported, not copied): the server is
``python -m trunkline serve`` from ``git archive <--after-commit>`` (default HEAD) pinned with
``taskset -c 0``, the load generator (this file's ``loadgen`` subcommand) pinned with
``taskset -c 1``, publications through the server API at a fixed rate (``--rate`` per second,
``--batch`` per ``POST /api/batch``), 100-byte JSON data, open loop; server CPU is utime+stime
from /proc/<pid>/stat over the window (and the median over the window's quiet 1-s slices, from
schedstat). Receiving only counts: complete lines are counted (the partial line at the end of a
read waits for the next read), pings excluded, and the ``"seq":`` marks of the publication data
must equal the count. "Deliveries per read" is the HTTP transports' counterpart of deliveries per
WebSocket frame: how many messages one read of the stream returned. The table shows medians over
the rounds and each transport's ratio to WebSocket. Results: bench/results/fanout_transports.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import jwt

# bench/ is on sys.path when run as a script
from fanout_formats import (
    API_KEY,
    CHANNEL,
    LOADGEN_CORE,
    PAYLOAD_SIZE,
    PY,
    SEQ_MARK,
    SERVER_CORE,
    LoadGen,
    Target,
    _picows_connect,
    fmt,
    imported_from,
    machine,
    open_subscribers,
    prepare_after,
    raise_nofile,
    run_single,
    server_env,
    summarize,
    wait_quiet,
)
from run import free_port, stop, wait_listening

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TRANSPORTS = ("websocket", "http_stream", "uni_sse")
SECRET = "bench-fanout-transports-hmac-secret-0123456789"  # a benchmark key, public, 32+ bytes
CONFIG = f"""# bench/fanout_transports.py (generated)
[client]
insecure = true  # WebSocket and http_stream subscribers connect without a token

[client.token]
hmac_secret_key = "{SECRET}"  # uni_sse subscribers need a token: it carries the channel

[http_api]
key = "{API_KEY}"

[http_stream]
enabled = true

[uni_sse]
enabled = true

[channel.without_namespace]
allow_subscribe_for_client = true

[shutdown]
timeout = 1.0

[log]
level = "warning"
"""


# =========================================================================== load generator


class StreamSub:
    """One HTTP-stream or SSE subscriber: counts complete messages, like fanout_formats.Sub."""

    __slots__ = ("error", "frames", "kind", "marks", "n", "on_ready", "pong", "ready", "session", "tail")
    protobuf = False  # fanout_formats.Target.totals reads it

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "http_stream" or "uni_sse"
        self.n = 0
        self.marks = 0
        self.frames = 0  # reads that carried messages
        self.ready = False
        self.error = ""
        self.tail = b""
        self.session: tuple[str, str] | None = None  # (session, node) of an http_stream connection
        self.on_ready: Any = None
        self.pong: Any = None  # callable(): answer a server ping (http_stream)

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk if self.tail else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self.tail = data
            return
        self.tail = data[cut:]
        data = data[:cut] if cut < len(data) else data
        if not self.ready:
            self._handshake(data)
        elif self.kind == "http_stream":
            self._count_lines(data)
        else:
            self._count_sse(data)

    # -- hot path
    def _count_lines(self, data: bytes) -> None:
        n = data.count(b"\n")
        pings = data.count(b"{}\n")  # the publication data never contains "{}"
        for _ in range(pings):
            self.pong()
        n -= pings
        if n:
            self.n += n
            self.frames += 1
            self.marks += data.count(SEQ_MARK)

    def _count_sse(self, data: bytes) -> None:
        n = data.count(b"data:") - data.count(b"data: {}\n")  # pings need no answer
        if n:
            self.n += n
            self.frames += 1
            self.marks += data.count(SEQ_MARK)

    # -- before ready
    def _handshake(self, data: bytes) -> None:
        for raw in data.split(b"\n"):
            if self.kind == "uni_sse" and not raw.startswith(b"data:"):
                continue
            line = raw[5:].strip() if self.kind == "uni_sse" else raw
            if not line or line == b"{}":
                continue
            msg = json.loads(line)
            if "error" in msg or "disconnect" in msg:
                self._fail(line[:160].decode(errors="replace"))
            elif self.kind == "uni_sse" and "connect" in msg:
                if CHANNEL not in (msg["connect"].get("subs") or {}):
                    self._fail(f"no server-side subscription to {CHANNEL}: {line[:160]!r}")
                else:
                    self._set_ready()
            elif msg.get("id") == 1 and "connect" in msg:
                self.session = (msg["connect"]["session"], msg["connect"]["node"])
            elif msg.get("id") == 2:
                self._set_ready()

    def _set_ready(self) -> None:
        self.ready = True
        if self.on_ready is not None:
            self.on_ready()

    def _fail(self, why: str) -> None:
        self.error = why
        if self.on_ready is not None:
            self.on_ready()


def _stream_connect(gen: LoadGen, kind: str, streams: Any, emulation: Any) -> Any:
    """``connect(sub, port)`` for http_stream and uni_sse subscribers over aiohttp."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    token = jwt.encode({"sub": "bench", "channels": [CHANNEL]}, SECRET, algorithm="HS256")
    json_headers = {"Content-Type": "application/json"}

    def background(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def emulate(port: int, session: tuple[str, str], commands: str) -> int:
        body = json.dumps({"session": session[0], "node": session[1], "data": commands})
        async with emulation.post(f"http://127.0.0.1:{port}/emulation", data=body, headers=json_headers) as r:
            await r.read()
            return int(r.status)

    async def connect(sub: StreamSub, port: int) -> Any:
        fut: asyncio.Future[None] = loop.create_future()
        sub.on_ready = lambda: fut.done() or fut.set_result(None)
        if kind == "http_stream":
            url = f"http://127.0.0.1:{port}/connection/http_stream"
            resp = await streams.post(url, data=b'{"id":1,"connect":{}}', headers=json_headers)
        else:
            query = urllib.parse.quote(json.dumps({"token": token}))
            resp = await streams.get(f"http://127.0.0.1:{port}/connection/uni_sse?cf_connect={query}")
        if resp.status != 200:
            body = await resp.read()
            resp.close()
            raise ConnectionError(f"{kind}: HTTP {resp.status} {body[:120]!r}")

        def pong() -> None:
            if sub.session is not None:
                background(emulate(port, sub.session, "{}"))

        sub.pong = pong

        async def reader() -> None:
            with contextlib.suppress(Exception):
                async for chunk in resp.content.iter_any():
                    sub.feed(chunk)
            if not gen.closing:
                gen.disconnects += 1
            if not fut.done():
                fut.set_exception(ConnectionError("stream ended before ready"))

        background(reader())
        if kind == "http_stream":
            for _ in range(200):  # the connect reply carries the session (bounded: 10 s)
                if sub.session is not None or sub.error or fut.done():
                    break
                await asyncio.sleep(0.05)
            if sub.session is None:
                resp.close()
                raise ConnectionError(f"no connect reply: {sub.error}")
            status = await emulate(port, sub.session, json.dumps({"id": 2, "subscribe": {"channel": CHANNEL}}))
            if status != 204:
                resp.close()
                raise ConnectionError(f"/emulation answered {status}")
        await fut
        if sub.error:
            resp.close()
            raise ConnectionError(sub.error)
        return resp.close

    return connect


async def open_streams(gen: LoadGen, connect: Any, target: Target, kind: str, closers: list[Any]) -> dict[str, Any]:
    """Open --subscribers streams, 100 handshakes in flight, bounded by --ramp-timeout."""
    a = gen.a
    todo = iter(range(a.subscribers))
    failed = 0
    deadline = time.monotonic() + a.ramp_timeout
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal failed
        for _ in todo:
            sub = StreamSub(kind)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError("ramp deadline")
                async with asyncio.timeout(min(10.0, remaining)):
                    closers.append(await connect(sub, target.port))
                target.subs.append(sub)  # type: ignore[arg-type]
            except Exception as e:
                failed += 1
                gen.errors[f"connect: {type(e).__name__}: {str(e)[:120]}"] += 1

    await asyncio.gather(*(worker() for _ in range(min(100, a.subscribers))))
    dt = time.perf_counter() - t0
    return {"requested": a.subscribers, "opened": len(target.subs), "failed": failed, "seconds": round(dt, 2)}


async def loadgen_main(a: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    gen = LoadGen(a)
    target = gen.targets[0]
    closers: list[Any] = []
    no_timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
    streams = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=no_timeout)
    emulation = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=24), timeout=aiohttp.ClientTimeout(total=20))
    result: dict[str, Any] = {"transport": a.transport}
    try:
        if a.transport == "websocket":
            import picows

            result["client"] = f"picows {picows.__version__}"
            result["connect"] = await open_subscribers(gen, _picows_connect(gen), target, closers)
        else:
            result["client"] = f"aiohttp {aiohttp.__version__}"
            connect = _stream_connect(gen, a.transport, streams, emulation)
            result["connect"] = await open_streams(gen, connect, target, a.transport, closers)
        if not target.subs:
            raise SystemExit(f"no subscriber connected: {dict(gen.errors.most_common(3))}")
        result.update(
            {"subscribers": len(target.subs), "subscribers_json": len(target.subs), "subscribers_protobuf": 0}
        )
        await asyncio.sleep(0.5)  # let the last subscribes settle
        result.update(await run_single(gen, target))
        for _ in range(100):  # bounded drain (5 s): every subscriber should get every accepted publication
            if all(s.n >= target.published for s in target.subs):
                break
            await asyncio.sleep(0.05)
        result["published_total"] = target.published
        result["lost"] = target.lost()
        result["pub_errors"] = gen.pub_errors
        result["missed"] = gen.missed
    finally:
        gen.closing = True
        for close in closers:
            with contextlib.suppress(Exception):
                close()
        await asyncio.sleep(0.2)
        await streams.close()
        await emulation.close()
    result.update(
        {
            "disconnects": gen.disconnects,
            "close_codes": dict(gen.close_codes.most_common(5)),
            "errors": dict(gen.errors.most_common(8)),
        }
    )
    return result


def loadgen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fanout_transports.py loadgen")
    p.add_argument("--target", required=True, help="PORT:PID of the server")
    p.add_argument("--transport", choices=TRANSPORTS, required=True)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--ramp-timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    a.target = [a.target]  # fanout_formats.LoadGen takes a list
    a.protobuf_share, a.slice, a.gap, a.ab = 0.0, 1.0, 0.25, False
    a.seconds, a.warmup, a.ramp_timeout = min(a.seconds, 120.0), min(a.warmup, 30.0), min(a.ramp_timeout, 120.0)
    raise_nofile()
    gc.disable()  # short-lived and bounded; the cyclic GC would only cost load-generator CPU
    try:
        import uvloop

        result = uvloop.run(loadgen_main(a))
    except ImportError:
        result = asyncio.run(loadgen_main(a))
    print(json.dumps(result, sort_keys=True))
    return 0


# =========================================================================== orchestrator


def run_one(transport: str, tree: Path, a: argparse.Namespace, *, config: Path, logdir: Path) -> dict[str, Any]:
    """A fresh server pinned to core 0, the load generator pinned to core 1; both stopped at the end."""
    busy_before = wait_quiet(a.quiet_wait)
    srv: subprocess.Popen[bytes] | None = None
    gen: subprocess.Popen[bytes] | None = None
    t0 = time.monotonic()
    log_path = logdir / f"{transport}.server.log"
    with open(log_path, "ab") as log:
        try:
            port = free_port()
            argv = ["taskset", "-c", SERVER_CORE, PY, "-m", "trunkline", "serve", "--config", str(config)]
            srv = subprocess.Popen(
                [*argv, "--port", str(port)],
                cwd=tree,
                env=server_env(tree),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if not wait_listening(port, srv):
                return {"error": f"server did not start (exit {srv.poll()}): {log_path.read_text()[-300:]}"}
            time.sleep(0.3)
            gen_argv = [
                "taskset", "-c", LOADGEN_CORE, PY, str(Path(__file__).resolve()), "loadgen",
                "--target", f"{port}:{srv.pid}", "--transport", transport,
                "--subscribers", str(a.subscribers), "--rate", str(a.rate), "--batch", str(a.batch),
                "--seconds", str(a.seconds), "--warmup", str(a.warmup),
            ]  # fmt: skip
            gen = subprocess.Popen(
                gen_argv, cwd=BENCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
            limit = 60 + 2 * (a.warmup + a.seconds) + 30
            try:
                out, err = gen.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                return {"error": f"load generator timed out after {limit:.0f} s"}
            if gen.returncode != 0:
                return {"error": f"load generator exit {gen.returncode}: {err.decode(errors='replace')[-600:]}"}
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
            result["machine_busy_before"] = busy_before
            if srv.poll() is not None:
                result["server_exited"] = srv.returncode
            return result
        finally:
            if gen is not None:
                stop(gen)
            if srv is not None:
                stop(srv)
            print(f"  {transport:<12} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)


def ratio(x: float | None, base: float | None) -> str:
    return f"x{x / base:.2f}" if x is not None and base else "-"


def table(summary: dict[str, dict[str, Any]]) -> str:
    ws = summary.get("websocket", {})
    base_cpu = ws.get("server_cpu_us_per_delivery") if "error" not in ws else None
    base_rate = ws.get("deliveries_per_s") if "error" not in ws else None
    lines = [
        "| transport | subscribers | offered deliveries/s | deliveries/s | ÷ WebSocket | server CPU "
        "| server CPU µs / delivery | ÷ WebSocket | µs / delivery, quiet 1-s slices | deliveries / frame or read "
        "| loadgen CPU | lost | flags |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in summary.items():
        if "error" in s:
            lines.append(f"| {name} | error: {s['error'][:160]} |")
            continue
        flags = []
        if s["contended_rounds"]:
            flags.append(f"CONTENDED ({s['contended_rounds']} of {s['rounds']} rounds)")
        if s["loadgen_bound_rounds"]:
            flags.append(f"LOADGEN-BOUND ({s['loadgen_bound_rounds']})")
        if not s["seq_marks_match"]:
            flags.append("COUNT MISMATCH")
        if s["missed"] or s["pub_errors"]:
            flags.append(f"missed {s['missed']}, publish errors {s['pub_errors']}")
        lines.append(
            f"| {name} | {s['subscribers_json']:,} | {fmt(s['offered_deliveries_per_s'])} "
            f"| {fmt(s['deliveries_per_s'])} | {ratio(s['deliveries_per_s'], base_rate)} "
            f"| {fmt(100 * s['server_cpu_util'])}% | {fmt(s['server_cpu_us_per_delivery'], 3)} "
            f"| {ratio(s['server_cpu_us_per_delivery'], base_cpu)} "
            f"| {fmt(s['quiet_slice_cpu_us_per_delivery'], 3)} ({s['quiet_slices']}) "
            f"| {fmt(s['deliveries_per_frame'], 2)} | {fmt(100 * s['loadgen_cpu_util'])}% | {s['lost']:,} "
            f"| {', '.join(flags)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadgen"]:
        return loadgen(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of publishing before the window")
    p.add_argument("--rate", type=float, default=200.0, help="publications/s (offered deliveries = rate x N)")
    p.add_argument("--batch", type=int, default=10, help="publications per POST /api/batch (1: POST /api/publish)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help=f"subset of {','.join(TRANSPORTS)}")
    p.add_argument("--after-commit", default="HEAD", help="commit to serve, or 'worktree' for the live src/")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max seconds to wait for an idle machine per run")
    p.add_argument("--out", default=str(BENCH / "results" / "fanout_transports.json"))
    p.add_argument("--quick", action="store_true", help="200 subscribers, 3 s, 1 round (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.subscribers, a.seconds, a.warmup, a.rounds = min(a.subscribers, 200), 3.0, 1.0, 1
    a.subscribers = max(1, min(a.subscribers, 10000))
    a.seconds, a.rounds = min(a.seconds, 60.0), max(1, min(a.rounds, 10))
    a.quiet_wait = max(0.0, min(a.quiet_wait, 120.0))
    names = [n for n in a.transports.split(",") if n]
    unknown = set(names) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"unknown transports: {sorted(unknown)}")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (util-linux)")
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="fanout-transports-") as tmpname:
        tmp = Path(tmpname)
        config = tmp / "trunkline.toml"
        config.write_text(CONFIG)
        tree, commit = prepare_after(a.after_commit, tmp)
        setup = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "argv": sys.argv[1:],
            "machine": machine(),
            "server": "python -m trunkline serve (memory broker) under taskset -c 0",
            "loadgen": "bench/fanout_transports.py loadgen under taskset -c 1 (picows for WebSocket, aiohttp for HTTP)",
            "subscribers": a.subscribers,
            "rate_publications_per_s": a.rate,
            "batch": a.batch,
            "seconds": a.seconds,
            "warmup": a.warmup,
            "rounds": a.rounds,
            "payload_bytes": PAYLOAD_SIZE,
            "commit": commit,
            "trunkline_imported_from": imported_from(tree),
            "config": CONFIG,
        }
        print(
            f"fan-out by transport: {a.subscribers} subscribers, {a.rate:g} publications/s "
            f"({a.batch} per request), {a.seconds:g} s windows, {a.rounds} round(s); commit {commit[:10]}",
            file=sys.stderr,
            flush=True,
        )
        raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for name in names:
                r = run_one(name, tree, a, config=config, logdir=tmp)
                r["round"] = rnd + 1
                raw[name].append(r)
        summary = {n: summarize(raw[n]) for n in names}
        server_logs = {p.name: p.read_text()[-2000:] for p in tmp.glob("*.server.log") if p.stat().st_size}
    ws = summary.get("websocket", {})
    ratios = {
        n: {
            "deliveries_per_s": round(s["deliveries_per_s"] / ws["deliveries_per_s"], 4),
            "server_cpu_us_per_delivery": round(s["server_cpu_us_per_delivery"] / ws["server_cpu_us_per_delivery"], 4),
        }
        for n, s in summary.items()
        if n != "websocket" and "error" not in s and ws and "error" not in ws
    }
    doc = {"setup": setup, "summary": summary, "ratios_to_websocket": ratios, "runs": raw, "server_logs": server_logs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print()
    print(table(summary))
    print(f"\nresults: {out}")
    return 0 if all("error" not in s for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
