"""Real processes for the fault tests: a redis-server of our own, Trunkline nodes, a gate in between.

- ``RedisProcess``: one ``redis-server`` on a free 127.0.0.1 port, without
  persistence, which a test may ``kill -9`` and start again (empty, same port),
  stop (``SIGSTOP``) and continue (``SIGCONT``).
- ``NodeProcess``: ``python -m trunkline serve`` with a JSON config, ready once
  ``/ready`` answers 200 (the broker is reachable).
- ``cluster``: redis, node A (subscribers) whose Redis connections pass through a
  :class:`~tests.faults.proxy.SegmentingProxy` (the ``gate``, a plain relay that a
  test can close to new connections), and node B (the API publisher's node).

Every process is stopped by its PID at teardown (a stopped redis is continued first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, ROOT, SECRET, deep_merge, free_port
from tests.faults.proxy import SegmentingProxy

REDIS_SERVER = shutil.which("redis-server")
NAMESPACE = "faults"


class RedisProcess:
    """A redis-server that the test owns: it can be killed, stopped and restarted on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self) -> None:
        assert REDIS_SERVER is not None
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 10.0) -> None:
        self._spawn()
        await self.wait_ping(timeout)

    async def wait_ping(self, timeout: float = 10.0) -> None:
        """Until the server answers PING (polled: a process gives no other sign), bounded."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    writer.write(b"PING\r\n")
                    async with asyncio.timeout(1.0):
                        if (await reader.readline()).startswith(b"+PONG"):
                            return
                except TimeoutError:
                    pass
                finally:
                    writer.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")
            await asyncio.sleep(0.02)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def node_config(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": API_KEY},
        "log": {"level": "warning"},
        "channel": {
            "namespaces": [
                {
                    "name": NAMESPACE,
                    "history_size": 10000,
                    "history_ttl": "600s",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                }
            ]
        },
    }
    return deep_merge(base, extra or {})


@dataclass
class NodeProcess:
    name: str
    config_path: Path
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.http_url}/api"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trunkline", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/ready`` answers 200 (polled), bounded; fails if the process exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited early:\n{self.output()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.http_url}/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {self.name} not ready within {timeout}s:\n{self.output()[-3000:]}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_node(directory: Path, name: str, config: Mapping[str, Any]) -> NodeProcess:
    port = free_port()
    data = deep_merge(config, {"http_server": {"port": port, "address": "127.0.0.1"}})
    path = directory / f"node-{name}-{port}.json"
    path.write_text(json.dumps(data))
    return NodeProcess(name, path, directory / f"node-{name}-{port}.log", port)


@dataclass
class Cluster:
    redis: RedisProcess
    gate: SegmentingProxy  # node A -> redis
    a: NodeProcess
    b: NodeProcess
    prefix: str


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if REDIS_SERVER is None:
        pytest.fail("needs redis-server: run `make system-deps` (make test does)")
    redis = RedisProcess(tmp_path)
    gate: SegmentingProxy | None = None
    nodes: list[NodeProcess] = []
    try:
        await redis.start()
        gate = await SegmentingProxy(redis.port).start()
        prefix = f"f{uuid.uuid4().hex[:8]}"

        def engine(port: int) -> dict[str, Any]:
            return {"engine": {"type": "redis", "redis": {"address": f"redis://127.0.0.1:{port}/0", "prefix": prefix}}}

        a = make_node(tmp_path, "a", node_config(engine(gate.port)))
        b = make_node(tmp_path, "b", node_config(engine(redis.port)))
        nodes = [a, b]
        for node in nodes:
            node.spawn()
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        yield Cluster(redis, gate, a, b, prefix)
    finally:
        for node in nodes:
            node.stop()
        if gate is not None:
            await gate.close()
        redis.stop()


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One memory-engine node for the proxy tests, with room for 1 MB publications (4 MiB bodies)."""
    directory = tmp_path_factory.mktemp("api-node")
    node = make_node(
        directory,
        "api",
        node_config({"http_api": {"max_body_size": 4 * 1024 * 1024}, "websocket": {"message_size_limit": 1 << 20}}),
    )
    node.spawn()
    try:
        asyncio.run(node.wait_ready())
        yield node
    finally:
        node.stop()
