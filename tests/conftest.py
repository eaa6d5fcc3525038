"""Shared fixtures: a real Trunkline server on 127.0.0.1, in-process or as a subprocess.

- ``start_server(config)``: an in-process :class:`trunkline.app.Server` on a free port
  (real sockets, same event loop as the test).
- ``server_process(config)``: ``python -m trunkline serve`` in a subprocess, for tests
  that need signals, restarts or a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.connector
import centrifuge.utils  # type: ignore[import-untyped]
import jwt
import pytest
import websockets.asyncio.connection
import websockets.client
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from playwright.async_api import Browser, async_playwright

from trunkline.app import Server
from trunkline.config import Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent


# Clients the tests drive draw from the module-level ``random``: websockets for its ping
# payloads and reconnect backoff, centrifuge-python for its backoff, aiohttp for its
# connection pool. Hypothesis, generating examples in a worker thread (``asyncio.to_thread``)
# while the event loop runs those clients, checks that the global state does not change
# during a draw and warns -- an error under ``-W error`` -- when a client's keep-alive ping
# lands inside one (CI saw it once in test_fuzz_live). Each client module gets a generator
# of its own; what they draw is as random as before.
CLIENT_RANDOM_USERS = (websockets.asyncio.connection, websockets.client, centrifuge.utils, aiohttp.connector)
for _module in CLIENT_RANDOM_USERS:
    _module.random = random.Random()  # type: ignore[attr-defined]

SECRET = "secret"
API_KEY = "test-api-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


BASE_CONFIG: dict[str, Any] = {
    "client": {"token": {"hmac_secret_key": SECRET}},
    "http_api": {"key": API_KEY},
    "log": {"level": "warning"},
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_publish_for_subscriber": True,
            "allow_presence_for_subscriber": True,
            "allow_history_for_subscriber": True,
            "presence": True,
            "join_leave": True,
            "force_push_join_leave": True,
            "history_size": 1000,
            "history_ttl": "300s",
            "force_recovery": True,
        },
        "namespaces": [
            {
                "name": "smallhistory",
                "history_size": 2,
                "history_ttl": "300s",
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
            },
            {"name": "nohistory", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
        ],
    },
}


def make_settings(extra: Mapping[str, Any] | None = None, port: int | None = None) -> Settings:
    data = deep_merge(BASE_CONFIG, extra or {})
    data = deep_merge(data, {"http_server": {"port": port or free_port()}})
    return settings_from_mapping(data, source="<test>")


def token(user: str = "42", *, ttl: float | None = 3600, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass
class Running:
    server: Server
    settings: Settings

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.internal_port or self.port}/api"


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_server({...config overrides...})`` -> Running."""
    servers: list[Server] = []

    async def start(extra: Mapping[str, Any] | None = None, node: Any = None) -> Running:
        settings = make_settings(extra)
        server = Server(settings, node)
        await server.start()
        servers.append(server)
        return Running(server, settings)

    yield start
    for server in servers:
        await server.stop(timeout=2)


@pytest.fixture
async def server(start_server: Callable[..., Any]) -> Running:
    running: Running = await start_server()
    return running


@dataclass
class Process:
    port: int
    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def start(self, timeout: float = 15.0) -> None:
        assert self.log_path is not None
        env = {**os.environ, **self.extra_env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trunkline",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory: ``server_process({...overrides...})`` -> a started subprocess server."""
    procs: list[Process] = []

    def start(extra: Mapping[str, Any] | None = None, *, start: bool = True) -> Process:
        port = free_port()
        data = deep_merge(BASE_CONFIG, extra or {})
        path = tmp_path / f"trunkline-{port}.json"
        path.write_text(json.dumps(data))
        proc = Process(port=port, config_path=path, log_path=tmp_path / f"server-{port}.log")
        procs.append(proc)
        if start:
            proc.start()
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop(signal.SIGKILL, timeout=5)


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


# A real redis-server on 127.0.0.1 for every test that asks for ``redis_url`` (started once per session).
from tests.broker.conftest import redis_url  # noqa: E402, F401

# Debian's Chromium driven by Playwright (browsers cannot be downloaded here; `make system-deps` installs it).
CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def chromium() -> AsyncIterator[Callable[..., Awaitable[Browser]]]:
    """``await chromium(*extra_args)``: a headless Chromium, closed at teardown."""
    if not HAVE_CHROMIUM:
        pytest.fail(f"needs {CHROMIUM}: run `make system-deps` (make test does)")
    async with async_playwright() as playwright:
        browsers: list[Browser] = []

        async def launch(*extra: str) -> Browser:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra]
            )
            browsers.append(browser)
            return browser

        try:
            yield launch
        finally:
            for browser in browsers:
                await browser.close()


# Signing keys for the token tests (generated once per run: RSA key generation is slow).
@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
    }


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
