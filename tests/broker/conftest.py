"""Real redis-server processes for the broker tests.

``redis_url`` is one server for the whole session: the one named by
``TRUNKLINE_TEST_REDIS_URL`` if set, else a ``redis-server`` started here on a free
127.0.0.1 port (the tests skip when neither exists). Tests isolate themselves with
a fresh key prefix, so a shared server is never flushed. ``redis_servers`` starts
private servers that a test may stop and restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from redis.asyncio import Redis

from trunkline.records import Publication

from .map_env import map_broker  # noqa: F401  (every map broker, for test_map_contract.py)
from .procs import came_up, free_port, stop_process
from .redis_procs import redis_cluster  # noqa: F401  (the session's Redis Cluster, a fixture)

REDIS_SERVER = shutil.which("redis-server")


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1, without persistence."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        assert self.process is None
        self.process = subprocess.Popen(
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not came_up(self.process, lambda: _answers_ping(self.port)):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TRUNKLINE_TEST_REDIS_URL")
    if url:
        yield url
        return
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed and TRUNKLINE_TEST_REDIS_URL is not set")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-server processes; all are stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"tltest-{uuid.uuid4().hex[:12]}"


Event = tuple[str, str, Any]
"""(kind, channel, payload): a :class:`Publication` for "pub", bytes for "join",
"leave" and "control" (channel ""), None for "resync"."""


class Recorder:
    """A BrokerEventHandler that records what it is handed, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail_next = False
        self._changed = asyncio.Event()

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("handler failure (expected by the test)")

    def handle_publication(self, channel: str, pub: Publication) -> None:
        self._record(("pub", channel, pub))

    def handle_join(self, channel: str, info: bytes) -> None:
        self._record(("join", channel, info))

    def handle_leave(self, channel: str, info: bytes) -> None:
        self._record(("leave", channel, info))

    def handle_control(self, data: bytes) -> None:
        self._record(("control", "", data))

    def handle_resync(self) -> None:
        self._record(("resync", "", None))

    def of(self, kind: str | None = None, channel: str | None = None) -> list[Event]:
        return [e for e in self.events if (kind is None or e[0] == kind) and (channel is None or e[1] == channel)]

    def publications(self, channel: str | None = None) -> list[Publication]:
        """The records handed over for ``channel`` (every channel when None), in order."""
        return [e[2] for e in self.of("pub", channel)]

    async def wait(
        self, count: int, kind: str | None = None, channel: str | None = None, timeout: float = 5.0
    ) -> list[Event]:
        """The matching events once there are at least ``count`` of them."""
        async with asyncio.timeout(timeout):
            while len(found := self.of(kind, channel)) < count:
                self._changed.clear()
                await self._changed.wait()
        return found

    async def wait_publications(
        self, count: int, channel: str | None = None, timeout: float = 5.0
    ) -> list[Publication]:
        """The records of ``channel`` once there are at least ``count`` of them."""
        return [e[2] for e in await self.wait(count, "pub", channel, timeout)]


class _Startable(Protocol):
    async def start(self, handler: Any) -> None: ...

    async def close(self) -> None: ...


B = TypeVar("B", bound=_Startable)


@asynccontextmanager
async def running(broker: B) -> AsyncIterator[tuple[B, Recorder]]:
    """``broker`` started (one "node") with a :class:`Recorder` as its handler; closed after."""
    events = Recorder()
    await broker.start(events)
    try:
        yield broker, events
    finally:
        await broker.close()


@pytest.fixture
async def raw(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the session server; removes the test's keys after."""
    client = Redis.from_url(redis_url)
    yield client
    await delete_keys(client, prefix)
    await client.aclose()


async def delete_keys(client: Redis, prefix: str) -> None:
    """Remove a test's keys (matters when the server is shared)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}.*", count=1000)]
    if keys:
        await client.delete(*keys)
