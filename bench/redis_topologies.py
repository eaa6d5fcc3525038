"""Publish throughput on three Redis topologies (issue 19): one server, a 3-master Cluster, 2 shards.

Every topology runs on real ``redis-server`` processes started here (free loopback ports, no
persistence, stopped by pid at the end):

* ``single``: one redis-server;
* ``cluster``: 3 masters, no replicas (``redis-cli --cluster create``);
* ``shards2``: two independent redis-servers, ``engine.redis.address`` as a list.

Three measurements per topology, over 1000 channels, with history on (size 100, ttl 60 s)
unless said otherwise:

* ``broker``: this process publishes through :class:`RedisBroker` / :class:`ShardedRedisBroker`
  directly (``make_redis_engine``), 64 publications in flight, for the window: publications/s,
  the CPU of this process (the client side: Python, redis-py) and of the redis-servers summed.
* ``plain``: the same without history (a bare PUBLISH per publication);
* ``http``: a ``trunkline serve`` process on the topology; this process sends ``POST /api/publish``
  (32 in flight on keep-alive connections): publications/s, Trunkline's CPU, Redis's CPU.

The machine has 2 cores shared with other work, so the topologies are measured in alternating
rounds (single, cluster, shards2, single, ...) and reported per round, with the median and the
ratio to ``single`` of the same round.

    .venv/bin/python bench/redis_topologies.py             # about 2 minutes
    .venv/bin/python bench/redis_topologies.py --quick     # 2 s windows, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from loadgen import proc_cpu_seconds  # noqa: E402  (bench/ is on sys.path when run as a script)
from run import free_port, stop, wait_listening  # noqa: E402
from tests.broker.redis_procs import ClusterDeployment, Proc, command, wait_for  # noqa: E402

from trunkline.broker.base import Publication, PublishOptions  # noqa: E402
from trunkline.broker.redis_topology import make_redis_engine  # noqa: E402
from trunkline.config import RedisSettings  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
TOPOLOGIES = ("single", "cluster", "shards2")
CHANNELS = 1000
HISTORY = PublishOptions(history_size=100, history_ttl=60.0)


class Topology:
    """The redis-server processes of one topology and the engine settings that name them."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.procs: list[Proc] = []
        self.cluster: ClusterDeployment | None = None
        if name == "cluster":
            self.cluster = ClusterDeployment(directory / name, masters=3, replicas=0)
            self.procs = self.cluster.nodes
        else:
            for i in range(1 if name == "single" else 2):
                port = free_port()
                args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
                proc = Proc(args, port, directory / f"{name}{i}")
                wait_for(lambda p=proc: command(p.port, "PING") == "PONG", 10, "redis-server")
                self.procs.append(proc)

    def engine(self, prefix: str) -> dict[str, Any]:
        if self.cluster is not None:
            return {"cluster_address": [",".join(self.cluster.seeds)], "prefix": prefix}
        urls = [f"redis://127.0.0.1:{p.port}/0" for p in self.procs]
        return {"address": urls if len(urls) > 1 else urls[0], "prefix": prefix}

    def settings(self, prefix: str) -> RedisSettings:
        engine = self.engine(prefix)
        if isinstance(engine.get("address"), list):
            engine["address"] = ",".join(engine["address"])
        if "cluster_address" in engine:
            engine["cluster_address"] = tuple(engine["cluster_address"])
        return RedisSettings(**engine)

    def redis_cpu(self) -> float:
        return sum(proc_cpu_seconds(p.process.pid) for p in self.procs if p.process is not None)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


async def closed_loop(send: Callable[[int], Awaitable[None]], in_flight: int, seconds: float) -> int:
    """Keep ``in_flight`` sends going for ``seconds``; the number completed."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(start: int) -> None:
        nonlocal done
        n = start
        while time.monotonic() < end:
            await send(n)
            done += 1
            n += in_flight

    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    return done


async def measure_broker(topology: Topology, seconds: float, options: PublishOptions = HISTORY) -> dict[str, Any]:
    broker, _ = make_redis_engine(topology.settings(f"bench-{time.monotonic_ns()}"))

    class Quiet:
        def handle_publication(self, *_: Any) -> None: ...
        def handle_join(self, *_: Any) -> None: ...
        def handle_leave(self, *_: Any) -> None: ...
        def handle_control(self, *_: Any) -> None: ...
        def handle_resync(self) -> None: ...
        def handle_pattern_publication(self, *_: Any) -> None: ...

    await broker.start(Quiet())
    body = Publication(data=b'{"n":1,"pad":"' + b"x" * 64 + b'"}')

    async def send(n: int) -> None:
        await broker.publish(f"c{n % CHANNELS}", body, options)

    await closed_loop(send, 64, 0.5)  # warm-up: connections, scripts loaded
    me = os.getpid()
    cpu0, redis0, t0 = proc_cpu_seconds(me), topology.redis_cpu(), time.monotonic()
    count = await closed_loop(send, 64, seconds)
    elapsed = time.monotonic() - t0
    cpu, redis = proc_cpu_seconds(me) - cpu0, topology.redis_cpu() - redis0
    await broker.close()
    return {
        "publications_per_s": count / elapsed,
        "client_cpu_cores": cpu / elapsed,
        "redis_cpu_cores": redis / elapsed,
        "redis_us_per_publication": redis / count * 1e6,
    }


def server_config(topology: Topology, directory: Path, port: int) -> Path:
    engine = topology.engine(f"benchhttp-{time.monotonic_ns()}")
    lines = [
        "[client]",
        "insecure = true",
        "[http_api]",
        'key = "bench"',
        "[channel.without_namespace]",
        "history_size = 100",
        'history_ttl = "60s"',
        "[log]",
        'level = "warning"',
        "[http_server]",
        f"port = {port}",
        "[engine]",
        'type = "redis"',
        "[engine.redis]",
        *(f"{key} = {json.dumps(value)}" for key, value in engine.items()),
    ]
    path = directory / f"trunkline-{topology.name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def measure_http(topology: Topology, directory: Path, seconds: float) -> dict[str, Any]:
    port = free_port()
    config = server_config(topology, directory, port)
    log = (directory / f"trunkline-{topology.name}.log").open("wb")
    server = subprocess.Popen(  # noqa: ASYNC220  (started once per measurement, before the window)
        [PY, "-m", "trunkline", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if not wait_listening(port, server):
            raise RuntimeError(f"trunkline did not start on {topology.name}")
        url = f"http://127.0.0.1:{port}/api/publish"
        headers = {"X-API-Key": "bench", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

            async def send(n: int) -> None:
                payload = json.dumps({"channel": f"c{n % CHANNELS}", "data": {"n": n, "pad": "x" * 64}})
                async with http.post(url, data=payload) as response:
                    if response.status != 200:
                        raise RuntimeError(f"publish answered {response.status}")
                    answer = await response.json()
                    if "error" in answer:
                        log.flush()
                        tail = (directory / f"trunkline-{topology.name}.log").read_text()[-3000:]
                        raise RuntimeError(f"publish failed on {topology.name}: {answer}\n{tail}")

            await closed_loop(send, 32, 0.5)
            cpu0, redis0, t0 = proc_cpu_seconds(server.pid), topology.redis_cpu(), time.monotonic()
            count = await closed_loop(send, 32, seconds)
            elapsed = time.monotonic() - t0
            cpu, redis = proc_cpu_seconds(server.pid) - cpu0, topology.redis_cpu() - redis0
        return {
            "publications_per_s": count / elapsed,
            "server_cpu_cores": cpu / elapsed,
            "server_us_per_publication": cpu / count * 1e6,
            "redis_cpu_cores": redis / elapsed,
            "redis_us_per_publication": redis / count * 1e6,
        }
    finally:
        stop(server)
        log.close()


def table(rounds: list[dict[str, dict[str, Any]]], level: str, columns: list[tuple[str, str, int]]) -> str:
    head = "| topology | " + " | ".join(title for title, _, _ in columns) + " | ÷ single (publications/s, paired) |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for name in TOPOLOGIES:
        cells = []
        for _, key, digits in columns:
            values = [r[name][level][key] for r in rounds]
            cells.append(f"{statistics.median(values):,.{digits}f} ({', '.join(f'{v:,.{digits}f}' for v in values)})")
        ratios = [r[name][level]["publications_per_s"] / r["single"][level]["publications_per_s"] for r in rounds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(ratios):.2f} |")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 s windows, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    rounds_count, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    out = BENCH / "results" / f"redis-topologies-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        topologies: dict[str, Topology] = {}
        try:
            for name in TOPOLOGIES:
                topologies[name] = Topology(name, directory)
            rounds: list[dict[str, dict[str, Any]]] = []
            for i in range(rounds_count):
                result: dict[str, dict[str, Any]] = {}
                for name in TOPOLOGIES:
                    result[name] = {
                        "broker": await measure_broker(topologies[name], seconds),
                        "plain": await measure_broker(topologies[name], seconds, PublishOptions()),
                        "http": await measure_http(topologies[name], directory, seconds),
                    }
                    print(f"round {i + 1} {name}: {json.dumps(result[name])}", flush=True)
                rounds.append(result)
        finally:
            for topology in topologies.values():
                topology.stop()
    broker_cols = [
        ("publications/s", "publications_per_s", 0),
        ("client CPU, cores", "client_cpu_cores", 2),
        ("Redis CPU, cores (all nodes)", "redis_cpu_cores", 2),
        ("Redis µs / publication", "redis_us_per_publication", 1),
    ]
    http_cols = [
        ("publications/s", "publications_per_s", 0),
        ("Trunkline CPU, cores", "server_cpu_cores", 2),
        ("Trunkline µs / publication", "server_us_per_publication", 1),
        ("Redis CPU, cores (all nodes)", "redis_cpu_cores", 2),
        ("Redis µs / publication", "redis_us_per_publication", 1),
    ]
    report = (
        "**broker level** (RedisBroker.publish with history, 64 in flight; median (rounds))\n\n"
        + table(rounds, "broker", broker_cols)
        + "\n\n**broker level without history** (one PUBLISH; a cluster: through the slot's node)\n\n"
        + table(rounds, "plain", broker_cols)
        + "\n\n**through Trunkline** (POST /api/publish with history, 32 in flight)\n\n"
        + table(rounds, "http", http_cols)
        + "\n"
    )
    (out / "summary.json").write_text(json.dumps(rounds, indent=2))
    (out / "summary.md").write_text(report)
    print(report)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
