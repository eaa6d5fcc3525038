"""Shared-poll fixtures: the refresh-proxy backend process, a server configured for it, and a
centrifuge-js driver (Node) that tracks keys and reports updates."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backend_process import backend_process
from tests.conftest import ROOT, Running, token

BACKEND = Path(__file__).with_name("backend.py")
DRIVER = Path(__file__).with_name("driver.js")
HMAC = "track-secret"
#: the refresh interval of the test namespaces: an update must arrive within one
INTERVAL = 0.4


@dataclass
class Backend:
    url: str
    process: subprocess.Popen[bytes]

    def _post(self, path: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    def set(self, channel: str, key: str, data: Any = None, **extra: Any) -> None:
        self._post("/set", {"channel": channel, "key": key, "data": data, **extra})

    def reset(self) -> None:
        self._post("/reset", {})

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as resp:
            found: dict[str, Any] = json.loads(resp.read())
        return found

    def calls(self, channel: str, path: str = "/refresh") -> int:
        return int(self.stats()["calls"].get(path, {}).get(channel, 0))

    def asked(self, channel: str) -> list[str]:
        return list(self.stats()["asked"].get(channel, []))


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with backend_process(BACKEND, "the shared-poll backend") as (url, process):
        yield Backend(url, process)


def poll_config(url: str, **top: Any) -> dict[str, Any]:
    """Shared-poll namespaces on the backend's endpoints (each test uses its own channels)."""

    def ns(name: str, **block: Any) -> dict[str, Any]:
        return {
            "name": name,
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": True,
            "shared_poll": {"refresh_interval": f"{int(INTERVAL * 1000)}ms", **block},
        }

    return {
        "shared_poll": {"hmac_secret_key": HMAC, **top},
        "proxies": [
            {"name": "slow", "endpoint": f"{url}/slow", "timeout": "300ms"},
            {"name": "fail", "endpoint": f"{url}/fail"},
            {"name": "sleepy", "endpoint": f"{url}/sleepy"},
            {"name": "error", "endpoint": f"{url}/error"},
        ],
        "channel": {
            "proxy": {"shared_poll_refresh": {"endpoint": f"{url}/refresh", "timeout": "2s"}},
            "namespaces": [
                ns("votes"),
                ns("ver", mode="versioned"),
                ns("small", max_keys_per_connection=3, max_keys_per_channel=4),
                ns("batch", refresh_batch_size=2),
                ns("slow", proxy_name="slow"),
                ns("fail", proxy_name="fail"),
                ns("sleepy", proxy_name="sleepy"),
                ns("error", proxy_name="error"),
            ],
        },
    }


@pytest.fixture
async def poll_server(start_server: Callable[..., Any], backend: Backend) -> Running:
    backend.reset()
    running: Running = await start_server(poll_config(backend.url))
    return running


@dataclass
class Driver:
    """centrifuge-js clients in one Node process (tests/shared_poll/driver.js)."""

    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def send(self, **cmd: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))

    def found(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if all(e.get(k) == v for k, v in match.items())]

    async def wait(self, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.found(**match)
            if hits:
                return hits[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no event {match} within {timeout}s; events: {self.events[-20:]}")

    async def client(self, cid: str, server: Running, *, user: str = "42", protobuf: bool = False) -> None:
        await self.send(op="connect", id=cid, url=server.ws_url, token=token(user), protobuf=protobuf)
        await self.wait(ev="connected", id=cid)

    async def subscribe(self, cid: str, channel: str, *, user: str = "42", secret: str = HMAC, ttl: int = 3600) -> None:
        await self.send(op="subscribe", id=cid, channel=channel, user=user, secret=secret, ttl=ttl)
        await self.wait(ev="subscribed", id=cid, channel=channel)


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    d = Driver(process)
    d._reader = asyncio.ensure_future(d._read())
    try:
        yield d
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        await d._reader
