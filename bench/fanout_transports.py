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
WebSocket frame: how many messages one read of the stream returned. The first table shows medians over
the separate runs (one fresh server per transport) and each transport's ratio to WebSocket.

The rotation (``--rotation``, on by default) runs the servers of every transport at once, all on
core 0 with N subscribers each, and publishes to one at a time in turn (1-s phases, 0.25 s after
each for the last deliveries); each HTTP phase's CPU per delivery is divided by the mean of the
WebSocket phases just before and after it. On a shared machine whose load drifts, that median
ratio is the figure to trust. Results: bench/results/fanout_transports.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import statistics
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
    QUIET_SLICE,
    SEQ_MARK,
    SERVER_CORE,
    LoadGen,
    Snap,
    Target,
    _picows_connect,
    delta,
    fmt,
    imported_from,
    machine,
    open_subscribers,
    prepare_after,
    publish_loop,
    raise_nofile,
    run_loadgen,
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


async def run_rotation(gen: LoadGen, names: list[str]) -> dict[str, Any]:
    """Every server at once, publications to one at a time: phases of --slice seconds in turn.

    Each phase publishes to one server at the fixed rate for --slice seconds, then waits --gap
    seconds for the last deliveries; that server's CPU and deliveries are read around the phase.
    A phase of an HTTP transport is compared with the WebSocket phases just before and just after
    it, so slow changes in the machine's load fall on both alike.
    """
    import aiohttp

    a = gen.a
    k_count = len(gen.targets)
    phases: list[dict[str, Any]] = []
    warm = k_count * max(1, round(a.warmup / a.slice / k_count))
    count = k_count * max(1, round(a.seconds / a.slice))
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=24), timeout=aiohttp.ClientTimeout(total=20))
        for _ in gen.targets
    ]
    try:
        for k in range(warm + count):
            which = k % k_count
            before = Snap(gen)
            await publish_loop(gen, gen.targets[which], sessions[which], time.monotonic() + a.slice)
            await asyncio.sleep(a.gap)
            after = Snap(gen)
            if k >= warm:
                d = delta(before, after, which)
                d["transport"] = names[which]
                phases.append(d)
    finally:
        for session in sessions:
            await session.close()
    return {"phases": phases, "phase_seconds": a.slice, "gap_seconds": a.gap}


async def loadgen_main(a: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    gen = LoadGen(a)
    closers: list[Any] = []
    no_timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
    streams = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=no_timeout)
    emulation = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=24), timeout=aiohttp.ClientTimeout(total=20))
    result: dict[str, Any] = {"transports": a.transport}
    try:
        import picows

        clients = {"websocket": f"picows {picows.__version__}", "http": f"aiohttp {aiohttp.__version__}"}
        result["client"] = clients
        result["connect"] = {}
        for target, transport in zip(gen.targets, a.transport, strict=True):
            if transport == "websocket":
                opened = await open_subscribers(gen, _picows_connect(gen), target, closers)
            else:
                connect = _stream_connect(gen, transport, streams, emulation)
                opened = await open_streams(gen, connect, target, transport, closers)
            result["connect"][transport] = opened
            if not target.subs:
                raise SystemExit(f"no {transport} subscriber connected: {dict(gen.errors.most_common(3))}")
        n = len(gen.targets[0].subs)
        result.update({"subscribers": n, "subscribers_json": n, "subscribers_protobuf": 0})
        await asyncio.sleep(0.5)  # let the last subscribes settle
        if len(gen.targets) == 1:
            result.update(await run_single(gen, gen.targets[0]))
        else:
            result["rotation"] = await run_rotation(gen, a.transport)
        for _ in range(100):  # bounded drain (5 s): every subscriber should get every accepted publication
            if all(s.n >= t.published for t in gen.targets for s in t.subs):
                break
            await asyncio.sleep(0.05)
        result["published_total"] = sum(t.published for t in gen.targets)
        result["lost"] = sum(t.lost() for t in gen.targets)
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
    p.add_argument("--target", action="append", required=True, help="PORT:PID of a server (several: a rotation)")
    p.add_argument("--transport", action="append", choices=TRANSPORTS, required=True, help="one per --target")
    p.add_argument("--subscribers", type=int, default=1000, help="per server")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (per server in a rotation)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--slice", type=float, default=1.0, help="seconds per slice of the window / per rotation phase")
    p.add_argument("--gap", type=float, default=0.25, help="rotation: seconds after each phase for the last deliveries")
    p.add_argument("--ramp-timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    if len(a.target) != len(a.transport) or len(a.target) > len(TRANSPORTS):
        p.error("one --transport per --target")
    a.protobuf_share, a.ab = 0.0, False
    a.seconds, a.warmup, a.ramp_timeout = min(a.seconds, 120.0), min(a.warmup, 30.0), min(a.ramp_timeout, 120.0)
    a.slice, a.gap = max(0.2, min(a.slice, 10.0)), max(0.05, min(a.gap, 2.0))
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


def run_one(names: list[str], tree: Path, a: argparse.Namespace, *, config: Path, logdir: Path) -> dict[str, Any]:
    """Fresh server(s), one per transport, pinned to core 0; the load generator pinned to core 1."""
    busy_before = wait_quiet(a.quiet_wait)
    servers: list[tuple[subprocess.Popen[bytes], int]] = []
    t0 = time.monotonic()
    label = "rotation" if len(names) > 1 else names[0]
    log_path = logdir / f"{label}.server.log"
    with open(log_path, "ab") as log:
        try:
            for _ in names:
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
                servers.append((srv, port))
            for srv, port in servers:
                if not wait_listening(port, srv):
                    return {"error": f"server did not start (exit {srv.poll()}): {log_path.read_text()[-300:]}"}
            time.sleep(0.3)
            gen_argv = [
                "taskset", "-c", LOADGEN_CORE, PY, str(Path(__file__).resolve()), "loadgen",
                *(x for (srv, port), name in zip(servers, names, strict=True)
                  for x in ("--target", f"{port}:{srv.pid}", "--transport", name)),
                "--subscribers", str(a.subscribers), "--rate", str(a.rate), "--batch", str(a.batch),
                "--seconds", str(a.seconds), "--warmup", str(a.warmup),
            ]  # fmt: skip
            limit = (60 + 2 * (a.warmup + a.seconds)) * len(names) + 30
            result = run_loadgen(gen_argv, BENCH, limit)
            if "error" in result:
                return result
            result["machine_busy_before"] = busy_before
            exited = [srv.returncode for srv, _ in servers if srv.poll() is not None]
            if exited:
                result["server_exited"] = exited
            return result
        finally:
            for srv, _ in servers:
                stop(srv)
            print(f"  {label:<12} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)


def summarize_rotation(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per transport: totals over its phases, and each HTTP phase ÷ the WebSocket phases around it."""
    ok = [r for r in rows if "error" not in r and "rotation" in r]
    if not ok:
        return {"error": rows[-1].get("error", "no run") if rows else "no run"}
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [ph for r in ok for ph in r["rotation"]["phases"] if ph["transport"] == name]
        n = sum(ph["deliveries"] for ph in mine)
        sched = sum(ph["server_sched_cpu_s"] for ph in mine)
        stat = sum(ph["server_cpu_s"] for ph in mine)
        reads = sum(ph["frames"] for ph in mine)
        seconds = len(mine) * ok[0]["rotation"]["phase_seconds"]
        per[name] = {
            "phases": len(mine),
            "deliveries": n,
            "deliveries_per_s_in_phase": round(n / seconds, 1) if seconds else None,
            "server_sched_cpu_us_per_delivery": round(sched / n * 1e6, 3) if n else None,
            "server_cpu_us_per_delivery": round(stat / n * 1e6, 3) if n else None,
            "deliveries_per_frame": round(n / reads, 2) if reads else None,
            "seq_marks_match": sum(ph["marks"] for ph in mine) == n,
        }
    if "websocket" in names:
        for name in names:
            if name == "websocket":
                continue
            pairs, quiet = [], []
            for r in ok:
                phases = r["rotation"]["phases"]
                for i, ph in enumerate(phases):
                    if ph["transport"] != name or not ph["deliveries"]:
                        continue
                    near = [
                        q
                        for q in (phases[i - 1 - j] if i - 1 - j >= 0 else None for j in range(len(names)))
                        if q is not None and q["transport"] == "websocket" and q["deliveries"]
                    ]
                    near += [
                        q
                        for q in (phases[i + 1 + j] if i + 1 + j < len(phases) else None for j in range(len(names)))
                        if q is not None and q["transport"] == "websocket" and q["deliveries"]
                    ]
                    if not near:
                        continue
                    base = statistics.mean(q["server_cpu_us_per_delivery"] for q in near)
                    pairs.append(ph["server_cpu_us_per_delivery"] / base)
                    if all(q["other_cpu_util"] <= QUIET_SLICE for q in (ph, *near)):
                        quiet.append(ph["server_cpu_us_per_delivery"] / base)
            per[name]["cpu_ratio_to_websocket_median_pair"] = round(statistics.median(pairs), 3) if pairs else None
            per[name]["cpu_ratio_pairs"] = len(pairs)
            per[name]["cpu_ratio_to_websocket_median_quiet_pair"] = (
                round(statistics.median(quiet), 3) if quiet else None
            )
            per[name]["cpu_ratio_quiet_pairs"] = len(quiet)
    others = [ph["other_cpu_util"] for r in ok for ph in r["rotation"]["phases"]]
    return {
        "rounds": len(ok),
        "per_transport": per,
        "other_cpu_util_median": round(statistics.median(others), 3) if others else None,
        "lost": sum(r.get("lost", 0) for r in ok),
        "missed": sum(r.get("missed", 0) for r in ok),
        "pub_errors": sum(r.get("pub_errors", 0) for r in ok),
    }


def rotation_table(s: dict[str, Any]) -> str:
    if "error" in s:
        return f"rotation: error: {s['error'][:200]}"
    lines = [
        "| rotation | server CPU µs / delivery (schedstat) | utime+stime µs / delivery | ÷ WebSocket, median of "
        "neighbouring phases | ÷ WebSocket, quiet pairs | deliveries/s in its phases | deliveries / frame or read |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in s["per_transport"].items():
        if name == "websocket":
            pair_text, quiet_text = "x1", "-"
        else:
            pair_text = f"x{fmt(t.get('cpu_ratio_to_websocket_median_pair'), 3)} ({t.get('cpu_ratio_pairs')} pairs)"
            quiet_text = (
                f"x{fmt(t.get('cpu_ratio_to_websocket_median_quiet_pair'), 3)} ({t.get('cpu_ratio_quiet_pairs')})"
            )
        lines.append(
            f"| {name} | {fmt(t['server_sched_cpu_us_per_delivery'], 3)} | {fmt(t['server_cpu_us_per_delivery'], 3)} "
            f"| {pair_text} | {quiet_text} "
            f"| {fmt(t['deliveries_per_s_in_phase'])} | {fmt(t['deliveries_per_frame'], 2)} |"
        )
    lines.append(
        f"\nother processes used a median {s['other_cpu_util_median']} cores during the phases; "
        f"lost {s['lost']}, missed {s['missed']}, publish errors {s['pub_errors']}"
    )
    return "\n".join(lines)


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
    p.add_argument(
        "--rotation", choices=("yes", "no", "only"), default="yes",
        help="also run every transport's server at once, publishing to one at a time in turn (the ratio to trust)",
    )  # fmt: skip
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
        separate = names if a.rotation != "only" else []
        rotate = a.rotation != "no" and len(names) > 1
        raw: dict[str, list[dict[str, Any]]] = {n: [] for n in separate}
        raw_rotation: list[dict[str, Any]] = []
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for name in separate:
                r = run_one([name], tree, a, config=config, logdir=tmp)
                r["round"] = rnd + 1
                raw[name].append(r)
            if rotate:
                r = run_one(names, tree, a, config=config, logdir=tmp)
                r["round"] = rnd + 1
                raw_rotation.append(r)
        summary = {n: summarize(raw[n]) for n in separate}
        rotation = summarize_rotation(raw_rotation, names) if rotate else None
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
    doc = {
        "setup": setup,
        "summary": summary,
        "ratios_to_websocket": ratios,
        "rotation": rotation,
        "runs": raw,
        "rotation_runs": raw_rotation,
        "server_logs": server_logs,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if summary:
        print()
        print(table(summary))
    if rotation is not None:
        print()
        print(rotation_table(rotation))
    print(f"\nresults: {out}")
    failed = any("error" in s for s in summary.values()) or (rotation is not None and "error" in rotation)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
