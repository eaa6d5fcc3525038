"""One load generator for Trunkline and its peers (issue 6).

Runs on one core (``taskset -c 1``), on uvloop, with picows WebSocket clients.
It speaks three protocols:

* ``centrifugo``: Trunkline's Centrifugo JSON protocol at ``/connection/websocket``;
  ``{"id":1,"connect":{}}`` then ``{"id":2,"subscribe":{"channel":"bench"}}``; answers
  server pings ``{}`` with ``{}``; frames may hold several ``\\n``-separated messages.
  Publications go through ``POST /api/publish`` (``X-API-Key``) or, with
  ``--publish ws``, through client-side ``publish`` commands on one extra connection.
* ``ws``: the Node ``ws`` peer (``/ws``): every text frame from the server is a publication;
  ``POST /publish`` broadcasts; a client message is echoed back.
* ``sio``: raw Engine.IO v4 / Socket.IO v5 over WebSocket
  (``/socket.io/?EIO=4&transport=websocket``): wait for ``0{...}``, send ``40``, ready on
  ``40{...}``; answer ``2`` with ``3``; publications arrive as ``42["m",{...}]``.

Every publication's data is the same 100-byte JSON object
``{"seq":N,"ts":T,"pad":"xx..."}`` (``ts`` = ``time.time_ns()`` at the publisher).
Deliveries are counted by counting ``"seq":`` in each frame (one C-level
``bytes.count``), so no JSON is parsed on the hot path; only a few evenly spaced
"sampler" connections read ``ts`` for latency and ``seq`` for flow control.

Modes (``--mode``):

* ``fanout``: N subscribers; publishers offer publications as fast as the server
  takes them (closed loop of ``--pub-concurrency`` requests, never more than
  ``--window`` publications ahead of the slowest sampler) for ``--duration`` seconds.
* ``rate``: N subscribers; ``--rate`` publications per second (open loop).
* ``rr``: N clients each publishing (Trunkline) / echoing (ws) / emitting with ack (sio)
  in a closed loop, one request in flight per client; acks/s and latency.
* ``idle``: open N idle connections; connects/s and server RSS per connection.
  With ``--tls-ca`` the connections use ``wss://`` and trust that CA (TLS connects/s).
* ``channels``: many small channels: connection i subscribes (centrifugo) or joins (ws,
  sio) its personal channel ``u<i>`` and its group ``g<i // --group-size>``; an open loop
  publishes ``--rate`` publications/s to random personal channels and ``--group-rate``/s
  to random groups, one HTTP request per ``--tick`` (Trunkline ``POST /api/batch``, the
  peers ``POST /publish_rooms``); every connection reads ``ts`` for latency.
* ``publishers``: many publishers, chat-like: connection i is in room ``r<i // --group-size>``
  and itself publishes ``--rate`` times per second into it (open loop, spread evenly over
  the connections and over time): Trunkline a client-side ``publish`` command, the ``ws``
  peer ``{"to":R,"data":D}``, Socket.IO ``emit("say", R, D)``. Every member of the room,
  the publisher included, gets each publication; every connection reads ``ts``.

It prints one JSON object (and writes it to ``--out`` if given).  Server CPU is read
from ``/proc/<--server-pid>/stat`` (utime+stime) around the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

PAYLOAD_SIZE = 100
SEQ_MARK = b'"seq":'
TS_MARK = b'"ts":'
TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
CLK_TCK = os.sysconf("SC_CLK_TCK")

CENT, WS, SIO = "centrifugo", "ws", "sio"
WS_PATHS = {CENT: "/connection/websocket", WS: "/ws", SIO: "/socket.io/?EIO=4&transport=websocket"}
PUBLISH_PATHS = {CENT: "/api/publish", WS: "/publish", SIO: "/publish"}


def make_payload(seq: int, ts: int) -> bytes:
    """The 100-byte JSON publication data."""
    head = b'{"seq":%d,"ts":%d,"pad":"' % (seq, ts)
    return head + b"x" * max(0, PAYLOAD_SIZE - len(head) - 2) + b'"}'


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy_seconds() -> list[float]:
    """Busy seconds of the whole machine and of each core, from /proc/stat (all processes, irq, softirq)."""
    out = []
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu"):
                break
            v = [int(x) for x in line.split()[1:9]]
            out.append((sum(v) - v[3] - v[4]) / CLK_TCK)  # minus idle and iowait
    return out


def percentiles(values_ns: list[int]) -> dict[str, float | int]:
    if not values_ns:
        return {"n": 0}
    v = sorted(values_ns)
    n = len(v)

    def pick(q: float) -> float:
        return round(v[min(n - 1, int(q * n))] / 1e6, 3)

    return {
        "n": n,
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": round(v[-1] / 1e6, 3),
    }


# --------------------------------------------------------------------------- state


class Gen:
    """Shared state of one load-generator run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proto: str = args.proto
        self.conns: list[Conn] = []
        self.samplers: list[Conn] = []
        self.recording = False  # inside the measured window
        self.running = True  # rr clients keep going while set
        self.closing = False
        self.lat: list[int] = []  # latency samples, ns
        self.lat_cap = 2_000_000
        self.seq = 0
        self.disconnects = 0
        self.close_codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.published = 0
        self.pub_errors = 0
        self.missed = 0
        self.expected = 0  # channels mode: deliveries the successful publications should cause
        self.ssl_ctx: ssl.SSLContext | None = None
        if getattr(args, "tls_ca", ""):
            self.ssl_ctx = ssl.create_default_context(cafile=args.tls_ca)

    def min_seen(self) -> int:
        return min(s.last_seq for s in self.samplers) if self.samplers else self.seq

    def add_lat(self, ns: int) -> None:
        if self.recording and len(self.lat) < self.lat_cap:
            self.lat.append(ns)

    def deliveries(self) -> int:
        return sum(c.n for c in self.conns)

    def frames(self) -> int:
        return sum(c.frames for c in self.conns)

    def acks(self) -> int:
        return sum(c.acks for c in self.conns)


class Conn(WSListener):
    """One client connection; callbacks only, no task per connection."""

    def __init__(
        self,
        gen: Gen,
        *,
        sampler: bool = False,
        subscribe: bytes | None = None,
        rr_channel: bytes | None = None,
        channels: tuple[bytes, ...] = (),
        idx: int = -1,
    ) -> None:
        super().__init__()
        self.gen = gen
        self.proto = gen.proto
        self.sampler = sampler
        self.subscribe = subscribe
        self.rr_channel = rr_channel
        # channels mode: subscribe to (centrifugo) or join (ws, sio) all of these before ready
        self.channels = channels
        self.subs_left = len(channels)
        self.idx = idx
        self.t: WSTransport | None = None
        self.n = 0  # deliveries
        self.frames = 0  # frames that carried deliveries
        self.acks = 0
        self.last_seq = -1
        self.next_id = 3 + len(channels)
        self.sent_at = 0
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- lifecycle
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t = transport
        if self.proto == CENT:
            transport.send(TEXT, b'{"id":1,"connect":{}}')
            if self.subscribe is not None:
                transport.send(TEXT, b'{"id":2,"subscribe":{"channel":"%s"}}' % self.subscribe)
            for k, ch in enumerate(self.channels):
                transport.send(TEXT, b'{"id":%d,"subscribe":{"channel":"%s"}}' % (3 + k, ch))
        elif self.proto == WS:
            if self.channels:
                transport.send(TEXT, b'{"join":[%s]}' % b",".join(b'"%s"' % c for c in self.channels))
            else:
                self._set_ready()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.gen.closing:
            self.gen.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected"))
        self.pending.clear()

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
            if self.rr_channel is not None:
                self.rr_send()

    def _fail(self, why: str) -> None:
        self.gen.errors[why] += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))

    # -- hot path
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != TEXT:
            if frame.msg_type == CLOSE and not self.gen.closing:
                self.gen.close_codes[f"{frame.get_close_code()} {frame.get_close_message()!r}"] += 1
            return
        p = frame.get_payload_as_bytes()
        k = p.count(SEQ_MARK)
        if k:
            if self.rr_channel is None:
                self.n += k
                self.frames += 1
                if self.sampler:
                    self._sample(p)
                if self.proto == CENT and k != p.count(b"\n") + 1:
                    self._cent_control(p)
                return
            if self.proto == WS:  # echo reply
                self._rr_ack()
                return
        if self.proto == CENT:
            self._cent_control(p)
        elif self.proto == SIO:
            self._sio_control(p)
        elif p.startswith(b'{"joined"'):
            self._set_ready()

    def _sample(self, p: bytes) -> None:
        now = time.time_ns()
        gen = self.gen
        i = p.find(SEQ_MARK)
        while i >= 0:
            j = p.find(b",", i)
            seq = int(p[i + 6 : j])
            k = p.find(TS_MARK, j)
            e = p.find(b",", k)
            gen.add_lat(now - int(p[k + 5 : e]))
            self.last_seq = max(self.last_seq, seq)
            i = p.find(SEQ_MARK, e)

    # -- control messages
    def _cent_control(self, p: bytes) -> None:
        for line in p.split(b"\n"):
            if line == b"{}":
                assert self.t is not None
                self.t.send(TEXT, b"{}")  # pong
            elif line.startswith(b'{"id":'):
                end = line.find(b",", 6)
                rid = int(line[6:end])
                if b'"error"' in line:
                    self._fail(f"reply error: {line[:200].decode(errors='replace')}")
                    fut = self.pending.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(RuntimeError(line[:200].decode(errors="replace")))
                    continue
                if rid == 1:
                    if self.subscribe is None and not self.channels:
                        self._set_ready()
                elif rid == 2:
                    self._set_ready()
                elif 3 <= rid < 3 + len(self.channels):
                    self.subs_left -= 1
                    if self.subs_left == 0:
                        self._set_ready()
                elif self.rr_channel is not None:
                    self._rr_ack()
                else:
                    fut = self.pending.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif b'"disconnect"' in line:
                self.gen.close_codes[line[:200].decode(errors="replace")] += 1

    def _sio_control(self, p: bytes) -> None:
        if p == b"2":
            assert self.t is not None
            self.t.send(TEXT, b"3")
        elif p.startswith(b"43"):
            if self.channels and not self.ready.done():
                self._set_ready()  # the join ack
            else:
                self._rr_ack()
        elif p.startswith(b"40"):
            if self.channels:
                assert self.t is not None
                rooms = b",".join(b'"%s"' % c for c in self.channels)
                self.t.send(TEXT, b'421["join",[%s]]' % rooms)
            else:
                self._set_ready()
        elif p.startswith(b"0"):
            assert self.t is not None
            self.t.send(TEXT, b"40")
        elif p.startswith(b"44"):
            self._fail(f"socket.io connect error: {p[:200].decode(errors='replace')}")

    # -- request/response closed loop
    def rr_send(self) -> None:
        if not self.gen.running or self.t is None:
            return
        self.sent_at = time.perf_counter_ns()
        data = make_payload(self.acks, time.time_ns())
        if self.proto == CENT:
            self.next_id += 1
            self.t.send(TEXT, b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (self.next_id, self.rr_channel, data))
        elif self.proto == WS:
            self.t.send(TEXT, data)
        else:
            self.next_id += 1
            self.t.send(TEXT, b'42%d["pub",%s]' % (self.next_id, data))

    def _rr_ack(self) -> None:
        self.gen.add_lat(time.perf_counter_ns() - self.sent_at)
        self.acks += 1
        self.rr_send()

    # -- publishers mode: this connection publishes into its own room
    def say(self, room: bytes, data: bytes) -> None:
        assert self.t is not None
        if self.proto == CENT:
            self.next_id += 1
            self.t.send(TEXT, b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (self.next_id, room, data))
        elif self.proto == WS:
            self.t.send(TEXT, b'{"to":"%s","data":%s}' % (room, data))
        else:
            self.t.send(TEXT, b'42["say","%s",%s]' % (room, data))

    # -- client-side publish (Trunkline --publish ws)
    def publish(self, channel: bytes, data: bytes) -> asyncio.Future[None]:
        assert self.t is not None
        self.next_id += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        self.t.send(TEXT, b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (self.next_id, channel, data))
        return fut


# --------------------------------------------------------------------------- connections


async def open_conns(
    gen: Gen, n: int, factory: Callable[[int], Conn], concurrency: int, deadline: float
) -> dict[str, Any]:
    """Open n connections with at most `concurrency` handshakes in flight; bounded by deadline."""
    args = gen.args
    scheme = "wss" if gen.ssl_ctx is not None else "ws"
    url = f"{scheme}://{args.host}:{args.port}{WS_PATHS[gen.proto]}"
    counter = iter(range(n))
    failures = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()

    async def worker() -> None:
        nonlocal failures
        for i in counter:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failures += 1
                gen.errors["ramp deadline"] += 1
                continue
            try:
                async with asyncio.timeout(min(10.0, remaining)):
                    kw: dict[str, Any] = {}
                    if args.source_ips > 1:
                        kw["local_addr"] = (f"127.0.0.{1 + i % args.source_ips}", 0)
                    if gen.ssl_ctx is not None:
                        kw["ssl_context"] = gen.ssl_ctx
                    _, listener = await ws_connect(lambda i=i: factory(i), url, websocket_handshake_timeout=10, **kw)
                    await listener.ready
                gen.conns.append(listener)
                if listener.sampler:
                    gen.samplers.append(listener)
            except (OSError, TimeoutError, ConnectionError, Exception) as e:
                failures += 1
                gen.errors[f"connect: {type(e).__name__}: {str(e)[:120]}"] += 1

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    elapsed = time.perf_counter() - t0
    ok = n - failures
    return {
        "requested": n,
        "opened": ok,
        "failed": failures,
        "seconds": round(elapsed, 3),
        "connects_per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "loadgen_cpu_util": round((time.process_time() - cpu0) / elapsed, 3) if elapsed > 0 else 0.0,
    }


async def close_all(gen: Gen) -> None:
    gen.closing = True
    gen.running = False
    for c in gen.conns:
        if c.t is not None and not c.t.is_disconnected:
            c.t.disconnect(graceful=False)
    await asyncio.sleep(0.2)


def sampler_indices(n: int, k: int) -> set[int]:
    if k <= 0 or n <= 0:
        return set()
    k = min(k, n)
    return {round(j * (n - 1) / max(1, k - 1)) for j in range(k)}


# --------------------------------------------------------------------------- publishers


class HttpPublisher:
    def __init__(self, gen: Gen) -> None:
        a = gen.args
        self.gen = gen
        self.url = f"http://{a.host}:{a.port}{PUBLISH_PATHS[gen.proto]}{a.publish_query}"
        self.headers = {"Content-Type": "application/json"}
        if gen.proto == CENT:
            self.headers["X-API-Key"] = a.api_key
        self.channel = a.channel.encode()
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, self.gen.args.pub_concurrency) + 8),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def publish(self, seq: int) -> None:
        data = make_payload(seq, time.time_ns())
        body = b'{"channel":"%s","data":%s}' % (self.channel, data) if self.gen.proto == CENT else data
        assert self.session is not None
        async with self.session.post(self.url, data=body, headers=self.headers) as r:
            text = await r.read()
            if r.status != 200 or b'"error"' in text:
                self.gen.pub_errors += 1
                self.gen.errors[f"publish {r.status}: {text[:160].decode(errors='replace')}"] += 1
                return
        self.gen.published += 1


class WsPublisher:
    """Trunkline client-side publish over one WebSocket connection."""

    def __init__(self, gen: Gen) -> None:
        self.gen = gen
        self.channel = gen.args.channel.encode()
        self.conn: Conn | None = None

    async def start(self) -> None:
        a = self.gen.args
        url = f"ws://{a.host}:{a.port}{WS_PATHS[CENT]}"
        _, self.conn = await ws_connect(lambda: Conn(self.gen), url)
        await asyncio.wait_for(self.conn.ready, 10)

    async def stop(self) -> None:
        if self.conn is not None and self.conn.t is not None:
            self.conn.t.disconnect(graceful=False)

    async def publish(self, seq: int) -> None:
        assert self.conn is not None
        try:
            await asyncio.wait_for(self.conn.publish(self.channel, make_payload(seq, time.time_ns())), 30)
        except (RuntimeError, ConnectionError, TimeoutError) as e:
            self.gen.pub_errors += 1
            self.gen.errors[f"ws publish: {type(e).__name__}: {str(e)[:120]}"] += 1
            if isinstance(e, ConnectionError):
                await asyncio.sleep(0.01)
            return
        self.gen.published += 1


class RoomsPublisher:
    """Channels mode: one HTTP request per tick carrying that tick's publications.

    Trunkline: ``POST /api/batch`` with one ``publish`` command per publication.
    Peers: ``POST /publish_rooms`` with ``[{"room":R,"data":D},...]``; each peer sends every
    item to the members of room R with its library's room API.
    """

    def __init__(self, gen: Gen) -> None:
        a = gen.args
        self.gen = gen
        path = "/api/batch" if gen.proto == CENT else "/publish_rooms"
        self.url = f"http://{a.host}:{a.port}{path}"
        self.headers = {"Content-Type": "application/json"}
        if gen.proto == CENT:
            self.headers["X-API-Key"] = a.api_key
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=30)
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def publish_many(self, items: list[tuple[bytes, int]]) -> None:
        """items: (channel, expected recipients)."""
        gen = self.gen
        parts = []
        for ch, _ in items:
            gen.seq += 1
            data = make_payload(gen.seq, time.time_ns())
            if gen.proto == CENT:
                parts.append(b'{"publish":{"channel":"%s","data":%s}}' % (ch, data))
            else:
                parts.append(b'{"room":"%s","data":%s}' % (ch, data))
        joined = b",".join(parts)
        body = b'{"commands":[%s]}' % joined if gen.proto == CENT else b"[%s]" % joined
        assert self.session is not None
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as r:
                text = await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            gen.pub_errors += len(items)
            gen.errors[f"publish: {type(e).__name__}: {str(e)[:120]}"] += 1
            return
        if r.status != 200 or b'"error"' in text:
            gen.pub_errors += len(items)
            gen.errors[f"publish {r.status}: {text[:160].decode(errors='replace')}"] += 1
            return
        gen.published += len(items)
        gen.expected += sum(k for _, k in items)


async def rooms_loop(gen: Gen, pub: RoomsPublisher, personal: list[int], groups: dict[int, int], end: float) -> None:
    """Open loop: every tick, one request with that tick's personal and group publications."""
    a = gen.args
    rng = random.Random(6)
    group_ids = sorted(groups)
    tick = a.tick
    acc_p = acc_g = 0.0
    inflight: set[asyncio.Task[None]] = set()
    next_t = time.monotonic()
    while next_t < end:
        now = time.monotonic()
        if next_t > now:
            await asyncio.sleep(next_t - now)
        acc_p += a.rate * tick
        acc_g += a.group_rate * tick
        n_p, n_g = int(acc_p), int(acc_g)
        acc_p -= n_p
        acc_g -= n_g
        next_t += tick
        if time.monotonic() - next_t > 1.0 or len(inflight) >= 64:
            gen.missed += n_p + n_g  # more than 1 s late, or too many requests pending
            continue
        items = [(b"u%d" % rng.choice(personal), 1) for _ in range(n_p)]
        for _ in range(n_g):
            g = rng.choice(group_ids)
            items.append((b"g%d" % g, groups[g]))
        if not items:
            continue
        task = asyncio.create_task(pub.publish_many(items))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight, timeout=10)


async def closed_loop(gen: Gen, pub: HttpPublisher | WsPublisher, end: float) -> None:
    """Offer publications as fast as the server takes them, bounded by the window."""
    window = gen.args.window

    async def worker() -> None:
        while time.monotonic() < end:
            if window > 0 and gen.seq - gen.min_seen() > window:
                await asyncio.sleep(0.0002)
                continue
            gen.seq += 1
            await pub.publish(gen.seq)

    await asyncio.gather(*(worker() for _ in range(max(1, gen.args.pub_concurrency))))


async def open_loop(gen: Gen, pub: HttpPublisher | WsPublisher, rate: float, end: float) -> None:
    """Publish at a fixed rate; a publication more than 1 s late is counted as missed."""
    interval = 1.0 / rate
    inflight: set[asyncio.Task[None]] = set()
    limit = max(1, gen.args.pub_concurrency) * 32
    next_t = time.monotonic()
    while next_t < end:
        now = time.monotonic()
        if next_t > now:
            await asyncio.sleep(next_t - now)
        elif now - next_t > 1.0 or len(inflight) >= limit:
            gen.missed += 1
            next_t += interval
            continue
        gen.seq += 1
        task = asyncio.create_task(pub.publish(gen.seq))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        next_t += interval
    if inflight:
        await asyncio.wait(inflight, timeout=5)


# --------------------------------------------------------------------------- modes


class Window:
    """CPU and counters around the measured window."""

    def __init__(self, gen: Gen, pid: int | None) -> None:
        self.gen, self.pid = gen, pid

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = proc_cpu_seconds(self.pid) if self.pid else 0.0
        self.self0 = time.process_time()
        self.busy0 = machine_busy_seconds()
        self.d0 = self.gen.deliveries()
        self.f0 = self.gen.frames()
        self.a0 = self.gen.acks()
        self.p0 = self.gen.published
        self.gen.recording = True

    def stop(self) -> dict[str, Any]:
        self.gen.recording = False
        dt = time.perf_counter() - self.t0
        cpu = (proc_cpu_seconds(self.pid) - self.cpu0) if self.pid else None
        me = time.process_time() - self.self0
        busy = [b - a for a, b in zip(self.busy0, machine_busy_seconds(), strict=True)]
        deliveries = self.gen.deliveries() - self.d0
        frames = self.gen.frames() - self.f0
        acks = self.gen.acks() - self.a0
        published = self.gen.published - self.p0
        out: dict[str, Any] = {
            "seconds": round(dt, 3),
            "deliveries": deliveries,
            "deliveries_per_s": round(deliveries / dt, 1),
            "publishes_per_s": round(published / dt, 1),
            "frames_per_s": round(frames / dt, 1),
            "deliveries_per_frame": round(deliveries / frames, 2) if frames else None,
            "acks": acks,
            "acks_per_s": round(acks / dt, 1),
            "loadgen_cpu_util": round(me / dt, 3),
            # whole-machine view: per-core busy fraction, and CPU (in cores) used by anything
            # other than the server and the load generator (other processes, irq/softirq threads)
            "core_busy": [round(b / dt, 3) for b in busy[1:]],
            "other_cpu_util": round((busy[0] - me - (cpu or 0.0)) / dt, 3),
        }
        if cpu is not None:
            out["server_cpu_s"] = round(cpu, 3)
            out["server_cpu_util"] = round(cpu / dt, 3)
            work = deliveries or acks
            if work:
                out["server_cpu_us_per_op"] = round(cpu / work * 1e6, 3)
                if deliveries:
                    out["server_cpu_s_per_million_deliveries"] = round(cpu / deliveries * 1e6, 3)
        return out


async def run_subscribers(gen: Gen) -> dict[str, Any]:
    a = gen.args
    chan = a.channel.encode()
    picks = sampler_indices(a.conns, a.samplers)
    result: dict[str, Any] = {}
    deadline = time.monotonic() + a.ramp_timeout
    result["connect"] = await open_conns(
        gen, a.conns, lambda i: Conn(gen, sampler=i in picks, subscribe=chan), a.ramp_concurrency, deadline
    )
    if not gen.conns:
        raise SystemExit("no subscriber connected")
    result["subscribers"] = len(gen.conns)
    result["samplers"] = len(gen.samplers)
    pub: HttpPublisher | WsPublisher = WsPublisher(gen) if a.publish == "ws" else HttpPublisher(gen)
    await pub.start()
    muted = [c for c in gen.conns if not c.sampler and c.t is not None] if a.mute else []
    try:
        await asyncio.sleep(0.3)  # let the last subscribes settle
        for c in muted:
            # the kernel buffers what the server sends them (tens of KiB each at a fixed rate);
            # only the samplers are read while measuring, so the load generator's own queueing
            # stays out of the latency figures
            assert c.t is not None
            c.t.underlying_transport.pause_reading()
        end = time.monotonic() + a.warmup + a.duration
        if a.mode == "rate":
            task = asyncio.create_task(open_loop(gen, pub, a.rate, end))
        else:
            task = asyncio.create_task(closed_loop(gen, pub, end))
        await asyncio.sleep(a.warmup)
        w = Window(gen, a.server_pid)
        w.start()
        await asyncio.sleep(a.duration)
        result.update(w.stop())
        await asyncio.wait_for(task, timeout=35)
        if muted:
            result.update(await unmute(gen, muted, result))
        # bounded drain: how many offered publications reached the samplers at all
        for _ in range(60):  # at most 3 s
            if gen.min_seen() >= gen.seq:
                break
            await asyncio.sleep(0.05)
        result["published_total"] = gen.published
        result["sampler_lag_after_drain"] = gen.seq - gen.min_seen()
    finally:
        await pub.stop()
    result["latency_ms"] = percentiles(gen.lat)
    result["per_conn_min_max"] = [min(c.n for c in gen.conns), max(c.n for c in gen.conns)]
    return result


async def unmute(gen: Gen, muted: list[Conn], window: dict[str, Any]) -> dict[str, Any]:
    """Read the muted connections again; check every one received what the samplers did."""
    for c in muted:
        if c.t is not None and not c.t.is_disconnected:
            c.t.underlying_transport.resume_reading()
    target = max(s.n for s in gen.samplers) if gen.samplers else 0
    for _ in range(100):  # at most 5 s
        if all(c.n >= target for c in muted):
            break
        await asyncio.sleep(0.05)
    short = sum(1 for c in muted if c.n < target)
    # during the window only the samplers counted: extrapolate to all subscribers
    sampler_share = len(gen.samplers) / len(gen.conns)
    out: dict[str, Any] = {
        "muted": len(muted),
        "muted_short_after_drain": short,
        "deliveries_per_s": round(window["deliveries_per_s"] / sampler_share, 1),
        "deliveries": round(window["deliveries"] / sampler_share),
        "deliveries_note": "extrapolated from the samplers; muted connections checked after the window",
    }
    cpu = window.get("server_cpu_s")
    if cpu and out["deliveries"]:
        out["server_cpu_us_per_op"] = round(cpu / out["deliveries"] * 1e6, 3)
        out["server_cpu_s_per_million_deliveries"] = out["server_cpu_us_per_op"]
    return out


async def run_channels(gen: Gen) -> dict[str, Any]:
    a = gen.args
    gs = max(1, a.group_size)
    result: dict[str, Any] = {}
    deadline = time.monotonic() + a.ramp_timeout

    def factory(i: int) -> Conn:
        return Conn(gen, sampler=True, channels=(b"u%d" % i, b"g%d" % (i // gs)), idx=i)

    result["connect"] = await open_conns(gen, a.conns, factory, a.ramp_concurrency, deadline)
    if not gen.conns:
        raise SystemExit("no subscriber connected")
    personal = sorted(c.idx for c in gen.conns)
    groups = dict(Counter(i // gs for i in personal))
    result["subscribers"] = len(gen.conns)
    result["channels"] = len(personal) + len(groups)
    result["groups"] = len(groups)
    result["offered_deliveries_per_s"] = round(a.rate + a.group_rate * len(personal) / len(groups), 1)
    result["offered_publications_per_s"] = a.rate + a.group_rate
    pub = RoomsPublisher(gen)
    await pub.start()
    try:
        await asyncio.sleep(0.3)
        end = time.monotonic() + a.warmup + a.duration
        task = asyncio.create_task(rooms_loop(gen, pub, personal, groups, end))
        await asyncio.sleep(a.warmup)
        w = Window(gen, a.server_pid)
        w.start()
        await asyncio.sleep(a.duration)
        result.update(w.stop())
        await asyncio.wait_for(task, timeout=20)
        for _ in range(100):  # bounded drain, at most 5 s
            if gen.deliveries() >= gen.expected:
                break
            await asyncio.sleep(0.05)
    finally:
        await pub.stop()
    result["published_total"] = gen.published
    result["expected_deliveries_total"] = gen.expected
    result["lost"] = max(0, gen.expected - gen.deliveries())
    result["latency_ms"] = percentiles(gen.lat)
    return result


async def speakers_loop(gen: Gen, speakers: list[Conn], rooms: dict[bytes, int], end: float) -> None:
    """Open loop: every tick, the next connections in a fixed shuffled order publish into their rooms.

    Each connection publishes ``--rate`` times per second, evenly spread; a tick more than
    1 s late is skipped and its publications counted as missed.
    """
    a = gen.args
    order = list(speakers)
    random.Random(7).shuffle(order)
    tick = a.tick
    acc = 0.0
    k = 0
    next_t = time.monotonic()
    while next_t < end:
        now = time.monotonic()
        if next_t > now:
            await asyncio.sleep(next_t - now)
        acc += a.rate * len(order) * tick
        n = int(acc)
        acc -= n
        next_t += tick
        if time.monotonic() - next_t > 1.0:
            gen.missed += n
            continue
        for _ in range(n):
            c = order[k]
            k = (k + 1) % len(order)
            if c.t is None or c.t.is_disconnected:
                gen.pub_errors += 1
                continue
            gen.seq += 1
            room = c.channels[0]
            c.say(room, make_payload(gen.seq, time.time_ns()))
            gen.published += 1
            gen.expected += rooms[room]


async def run_publishers(gen: Gen) -> dict[str, Any]:
    a = gen.args
    gs = max(1, a.group_size)
    result: dict[str, Any] = {}
    deadline = time.monotonic() + a.ramp_timeout

    def factory(i: int) -> Conn:
        return Conn(gen, sampler=True, channels=(b"r%d" % (i // gs),), idx=i)

    result["connect"] = await open_conns(gen, a.conns, factory, a.ramp_concurrency, deadline)
    if not gen.conns:
        raise SystemExit("no client connected")
    rooms = dict(Counter(c.channels[0] for c in gen.conns))
    result["subscribers"] = len(gen.conns)
    result["rooms"] = len(rooms)
    result["offered_publications_per_s"] = round(a.rate * len(gen.conns), 1)
    result["offered_deliveries_per_s"] = round(a.rate * sum(k * k for k in rooms.values()), 1)
    await asyncio.sleep(0.3)
    end = time.monotonic() + a.warmup + a.duration
    task = asyncio.create_task(speakers_loop(gen, gen.conns, rooms, end))
    await asyncio.sleep(a.warmup)
    w = Window(gen, a.server_pid)
    w.start()
    await asyncio.sleep(a.duration)
    result.update(w.stop())
    await asyncio.wait_for(task, timeout=20)
    for _ in range(100):  # bounded drain, at most 5 s
        if gen.deliveries() >= gen.expected:
            break
        await asyncio.sleep(0.05)
    result["published_total"] = gen.published
    result["expected_deliveries_total"] = gen.expected
    result["lost"] = max(0, gen.expected - gen.deliveries())
    result["latency_ms"] = percentiles(gen.lat)
    return result


async def run_rr(gen: Gen) -> dict[str, Any]:
    a = gen.args
    result: dict[str, Any] = {}
    deadline = time.monotonic() + a.ramp_timeout
    gen.running = False  # start all loops together
    result["connect"] = await open_conns(
        gen, a.conns, lambda i: Conn(gen, rr_channel=b"rr_%d" % i), a.ramp_concurrency, deadline
    )
    gen.running = True
    for c in gen.conns:
        c.rr_send()
    await asyncio.sleep(a.warmup)
    w = Window(gen, a.server_pid)
    w.start()
    await asyncio.sleep(a.duration)
    result.update(w.stop())
    gen.running = False
    result["clients"] = len(gen.conns)
    result["latency_ms"] = percentiles(gen.lat)
    return result


async def run_idle(gen: Gen) -> dict[str, Any]:
    a = gen.args
    pid = a.server_pid
    result: dict[str, Any] = {}
    cpu0 = 0.0
    if pid:
        result["server_rss_kib_before"] = proc_rss_kib(pid)
        cpu0 = proc_cpu_seconds(pid)
    busy0, me0, t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    deadline = time.monotonic() + a.ramp_timeout
    result["connect"] = await open_conns(gen, a.conns, lambda i: Conn(gen), a.ramp_concurrency, deadline)
    dt = time.perf_counter() - t0
    server_cpu = proc_cpu_seconds(pid) - cpu0 if pid else 0.0
    busy = [y - x for x, y in zip(busy0, machine_busy_seconds(), strict=True)]
    result["core_busy"] = [round(b / dt, 3) for b in busy[1:]]
    result["other_cpu_util"] = round((busy[0] - (time.process_time() - me0) - server_cpu) / dt, 3)
    if pid:
        result["server_cpu_util"] = round(server_cpu / dt, 3)
        result["server_cpu_us_per_connect"] = round(server_cpu / max(1, result["connect"]["opened"]) * 1e6, 1)
    await asyncio.sleep(a.settle)
    if pid:
        after = proc_rss_kib(pid)
        result["server_rss_kib_after"] = after
        opened = max(1, result["connect"]["opened"])
        result["rss_kib_per_conn"] = round((after - result["server_rss_kib_before"]) / opened, 2)
    result["still_open"] = sum(1 for c in gen.conns if c.t is not None and not c.t.is_disconnected)
    return result


async def amain(a: argparse.Namespace) -> dict[str, Any]:
    gen = Gen(a)
    started = time.time()
    try:
        if a.mode in ("fanout", "rate"):
            result = await run_subscribers(gen)
        elif a.mode == "channels":
            result = await run_channels(gen)
        elif a.mode == "publishers":
            result = await run_publishers(gen)
        elif a.mode == "rr":
            result = await run_rr(gen)
        else:
            result = await run_idle(gen)
    finally:
        await close_all(gen)
    result.update(
        {
            "proto": a.proto,
            "mode": a.mode,
            "conns": a.conns,
            "publish": a.publish if a.mode in ("fanout", "rate") else None,
            "rate": a.rate if a.mode in ("rate", "channels", "publishers") else None,
            "group_rate": a.group_rate if a.mode == "channels" else None,
            "tls": bool(a.tls_ca),
            "payload_bytes": PAYLOAD_SIZE,
            "disconnects": gen.disconnects,
            "close_codes": dict(gen.close_codes.most_common(5)),
            "errors": dict(gen.errors.most_common(8)),
            "pub_errors": gen.pub_errors,
            "missed": gen.missed,
            "started": started,
            "loadgen_rss_kib": proc_rss_kib(os.getpid()),
        }
    )
    return result


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proto", choices=[CENT, WS, SIO], required=True)
    p.add_argument("--mode", choices=["fanout", "rate", "rr", "idle", "channels", "publishers"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=1000, help="subscribers / rr clients / idle connections")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of load before measuring")
    p.add_argument("--publish", choices=["http", "ws"], default="http", help="Trunkline publish path")
    p.add_argument("--pub-concurrency", type=int, default=4, help="publications in flight")
    p.add_argument(
        "--window", type=int, default=16, help="max publications ahead of the slowest sampler (0 = unbounded)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="publications/s (rate mode); personal ones (channels); per connection (publishers)",
    )
    p.add_argument("--group-rate", type=float, default=200.0, help="channels mode: group publications/s")
    p.add_argument(
        "--group-size", type=int, default=100, help="channels mode: connections per group; publishers: per room"
    )
    p.add_argument("--tick", type=float, default=0.01, help="channels, publishers modes: seconds between publish ticks")
    p.add_argument("--tls-ca", default="", help="connect with wss:// and trust this CA file (PEM)")
    p.add_argument("--samplers", type=int, default=64, help="connections that measure latency")
    p.add_argument(
        "--mute",
        action="store_true",
        help="rate mode: read only the samplers during the run (the kernel buffers the rest), check all after",
    )
    p.add_argument("--ramp-concurrency", type=int, default=100)
    p.add_argument(
        "--source-ips",
        type=int,
        default=1,
        help="spread client sockets over 127.0.0.1..127.0.0.N (loopback) to keep the kernel's port search short",
    )
    p.add_argument("--ramp-timeout", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=2.0, help="idle mode: seconds before reading RSS")
    p.add_argument("--channel", default="bench")
    p.add_argument("--api-key", default="bench")
    p.add_argument(
        "--publish-query", default="", help="appended to the publish URL, e.g. ?batch=10 for the ws peer's ceiling test"
    )
    p.add_argument("--server-pid", type=int, default=0)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    a.duration = min(a.duration, 120.0)
    a.warmup = min(a.warmup, 30.0)
    a.ramp_timeout = min(a.ramp_timeout, 300.0)
    a.tick = min(1.0, max(0.001, a.tick))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.nofile = raise_nofile()
    # short-lived and bounded: the cyclic GC walking tens of thousands of connection objects
    # only costs load-generator CPU (about a quarter of the per-connect cost at 5000 connections)
    gc.disable()
    result = uvloop.run(amain(a))
    result["nofile"] = a.nofile
    text = json.dumps(result, sort_keys=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
