"""Real Redis Cluster and Sentinel deployments for the topology tests (redis-server processes on 127.0.0.1).

Every process runs on a free loopback port without persistence, is waited for with a
deadline, and is stopped by its PID (SIGTERM, then SIGKILL) by the fixture that made it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .procs import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def command(port: int, *args: str, password: str = "") -> str:
    """One command through a raw socket (inline protocol is not enough for AUTH + replies): the reply as text."""
    parts = (["AUTH", password] if password else []), list(args)
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        reply = b""
        for words in parts:
            if not words:
                continue
            payload = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)
            sock.sendall(payload)
            reply = _read_reply(sock.makefile("rb"))
        return reply.decode(errors="replace")


def _read_reply(stream: object) -> bytes:
    read = stream.readline  # type: ignore[attr-defined]
    line: bytes = read()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind in (b"+", b"-", b":"):
        return rest
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return b""
        data: bytes = stream.read(size + 2)  # type: ignore[attr-defined]
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return b"\n".join(_read_reply(stream) for _ in range(max(count, 0)))
    raise ValueError(f"unexpected reply {line!r}")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Proc:
    """One redis-server (or sentinel) process."""

    def __init__(self, args: list[str], port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.args = args
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again, after :meth:`kill`: a cluster node keeps its nodes.conf and rejoins)."""
        assert REDIS_SERVER is not None and self.process is None
        self.process = subprocess.Popen(
            [REDIS_SERVER, *self.args], cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as a crashed server does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)


def _server_args(port: int, *extra: str) -> list[str]:
    return ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", *extra]


class ClusterDeployment:
    """``masters`` masters (each with ``replicas`` replicas) made one cluster by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.nodes: list[Proc] = []
        count = masters * (1 + replicas)
        try:
            for _ in range(count):
                port = free_port()
                args = _server_args(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--cluster-port",  # the bus port (default port + 10000, which may be taken or past 65535)
                    str(free_port()),
                )
                self.nodes.append(Proc(args, port, directory / str(port)))
            for node in self.nodes:
                wait_for(lambda n=node: command(n.port, "PING") == "PONG", 10, f"redis-server on {node.port}")
            assert REDIS_CLI is not None
            subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *(n.address for n in self.nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            for node in self.nodes:
                wait_for(lambda n=node: "cluster_state:ok" in command(n.port, "CLUSTER", "INFO"), 15, "cluster ok")
            if replicas:
                wait_for(self._replicas_in_sync, 15, "replicas in sync")
        except BaseException:
            self.stop()
            raise

    @property
    def seeds(self) -> list[str]:
        return [node.address for node in self.nodes]

    def node_lines(self) -> list[list[str]]:
        """CLUSTER NODES of a live node, one split line per node."""
        for node in self.nodes:
            if node.alive():
                return [line.split() for line in command(node.port, "CLUSTER", "NODES").splitlines() if line]
        raise RuntimeError("no live cluster node")

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Port of each live master -> its slot ranges."""
        result: dict[int, list[tuple[int, int]]] = {}
        for fields in self.node_lines():
            if "master" in fields[2] and "fail" not in fields[2]:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                ranges = []
                for part in fields[8:]:
                    if part.startswith("["):
                        continue
                    low, _, high = part.partition("-")
                    ranges.append((int(low), int(high or low)))
                result[port] = ranges
        return result

    def master_of_slot(self, slot: int) -> int:
        """The port of the live master serving ``slot``; 0 while none does (during a failover)."""
        for port, ranges in self.masters().items():
            if any(low <= slot <= high for low, high in ranges):
                return port
        return 0

    def keyslot(self, key: str) -> int:
        live = next(n for n in self.nodes if n.alive())
        return int(command(live.port, "CLUSTER", "KEYSLOT", key))

    def proc(self, port: int) -> Proc:
        return next(n for n in self.nodes if n.port == port)

    def _replicas_in_sync(self) -> bool:
        for node in self.nodes:
            info = command(node.port, "INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelDeployment:
    """One master, one replica and three sentinels (down-after 1000 ms, failover-timeout 3000 ms)."""

    MASTER = "tlmaster"

    def __init__(self, directory: Path, sentinel_password: str = "") -> None:
        self.servers: list[Proc] = []
        self.sentinels: list[Proc] = []
        self.password = sentinel_password
        try:
            master_port = free_port()
            self.servers.append(Proc(_server_args(master_port), master_port, directory / "master"))
            wait_for(lambda: command(master_port, "PING") == "PONG", 10, "master")
            replica_port = free_port()
            args = _server_args(replica_port, "--replicaof", "127.0.0.1", str(master_port))
            self.servers.append(Proc(args, replica_port, directory / "replica"))
            wait_for(
                lambda: "master_link_status:up" in command(replica_port, "INFO", "replication"), 15, "replica link"
            )
            for i in range(3):
                port = free_port()
                where = directory / f"sentinel{i}"
                where.mkdir(parents=True, exist_ok=True)
                lines = [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"sentinel monitor {self.MASTER} 127.0.0.1 {master_port} 2",
                    f"sentinel down-after-milliseconds {self.MASTER} 1000",
                    f"sentinel failover-timeout {self.MASTER} 3000",
                    f"sentinel parallel-syncs {self.MASTER} 1",
                ]
                if sentinel_password:
                    lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"]
                (where / "sentinel.conf").write_text("\n".join(lines) + "\n")
                self.sentinels.append(Proc([str(where / "sentinel.conf"), "--sentinel"], port, where))
            for sentinel in self.sentinels:
                wait_for(lambda s=sentinel: self._knows_everyone(s.port), 20, "sentinels know each other")
        except BaseException:
            self.stop()
            raise

    def _knows_everyone(self, port: int) -> bool:
        replicas = command(port, "SENTINEL", "REPLICAS", self.MASTER, password=self.password)
        others = command(port, "SENTINEL", "SENTINELS", self.MASTER, password=self.password)
        return "\nip\n" in replicas and others.count("runid") >= 2

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def master_port(self) -> int:
        reply = command(
            self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER, password=self.password
        )
        return int(reply.splitlines()[1])

    def proc(self, port: int) -> Proc:
        return next(s for s in self.servers if s.port == port)

    def stop(self) -> None:
        for proc in (*self.sentinels, *self.servers):
            proc.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """3 masters with a replica each (6 processes), cluster-node-timeout 1000 ms, for the whole session.

    A test that kills a master starts it again before it ends (it rejoins as a replica),
    so the cluster stays whole for the tests after it.
    """
    deployment = ClusterDeployment(tmp_path_factory.mktemp("redis-cluster"), masters=3, replicas=1)
    try:
        yield deployment
    finally:
        deployment.stop()
