"""``trunkline serve --workers N``: N worker processes on one port, and the supervisor that runs them.

The supervisor (the process the user started) serves no client. It starts N copies of
``python -m trunkline serve --worker-id i`` and then only watches them:

- a worker that exits (a crash, ``kill -9``) is started again after a backoff (0.5 s,
  doubling to 10 s; back to 0.5 s once a worker has run 30 s); a worker that fails on
  its first start (exit code 1 or 2: a startup or config error) stops them all, and the
  supervisor exits with that code;
- SIGTERM or SIGINT is passed to every worker, which drains as one server does (``/ready``
  503, clients closed with 3001, within ``shutdown.timeout``); the supervisor exits when
  all have stopped (0), or kills the stragglers after ``shutdown.timeout`` + 5 s (1).

Each worker is a node of its own: the public port is shared (``SO_REUSEPORT``, the kernel
spreads new connections), ``node.name`` gets ``_w<i>``, ``http_server.internal_port``
(when set) becomes ``internal_port + i`` so each worker's ``/metrics`` can be scraped,
and channels, presence, history and recovery are shared through the engine, which
must therefore be ``redis`` (or ``nats``, with what it shares). Every log line carries the worker id.
With ``admin.insecure`` and no ``admin.secret``, the supervisor makes one for all its workers, so a
dashboard token or CSRF token from one worker is good on the others.

``/emulation`` requests (HTTP-streaming and SSE commands) name the node that holds the
session; the kernel may hand them to another worker. Each worker listens on a private
Unix socket ``<dir>/<node uid>.sock`` (``dir`` made by the supervisor, mode 0700) and
passes such requests to the owner through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp
from aiohttp import web

from .app import Server
from .appkeys import NODE_KEY
from .config import Settings
from .errors import ConfigError
from .node import Node
from .observe.logs import JsonFormatter, TextFormatter, setup_logging
from .transport import emulation

__all__ = [
    "WORKERS_ENV",
    "Supervisor",
    "parse_workers",
    "run_worker",
    "supervise",
    "validate",
    "worker_settings",
]

log = logging.getLogger("trunkline.workers")

WORKERS_ENV: Final = "TRUNKLINE_WORKERS"
#: ``admin.secret``: without one (``admin.insecure``) each worker would sign dashboard tokens with its own
ADMIN_SECRET_ENV: Final = "TRUNKLINE_ADMIN_SECRET"
MAX_WORKERS: Final = 1024
RESTART_MIN: Final = 0.5
RESTART_MAX: Final = 10.0
STABLE_AFTER: Final = 30.0  # a worker that ran this long restarts after RESTART_MIN again
KILL_GRACE: Final = 5.0  # beyond shutdown.timeout before the supervisor kills a worker
POLL: Final = 0.1  # the supervisor's watch interval
FORWARD_TIMEOUT: Final = 30.0
_UID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EXIT_FATAL: Final = (1, 2)  # StartupError, ConfigError
_PASSED_HEADERS: Final = ("Content-Type", "Origin")


# ------------------------------------------------------------------------------------ settings


def parse_workers(value: str) -> int:
    """``auto`` (the number of cores) or a count 1..1024; ValueError otherwise."""
    text = value.strip().lower()
    if text == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f'must be "auto" or a number of processes, not {value!r}') from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"must be between 1 and {MAX_WORKERS}, not {count}")
    return count


def validate(settings: Settings, workers: int, source: str = "") -> None:
    """Raise :class:`ConfigError` for settings N > 1 workers cannot run with."""
    if workers <= 1:
        return
    if settings.engine.type == "memory":
        raise ConfigError(
            "engine.type",
            f'is "memory": --workers {workers} needs a shared engine ("redis" or "nats"); '
            "each worker is a node of its own and the memory engine does not leave its process",
            source,
        )
    if settings.http_server.port == 0:
        raise ConfigError("http_server.port", f"is 0: --workers {workers} needs a fixed port to share", source)
    if settings.mqtt.tcp.enabled or settings.mqtt.tls.enabled:
        key = "mqtt.tcp.enabled" if settings.mqtt.tcp.enabled else "mqtt.tls.enabled"
        raise ConfigError(key, f"MQTT over TCP/TLS is not supported with --workers {workers} yet", source)


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index``: its own node name and internal port."""
    hs = settings.http_server
    base = settings.node.name or f"{socket.gethostname()}_{hs.port}"
    node = dataclasses.replace(settings.node, name=f"{base}_w{index}")
    internal = hs.internal_port + index if hs.internal_port > 0 else 0
    return dataclasses.replace(settings, node=node, http_server=dataclasses.replace(hs, internal_port=internal))


# ------------------------------------------------------------------------------------ logging


class _WorkerText(TextFormatter):
    def __init__(self, index: int) -> None:
        super().__init__(f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s")


class _WorkerJson(JsonFormatter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self._field = f', "worker": {index}}}'

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record)[:-1] + self._field  # the object's closing brace, then the field


def setup_worker_logging(settings: Settings, index: int) -> None:
    """The usual log setup, with the worker id in every line (``[worker i]`` or ``"worker": i``)."""
    setup_logging(settings.log.level, settings.log.format)
    formatter = _WorkerJson(index) if settings.log.format == "json" else _WorkerText(index)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def setup_supervisor_logging(settings: Settings) -> None:
    setup_logging(settings.log.level, settings.log.format)
    if settings.log.format != "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s"))


# ------------------------------------------------------------------------------------ forwarding


class UnixForwarder:
    """Passes ``/emulation`` requests for a sibling node to its Unix socket in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._clients: dict[str, aiohttp.ClientSession] = {}

    async def __call__(self, node_id: str, request: web.Request, body: bytes) -> web.StreamResponse | None:
        if not _UID.fullmatch(node_id):  # also keeps the path inside the directory
            return None
        path = self.directory / f"{node_id}.sock"
        if not path.exists():
            return None
        headers = {name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers}
        headers[emulation.FORWARDED_HEADER] = "1"
        headers["Host"] = request.host
        try:
            async with self._client(node_id, path).post(
                "http://worker" + request.path, data=body, headers=headers
            ) as answer:
                payload = await answer.read()
                passed = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower().startswith("access-control-") or k.lower() in ("content-type", "allow")
                }
                return web.Response(status=answer.status, body=payload, headers=passed)
        except (aiohttp.ClientError, OSError, TimeoutError):  # the owner is gone (killed, restarting)
            await self._drop(node_id)
            return None

    def _client(self, node_id: str, path: Path) -> aiohttp.ClientSession:
        client = self._clients.get(node_id)
        if client is None:
            if len(self._clients) >= MAX_WORKERS:  # owners that came and went: start afresh
                for old in list(self._clients):
                    asyncio.get_running_loop().create_task(self._drop(old))
            client = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(path)),
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            )
            self._clients[node_id] = client
        return client

    async def _drop(self, node_id: str) -> None:
        client = self._clients.pop(node_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for node_id in list(self._clients):
            await self._drop(node_id)


async def _serve_unix(node: Node, path: Path) -> web.AppRunner:
    """The private listener siblings forward ``/emulation`` requests to."""
    app = web.Application(client_max_size=max(node.settings.emulation.max_request_body_size, 1024))
    app[NODE_KEY] = node
    app.router.add_route("*", node.settings.emulation.handler_prefix, emulation.emulation_handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    _unlink(path)  # a socket left by a killed worker of the same uid cannot exist, but be safe
    await web.UnixSite(runner, str(path)).start()
    return runner


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# ------------------------------------------------------------------------------------ a worker


def run_worker(settings: Settings, index: int, directory: str) -> None:
    """Entry point of ``trunkline serve --worker-id i``: one worker under a supervisor."""
    settings = worker_settings(settings, index)
    setup_worker_logging(settings, index)
    try:
        import uvloop

        uvloop.run(_serve_worker(settings, index, Path(directory)))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep a fallback
        asyncio.run(_serve_worker(settings, index, Path(directory)))


async def _serve_worker(settings: Settings, index: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    server = Server(settings, reuse_port=True)
    server.node.worker = index  # in the node info every peer and the dashboard see
    await server.start()
    node = server.node
    forwarder = UnixForwarder(directory)
    emulation.set_forwarder(node, forwarder)
    socket_path = directory / f"{node.uid}.sock"
    unix = await _serve_unix(node, socket_path)
    (directory / f"worker-{index}.ready").write_text(str(os.getpid()))
    log.info("worker %d ready: node %s (%s), pid %d", index, node.name, node.uid, os.getpid())

    async def orphaned() -> None:  # the supervisor died without telling us: stop too
        while os.getppid() == parent:  # noqa: ASYNC110 - no event tells a process its parent died
            await asyncio.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone; stopping", parent)
        stop.set()

    watch = loop.create_task(orphaned())
    try:
        await stop.wait()
        log.info("shutting down: closing connections with 3001")
        await server.stop()
    finally:
        watch.cancel()
        emulation.set_forwarder(node, None)
        await forwarder.close()
        await unix.cleanup()
        _unlink(socket_path)


# ------------------------------------------------------------------------------------ supervisor


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_MIN
    restart_at: float | None = None  # when it is to be started again
    was_ready: bool = False


class Supervisor:
    """Starts ``count`` workers with ``command + [--worker-id, i, --worker-dir, dir]`` and watches them."""

    def __init__(self, count: int, command: Sequence[str], shutdown_timeout: float) -> None:
        self.count = count
        self.command = list(command)
        self.shutdown_timeout = shutdown_timeout
        self.directory = Path(tempfile.mkdtemp(prefix="trunkline-"))  # mode 0700
        self.children = [_Child(i) for i in range(count)]
        self._signal: int | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum

    def _start(self, child: _Child) -> None:
        _unlink(self.directory / f"worker-{child.index}.ready")
        env = {k: v for k, v in os.environ.items() if k != WORKERS_ENV}
        child.proc = subprocess.Popen(
            [*self.command, "--worker-id", str(child.index), "--worker-dir", str(self.directory)], env=env
        )
        child.started = time.monotonic()
        child.restart_at = None
        log.info("started worker %d (pid %d)", child.index, child.proc.pid)

    def _ready(self, child: _Child) -> bool:
        if child.was_ready or child.proc is None:
            return child.was_ready
        with contextlib.suppress(FileNotFoundError):
            child.was_ready = (self.directory / f"worker-{child.index}.ready").read_text() == str(child.proc.pid)
        return child.was_ready

    def run(self) -> int:
        """Run until a signal stopped every worker (0), or a first start failed (its exit code)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in self.children:  # never leave a worker behind
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait(KILL_GRACE)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self) -> int:
        log.info("starting %d workers", self.count)
        for child in self.children:
            self._start(child)
        while self._signal is None:
            now = time.monotonic()
            for child in self.children:
                self._ready(child)
                proc = child.proc
                if proc is not None and (code := proc.poll()) is not None:
                    child.proc = None
                    if not child.was_ready and code in _EXIT_FATAL:
                        log.error("worker %d failed to start (exit code %d); stopping", child.index, code)
                        self._stop_all(signal.SIGTERM)
                        return code
                    if now - child.started >= STABLE_AFTER:
                        child.delay = RESTART_MIN
                    child.restart_at = now + child.delay
                    log.warning(
                        "worker %d (pid %d) exited with %s; restarting in %.1f s",
                        child.index,
                        proc.pid,
                        _describe(code),
                        child.delay,
                    )
                    child.delay = min(child.delay * 2, RESTART_MAX)
                    child.was_ready = False
                if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
            time.sleep(POLL)
        log.info("signal %s: stopping %d workers", signal.Signals(self._signal).name, self.count)
        return self._stop_all(self._signal)

    def _stop_all(self, sig: int) -> int:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        deadline = time.monotonic() + self.shutdown_timeout + KILL_GRACE
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait(KILL_GRACE)
                return 1
        log.info("all workers stopped")
        return 0


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def supervise(settings: Settings, count: int, serve_args: Sequence[str]) -> int:
    """Entry point of ``trunkline serve --workers N`` (N > 1): run the supervisor; its exit code."""
    setup_supervisor_logging(settings)
    if settings.admin.enabled and not settings.admin.secret:  # admin.insecure: one dashboard key for all workers
        os.environ[ADMIN_SECRET_ENV] = secrets.token_urlsafe(32)
    command = [sys.executable, "-m", "trunkline", "serve", *serve_args]
    return Supervisor(count, command, settings.shutdown.timeout).run()
