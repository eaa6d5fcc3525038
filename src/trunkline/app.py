"""The aiohttp application(s): routes, listeners, TLS, lifecycle and graceful shutdown.

``Server`` runs a node behind one public listener (WebSocket, demo pages, health)
and, when ``http_server.internal_port`` is set, a second internal listener for the
server API, ``/metrics`` and the dashboard, so those need not be exposed publicly.
Applications embed it in their own asyncio program::

    node = Node(settings)

    @node.on_rpc
    async def rpc(event): ...

    async with Server(settings, node) as server:
        await server.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

from .api.http import api_legacy, api_method, api_not_allowed, api_not_found
from .appkeys import NODE_KEY
from .broker.base import Broker, PresenceManager
from .broker.map_factory import make_map_broker
from .broker.map_redis import MapRedisUnavailable, map_redis_settings
from .commands import new_session
from .config import Settings
from .errors import StartupError
from .node import Node

if TYPE_CHECKING:
    from .mqtt.listener import TcpListener
from .observe import health
from .observe.logs import HttpServerLogger
from .transport.routes import add_http_transport_routes
from .transport.websocket import GuardedTCPSite, close_detached, runner_options, websocket_handler
from .transport.ws_accept import acceptor_factory

log = logging.getLogger("trunkline.app")
STATIC = Path(__file__).parent / "web" / "static"


def make_broker(settings: Settings) -> tuple[Broker, PresenceManager]:
    """The broker and presence manager named by ``engine.type``."""
    if settings.engine.type == "redis":
        from .broker.redis_topology import make_redis_engine

        return make_redis_engine(settings.engine.redis)
    if settings.engine.type == "nats":
        return _nats_broker(settings)
    from .broker.memory import MemoryBroker, MemoryPresence

    return MemoryBroker(), MemoryPresence()


def _nats_broker(settings: Settings) -> tuple[Broker, PresenceManager]:
    """Fan-out over NATS; history, recovery and presence in Redis with ``engine.nats.history = "redis"``."""
    from .broker.nats import NatsBroker, NoPresence, RedisHistoryStore

    n, r = settings.engine.nats, settings.engine.redis
    if n.history == "redis":
        from .broker.redis import RedisPresence

        store = RedisHistoryStore(r.address, r.prefix, r.connect_timeout, r.io_timeout)
        presence: PresenceManager = RedisPresence.from_client(store.client, r.prefix, r.connect_timeout, r.io_timeout)
        return NatsBroker(n.url, n.prefix, n.dial_timeout, n.write_timeout, history=store), presence
    return NatsBroker(n.url, n.prefix, n.dial_timeout, n.write_timeout), NoPresence()


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _examples(request: web.Request) -> web.StreamResponse:
    """The gallery of the examples in ``examples/`` (linked from the chat demo at ``/``)."""
    return web.FileResponse(STATIC / "examples.html")


def _add_admin_routes(app: web.Application, settings: Settings) -> None:
    prefix = settings.http_api.handler_prefix.rstrip("/") or "/api"
    # Every answer under the prefix is JSON: POST only (405), exact method names (404).
    app.router.add_post(prefix, api_legacy)
    app.router.add_route("*", prefix, api_not_allowed)
    app.router.add_post(prefix + "/{method}", api_method)
    app.router.add_route("*", prefix + "/{method}", api_not_allowed)
    app.router.add_post(prefix + "/{path:.*}", api_not_found)
    app.router.add_route("*", prefix + "/{path:.*}", api_not_allowed)
    if settings.prometheus.enabled:
        app.router.add_get("/metrics", health.metrics)
    try:
        from .observe.dashboard import add_dashboard_routes
    except ImportError:  # the dashboard is optional
        return
    add_dashboard_routes(app, settings)


def build_app(node: Node, *, with_admin: bool = True) -> web.Application:
    """The public application; ``with_admin`` adds the API, metrics and dashboard routes."""
    settings = node.settings
    app = web.Application(client_max_size=max(settings.http_api.max_body_size, 1024))
    app[NODE_KEY] = node
    app.router.add_get("/connection/websocket", websocket_handler)
    if settings.mqtt.websocket.enabled:
        from .mqtt.listener import websocket_handler as mqtt_websocket_handler

        app.router.add_get(settings.mqtt.websocket.path, mqtt_websocket_handler)
    add_http_transport_routes(app, settings)
    if settings.poll.enabled:
        from .transport.poll import poll_handler

        app.router.add_route("*", settings.poll.handler_prefix, poll_handler)
    if settings.health.enabled:
        app.router.add_get("/health", health.health)
        app.router.add_get("/ready", health.ready)
    if with_admin:
        _add_admin_routes(app, settings)
    if settings.demo.enabled:
        from .web.demo import add_demo_routes

        add_demo_routes(app, settings)
    app.router.add_get("/", _index)
    app.router.add_get("/examples", _examples)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def build_internal_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=max(node.settings.http_api.max_body_size, 1024))
    app[NODE_KEY] = node
    _add_admin_routes(app, node.settings)
    if node.settings.health.enabled:
        app.router.add_get("/health", health.health)
        app.router.add_get("/ready", health.ready)
    return app


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.http_server.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, path in (("cert_pem_file", tls.cert_pem_file), ("key_pem_file", tls.key_pem_file)):
        try:
            Path(path).open("rb").close()
        except OSError as exc:
            raise StartupError(f"http_server.tls.{key}", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        ctx.load_cert_chain(tls.cert_pem_file, tls.key_pem_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise StartupError(
            "http_server.tls.cert_pem_file",
            f"cannot load the certificate {tls.cert_pem_file} with the key {tls.key_pem_file}: {reason}",
        ) from None
    return ctx


class Server:
    """A running node with its listeners. Use as an async context manager."""

    def __init__(self, settings: Settings, node: Node | None = None, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port  # SO_REUSEPORT on the public port: ``trunkline serve --workers N``
        if node is None:
            broker, presence = make_broker(settings)
            node = Node(settings, broker=broker, presence=presence, map_broker=make_map_broker(settings))
        if node.session_factory is None:
            node.session_factory = new_session  # the Centrifugo client protocol
        self.node = node
        self._runners: list[web.AppRunner] = []
        self._closed = asyncio.Event()
        self.port = 0
        self.internal_port = 0
        self.mqtt_listeners: list[TcpListener] = []  # MQTT over TCP / TLS (mqtt.tcp, mqtt.tls)

    async def start(self) -> None:
        """Start the node and every listener, or raise :class:`StartupError` having released them all."""
        try:
            await self._start()
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        """Undo a start that failed part-way: close what was opened, quietly."""
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        with contextlib.suppress(Exception):
            await self.node.shutdown(0)
            await close_detached(self.node, 0.1)
        self._closed.set()

    async def _start(self) -> None:
        settings = self.settings
        hs = settings.http_server
        try:
            await self.node.start()
        except ConnectionError as exc:
            if isinstance(exc, MapRedisUnavailable):
                section, r = map_redis_settings(settings)
                name = "address"
                if r.cluster_address or r.sentinel_address:
                    name = "cluster_address" if r.cluster_address else "sentinel_address"
                where = ", ".join(r.cluster_address or r.sentinel_address) or r.address
                raise StartupError(f"{section}.{name}", f"map channels cannot reach {where}: {exc}") from None
            if settings.engine.type == "nats":
                raise StartupError("engine.nats.url", f"cannot reach {settings.engine.nats.url}: {exc}") from None
            if settings.engine.type != "redis":
                raise
            r = settings.engine.redis
            key, where = (
                ("engine.redis.cluster_address", ", ".join(r.cluster_address))
                if r.cluster_address
                else ("engine.redis.sentinel_address", ", ".join(r.sentinel_address))
                if r.sentinel_address
                else ("engine.redis.address", settings.masked_dict()["engine"]["redis"]["address"])
            )
            raise StartupError(key, f"cannot reach {where}: {exc}") from None
        internal = hs.internal_port > 0
        # Connections that do not finish their TLS handshake or request head in time are dropped.
        guard = runner_options(settings)
        # Malformed requests: one counted, rate-limited line each instead of aiohttp's traceback.
        http_logger = HttpServerLogger(self.node.metrics)
        public = web.AppRunner(
            build_app(self.node, with_admin=not internal),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            logger=http_logger,
            **guard,
        )
        await public.setup()
        self._runners.append(public)
        site = GuardedTCPSite(
            public,
            hs.address,
            hs.port,
            ssl_context=ssl_context(settings),
            handshake_timeout=settings.websocket.handshake_timeout,
            reuse_port=self.reuse_port or None,
            front=acceptor_factory(self.node),  # plain WebSocket upgrades skip aiohttp's request handling
        )
        await _listen(site, "http_server.port", hs.address, hs.port)
        self.port = _bound_port(site)
        if internal:
            runner = web.AppRunner(
                build_internal_app(self.node),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=1.0,
                logger=http_logger,
                **guard,
            )
            await runner.setup()
            self._runners.append(runner)
            isite = web.TCPSite(runner, hs.internal_address or hs.address, hs.internal_port)
            await _listen(isite, "http_server.internal_port", hs.internal_address or hs.address, hs.internal_port)
            self.internal_port = _bound_port(isite)
        from .mqtt.listener import listeners

        for listener in listeners(self.node):
            await listener.start()
            self.mqtt_listeners.append(listener)
        scheme = "https" if hs.tls.enabled else "http"
        log.info(
            "trunkline %s listening on %s://%s:%d (engine %s)",
            self.node.version,
            scheme,
            hs.address,
            self.port,
            settings.engine.type,
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown: stop accepting, close clients with 3001, release everything."""
        if self._closed.is_set():
            return
        self.node.accepting = False  # /ready now answers 503 and new WebSocket upgrades are refused
        if self.settings.shutdown.ready_delay > 0:  # let load balancers see it before the port closes
            await asyncio.sleep(self.settings.shutdown.ready_delay)
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        for listener in self.mqtt_listeners:
            await listener.stop()
        await self.node.shutdown(timeout)
        await close_detached(self.node)
        for runner in self._runners:
            await runner.cleanup()
        self._closed.set()
        log.info("trunkline stopped")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _listen(site: web.BaseSite, setting: str, host: str, port: int) -> None:
    """Start ``site``; a port in use or an address that cannot be bound is a :class:`StartupError`."""
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(setting, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0


#: gen0 threshold of the cyclic GC in a serving process (CPython's default is 700)
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a process that holds thousands of connections.

    Each connection keeps about 70 GC-tracked objects (aiohttp's request, tasks and
    coroutines, the session), and with CPython's defaults a full collection walks all of
    them after every ~25 % growth: about 40 % of the server CPU of a connect at 19 000
    connections (bench/connect_cost.py). The objects of start-up (modules, settings) are
    moved out of the collector's sight (``gc.freeze``), and the young generation is
    collected every 10 000 allocations instead of 700, so full collections become rare.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


async def serve(settings: Settings, node: Node | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully within ``shutdown.timeout``."""
    server = Server(settings, node)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the ports open: a stop at once is graceful too
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    tune_gc()
    await stop.wait()
    log.info("shutting down: closing connections with 3001")
    await server.stop()


def run(settings: Settings) -> None:
    """Entry point of ``trunkline serve``: logging, uvloop, serve."""
    from .observe.logs import setup_logging

    setup_logging(settings.log.level, settings.log.format)
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep a fallback
        asyncio.run(serve(settings))
