"""Fan-out by wire format: JSON, Protobuf, and half/half on one channel; JSON before the engine change.

    .venv/bin/python bench/fanout_formats.py                  # 1000 subscribers, 10 s windows, 3 rounds (~5 min)
    .venv/bin/python bench/fanout_formats.py --quick          # a smoke run (200 subscribers, 3 s, 1 round)
    .venv/bin/python bench/fanout_formats.py --runs json,protobuf --subscribers 5000 --rounds 1

One invocation runs, on fresh servers, round after round, each of:

* ``json-before``: every subscriber speaks the Centrifugo JSON protocol, against the commit before
  the engine change (``--before-commit``, default f628758), served from a git worktree
  (``--before-dir``, default /tmp/tl-before, created with ``git worktree add`` when missing)
  with its own ``PYTHONPATH=<worktree>/src``;
* ``json``: the same against the current code;
* ``protobuf``: every subscriber asks for the ``centrifuge-protobuf`` subprotocol (binary frames,
  each message prefixed by its uvarint length);
* ``mixed``: even subscribers JSON, odd ones Protobuf, all on the same channel;
* ``json-ab``: the before and the current server side by side (both on core 0, N JSON
  subscribers each); publications go to one server at a time in alternating phases of ``--slice``
  (1 s, then 0.25 s for the last deliveries), and each current-code phase is compared with the
  before-phases on either side of it. On a shared machine whose load drifts, this is the
  before/after figure to trust: both servers see the same conditions within a second or two.

The current code is served from ``git archive <--after-commit>`` (default HEAD) unpacked into a
temporary directory, not from the live work tree, so edits in progress in src/ do not leak into the
figures (``--after-commit worktree`` serves the live src/ instead).

Each server is ``python -m trunkline serve`` (memory broker, insecure clients, ``http_api`` key, the
namespace-less channel ``bench`` without history) pinned with ``taskset -c 0``; the load generator
(this file's ``loadgen`` subcommand) is pinned with ``taskset -c 1``; everything is on 127.0.0.1.
Clients are raw WebSockets (picows if installed, else aiohttp) that send ``connect`` and
``subscribe`` themselves: JSON lines, or Protobuf ``Command`` messages from centrifuge-python's
generated ``client_pb2``, each with a uvarint length prefix.  Receiving only counts: JSON counts
lines (server pings ``{}`` answered with ``{}``), Protobuf walks the varint length prefixes (ping =
the empty message ``0x00``, answered with the empty Command ``0x00``).  As a cross-check the bytes
``"seq":`` of the publication data are counted too and must equal the message count.

Publications go through the server API at a fixed rate (``--rate`` publications/s, ``--batch`` of
them per ``POST /api/batch``, or ``POST /api/publish`` with ``--batch 1``), 100-byte JSON data, open
loop, for ``--warmup`` + ``--seconds`` seconds; the window is the last ``--seconds``.  Reported per
run: deliveries/s counted at the clients (per format for ``mixed``), server CPU per delivery
(utime+stime from /proc/<pid>/stat over the window, as bench/run.py reads it; and the median over
the window's quiet 1-s slices, from /proc/<pid>/task/*/schedstat, where other processes used under
0.05 cores), deliveries per frame, and the load generator's CPU.  The table shows medians over the
rounds.  Results: bench/results/fanout_formats.json (and the tables on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadgen import machine_busy_seconds, proc_cpu_seconds  # bench/ is on sys.path when run as a script
from run import busy_cores, stop, wait_listening

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SERVER_CORE, LOADGEN_CORE = "0", "1"
CHANNEL = "bench"
API_KEY = "bench"
PAYLOAD_SIZE = 100
SEQ_MARK = b'"seq":'
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTENDED = 0.15  # cores used by other processes during the window
QUIET_SLICE = 0.05  # a slice of the window counts as quiet below this many cores used by others
CONFIG = f"""# bench/fanout_formats.py (generated)
[client]
insecure = true

[http_api]
key = "{API_KEY}"

[channel.without_namespace]
allow_subscribe_for_client = true

[shutdown]
timeout = 1.0

[log]
level = "warning"
"""
# name -> (server trees, share of Protobuf subscribers); two trees: phases alternate between them
RUNS: dict[str, tuple[tuple[str, ...], float]] = {
    "json-before": (("before",), 0.0),
    "json": (("after",), 0.0),
    "protobuf": (("after",), 1.0),
    "mixed": (("after",), 0.5),
    "json-ab": (("before", "after"), 0.0),
}


def make_payload(seq: int, ts: int) -> bytes:
    """The 100-byte JSON publication data ``{"seq":N,"ts":T,"pad":"xx..."}``."""
    head = b'{"seq":%d,"ts":%d,"pad":"' % (seq, ts)
    return head + b"x" * max(0, PAYLOAD_SIZE - len(head) - 2) + b'"}'


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def sched_cpu_ns(pid: int) -> int:
    """Time on CPU of all the threads of a process, in ns (/proc/<pid>/task/*/schedstat, first field)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
            total += int(f.read().split()[0])
    return total


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# =========================================================================== load generator
#
# Runs in its own process, pinned to core 1: ``fanout_formats.py loadgen ...``.


class Sub:
    """One subscriber's protocol state, independent of the WebSocket library."""

    __slots__ = ("error", "frames", "gen", "marks", "n", "on_ready", "protobuf", "ready", "send")

    def __init__(self, gen: LoadGen, protobuf: bool) -> None:
        self.gen = gen
        self.protobuf = protobuf
        self.n = 0  # messages counted after ready (pings excluded)
        self.marks = 0  # b'"seq":' in those frames: must equal n
        self.frames = 0  # frames that carried messages
        self.ready = False
        self.error = ""
        self.send: Any = None  # callable(bytes), set by the transport
        self.on_ready: Any = None

    def hello(self) -> bytes:
        """The connect and subscribe commands, in one frame."""
        if self.protobuf:
            from centrifuge.protocol import client_pb2 as pb

            cmds = (
                pb.Command(id=1, connect=pb.ConnectRequest()).SerializeToString(),
                pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=CHANNEL)).SerializeToString(),
            )
            return b"".join(uvarint(len(c)) + c for c in cmds)
        return b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"%s"}}' % CHANNEL.encode()

    def feed(self, p: bytes) -> None:
        if not self.ready:
            self._handshake(p)
        elif self.protobuf:
            self._count_protobuf(p)
        else:
            self._count_json(p)

    # -- hot path
    def _count_json(self, p: bytes) -> None:
        n = p.count(b"\n") + 1
        if b"{}" in p:  # server ping(s): the publication data never contains "{}"
            pings = sum(1 for line in p.split(b"\n") if line == b"{}")
            n -= pings
            for _ in range(pings):
                self.send(b"{}")
        if n:
            self.n += n
            self.frames += 1
            self.marks += p.count(SEQ_MARK)

    def _count_protobuf(self, p: bytes) -> None:
        pos, end, n = 0, len(p), 0
        while pos < end:
            b = p[pos]
            if b < 0x80:
                size = b
                pos += 1
            else:
                size, pos = read_uvarint(p, pos)
            if size == 0:
                self.send(b"\x00")  # ping -> pong (the empty Command)
            else:
                n += 1
                pos += size
        if n:
            self.n += n
            self.frames += 1
            self.marks += p.count(SEQ_MARK)

    # -- before ready: parse the connect and subscribe replies
    def _handshake(self, p: bytes) -> None:
        if self.protobuf:
            from centrifuge.protocol import client_pb2 as pb

            pos = 0
            while pos < len(p):
                size, pos = read_uvarint(p, pos)
                msg = p[pos : pos + size]
                pos += size
                if not msg:
                    self.send(b"\x00")
                    continue
                r = pb.Reply.FromString(msg)
                if r.HasField("error"):
                    self._fail(f"reply {r.id} error {r.error.code} {r.error.message}")
                elif r.id == 2:
                    self._set_ready()
            return
        for line in p.split(b"\n"):
            if line == b"{}":
                self.send(b"{}")
            elif b'"error"' in line:
                self._fail(f"reply error: {line[:160].decode(errors='replace')}")
            elif line.startswith(b'{"id":2,'):
                self._set_ready()

    def _set_ready(self) -> None:
        self.ready = True
        if self.on_ready is not None:
            self.on_ready()

    def _fail(self, why: str) -> None:
        self.error = why
        self.gen.errors[why] += 1
        if self.on_ready is not None:
            self.on_ready()


class Target:
    """One server under load: its port, its pid, its subscribers."""

    def __init__(self, port: int, pid: int) -> None:
        self.port, self.pid = port, pid
        self.url = f"ws://127.0.0.1:{port}/connection/websocket"
        self.subs: list[Sub] = []
        self.published = 0

    def totals(self) -> dict[str, int]:
        t = {"n": 0, "n_json": 0, "n_protobuf": 0, "marks": 0, "frames": 0}
        for s in self.subs:
            t["n"] += s.n
            t["n_protobuf" if s.protobuf else "n_json"] += s.n
            t["marks"] += s.marks
            t["frames"] += s.frames
        return t

    def lost(self) -> int:
        return sum(max(0, self.published - s.n) for s in self.subs)


class LoadGen:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.targets: list[Target] = []
        for spec in a.target:
            port, pid = spec.split(":")
            self.targets.append(Target(int(port), int(pid)))
        self.errors: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.disconnects = 0
        self.closing = False
        self.seq = 0
        self.pub_errors = 0
        self.missed = 0


# -- picows transport (preferred: callbacks, no task per connection)


def _picows_connect(gen: LoadGen) -> Any:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    text, binary, close = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self, sub: Sub, fut: asyncio.Future[None]) -> None:
            super().__init__()
            self.sub, self.fut = sub, fut
            kind = binary if sub.protobuf else text
            self.transport: WSTransport | None = None
            sub.send = lambda b: self.transport.send(kind, b) if self.transport is not None else None
            sub.on_ready = lambda: fut.done() or fut.set_result(None)

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            transport.send(binary if self.sub.protobuf else text, self.sub.hello())

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            t = frame.msg_type
            if t is text or t is binary:
                self.sub.feed(frame.get_payload_as_bytes())
            elif t is close and not gen.closing:
                gen.close_codes[f"{frame.get_close_code()} {frame.get_close_message()!r}"] += 1

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not gen.closing:
                gen.disconnects += 1
            if not self.fut.done():
                self.fut.set_exception(ConnectionError("disconnected before ready"))

    async def connect(sub: Sub, url: str) -> Any:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        headers = {"Sec-WebSocket-Protocol": "centrifuge-protobuf" if sub.protobuf else "centrifuge-json"}
        transport, _ = await ws_connect(
            lambda: Listener(sub, fut), url, websocket_handshake_timeout=10, extra_headers=headers
        )
        await fut
        return transport.disconnect

    return connect


# -- aiohttp transport (fallback: one reader task per connection)


def _aiohttp_connect(gen: LoadGen, session: Any) -> Any:
    import aiohttp

    tasks: set[asyncio.Task[Any]] = set()

    async def connect(sub: Sub, url: str) -> Any:
        proto = "centrifuge-protobuf" if sub.protobuf else "centrifuge-json"
        ws = await session.ws_connect(url, protocols=(proto,), autoping=True, max_msg_size=0)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        sub.on_ready = lambda: fut.done() or fut.set_result(None)

        def background(coro: Any) -> None:
            task = loop.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        if sub.protobuf:
            sub.send = lambda b: background(ws.send_bytes(b))
            await ws.send_bytes(sub.hello())
        else:
            sub.send = lambda b: background(ws.send_str(b.decode()))
            await ws.send_str(sub.hello().decode())

        async def reader() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    sub.feed(msg.data.encode())
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    sub.feed(msg.data)
                else:
                    break
            if not gen.closing:
                gen.disconnects += 1
                if ws.close_code:
                    gen.close_codes[f"{ws.close_code}"] += 1
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected before ready"))

        background(reader())
        await fut

        def close() -> None:
            background(ws.close())

        return close

    return connect


async def open_subscribers(gen: LoadGen, connect: Any, target: Target, closers: list[Any]) -> dict[str, Any]:
    a = gen.a
    pb_every = 0 if a.protobuf_share <= 0 else round(1 / a.protobuf_share)
    todo = iter(range(a.subscribers))
    failed = 0
    deadline = time.monotonic() + a.ramp_timeout
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal failed
        for i in todo:
            sub = Sub(gen, protobuf=pb_every > 0 and i % pb_every == pb_every - 1)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError("ramp deadline")
                async with asyncio.timeout(min(10.0, remaining)):
                    closers.append(await connect(sub, target.url))
                if sub.error:
                    raise ConnectionError(sub.error)
                target.subs.append(sub)
            except Exception as e:
                failed += 1
                gen.errors[f"connect: {type(e).__name__}: {str(e)[:120]}"] += 1

    await asyncio.gather(*(worker() for _ in range(min(100, a.subscribers))))
    dt = time.perf_counter() - t0
    return {"requested": a.subscribers, "opened": len(target.subs), "failed": failed, "seconds": round(dt, 2)}


async def publish_loop(gen: LoadGen, target: Target, session: Any, end: float) -> None:
    """Open loop: one request every batch/rate seconds; never more than 16 requests in flight."""
    import aiohttp

    a = gen.a
    batch = max(1, a.batch)
    interval = batch / a.rate
    path = "/api/publish" if batch == 1 else "/api/batch"
    url = f"http://127.0.0.1:{target.port}{path}"
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    chan = CHANNEL.encode()
    inflight: set[asyncio.Task[None]] = set()

    async def one() -> None:
        parts = []
        for _ in range(batch):
            gen.seq += 1
            parts.append(b'{"channel":"%s","data":%s}' % (chan, make_payload(gen.seq, time.time_ns())))
        body = parts[0] if batch == 1 else b'{"commands":[%s]}' % b",".join(b'{"publish":%s}' % p for p in parts)
        try:
            async with session.post(url, data=body, headers=headers) as r:
                text = await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            gen.pub_errors += batch
            gen.errors[f"publish: {type(e).__name__}: {str(e)[:120]}"] += 1
            return
        if r.status != 200 or b'"error"' in text:
            gen.pub_errors += batch
            gen.errors[f"publish {r.status}: {text[:160].decode(errors='replace')}"] += 1
            return
        target.published += batch

    next_t = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if next_t > now:
            await asyncio.sleep(next_t - now)
            continue
        if now - next_t > 1.0 or len(inflight) >= 16:  # fell behind: drop this tick, count it
            gen.missed += batch
        else:
            task = asyncio.create_task(one())
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        next_t += interval
    if inflight:
        await asyncio.wait(inflight, timeout=10)


def http_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=24), timeout=aiohttp.ClientTimeout(total=20))


class Snap:
    """Counters at one instant: wall clock, each server's CPU, the load generator's, the machine's."""

    def __init__(self, gen: LoadGen) -> None:
        self.t = time.perf_counter()
        self.sched = [sched_cpu_ns(t.pid) for t in gen.targets]
        self.stat = [proc_cpu_seconds(t.pid) for t in gen.targets]
        self.me = time.process_time()
        self.busy = machine_busy_seconds()
        self.totals = [t.totals() for t in gen.targets]


def delta(a: Snap, b: Snap, k: int) -> dict[str, Any]:
    """What server k did between two snapshots (CPU in schedstat ns precision and utime+stime)."""
    dt = b.t - a.t
    d = {key: b.totals[k][key] - a.totals[k][key] for key in b.totals[k]}
    n = d["n"]
    cpu = (b.sched[k] - a.sched[k]) / 1e9
    stat = b.stat[k] - a.stat[k]
    servers = sum(b.sched[i] - a.sched[i] for i in range(len(b.sched))) / 1e9
    return {
        "seconds": round(dt, 3),
        "deliveries": n,
        "deliveries_json": d["n_json"],
        "deliveries_protobuf": d["n_protobuf"],
        "frames": d["frames"],
        "marks": d["marks"],
        "server_cpu_s": round(stat, 3),
        "server_sched_cpu_s": round(cpu, 6),
        "server_cpu_us_per_delivery": round(cpu / n * 1e6, 4) if n else None,
        "loadgen_cpu_s": round(b.me - a.me, 4),
        "core_busy": [round((y - x) / dt, 3) for x, y in zip(a.busy[1:], b.busy[1:], strict=True)],
        "other_cpu_util": round((b.busy[0] - a.busy[0] - (b.me - a.me) - servers) / dt, 3),
    }


def window_result(w: dict[str, Any], rate: float, subscribers: int) -> dict[str, Any]:
    dt, n = w["seconds"], w["deliveries"]
    return {
        "seconds": dt,
        "offered_deliveries_per_s": round(rate * subscribers, 1),
        "deliveries": n,
        "deliveries_per_s": round(n / dt, 1),
        "deliveries_per_s_json": round(w["deliveries_json"] / dt, 1),
        "deliveries_per_s_protobuf": round(w["deliveries_protobuf"] / dt, 1),
        "deliveries_per_frame": round(n / w["frames"], 2) if w["frames"] else None,
        "seq_marks_match": w["marks"] == n,
        "server_cpu_s": w["server_cpu_s"],
        "server_cpu_util": round(w["server_cpu_s"] / dt, 3),
        # the headline: utime+stime over the whole window, as bench/run.py reads it
        "server_cpu_us_per_delivery": round(w["server_cpu_s"] / n * 1e6, 3) if n else None,
        "server_sched_cpu_us_per_delivery": w["server_cpu_us_per_delivery"],
        "loadgen_cpu_util": round(w["loadgen_cpu_s"] / dt, 3),
        "core_busy": w["core_busy"],
        "other_cpu_util": w["other_cpu_util"],
    }


async def run_single(gen: LoadGen, target: Target) -> dict[str, Any]:
    """One server, publishing at the fixed rate; the window is cut into --slice second slices."""
    a = gen.a
    async with http_session() as session:
        end = time.monotonic() + a.warmup + a.seconds
        pub = asyncio.create_task(publish_loop(gen, target, session, end))
        await asyncio.sleep(a.warmup)
        first = prev = Snap(gen)
        slices = []
        stop_at = first.t + a.seconds
        while (remaining := stop_at - time.perf_counter()) > 0.01:
            await asyncio.sleep(min(a.slice, remaining))
            cur = Snap(gen)
            sl = delta(prev, cur, 0)
            slices.append({k: sl[k] for k in ("seconds", "deliveries", "server_cpu_us_per_delivery", "other_cpu_util")})
            prev = cur
        result = window_result(delta(first, prev, 0), a.rate, len(target.subs))
        result["slices"] = slices
        await asyncio.wait_for(pub, timeout=30)
    return result


async def run_ab(gen: LoadGen) -> dict[str, Any]:
    """Two servers, publishing to one at a time in alternating phases of --slice seconds.

    Each phase publishes to one server at the fixed rate for --slice seconds, then waits --gap
    seconds for the last deliveries; that server's CPU and deliveries are read around the phase.
    Slow changes in the machine's load fall on both servers alike.
    """
    a = gen.a
    phases: list[dict[str, Any]] = []
    warm = 2 * max(1, round(a.warmup / a.slice / 2))
    count = 2 * max(1, round(a.seconds / a.slice))
    async with http_session() as s0, http_session() as s1:
        sessions = (s0, s1)
        for k in range(warm + count):
            which = k % 2
            t = gen.targets[which]
            before = Snap(gen)
            await publish_loop(gen, t, sessions[which], time.monotonic() + a.slice)
            await asyncio.sleep(a.gap)
            after = Snap(gen)
            if k >= warm:
                d = delta(before, after, which)
                d["target"] = which
                d["idle_server_cpu_s"] = round((after.sched[1 - which] - before.sched[1 - which]) / 1e9, 6)
                phases.append(d)
    per_target = []
    for which in (0, 1):
        mine = [p for p in phases if p["target"] == which]
        n = sum(p["deliveries"] for p in mine)
        cpu = sum(p["server_sched_cpu_s"] for p in mine)
        stat = sum(p["server_cpu_s"] for p in mine)
        frames = sum(p["frames"] for p in mine)
        per_target.append(
            {
                "phases": len(mine),
                "deliveries": n,
                "seq_marks_match": sum(p["marks"] for p in mine) == n,
                "deliveries_per_s_in_phase": round(n / (len(mine) * a.slice), 1) if mine else None,
                "deliveries_per_frame": round(n / frames, 2) if frames else None,
                "server_sched_cpu_us_per_delivery": round(cpu / n * 1e6, 4) if n else None,
                "server_cpu_us_per_delivery": round(stat / n * 1e6, 3) if n else None,
            }
        )
    return {"phases": phases, "per_target": per_target, "phase_seconds": a.slice, "gap_seconds": a.gap}


async def loadgen_main(a: argparse.Namespace) -> dict[str, Any]:
    gen = LoadGen(a)
    session = None
    try:
        import picows

        connect = _picows_connect(gen)
        client = f"picows {picows.__version__}"
    except ImportError:
        import aiohttp

        session = aiohttp.ClientSession()
        connect = _aiohttp_connect(gen, session)
        client = f"aiohttp {aiohttp.__version__}"
    result: dict[str, Any] = {"client": client}
    closers: list[Any] = []
    try:
        result["connect"] = [await open_subscribers(gen, connect, t, closers) for t in gen.targets]
        if any(not t.subs for t in gen.targets):
            raise SystemExit(f"no subscriber connected: {dict(gen.errors.most_common(3))}")
        subs = gen.targets[0].subs
        n_pb = sum(1 for s in subs if s.protobuf)
        result.update({"subscribers": len(subs), "subscribers_json": len(subs) - n_pb, "subscribers_protobuf": n_pb})
        await asyncio.sleep(0.5)  # let the last subscribes settle
        if a.ab:
            result["ab"] = await run_ab(gen)
        else:
            result.update(await run_single(gen, gen.targets[0]))
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
        if session is not None:
            await session.close()
    result.update(
        {
            "disconnects": gen.disconnects,
            "close_codes": dict(gen.close_codes.most_common(5)),
            "errors": dict(gen.errors.most_common(8)),
        }
    )
    return result


def loadgen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fanout_formats.py loadgen")
    p.add_argument("--target", action="append", required=True, help="PORT:PID of a server (twice with --ab)")
    p.add_argument("--ab", action="store_true", help="alternate phases between two targets")
    p.add_argument("--subscribers", type=int, default=1000, help="per target")
    p.add_argument("--protobuf-share", type=float, default=0.0, help="0, 0.5 (every other one) or 1")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (per target with --ab)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--slice", type=float, default=1.0, help="seconds per slice of the window / per --ab phase")
    p.add_argument("--gap", type=float, default=0.25, help="--ab: seconds after each phase for the last deliveries")
    p.add_argument("--ramp-timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    a.seconds, a.warmup, a.ramp_timeout = min(a.seconds, 120.0), min(a.warmup, 30.0), min(a.ramp_timeout, 120.0)
    a.slice, a.gap = max(0.2, min(a.slice, 10.0)), max(0.05, min(a.gap, 2.0))
    if a.ab != (len(a.target) == 2) or len(a.target) > 2:
        p.error("one --target, or two with --ab")
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


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


def prepare_before(commit: str, where: Path) -> Path:
    """A worktree of the commit before the engine change (created when missing)."""
    want = git("rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    if not where.exists():
        git("worktree", "add", "--detach", str(where), want)
    have = git("rev-parse", "HEAD", cwd=where).strip()
    if have != want:
        raise SystemExit(f"{where} is at {have[:10]}, not {want[:10]}: remove it or pass --before-dir")
    return where


def prepare_after(commit: str, tmp: Path) -> tuple[Path, str]:
    """src/ of the commit under test, unpacked from git archive (or the live work tree)."""
    if commit == "worktree":
        dirty = bool(git("status", "--porcelain", "--", "src").strip())
        return ROOT, git("rev-parse", "HEAD").strip() + ("+dirty" if dirty else "")
    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    dest = tmp / "after"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, check=True, capture_output=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return dest, sha


def server_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    return env


def imported_from(tree: Path) -> str:
    out = subprocess.run(
        [PY, "-c", "import trunkline; print(trunkline.__file__)"],
        check=False,
        cwd=tree,
        env=server_env(tree),
        capture_output=True,
        text=True,
        timeout=30,
    )
    path = out.stdout.strip()
    if not path.startswith(str(tree / "src")):
        raise SystemExit(f"trunkline from {tree} imports {path!r}: {out.stderr[-300:]}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_quiet(max_wait: float, threshold: float = 0.2) -> float:
    """Wait (bounded) until the machine uses less than `threshold` cores; return the last reading."""
    end = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > threshold and time.monotonic() < end:
        busy = busy_cores()
    return round(busy, 2)


def run_one(
    name: str, trees: list[Path], share: float, a: argparse.Namespace, *, config: Path, logdir: Path
) -> dict[str, Any]:
    """Fresh server(s) pinned to core 0, the load generator pinned to core 1; everything stopped at the end."""
    busy_before = wait_quiet(a.quiet_wait)
    servers: list[tuple[subprocess.Popen[bytes], int]] = []
    logs = []
    t0 = time.monotonic()
    try:
        for k, tree in enumerate(trees):
            port = free_port()
            log_path = logdir / f"{name}.{k}.server.log"
            log = open(log_path, "ab")  # noqa: SIM115 - closed in finally
            logs.append(log)
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
                return {"error": f"server did not start (exit {srv.poll()}); see the server logs in the JSON"}
        time.sleep(0.3)
        gen_argv = [
            "taskset", "-c", LOADGEN_CORE, PY, str(Path(__file__).resolve()), "loadgen",
            *(x for srv, port in servers for x in ("--target", f"{port}:{srv.pid}")),
            *(("--ab",) if len(servers) == 2 else ()),
            "--subscribers", str(a.subscribers), "--protobuf-share", str(share), "--rate", str(a.rate),
            "--batch", str(a.batch), "--seconds", str(a.seconds), "--warmup", str(a.warmup),
        ]  # fmt: skip
        limit = 60 * len(servers) + 2 * (a.warmup + a.seconds) * len(servers) + 30
        result = run_loadgen(gen_argv, ROOT, limit)
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
        for log in logs:
            log.close()
        print(f"  {name:<12} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)


def run_loadgen(argv: list[str], cwd: Path, limit: float) -> dict[str, Any]:
    """Run a load generator (its own process group) to its end, at most ``limit`` seconds.

    Its last stdout line is its JSON result; a timeout or a failure is ``{"error": ...}``.
    Shared by the benchmarks that drive a ``loadgen`` subcommand of their own script.
    """
    gen = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = gen.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"load generator timed out after {limit:.0f} s"}
    finally:
        stop(gen)
    if gen.returncode != 0:
        return {"error": f"load generator exit {gen.returncode}: {err.decode(errors='replace')[-600:]}"}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"error": rows[-1].get("error", "no run") if rows else "no run"}
    keys = (
        "deliveries_per_s",
        "deliveries_per_s_json",
        "deliveries_per_s_protobuf",
        "server_cpu_us_per_delivery",
        "server_sched_cpu_us_per_delivery",
        "server_cpu_util",
        "deliveries_per_frame",
        "loadgen_cpu_util",
        "other_cpu_util",
    )
    s: dict[str, Any] = {k: median(ok, k) for k in keys}
    pooled = [x for r in ok for x in r.get("slices", ()) if x["server_cpu_us_per_delivery"] is not None]
    calm = [x["server_cpu_us_per_delivery"] for x in pooled if x["other_cpu_util"] <= QUIET_SLICE]
    s["quiet_slice_cpu_us_per_delivery"] = round(statistics.median(calm), 3) if calm else None
    s["quiet_slices"] = f"{len(calm)}/{len(pooled)}"
    s["rounds"] = len(ok)
    s["offered_deliveries_per_s"] = ok[0]["offered_deliveries_per_s"]
    s["subscribers_json"] = ok[0]["subscribers_json"]
    s["subscribers_protobuf"] = ok[0]["subscribers_protobuf"]
    s["server_cpu_us_per_delivery_by_round"] = [r.get("server_cpu_us_per_delivery") for r in ok]
    s["other_cpu_util_by_round"] = [r.get("other_cpu_util") for r in ok]
    s["lost"] = sum(r.get("lost", 0) for r in ok)
    s["missed"] = sum(r.get("missed", 0) for r in ok)
    s["pub_errors"] = sum(r.get("pub_errors", 0) for r in ok)
    s["seq_marks_match"] = all(r.get("seq_marks_match") for r in ok)
    s["contended_rounds"] = sum(1 for r in ok if r.get("other_cpu_util", 0) > CONTENDED)
    s["loadgen_bound_rounds"] = sum(1 for r in ok if r.get("loadgen_cpu_util", 0) > 0.9)
    return s


def summarize_ab(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Phases alternate before (0) and after (1); each after-phase is compared with the mean of the
    before-phases on either side of it, so a steady drift in the machine's load cancels out."""
    ok = [r for r in rows if "error" not in r and "ab" in r]
    if not ok:
        return {"error": rows[-1].get("error", "no run") if rows else "no run"}
    ratios, quiet = [], []
    totals = {0: [0.0, 0.0, 0], 1: [0.0, 0.0, 0]}  # sched cpu, stat cpu, deliveries
    for r in ok:
        phases = r["ab"]["phases"]
        for ph in phases:
            t = totals[ph["target"]]
            t[0] += ph["server_sched_cpu_s"]
            t[1] += ph["server_cpu_s"]
            t[2] += ph["deliveries"]
        for i, ph in enumerate(phases):
            if ph["target"] != 1 or not ph["deliveries"]:
                continue
            near = [phases[j] for j in (i - 1, i + 1) if 0 <= j < len(phases) and phases[j]["deliveries"]]
            if not near:
                continue
            base = statistics.mean(q["server_cpu_us_per_delivery"] for q in near)
            ratios.append(ph["server_cpu_us_per_delivery"] / base)
            if all(q["other_cpu_util"] <= QUIET_SLICE for q in (ph, *near)):
                quiet.append(ph["server_cpu_us_per_delivery"] / base)

    def per(k: int, i: int) -> float | None:
        return round(totals[k][i] / totals[k][2] * 1e6, 3) if totals[k][2] else None

    return {
        "rounds": len(ok),
        "before_sched_cpu_us_per_delivery": per(0, 0),
        "after_sched_cpu_us_per_delivery": per(1, 0),
        "before_cpu_us_per_delivery": per(0, 1),
        "after_cpu_us_per_delivery": per(1, 1),
        "deliveries_per_s_in_phase": [t["deliveries_per_s_in_phase"] for t in ok[-1]["ab"]["per_target"]],
        "deliveries_per_frame": [t["deliveries_per_frame"] for t in ok[-1]["ab"]["per_target"]],
        "seq_marks_match": all(t["seq_marks_match"] for r in ok for t in r["ab"]["per_target"]),
        "pairs": len(ratios),
        "median_pair_ratio": round(statistics.median(ratios), 4) if ratios else None,
        "pair_ratio_p25_p75": (
            [round(x, 4) for x in statistics.quantiles(ratios, n=4)[::2]] if len(ratios) >= 4 else None
        ),
        "quiet_pairs": len(quiet),
        "median_quiet_pair_ratio": round(statistics.median(quiet), 4) if quiet else None,
        "lost": sum(r.get("lost", 0) for r in ok),
        "missed": sum(r.get("missed", 0) for r in ok),
        "pub_errors": sum(r.get("pub_errors", 0) for r in ok),
    }


def fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return f"{v:,.{nd}f}"
    return str(v)


def table(summary: dict[str, dict[str, Any]], commits: dict[str, str]) -> str:
    lines = [
        "| run | server code | subscribers (JSON / Protobuf) | offered deliveries/s | deliveries/s | JSON deliveries/s "
        "| Protobuf deliveries/s | server CPU | server CPU µs / delivery | µs / delivery, quiet 1-s slices "
        "| deliveries / frame | loadgen CPU | lost | flags |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in summary.items():
        if name == "json-ab":
            continue
        code = commits["before" if name == "json-before" else "after"][:10]
        if "error" in s:
            lines.append(f"| {name} | {code} | error: {s['error'][:120]} |")
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
            f"| {name} | {code} | {s['subscribers_json']:,} / {s['subscribers_protobuf']:,} "
            f"| {fmt(s['offered_deliveries_per_s'])} | {fmt(s['deliveries_per_s'])} "
            f"| {fmt(s['deliveries_per_s_json'])} | {fmt(s['deliveries_per_s_protobuf'])} "
            f"| {fmt(100 * s['server_cpu_util'])}% | {fmt(s['server_cpu_us_per_delivery'], 3)} "
            f"| {fmt(s['quiet_slice_cpu_us_per_delivery'], 3)} ({s['quiet_slices']}) "
            f"| {fmt(s['deliveries_per_frame'], 2)} | {fmt(100 * s['loadgen_cpu_util'])}% | {s['lost']:,} "
            f"| {', '.join(flags)} |"
        )
    return "\n".join(lines)


def comparison(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON after ÷ before: from the separate runs, and from the alternating run (json-ab)."""
    out: dict[str, Any] = {}
    b, j = summary.get("json-before", {}), summary.get("json", {})
    if b and j and "error" not in b and "error" not in j:
        qb, qj = b["quiet_slice_cpu_us_per_delivery"], j["quiet_slice_cpu_us_per_delivery"]
        out["separate_runs"] = {
            "deliveries_per_s": round(j["deliveries_per_s"] / b["deliveries_per_s"], 4),
            "cpu_per_delivery": round(j["server_cpu_us_per_delivery"] / b["server_cpu_us_per_delivery"], 4),
            "cpu_per_delivery_quiet_slices": round(qj / qb, 4) if qb and qj else None,
        }
    ab = summary.get("json-ab", {})
    if ab and "error" not in ab:
        out["alternating"] = {
            "cpu_per_delivery_median_pair": ab["median_pair_ratio"],
            "cpu_per_delivery_median_quiet_pair": ab["median_quiet_pair_ratio"],
            "cpu_per_delivery_totals": round(
                ab["after_sched_cpu_us_per_delivery"] / ab["before_sched_cpu_us_per_delivery"], 4
            ),
            "pairs": ab["pairs"],
            "quiet_pairs": ab["quiet_pairs"],
        }
        best = ab["median_quiet_pair_ratio"] if ab["quiet_pairs"] >= 10 else ab["median_pair_ratio"]
        out["verdict_ratio"] = best
        out["within_5_percent"] = best is not None and best <= 1.05
    return out


def comparison_text(cmp: dict[str, Any]) -> str:
    lines = []
    sep = cmp.get("separate_runs")
    if sep:
        lines.append(
            f"JSON after ÷ before, separate runs: deliveries/s x{sep['deliveries_per_s']:.3f}, server CPU per "
            f"delivery x{sep['cpu_per_delivery']:.3f} (whole windows), "
            f"x{fmt(sep['cpu_per_delivery_quiet_slices'], 3)} (quiet 1-s slices)"
        )
    alt = cmp.get("alternating")
    if alt:
        lines.append(
            f"JSON after ÷ before, alternating phases on both servers (json-ab): server CPU per delivery "
            f"x{fmt(alt['cpu_per_delivery_median_pair'], 3)} (median of {alt['pairs']} pairs), "
            f"x{fmt(alt['cpu_per_delivery_median_quiet_pair'], 3)} (median of {alt['quiet_pairs']} quiet pairs), "
            f"x{fmt(alt['cpu_per_delivery_totals'], 3)} (totals) -> "
            f"{'within' if cmp['within_5_percent'] else 'NOT within'} 5 %"
        )
    return "\n".join(lines)


def ab_table(s: dict[str, Any], commits: dict[str, str]) -> str:
    if "error" in s:
        return f"json-ab: error: {s['error'][:200]}"
    return "\n".join(
        [
            "| json-ab | server code | server CPU µs / delivery (schedstat) | utime+stime µs / delivery "
            "| deliveries/s in its phases | deliveries / frame |",
            "|---|---|---:|---:|---:|---:|",
            f"| before | {commits['before'][:10]} | {fmt(s['before_sched_cpu_us_per_delivery'], 3)} "
            f"| {fmt(s['before_cpu_us_per_delivery'], 3)} | {fmt(s['deliveries_per_s_in_phase'][0])} "
            f"| {fmt(s['deliveries_per_frame'][0], 2)} |",
            f"| after | {commits['after'][:10]} | {fmt(s['after_sched_cpu_us_per_delivery'], 3)} "
            f"| {fmt(s['after_cpu_us_per_delivery'], 3)} | {fmt(s['deliveries_per_s_in_phase'][1])} "
            f"| {fmt(s['deliveries_per_frame'][1], 2)} |",
        ]
    )


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for mod in ("aiohttp", "uvloop", "msgspec", "picows", "google.protobuf"):
        out = subprocess.run(
            [PY, "-c", f"import {mod} as m; print(getattr(m, '__version__', '?'))"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        versions[mod] = out.stdout.strip() or "not installed"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadgen"]:
        return loadgen(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (per server for json-ab)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of publishing before the window")
    p.add_argument("--rate", type=float, default=200.0, help="publications/s (offered deliveries = rate x N)")
    p.add_argument("--batch", type=int, default=10, help="publications per POST /api/batch (1: POST /api/publish)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    p.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}")
    p.add_argument("--before-commit", default="f628758")
    p.add_argument("--before-dir", default="/tmp/tl-before")
    p.add_argument("--after-commit", default="HEAD", help="commit to serve as the current code, or 'worktree'")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max seconds to wait for an idle machine per run")
    p.add_argument("--out", default=str(BENCH / "results" / "fanout_formats.json"))
    p.add_argument("--quick", action="store_true", help="200 subscribers, 3 s, 1 round (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.subscribers, a.seconds, a.warmup, a.rounds = min(a.subscribers, 200), 3.0, 1.0, 1
    a.seconds, a.rounds = min(a.seconds, 60.0), max(1, min(a.rounds, 10))
    a.quiet_wait = max(0.0, min(a.quiet_wait, 120.0))
    names = [n for n in a.runs.split(",") if n]
    unknown = set(names) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown runs: {sorted(unknown)}")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (util-linux)")
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="fanout-formats-") as tmpname:
        tmp = Path(tmpname)
        config = tmp / "trunkline.toml"
        config.write_text(CONFIG)
        trees: dict[str, Path] = {}
        commits: dict[str, str] = {"before": "-", "after": "-"}
        if any("before" in RUNS[n][0] for n in names):
            trees["before"] = prepare_before(a.before_commit, Path(a.before_dir))
            commits["before"] = git("rev-parse", "HEAD", cwd=trees["before"]).strip()
        trees["after"], commits["after"] = prepare_after(a.after_commit, tmp)
        imports = {k: imported_from(t) for k, t in trees.items()}
        setup = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "argv": sys.argv[1:],
            "machine": machine(),
            "server": "python -m trunkline serve (memory broker) under taskset -c 0",
            "loadgen": "bench/fanout_formats.py loadgen under taskset -c 1",
            "subscribers": a.subscribers,
            "rate_publications_per_s": a.rate,
            "batch": a.batch,
            "publish_path": "/api/publish" if a.batch == 1 else "/api/batch",
            "seconds": a.seconds,
            "warmup": a.warmup,
            "rounds": a.rounds,
            "payload_bytes": PAYLOAD_SIZE,
            "commits": commits,
            "trunkline_imported_from": imports,
            "config": CONFIG,
        }
        print(
            f"fan-out by format: {a.subscribers} subscribers, {a.rate:g} publications/s "
            f"({a.batch} per request), {a.seconds:g} s windows, {a.rounds} round(s); "
            f"after={commits['after'][:10]} before={commits['before'][:10]}",
            file=sys.stderr,
            flush=True,
        )
        raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for name in names:
                which, share = RUNS[name]
                r = run_one(name, [trees[w] for w in which], share, a, config=config, logdir=tmp)
                r["round"] = rnd + 1
                raw[name].append(r)
        summary = {n: summarize_ab(raw[n]) if n == "json-ab" else summarize(raw[n]) for n in names}
        server_logs = {p.name: p.read_text()[-2000:] for p in tmp.glob("*.server.log") if p.stat().st_size}
    cmp = comparison(summary)
    doc = {"setup": setup, "summary": summary, "before_after_json": cmp, "runs": raw, "server_logs": server_logs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print()
    print(table(summary, commits))
    if "json-ab" in summary:
        print()
        print(ab_table(summary["json-ab"], commits))
    if cmp:
        print()
        print(comparison_text(cmp))
    print(f"\nresults: {out}")
    return 0 if all("error" not in s for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
