"""MQTT: Trunkline next to mosquitto, same load generator, same run (issue 12).

    .venv/bin/python bench/mqtt_vs_mosquitto.py            # every scenario, 3 rounds (~30 min)
    .venv/bin/python bench/mqtt_vs_mosquitto.py --quick    # a smoke run (small N, 3 s, 1 round)
    .venv/bin/python bench/mqtt_vs_mosquitto.py --scenarios fanout-1000,qos1-rr-100 --rounds 1

Servers, each started fresh for every run and pinned with ``taskset -c 0``:

* ``trunkline``: ``python -m trunkline serve`` from ``git archive <--after-commit>`` (default HEAD),
  memory broker, MQTT over WebSocket on the main port (``/mqtt``) and over TCP on its own port,
  anonymous MQTT clients, the namespace-less channels open to everyone;
* ``mosquitto``: the Debian broker (2.0.11 here) with a generated config in a temporary
  directory: a TCP listener on 127.0.0.1 and a WebSocket listener on ``lo``, both
  ``socket_domain ipv4``, anonymous, no persistence, ``set_tcp_nodelay true``; stopped by PID.

The load generator (this file's ``loadgen`` subcommand, pinned with ``taskset -c 1``, uvloop) is a
raw MQTT 3.1.1 client: CONNECT / SUBSCRIBE / PUBLISH built by hand, received bytes parsed by
walking the fixed headers (type byte, remaining length) so that packets split across WebSocket
frames or TCP reads, and several packets in one, are all counted once. WebSocket clients are
picows callbacks (subprotocol ``mqtt``, binary frames), TCP clients are asyncio protocols; no task
per connection. Centrifugo subscribers (``mixed-1000``) are bench/fanout_formats.py's.

Scenarios:

* ``fanout-1000``, ``fanout-5000``: N MQTT subscribers (QoS 0) of topic ``bench`` over WebSocket;
  one MQTT publisher (WebSocket) publishes QoS 0 at a fixed rate (200/s and 40/s: 200 000
  deliveries/s offered either way), 100-byte JSON payload ``{"seq":N,"ts":T,"pad":"xx…"}``.
  Reported: deliveries/s counted at the clients, server CPU µs per delivery (utime+stime from
  /proc over the window), delivery latency p50/p99 (from ``ts``, read by 10 sampler
  subscribers), deliveries per frame, and undelivered: the publications a subscriber had not
  received 5 s after the window (dropped by the server, or still queued).
* ``fanout-1000-50``: the same with 1000 subscribers at 50 publications/s (50 000 deliveries/s), a
  load mosquitto's WebSocket listener keeps up with; ``fanout-1000-tcp``, ``fanout-5000-tcp``:
  ``fanout-1000`` and ``fanout-5000`` with every client (subscribers and publisher) over MQTT/TCP.
* ``qos1-rr-100``, ``qos1-rr-100-tcp``: 100 MQTT publishers, each with one QoS 1 PUBLISH in
  flight (closed loop, its own topic ``rr<i>``, no subscribers): PUBLISH→PUBACK round trip
  p50/p99 and PUBACKs/s, over WebSocket and over TCP.
* ``connects-10000``, ``connects-10000-tcp``: 10 000 MQTT clients connect over WebSocket / TCP
  (100 handshakes in flight, source addresses spread over 127.0.0.1–127.0.0.16): connects/s
  (WebSocket handshake + CONNECT → CONNACK, or TCP + CONNECT → CONNACK), server CPU µs per
  connect, and RSS per idle connection = (VmRSS 2 s after the ramp − VmRSS after 50 warm-up
  connections) / N.
* ``mixed-1000`` (Trunkline only): 500 MQTT and 500 Centrifugo JSON subscribers of the channel
  ``bench`` (the topic ``bench``), the same MQTT publisher at 200/s; deliveries/s per protocol.

Every run waits (bounded) for a quiet machine first; a row is flagged CONTENDED when other
processes used more than 0.15 cores in the window. Tables show medians over the rounds and
Trunkline ÷ mosquitto. Results: bench/results/mqtt_vs_mosquitto.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is on sys.path when run as a script
from fanout_formats import (
    CONTENDED,
    LOADGEN_CORE,
    PAYLOAD_SIZE,
    PY,
    SEQ_MARK,
    SERVER_CORE,
    Sub,
    _picows_connect,
    fmt,
    imported_from,
    machine,
    make_payload,
    median,
    prepare_after,
    raise_nofile,
    run_loadgen,
    server_env,
    wait_quiet,
)
from loadgen import machine_busy_seconds, percentiles, proc_cpu_seconds, proc_rss_kib
from run import free_port, stop, wait_listening

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOPIC = b"bench"
TS_MARK = b'"ts":'
WS_PATH = "/mqtt"
KEEPALIVE = 300  # seconds; runs are shorter, so no PINGREQ is ever needed
SERVERS = ("trunkline", "mosquitto")

TRUNKLINE_CONFIG = """# bench/mqtt_vs_mosquitto.py (generated)
[client]
insecure = true  # Centrifugo subscribers of mixed-1000 connect without a token

[mqtt]
allow_anonymous = true

[mqtt.websocket]
enabled = true

[mqtt.tcp]
enabled = true
address = "127.0.0.1:{tcp_port}"

[channel.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true

[shutdown]
timeout = 1.0

[log]
level = "warning"
"""

MOSQUITTO_CONFIG = """# bench/mqtt_vs_mosquitto.py (generated)
per_listener_settings false
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
listener {tcp_port} 127.0.0.1
protocol mqtt
socket_domain ipv4
listener {ws_port} lo
protocol websockets
socket_domain ipv4
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # fanout | rr | idle | mixed
    n: int
    rate: float = 0.0  # publications/s (fanout, mixed)
    transport: str = "ws"
    servers: tuple[str, ...] = SERVERS


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("fanout-1000", "fanout", 1000, rate=200.0),
        Scenario("fanout-5000", "fanout", 5000, rate=40.0),
        Scenario("fanout-1000-50", "fanout", 1000, rate=50.0),
        Scenario("fanout-1000-tcp", "fanout", 1000, rate=200.0, transport="tcp"),
        Scenario("fanout-5000-tcp", "fanout", 5000, rate=40.0, transport="tcp"),
        Scenario("qos1-rr-100", "rr", 100),
        Scenario("qos1-rr-100-tcp", "rr", 100, transport="tcp"),
        Scenario("connects-10000", "idle", 10000),
        Scenario("connects-10000-tcp", "idle", 10000, transport="tcp"),
        Scenario("mixed-1000", "mixed", 1000, rate=200.0, servers=("trunkline",)),
    )
}


# =========================================================================== MQTT 3.1.1 packets


def varint(n: int) -> bytes:
    """The MQTT remaining-length encoding."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(client_id: bytes, keepalive: int = KEEPALIVE) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no will, no credentials."""
    body = _string(b"MQTT") + b"\x04\x02" + keepalive.to_bytes(2, "big") + _string(client_id)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(packet_id: int, topic: bytes, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + _string(topic) + bytes((qos,))
    return b"\x82" + varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = _string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


# =========================================================================== load generator


class Gen:
    """Shared state of one load-generator process (also what fanout_formats' Sub and connector read)."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.errors: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.disconnects = 0
        self.closing = False
        self.running = True
        self.recording = False
        self.lat: list[int] = []
        self.published = 0


class Client:
    """One MQTT connection's protocol state, independent of the transport (callbacks only)."""

    __slots__ = (
        "acks",
        "buf",
        "error",
        "frames",
        "gen",
        "hello",
        "marks",
        "n",
        "on_ready",
        "pid",
        "ready",
        "rr_topic",
        "sampler",
        "send",
        "sent_at",
        "sub_topic",
    )
    protobuf = False

    def __init__(self, gen: Gen, client_id: str, *, sub_topic: bytes | None = None, sampler: bool = False) -> None:
        self.gen = gen
        self.hello = connect_packet(client_id.encode())
        self.sub_topic = sub_topic
        self.sampler = sampler
        self.rr_topic: bytes | None = None
        self.n = 0  # PUBLISH packets received after ready
        self.marks = 0  # b'"seq":' in those packets: must equal n
        self.frames = 0  # frames or reads that carried PUBLISH packets
        self.acks = 0
        self.pid = 0
        self.sent_at = 0
        self.buf = b""
        self.ready = False
        self.error = ""
        self.send: Any = None  # callable(bytes), set by the transport
        self.on_ready: Any = None

    # -- hot path: walk the fixed headers of whatever arrived
    def feed(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos, end, n = 0, len(data), 0
        while pos < end:
            first = data[pos]
            i = pos + 1
            length = shift = 0
            while i < end:
                b = data[i]
                i += 1
                length |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            else:
                break  # the remaining length is not complete yet
            if i + length > end:
                break  # the body is not complete yet
            if first >> 4 == 3:
                n += 1
            else:
                self._control(first >> 4, data[i : i + length])
            pos = i + length
        if pos < end:
            self.buf = data[pos:]
        if n and self.ready:
            self.n += n
            self.frames += 1
            done = data if pos == end else data[:pos]
            self.marks += done.count(SEQ_MARK)
            if self.sampler:
                self._sample(done)

    def _sample(self, p: bytes) -> None:
        now = time.time_ns()
        gen = self.gen
        k = p.find(TS_MARK)
        while k >= 0:
            e = p.find(b",", k)
            if gen.recording and len(gen.lat) < 1_000_000:
                gen.lat.append(now - int(p[k + 5 : e]))
            k = p.find(TS_MARK, e)

    def _control(self, kind: int, body: bytes) -> None:
        if kind == 2:  # CONNACK: flags, return code
            if len(body) < 2 or body[1] != 0:
                self._fail(f"CONNACK {body.hex()}")
            elif self.sub_topic is not None:
                self.send(subscribe_packet(1, self.sub_topic, 0))
            else:
                self._set_ready()
        elif kind == 9:  # SUBACK
            if not body[2:] or body[-1] & 0x80:
                self._fail(f"SUBACK {body.hex()}")
            else:
                self._set_ready()
        elif kind == 4:  # PUBACK
            if self.gen.recording:
                self.gen.lat.append(time.perf_counter_ns() - self.sent_at)
                self.acks += 1
            self.rr_send()
        elif kind != 13:  # anything but PINGRESP
            self.gen.errors[f"unexpected packet type {kind}"] += 1

    def rr_send(self) -> None:
        if not self.gen.running or self.rr_topic is None:
            return
        self.pid = self.pid % 65535 + 1
        self.sent_at = time.perf_counter_ns()
        self.send(publish_packet(self.rr_topic, make_payload(self.pid, time.time_ns()), 1, self.pid))

    def _set_ready(self) -> None:
        self.ready = True
        if self.on_ready is not None:
            self.on_ready()

    def _fail(self, why: str) -> None:
        self.error = why
        self.gen.errors[why] += 1
        if self.on_ready is not None:
            self.on_ready()


def ws_connector(gen: Gen) -> Any:
    """``connect(client, port, local_ip)`` over picows (subprotocol mqtt, binary frames)."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    binary, close = WSMsgType.BINARY, WSMsgType.CLOSE

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self, c: Client, fut: asyncio.Future[None]) -> None:
            super().__init__()
            self.c, self.fut = c, fut
            self.transport: WSTransport | None = None
            c.send = lambda b: self.transport.send(binary, b) if self.transport is not None else None
            c.on_ready = lambda: fut.done() or fut.set_result(None)

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            transport.send(binary, self.c.hello)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            t = frame.msg_type
            if t is binary:
                self.c.feed(frame.get_payload_as_bytes())
            elif t is close and not gen.closing:
                gen.close_codes[f"{frame.get_close_code()} {frame.get_close_message()!r}"] += 1

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not gen.closing:
                gen.disconnects += 1
            if not self.fut.done():
                self.fut.set_exception(ConnectionError("disconnected before ready"))

    async def connect(c: Client, port: int, local_ip: str) -> Any:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        transport, _ = await ws_connect(
            lambda: Listener(c, fut),
            f"ws://127.0.0.1:{port}{WS_PATH}",
            websocket_handshake_timeout=10,
            extra_headers={"Sec-WebSocket-Protocol": "mqtt"},
            local_addr=(local_ip, 0),
        )
        await fut
        if c.error:
            transport.disconnect()
            raise ConnectionError(c.error)
        return transport.disconnect

    return connect


def tcp_connector(gen: Gen) -> Any:
    """``connect(client, port, local_ip)`` over a plain asyncio protocol."""

    class Proto(asyncio.Protocol):
        def __init__(self, c: Client, fut: asyncio.Future[None]) -> None:
            self.c, self.fut = c, fut
            c.on_ready = lambda: fut.done() or fut.set_result(None)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.c.send = transport.write  # type: ignore[attr-defined]
            transport.write(self.c.hello)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            self.c.feed(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if not gen.closing:
                gen.disconnects += 1
            if not self.fut.done():
                self.fut.set_exception(ConnectionError("disconnected before ready"))

    async def connect(c: Client, port: int, local_ip: str) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Proto(c, fut), "127.0.0.1", port, local_addr=(local_ip, 0))
        await fut
        if c.error:
            transport.close()
            raise ConnectionError(c.error)
        return transport.close

    return connect


async def open_clients(gen: Gen, clients: list[Any], connect: Any, port: int, closers: list[Any]) -> dict[str, Any]:
    """Connect every client, 100 handshakes in flight, bounded by --ramp-timeout."""
    todo = iter(enumerate(clients))
    opened: list[Any] = []
    failed = 0
    deadline = time.monotonic() + gen.a.ramp_timeout
    t0 = time.perf_counter()
    cpu0 = proc_cpu_seconds(gen.a.server_pid)

    async def worker() -> None:
        nonlocal failed
        for i, c in todo:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError("ramp deadline")
                async with asyncio.timeout(min(10.0, remaining)):
                    closers.append(await connect(c, port, f"127.0.0.{1 + i % 16}"))
                opened.append(c)
            except Exception as e:
                failed += 1
                gen.errors[f"connect: {type(e).__name__}: {str(e)[:120]}"] += 1

    await asyncio.gather(*(worker() for _ in range(min(100, len(clients)))))
    dt = time.perf_counter() - t0
    cpu = proc_cpu_seconds(gen.a.server_pid) - cpu0
    clients[:] = opened
    return {
        "requested": len(clients) + failed,
        "opened": len(opened),
        "failed": failed,
        "seconds": round(dt, 3),
        "connects_per_s": round(len(opened) / dt, 1) if dt > 0 else None,
        "server_cpu_us_per_connect": round(cpu / len(opened) * 1e6, 1) if opened else None,
    }


class Snap:
    """Counters at one instant: wall clock, server CPU, load generator CPU, the machine, deliveries."""

    def __init__(self, gen: Gen, subs: list[Any]) -> None:
        self.t = time.perf_counter()
        self.server = proc_cpu_seconds(gen.a.server_pid)
        self.me = time.process_time()
        self.busy = machine_busy_seconds()
        self.n_mqtt = self.n_cent = self.marks = self.frames = 0
        for s in subs:
            if isinstance(s, Client):
                self.n_mqtt += s.n
            else:
                self.n_cent += s.n
            self.marks += s.marks
            self.frames += s.frames


def window(gen: Gen, a: Snap, b: Snap) -> dict[str, Any]:
    dt = b.t - a.t
    server = b.server - a.server
    me = b.me - a.me
    n = (b.n_mqtt - a.n_mqtt) + (b.n_cent - a.n_cent)
    return {
        "seconds": round(dt, 3),
        "deliveries": n,
        "deliveries_per_s": round(n / dt, 1),
        "deliveries_per_s_mqtt": round((b.n_mqtt - a.n_mqtt) / dt, 1),
        "deliveries_per_s_centrifugo": round((b.n_cent - a.n_cent) / dt, 1),
        "deliveries_per_frame": round(n / (b.frames - a.frames), 2) if b.frames > a.frames else None,
        "seq_marks_match": (b.marks - a.marks) == n,
        "server_cpu_s": round(server, 3),
        "server_cpu_util": round(server / dt, 3),
        "server_cpu_us_per_delivery": round(server / n * 1e6, 3) if n else None,
        "loadgen_cpu_util": round(me / dt, 3),
        "other_cpu_util": round((b.busy[0] - a.busy[0] - me - server) / dt, 3),
    }


async def publish_loop(gen: Gen, pub: Client, rate: float, end: float) -> None:
    """Open loop: QoS 0 PUBLISH packets at `rate` per second, whatever is due every 5 ms."""
    t0 = time.monotonic()
    while (now := time.monotonic()) < end:
        due = int((now - t0) * rate) - gen.published
        if due > 0:
            packets = []
            for _ in range(due):
                gen.published += 1
                packets.append(publish_packet(TOPIC, make_payload(gen.published, time.time_ns())))
            pub.send(b"".join(packets))
        await asyncio.sleep(0.005)


async def run_fanout(gen: Gen, ws: Any, closers: list[Any]) -> dict[str, Any]:
    """fanout and mixed: subscribers, one MQTT publisher at a fixed rate, a measured window."""
    a = gen.a
    n_cent = a.n // 2 if a.mode == "mixed" else 0
    n_mqtt = a.n - n_cent
    samplers = {round(j * (n_mqtt - 1) / 9) for j in range(10)} if n_mqtt >= 10 else set(range(n_mqtt))
    mqtt_subs = [Client(gen, f"s{i}", sub_topic=TOPIC, sampler=i in samplers) for i in range(n_mqtt)]
    result: dict[str, Any] = {"connect": await open_clients(gen, mqtt_subs, ws, a.port, closers)}
    subs: list[Any] = list(mqtt_subs)
    if n_cent:
        cent_connect = _picows_connect(gen)  # type: ignore[arg-type]
        url = f"ws://127.0.0.1:{a.port}/connection/websocket"
        cents: list[Sub] = []
        for _ in range(n_cent):  # fanout_formats' Centrifugo JSON subscriber of channel "bench"
            s = Sub(gen, protobuf=False)  # type: ignore[arg-type]
            try:
                async with asyncio.timeout(10):
                    closers.append(await cent_connect(s, url))
                cents.append(s)
            except Exception as e:
                gen.errors[f"centrifugo connect: {type(e).__name__}: {str(e)[:120]}"] += 1
        result["centrifugo_subscribers"] = len(cents)
        subs += cents
    if not subs:
        raise SystemExit(f"no subscriber connected: {dict(gen.errors.most_common(3))}")
    pub = [Client(gen, "publisher")]
    await open_clients(gen, pub, ws, a.port, closers)
    if not pub:
        raise SystemExit(f"the publisher did not connect: {dict(gen.errors.most_common(3))}")
    await asyncio.sleep(0.5)  # let the last subscribes settle
    end = time.monotonic() + a.warmup + a.seconds + 0.2
    task = asyncio.create_task(publish_loop(gen, pub[0], a.rate, end))
    await asyncio.sleep(a.warmup)
    first = Snap(gen, subs)
    gen.recording = True
    await asyncio.sleep(a.seconds)
    last = Snap(gen, subs)
    gen.recording = False
    await task
    result.update(window(gen, first, last))
    result["offered_deliveries_per_s"] = round(a.rate * len(subs), 1)
    result["latency_ms"] = percentiles(gen.lat)
    for _ in range(100):  # bounded drain (5 s): QoS 0 on loopback should lose nothing
        if all(s.n >= gen.published for s in subs):
            break
        await asyncio.sleep(0.05)
    result["published"] = gen.published
    result["lost"] = sum(max(0, gen.published - s.n) for s in subs)
    result["subscribers"] = len(subs)
    return result


async def run_rr(gen: Gen, connect: Any, closers: list[Any]) -> dict[str, Any]:
    a = gen.a
    clients = [Client(gen, f"rr{i}") for i in range(a.n)]
    result: dict[str, Any] = {"connect": await open_clients(gen, clients, connect, a.port, closers)}
    if not clients:
        raise SystemExit(f"no client connected: {dict(gen.errors.most_common(3))}")
    for i, c in enumerate(clients):
        c.rr_topic = b"rr%d" % i
        c.rr_send()
    await asyncio.sleep(a.warmup)
    cpu0, me0, busy0, t0 = (
        proc_cpu_seconds(a.server_pid),
        time.process_time(),
        machine_busy_seconds(),
        time.perf_counter(),
    )
    gen.recording = True
    await asyncio.sleep(a.seconds)
    gen.recording = False
    dt = time.perf_counter() - t0
    cpu, me = proc_cpu_seconds(a.server_pid) - cpu0, time.process_time() - me0
    busy = machine_busy_seconds()[0] - busy0[0]
    gen.running = False
    acks = sum(c.acks for c in clients)
    result.update(
        {
            "clients": len(clients),
            "seconds": round(dt, 3),
            "acks": acks,
            "acks_per_s": round(acks / dt, 1),
            "latency_ms": percentiles(gen.lat),
            "server_cpu_util": round(cpu / dt, 3),
            "server_cpu_us_per_ack": round(cpu / acks * 1e6, 2) if acks else None,
            "loadgen_cpu_util": round(me / dt, 3),
            "other_cpu_util": round((busy - me - cpu) / dt, 3),
        }
    )
    return result


async def run_idle(gen: Gen, connect: Any, closers: list[Any]) -> dict[str, Any]:
    a = gen.a
    warm = [Client(gen, f"w{i}") for i in range(50)]
    await open_clients(gen, warm, connect, a.port, closers)
    await asyncio.sleep(1.0)
    rss0 = proc_rss_kib(a.server_pid)
    clients = [Client(gen, f"c{i}") for i in range(a.n)]
    busy0, me0 = machine_busy_seconds(), time.process_time()
    ramp = await open_clients(gen, clients, connect, a.port, closers)
    busy = machine_busy_seconds()[0] - busy0[0]
    await asyncio.sleep(2.0)
    rss1 = proc_rss_kib(a.server_pid)
    n = len(clients)
    cpu = (ramp["server_cpu_us_per_connect"] or 0) * n / 1e6
    me = time.process_time() - me0
    return {
        "connect": ramp,
        "connects_per_s": ramp["connects_per_s"],
        "server_cpu_us_per_connect": ramp["server_cpu_us_per_connect"],
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "idle_connections": n,
        "rss_kib_per_connection": round((rss1 - rss0) / n, 2) if n else None,
        "loadgen_cpu_util": round(me / ramp["seconds"], 3) if ramp["seconds"] else None,
        "other_cpu_util": round((busy - me - cpu) / ramp["seconds"], 3) if ramp["seconds"] else None,
    }


async def loadgen_main(a: argparse.Namespace) -> dict[str, Any]:
    gen = Gen(a)
    connect = tcp_connector(gen) if a.transport == "tcp" else ws_connector(gen)
    if a.transport == "tcp":
        a.port = a.tcp_port
    closers: list[Any] = []
    result: dict[str, Any] = {"mode": a.mode, "transport": a.transport}
    try:
        if a.mode in ("fanout", "mixed"):
            result.update(await run_fanout(gen, connect, closers))
        elif a.mode == "rr":
            result.update(await run_rr(gen, connect, closers))
        else:
            result.update(await run_idle(gen, connect, closers))
    finally:
        gen.closing = True
        gen.running = False
        for close in closers:
            with contextlib.suppress(Exception):
                close()
        await asyncio.sleep(0.2)
    result.update(
        {
            "disconnects": gen.disconnects,
            "close_codes": dict(gen.close_codes.most_common(5)),
            "errors": dict(gen.errors.most_common(8)),
        }
    )
    return result


def loadgen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mqtt_vs_mosquitto.py loadgen")
    p.add_argument("--mode", choices=("fanout", "mixed", "rr", "idle"), required=True)
    p.add_argument("--port", type=int, required=True, help="WebSocket port")
    p.add_argument("--tcp-port", type=int, required=True, help="MQTT TCP port")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--transport", choices=("ws", "tcp"), default="ws")
    p.add_argument("--n", type=int, default=1000, help="subscribers / publishers / idle connections")
    p.add_argument("--rate", type=float, default=200.0, help="publications/s (fanout, mixed)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--ramp-timeout", type=float, default=90.0)
    a = p.parse_args(argv)
    a.n = max(1, min(a.n, 19000))
    a.seconds, a.warmup, a.ramp_timeout = min(a.seconds, 120.0), min(a.warmup, 30.0), min(a.ramp_timeout, 180.0)
    raise_nofile()
    gc.disable()  # short-lived and bounded; the cyclic GC would only cost load-generator CPU
    import uvloop

    print(json.dumps(uvloop.run(loadgen_main(a)), sort_keys=True))
    return 0


# =========================================================================== orchestrator


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    """Poll (bounded) until something accepts on 127.0.0.1:port."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
        time.sleep(0.1)
    return False


def listening_addresses(pid: int) -> list[str]:
    """Local addresses of the listening TCP sockets of a process (ss), to check loopback-only binds."""
    out = subprocess.run(["ss", "-Hltnp"], check=False, capture_output=True, text=True, timeout=10).stdout
    return sorted({line.split()[3] for line in out.splitlines() if f"pid={pid}," in line})


def start_server(name: str, tree: Path, tmp: Path, log: Any) -> tuple[subprocess.Popen[bytes], int, int, str]:
    """(process, WebSocket port, TCP port, error): a fresh server pinned to core 0."""
    ws_port, tcp_port = free_port(), free_port()
    while tcp_port == ws_port:
        tcp_port = free_port()
    if name == "trunkline":
        config = tmp / f"trunkline-{ws_port}.toml"
        config.write_text(TRUNKLINE_CONFIG.format(tcp_port=tcp_port))
        argv = ["taskset", "-c", SERVER_CORE, PY, "-m", "trunkline", "serve", "--config", str(config)]
        proc = subprocess.Popen(
            [*argv, "--port", str(ws_port)],
            cwd=tree,
            env=server_env(tree),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ok = wait_listening(ws_port, proc) and wait_tcp(tcp_port, proc)
    else:
        config = tmp / f"mosquitto-{ws_port}.conf"
        config.write_text(MOSQUITTO_CONFIG.format(tcp_port=tcp_port, ws_port=ws_port))
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, mosquitto, "-c", str(config)],
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ok = wait_tcp(tcp_port, proc) and wait_tcp(ws_port, proc)
    return proc, ws_port, tcp_port, "" if ok else f"{name} did not start (exit {proc.poll()})"


def run_one(sc: Scenario, server: str, a: argparse.Namespace, tree: Path, tmp: Path) -> dict[str, Any]:
    """A fresh server on core 0, the load generator on core 1; both stopped at the end."""
    busy_before = wait_quiet(a.quiet_wait)
    t0 = time.monotonic()
    log_path = tmp / f"{sc.name}.{server}.log"
    srv: subprocess.Popen[bytes] | None = None
    n = sc.n if not a.quick else max(10, sc.n // 10)
    with open(log_path, "ab") as log:
        try:
            srv, ws_port, tcp_port, error = start_server(server, tree, tmp, log)
            if error:
                return {"error": f"{error}: {log_path.read_text()[-300:]}"}
            binds = listening_addresses(srv.pid)
            time.sleep(0.3)
            gen_argv = [
                "taskset", "-c", LOADGEN_CORE, PY, str(Path(__file__).resolve()), "loadgen",
                "--mode", sc.mode, "--transport", sc.transport, "--n", str(n), "--rate", str(sc.rate),
                "--port", str(ws_port), "--tcp-port", str(tcp_port), "--server-pid", str(srv.pid),
                "--seconds", str(a.seconds), "--warmup", str(a.warmup),
            ]  # fmt: skip
            limit = 200 + 2 * (a.warmup + a.seconds)
            result = run_loadgen(gen_argv, BENCH, limit)
            if "error" in result:
                return result
            result["machine_busy_before"] = busy_before
            result["listening"] = binds
            if srv.poll() is not None:
                result["server_exited"] = srv.returncode
            return result
        finally:
            if srv is not None:
                stop(srv)
            print(f"  {sc.name:<16} {server:<10} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)


SUMMARY_KEYS = (
    "deliveries_per_s",
    "deliveries_per_s_mqtt",
    "deliveries_per_s_centrifugo",
    "server_cpu_us_per_delivery",
    "server_cpu_util",
    "deliveries_per_frame",
    "acks_per_s",
    "server_cpu_us_per_ack",
    "connects_per_s",
    "server_cpu_us_per_connect",
    "rss_kib_per_connection",
    "loadgen_cpu_util",
    "other_cpu_util",
)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"error": rows[-1].get("error", "no run") if rows else "no run"}
    s: dict[str, Any] = {k: median(ok, k) for k in SUMMARY_KEYS}
    for q in ("p50", "p99"):
        s[f"latency_{q}_ms"] = median([{"v": r.get("latency_ms", {}).get(q)} for r in ok], "v")
    s["rounds"] = len(ok)
    s["offered_deliveries_per_s"] = ok[0].get("offered_deliveries_per_s")
    s["n"] = ok[0].get("subscribers") or ok[0].get("clients") or ok[0].get("idle_connections")
    s["lost"] = sum(r.get("lost", 0) for r in ok)
    s["failed_connects"] = sum(r.get("connect", {}).get("failed", 0) for r in ok)
    s["seq_marks_match"] = all(r.get("seq_marks_match", True) for r in ok)
    s["contended_rounds"] = sum(1 for r in ok if (r.get("other_cpu_util") or 0) > CONTENDED)
    s["loadgen_bound_rounds"] = sum(1 for r in ok if (r.get("loadgen_cpu_util") or 0) > 0.9)
    s["errors"] = {k: v for r in ok for k, v in r.get("errors", {}).items()}
    return s


def ratio(x: float | None, base: float | None) -> str:
    return f"x{x / base:.2f}" if x is not None and base else "-"


COLUMNS: dict[str, list[tuple[str, str, int]]] = {  # mode -> (header, key, decimals)
    "fanout": [
        ("subscribers", "n", 0),
        ("offered deliveries/s", "offered_deliveries_per_s", 0),
        ("deliveries/s", "deliveries_per_s", 0),
        ("server CPU", "server_cpu_util", 2),
        ("server CPU µs / delivery", "server_cpu_us_per_delivery", 3),
        ("latency p50 ms", "latency_p50_ms", 2),
        ("latency p99 ms", "latency_p99_ms", 2),
        ("deliveries / frame", "deliveries_per_frame", 2),
        ("loadgen CPU", "loadgen_cpu_util", 2),
    ],
    "rr": [
        ("publishers", "n", 0),
        ("PUBACKs/s", "acks_per_s", 0),
        ("p50 ms", "latency_p50_ms", 3),
        ("p99 ms", "latency_p99_ms", 3),
        ("server CPU", "server_cpu_util", 2),
        ("server CPU µs / PUBLISH", "server_cpu_us_per_ack", 1),
        ("loadgen CPU", "loadgen_cpu_util", 2),
    ],
    "idle": [
        ("connections", "n", 0),
        ("connects/s", "connects_per_s", 0),
        ("server CPU µs / connect", "server_cpu_us_per_connect", 0),
        ("RSS KiB / idle connection", "rss_kib_per_connection", 2),
        ("loadgen CPU", "loadgen_cpu_util", 2),
    ],
    "mixed": [
        ("subscribers (MQTT + Centrifugo)", "n", 0),
        ("offered deliveries/s", "offered_deliveries_per_s", 0),
        ("deliveries/s", "deliveries_per_s", 0),
        ("MQTT deliveries/s", "deliveries_per_s_mqtt", 0),
        ("Centrifugo deliveries/s", "deliveries_per_s_centrifugo", 0),
        ("server CPU µs / delivery", "server_cpu_us_per_delivery", 3),
        ("latency p50 ms (MQTT)", "latency_p50_ms", 2),
        ("latency p99 ms (MQTT)", "latency_p99_ms", 2),
    ],
}


def table(sc: Scenario, rows: dict[str, dict[str, Any]]) -> str:
    cols = COLUMNS[sc.mode]
    head = "| server | " + " | ".join(h for h, _, _ in cols) + " | undelivered after 5 s | flags |"
    lines = [head, "|---|" + "---:|" * len(cols) + "---:|---|"]
    for server, s in rows.items():
        if "error" in s:
            lines.append(f"| {server} | error: {s['error'][:200]} |")
            continue
        flags = []
        if s["contended_rounds"]:
            flags.append(f"CONTENDED ({s['contended_rounds']} of {s['rounds']})")
        if s["loadgen_bound_rounds"]:
            flags.append(f"LOADGEN-BOUND ({s['loadgen_bound_rounds']})")
        if not s["seq_marks_match"]:
            flags.append("COUNT MISMATCH")
        if s["failed_connects"]:
            flags.append(f"{s['failed_connects']} connects failed")
        vals = " | ".join(fmt(s[k], d) for _, k, d in cols)
        lines.append(f"| {server} | {vals} | {s['lost']:,} | {', '.join(flags)} |")
    t, m = rows.get("trunkline", {}), rows.get("mosquitto", {})
    if t and m and "error" not in t and "error" not in m:
        vals = " | ".join(ratio(t[k], m[k]) if k != "n" else "" for _, k, _ in cols)
        lines.append(f"| trunkline ÷ mosquitto | {vals} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadgen"]:
        return loadgen(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the window")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the tables show medians")
    p.add_argument("--after-commit", default="HEAD", help="Trunkline commit to serve, or 'worktree' for the live src/")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max seconds to wait for an idle machine per run")
    p.add_argument("--out", default=str(BENCH / "results" / "mqtt_vs_mosquitto.json"))
    p.add_argument("--quick", action="store_true", help="N / 10, 3 s windows, 1 round (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.seconds, a.warmup, a.rounds = 3.0, 1.0, 1
    a.seconds, a.rounds = max(1.0, min(a.seconds, 60.0)), max(1, min(a.rounds, 10))
    a.quiet_wait = max(0.0, min(a.quiet_wait, 120.0))
    names = [n for n in a.scenarios.split(",") if n]
    servers = [s for s in a.servers.split(",") if s]
    unknown = (set(names) - set(SCENARIOS)) | (set(servers) - set(SERVERS))
    if unknown:
        raise SystemExit(f"unknown scenarios or servers: {sorted(unknown)}")
    for tool in ("taskset", "mosquitto", "ss"):
        if shutil.which(tool) is None and not (tool == "mosquitto" and Path("/usr/sbin/mosquitto").exists()):
            raise SystemExit(f"{tool} not found (apt-get install util-linux mosquitto iproute2)")
    raise_nofile()  # inherited by both servers and the load generator
    mosq = subprocess.run(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"], check=False, capture_output=True, text=True
    ).stdout.splitlines()[:1]
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmpname:
        tmp = Path(tmpname)
        tree, commit = prepare_after(a.after_commit, tmp)
        setup = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "argv": sys.argv[1:],
            "machine": machine(),
            "mosquitto": mosq[0] if mosq else "?",
            "trunkline_commit": commit,
            "trunkline_imported_from": imported_from(tree),
            "servers": "taskset -c 0; the load generator under taskset -c 1; everything on 127.0.0.1",
            "mqtt": "3.1.1, clean session, QoS 0 fan-out, QoS 1 round trips; WebSocket subprotocol mqtt",
            "payload_bytes": PAYLOAD_SIZE,
            "seconds": a.seconds,
            "warmup": a.warmup,
            "rounds": a.rounds,
            "quick": a.quick,
            "trunkline_config": TRUNKLINE_CONFIG,
            "mosquitto_config": MOSQUITTO_CONFIG,
        }
        print(
            f"MQTT: trunkline {commit[:10]} vs {setup['mosquitto']}; {a.seconds:g} s windows, {a.rounds} round(s)",
            file=sys.stderr,
            flush=True,
        )
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for name in names:
                sc = SCENARIOS[name]
                for server in (s for s in servers if s in sc.servers):
                    r = run_one(sc, server, a, tree, tmp)
                    r["round"] = rnd + 1
                    raw[name].setdefault(server, []).append(r)
        summary = {n: {srv: summarize(rows) for srv, rows in raw[n].items()} for n in names}
        logs = {p.name: p.read_text()[-2000:] for p in tmp.glob("*.log") if p.stat().st_size}
    doc = {"setup": setup, "summary": summary, "runs": raw, "server_logs": logs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    for name in names:
        print(f"\n#### {name}\n")
        print(table(SCENARIOS[name], summary[name]))
    print(f"\nresults: {out}")
    return 0 if all("error" not in s for rows in summary.values() for s in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
