"""The node: owns the hub, broker, presence, token verifiers, hooks and metrics.

Transports create a session per connection through :meth:`Node.new_session`
(the client protocol's factory is injected: the node imports no protocol
session); the server API and embedding applications call the node's methods
(``publish``, ``presence``, ``history``, ``disconnect_user``…).
Commands that target connections anywhere in a cluster travel as control
messages through the broker and are applied by every node to its own clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from . import __version__
from . import errors as E
from .auth import TokenVerifier
from .broker.base import (
    Broker,
    BrokerEventHandler,
    ClientInfo,
    HistoryQuery,
    PresenceManager,
    Publication,
    PublishOptions,
    StreamPosition,
)
from .broker.map_base import MapBroker, MapOptions, MapResult, MapStatePage, MapStateQuery, MapWrite
from .broker.map_memory import MemoryMapBroker
from .broker.memory import MemoryBroker, MemoryPresence
from .clock import REAL_CLOCK, Clock
from .config import NamespaceOptions, Settings
from .events import (
    Hooks,
    OnConnect,
    OnConnecting,
    OnDisconnect,
    OnMessage,
    OnPublish,
    OnRPC,
    OnSubscribe,
)
from .hub.channels import ChannelRules
from .hub.map_options import map_options
from .hub.map_presence import MapPresence
from .hub.patterns import Matcher, Patterns
from .hub.recovery import decide, live_after
from .hub.registry import Hub, Push, WireShape
from .observe.metrics import WRITE_SAMPLE_SUBSCRIBERS, Metrics
from .protocol.messages import ClientInfo as ProtocolClientInfo
from .proxy import Proxies
from .proxy.shared_poller import SharedPoll
from .records import Undeliverable

if TYPE_CHECKING:
    from .contracts import Connection, SessionFactory, Transport

log = logging.getLogger("trunkline.node")
_encoder = msgspec.json.Encoder()


class Control(msgspec.Struct, omit_defaults=True):
    """A node-to-node command (server API actions that target connections)."""

    op: str
    user: str = ""
    client: str = ""
    channel: str = ""
    code: int = 0
    reason: str = ""
    whitelist: list[str] = []
    expire_at: int = 0
    expired: bool = False
    info: msgspec.Raw = msgspec.Raw()
    data: msgspec.Raw = msgspec.Raw()
    node: str = ""
    payload: msgspec.Raw = msgspec.Raw()


_control_decoder = msgspec.json.Decoder(Control)


def _with_raws(cmd: Control, info: bytes | None = None, data: bytes | None = None) -> Control:
    """Set the raw JSON fields that have a value; absent ones keep the (omitted) default."""
    if info:
        cmd.info = msgspec.Raw(info)
    if data:
        cmd.data = msgspec.Raw(data)
    return cmd


@dataclass(slots=True)
class JoinResult:
    """Where a joining subscriber starts in the channel's stream."""

    positioned: bool = False
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    was_recovering: bool = False
    recovered: bool = False
    publications: list[Publication] = field(default_factory=list)


Finish = Callable[[], None]

#: Channels of the node itself (the dashboard's live stats); only admin connections subscribe.
SYSTEM_PREFIX = "__trunkline:"
ADMIN_META = {"trunkline_admin": True}


class Node(BrokerEventHandler):
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        presence: PresenceManager | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        map_broker: MapBroker | None = None,
    ) -> None:
        self.settings = settings or Settings()
        #: wall time, monotonic time and timers of every session (a manual clock in tests)
        self.clock: Clock = clock or REAL_CLOCK
        ch = self.settings.channel
        self.rules = ChannelRules(
            namespace_boundary=ch.namespace_boundary,
            private_prefix=ch.private_prefix,
            user_boundary=ch.user_boundary,
            user_separator=ch.user_separator,
            max_length=ch.max_length,
        )
        self.hub: Hub[Connection] = Hub()  # sessions of every client protocol
        self.broker: Broker = broker or MemoryBroker()
        self.presence_manager: PresenceManager = presence or MemoryPresence()
        #: the state and change stream of map channels (``map_broker``; memory unless the app passes one)
        self.map_broker: MapBroker = map_broker or MemoryMapBroker.from_settings(self.settings)
        self._map_options: dict[str, MapOptions | None] = {}  # namespace -> its map options (None: not a map)
        #: id(namespace options) -> (those options, the settings, their PublishOptions without an idempotency key)
        self._publish_options_of: dict[int, tuple[NamespaceOptions, Settings, PublishOptions]] = {}
        #: the keys subscribers keep in map_clients / map_users channels (the presence prefixes)
        self.map_presence = MapPresence(self.settings, lambda: self.map_broker, self.namespace_options)
        self.metrics = metrics or Metrics()
        self.metrics.track_hub(self.hub)
        self.hub.on_undeliverable = self._undeliverable
        #: wildcard subscribers (MQTT filters): every channel under a prefix that passes a matcher
        self.patterns: Patterns[Connection] = Patterns()
        client = self.settings.client
        self.verifier = TokenVerifier.from_settings(client.token)
        self.sub_verifier = (
            TokenVerifier.from_settings(client.subscription_token)
            if client.subscription_token.enabled
            else self.verifier
        )
        admin = self.settings.admin
        #: signs and checks dashboard tokens; random per process when admin.insecure has no secret
        self.admin_secret = admin.secret or (secrets.token_urlsafe(32) if admin.enabled else "")
        self.admin_verifier = (
            TokenVerifier(hmac_secret_key=self.admin_secret) if admin.enabled and self.admin_secret else None
        )
        self.hooks = Hooks()
        #: the proxy to the application backend (client.proxy, channel.proxy, rpc.proxy, proxies)
        self.proxies = Proxies(self.settings, self.metrics)
        #: shared-poll channels: tracked keys, their pollers (the refresh proxy), delivery of changes
        self.shared_poll = SharedPoll(
            self.settings, self.proxies, self.metrics, self.rules.namespace_of, broker=self.broker
        )
        self.metrics.track_shared_poll(self.shared_poll)
        #: creates client sessions; the app injects the Centrifugo protocol's (``commands.new_session``)
        self.session_factory: SessionFactory | None = None
        self.uid = str(uuid.uuid4())
        self.name = self.settings.node.name or f"{socket.gethostname()}_{self.settings.http_server.port}"
        self.version = __version__
        self.started_at = time.time()
        #: the worker index under ``trunkline serve --workers N`` (set by the worker), in the node info
        self.worker: int | None = None
        #: more fields of the node info, each computed when it is read (key -> function; the dashboard adds one)
        self.info_fields: dict[str, Callable[[], Any]] = {}
        self.accepting = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        self._broker_patterns: dict[str, asyncio.Future[None]] = {}
        self._peers: dict[str, tuple[float, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ hooks (decorators)

    def on_connecting(self, fn: OnConnecting) -> OnConnecting:
        self.hooks.connecting = fn
        return fn

    def on_connect(self, fn: OnConnect) -> OnConnect:
        self.hooks.connect = fn
        return fn

    def on_subscribe(self, fn: OnSubscribe) -> OnSubscribe:
        self.hooks.subscribe = fn
        return fn

    def on_publish(self, fn: OnPublish) -> OnPublish:
        self.hooks.publish = fn
        return fn

    def on_rpc(self, fn: OnRPC) -> OnRPC:
        self.hooks.rpc = fn
        return fn

    def on_message(self, fn: OnMessage) -> OnMessage:
        self.hooks.message = fn
        return fn

    def on_disconnect(self, fn: OnDisconnect) -> OnDisconnect:
        self.hooks.disconnect = fn
        return fn

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.broker.start(self)
        await self.map_broker.start(self)
        self.accepting = True
        self.spawn(self._node_info_loop())
        self.spawn(self._position_check_loop())
        if self.map_presence.active:
            self.spawn(self.map_presence.run())
        if not isinstance(self.presence_manager, MemoryPresence):
            self.spawn(self._presence_refresh_loop())

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, close every connection with 3001 and release the broker."""
        self.accepting = False
        timeout = self.settings.shutdown.timeout if timeout is None else timeout
        sessions = self.hub.connections()
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.close(E.SHUTDOWN)) for s in sessions], timeout=max(timeout, 0.1)
            )
        for task in list(self._tasks):
            task.cancel()
        await self.broker.close()
        await self.map_broker.close()
        await self.shared_poll.close()
        await self.proxies.close()
        await self.verifier.close()
        if self.sub_verifier is not self.verifier:
            await self.sub_verifier.close()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background task owned by the node (kept referenced, errors logged)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    def new_session(self, transport: Transport, remote: str = "", headers: dict[str, str] | None = None) -> Connection:
        """A session of the client protocol for a new connection (see :attr:`session_factory`)."""
        if self.session_factory is None:
            raise RuntimeError("no session factory: run the node through trunkline.app.Server")
        return self.session_factory(self, transport, remote, headers or {})

    # ------------------------------------------------------------------ channels

    def namespace_options(self, channel: str) -> NamespaceOptions | None:
        if channel.startswith(SYSTEM_PREFIX):
            return None
        return self.settings.namespace(self.rules.namespace_of(channel))

    def publish_options(self, opts: NamespaceOptions, idempotency_key: str = "") -> PublishOptions:
        if not idempotency_key:  # the common case: one PublishOptions per namespace, made once
            cached = self._publish_options_of.get(id(opts))
            if cached is None or cached[0] is not opts or cached[1] is not self.settings:
                cached = self._publish_options_of[id(opts)] = (opts, self.settings, self._publish_options(opts, ""))
            return cached[2]
        return self._publish_options(opts, idempotency_key)

    def _publish_options(self, opts: NamespaceOptions, idempotency_key: str) -> PublishOptions:
        channel = self.settings.channel
        return PublishOptions(
            history_size=opts.history_size,
            history_ttl=opts.history_ttl,
            history_meta_ttl=channel.history_meta_ttl,
            idempotency_key=idempotency_key,
            idempotent_result_ttl=channel.idempotent_result_ttl,
        )

    @property
    def placeholder_ttl(self) -> float:
        """How long a stream without publications lives (refreshed by every position check)."""
        return max(3 * self.settings.channel.position_check_interval, 1.0)

    async def attach_channel(self, channel: str) -> None:
        """Make sure this node receives ``channel`` from the broker (first local subscriber)."""
        fut = self._broker_subs.get(channel)
        if fut is None:
            broker = self.map_broker if self.map_channel_options(channel) is not None else self.broker
            fut = self._broker_subs[channel] = asyncio.ensure_future(broker.subscribe(channel))
        try:
            await asyncio.shield(fut)
        except ConnectionError as exc:
            if self._broker_subs.get(channel) is fut:
                del self._broker_subs[channel]
            log.warning("broker unavailable, cannot subscribe a channel: %s", exc)
            raise E.INTERNAL.with_message("broker unavailable") from None

    def detach_channel(self, channel: str) -> None:
        if self._broker_subs.pop(channel, None) is not None:
            broker = self.map_broker if self.map_channel_options(channel) is not None else self.broker
            self.spawn(broker.unsubscribe(channel))

    # ------------------------------------------------------------------ engine API: pattern subscriptions

    async def watch(self, sub: Connection, prefix: str, matcher: Matcher, shape: WireShape, push: Push) -> None:
        """Deliver to ``sub`` every publication of a channel that starts with ``prefix`` and passes ``matcher``.

        For wildcard subscriptions (MQTT ``+`` and ``#`` filters): the broker feeds this
        node every channel under ``prefix`` (Redis: one ``PSUBSCRIBE`` per prefix), and
        ``matcher`` (hashable, shared by the subscribers of one filter) applies the
        exact rule. Such subscribers are not positioned and get no join/leave.
        """
        self.patterns.add(prefix, matcher, sub, shape, push)
        fut = self._broker_patterns.get(prefix)
        if fut is None:
            fut = self._broker_patterns[prefix] = asyncio.ensure_future(self.broker.psubscribe(prefix))
        try:
            await asyncio.shield(fut)
        except ConnectionError as exc:
            if self._broker_patterns.get(prefix) is fut:
                del self._broker_patterns[prefix]
            self.patterns.remove(prefix, matcher, sub)
            log.warning("broker unavailable, cannot subscribe a pattern: %s", exc)
            raise E.INTERNAL.with_message("broker unavailable") from None

    def unwatch(self, sub: Connection, prefix: str, matcher: Matcher) -> None:
        """Undo :meth:`watch`; the broker stops feeding ``prefix`` when nobody on this node needs it."""
        if self.patterns.remove(prefix, matcher, sub) and self._broker_patterns.pop(prefix, None) is not None:
            self.spawn(self.broker.punsubscribe(prefix))

    def handle_pattern_publication(self, channel: str, pub: Publication) -> None:
        if not self.patterns:
            return
        started = time.perf_counter()
        count = self.patterns.broadcast(channel, pub, lambda refused: self._undeliverable(channel, refused))
        if count:
            self.metrics.fanout(self.rules.namespace_of(channel), count, time.perf_counter() - started)

    # ------------------------------------------------------------------ engine API: joining a channel

    async def join(
        self,
        sub: Connection,
        channel: str,
        *,
        positioned: bool = False,
        recoverable: bool = False,
        since: StreamPosition | None = None,
        reject_unrecovered: bool = False,
        join_leave: bool = False,
        shape: WireShape | None = None,
        push: Push | None = None,
        recovery_limit: int = 0,
    ) -> tuple[JoinResult, Finish]:
        """Join ``sub`` to ``channel`` in two steps, for any client protocol.

        The subscriber is registered as pending first, so every publication that
        arrives while the stream is read is buffered. The caller writes its
        subscribe reply (with the result: position, recovered publications), then
        calls ``finish``, which writes the buffered publications that follow the
        subscriber's position and makes it live. ``finish`` raises
        :data:`errors.INSUFFICIENT_STATE` if the buffer does not continue the
        position. A positioned subscriber that starts ahead of what this node has
        received so far stays pending until the node catches up (or is told to
        resubscribe if the node finds those publications lost).

        ``shape`` and ``push`` default to the connection's own; a protocol whose
        subscriptions differ in encoding (MQTT: QoS per subscription) passes its own.
        ``recovery_limit`` caps the publications recovered (0: ``client.recovery_max_publication_limit``).
        A map channel's stream is its map stream (:meth:`read_stream`).
        """
        hub = self.hub
        buffered: list[Publication] = []
        hub.add_pending(channel, sub, buffered.append)
        result = JoinResult(positioned=positioned, recoverable=recoverable)
        position, epoch = -1, ""
        try:
            await self.attach_channel(channel)
            if positioned:
                position, epoch = await self._stream_position(
                    channel, since, recoverable, reject_unrecovered, result, recovery_limit
                )
        except BaseException:
            if hub.remove(channel, sub):
                self.detach_channel(channel)
            raise

        def go_live() -> bool:
            live = live_after(buffered, position) if position >= 0 else buffered
            if live is None:
                return False
            wire = shape or sub.shape
            deliver = push or sub.push
            try:
                encoded = [wire.publication(channel, pub) for pub in live]
            except Undeliverable:
                raise E.INAPPROPRIATE_PROTOCOL() from None
            for data in encoded:
                deliver(data)
            buffered.clear()
            hub.activate(channel, sub, wire, deliver, positioned=positioned, join_leave=join_leave)
            return True

        def resume(ok: bool) -> None:
            if sub.closed or not hub.is_pending(channel, sub):
                return
            try:
                live = ok and go_live()
            except E.Disconnect as disconnect:
                self.spawn(sub.close(disconnect))
                return
            if not live:
                sub.resubscribe(channel)

        def finish() -> None:
            if sub.closed or not hub.is_pending(channel, sub):
                return
            if positioned:
                ready, missed = hub.join_position(channel, sub, position, epoch, resume)
                self._resubscribe(channel, missed)
                if not ready:
                    return
            if not go_live():
                if hub.remove(channel, sub):
                    self.detach_channel(channel)
                raise E.INSUFFICIENT_STATE()

        return result, finish

    async def _stream_position(  # noqa: PLR0917
        self,
        channel: str,
        since: StreamPosition | None,
        recoverable: bool,
        reject: bool,
        result: JoinResult,
        recovery_limit: int = 0,
    ) -> tuple[int, str]:
        """Fill ``result`` from the stream (recovering from ``since``); return the subscriber's position."""
        query = HistoryQuery(
            limit=0, history_meta_ttl=self.settings.channel.history_meta_ttl, placeholder_ttl=self.placeholder_ttl
        )
        if recoverable and since is not None:
            limit = recovery_limit or self.settings.client.recovery_max_publication_limit or None
            with self.metrics.broker_timer("history"):
                pubs, top = await self.read_stream(
                    channel,
                    HistoryQuery(
                        limit=limit,
                        since=since,
                        history_meta_ttl=query.history_meta_ttl,
                        placeholder_ttl=query.placeholder_ttl,
                    ),
                )
            recovery = decide(since, pubs, top)
            result.was_recovering = True
            result.epoch = top.epoch
            self.metrics.recovery(recovery.recovered)
            if recovery.recovered:
                result.recovered = True
                result.offset = since.offset
                result.publications = recovery.publications
                last = recovery.publications[-1].offset if recovery.publications else since.offset
                return last, top.epoch
            if reject:
                raise E.UNRECOVERABLE_POSITION()
            result.offset = top.offset
            return top.offset, top.epoch
        with self.metrics.broker_timer("history"):
            _, top = await self.read_stream(channel, query)
        result.epoch = top.epoch
        result.offset = top.offset
        return top.offset, top.epoch

    def _resubscribe(self, channel: str, subscribers: list[Connection]) -> None:
        """Positioned subscribers missed publications of ``channel``: they resubscribe (2500) and recover."""
        if not subscribers:
            return
        self.metrics.stream_gap(self.rules.namespace_of(channel), len(subscribers))
        log.warning(
            "publications missed on a channel of namespace %r; %d positioned subscribers resubscribe",
            self.rules.namespace_of(channel),
            len(subscribers),
        )
        for sub in subscribers:
            sub.resubscribe(channel)

    def _undeliverable(self, channel: str, subscribers: list[Connection]) -> None:
        """Their wire format cannot carry a publication of ``channel`` (binary data to JSON): 3506."""
        log.info("closing %d connections that cannot receive a binary publication (3506)", len(subscribers))
        for sub in subscribers:
            self.spawn(sub.close(E.INAPPROPRIATE_PROTOCOL))

    # ------------------------------------------------------------------ broker events

    def handle_publication(self, channel: str, pub: Publication) -> None:
        if pub.key and self.shared_poll.distributes(channel):  # a direct publish of a shared-poll channel
            self.shared_poll.handle_record(channel, pub)
            return
        started = time.perf_counter()
        count, missed = self.hub.broadcast(channel, pub)
        if missed:
            self._resubscribe(channel, missed)
        if count:
            metrics = self.metrics
            metrics.fanout(self.rules.namespace_of(channel), count, time.perf_counter() - started)
            if metrics.sample_write(started):  # publish-to-write latency, on a few subscribers
                subscribers = self.hub.subscribers(channel)
                for session in subscribers[:: max(1, len(subscribers) // WRITE_SAMPLE_SUBSCRIBERS)]:
                    session.sample_write(started)

    def handle_resync(self) -> None:
        """The broker's feed was interrupted: check every positioned channel against its stream."""
        self.spawn(self.check_positions())

    #: How long a stream top past this node's position may wait for its publications in flight.
    position_grace = 1.0

    async def check_positions(self) -> None:
        """Compare each positioned channel with its stream top; resubscribe subscribers that missed data.

        Runs after the broker's feed comes back and every
        ``channel.position_check_interval`` (which also keeps the streams of idle
        channels alive). A top past the node's position may be publications still
        in flight, so those are looked at again after :attr:`position_grace`.
        """
        channels = self.hub.positioned_channels()
        suspects: list[tuple[str, StreamPosition]] = []
        for i in range(0, len(channels), 500):
            batch = channels[i : i + 500]
            try:
                tops = await asyncio.gather(*(self.stream_top(c) for c in batch))
            except Exception as exc:
                log.warning("cannot check stream positions: %s", exc)
                return
            for channel, top in zip(batch, tops, strict=True):
                position = self.hub.position(channel)
                if position is None:
                    continue
                if top.epoch != position[1] or top.offset < position[0]:
                    self._resubscribe(channel, self.hub.declare(channel, top.offset, top.epoch))
                elif top.offset > position[0]:
                    suspects.append((channel, top))
        if not suspects:
            return
        await asyncio.sleep(self.position_grace)
        for channel, top in suspects:
            position = self.hub.position(channel)
            if position is not None and position[1] == top.epoch and position[0] < top.offset:
                self._resubscribe(channel, self.hub.declare(channel, top.offset, top.epoch))

    async def stream_top(self, channel: str) -> StreamPosition:
        query = HistoryQuery(
            limit=0, history_meta_ttl=self.settings.channel.history_meta_ttl, placeholder_ttl=self.placeholder_ttl
        )
        with self.metrics.broker_timer("history"):
            _, top = await self.read_stream(channel, query)
        return top

    async def read_stream(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        """A channel's stream: its history, or its map stream for a map channel."""
        options = self.map_channel_options(channel)
        if options is None:
            return await self.broker.history(channel, query)
        return await self.map_broker.read_stream(channel, query, options)

    # ------------------------------------------------------------------ map channels

    def map_channel_options(self, channel: str) -> MapOptions | None:
        """The resolved map options of ``channel``'s namespace, None when it is not a map namespace."""
        if channel.startswith(SYSTEM_PREFIX):
            return None
        name = self.rules.namespace_of(channel)
        try:
            return self._map_options[name]
        except KeyError:
            pass
        ns = self.settings.namespace(name)
        options = map_options(ns, self.settings.channel.history_meta_ttl) if ns is not None and ns.is_map else None
        self._map_options[name] = options
        return options

    def _map_channel(self, channel: str) -> tuple[NamespaceOptions, MapOptions]:
        opts = self._require_namespace(channel)
        options = self.map_channel_options(channel)
        if options is None:
            raise E.BAD_REQUEST.with_message("bad request: not a map channel")
        return opts, options

    async def map_publish(self, channel: str, write: MapWrite) -> MapResult:
        """Write a key of a map channel (raises ``MapLimitExceeded`` for a new key into a full channel).

        The namespace's ``publication_data_format`` applies (107 otherwise).
        """
        opts, options = self._map_channel(channel)
        if opts.publication_data_format in ("json", "json_object"):
            _check_data_format(write.data, opts.publication_data_format)
        with self.metrics.broker_timer("map_publish"):
            result = await self.map_broker.publish(channel, write, options)
        if result.publication is not None:
            self.metrics.published(self.rules.namespace_of(channel))
        return result

    async def map_remove(
        self,
        channel: str,
        key: str,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str = "",
    ) -> MapResult:
        _, options = self._map_channel(channel)
        with self.metrics.broker_timer("map_remove"):
            return await self.map_broker.remove(
                channel, key, options, info=info, tags=tags, idempotency_key=idempotency_key
            )

    async def map_read_state(self, channel: str, query: MapStateQuery) -> MapStatePage:
        """One page of a map channel's state (a cursor this broker did not hand out: 107)."""
        _, options = self._map_channel(channel)
        try:
            with self.metrics.broker_timer("map_read_state"):
                return await self.map_broker.read_state(channel, query, options)
        except ValueError:
            raise E.BAD_REQUEST.with_message("bad request: invalid cursor") from None

    async def map_read_stream(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        _, options = self._map_channel(channel)
        with self.metrics.broker_timer("map_read_stream"):
            return await self.map_broker.read_stream(channel, query, options)

    async def map_stats(self, channel: str) -> int:
        self._map_channel(channel)
        with self.metrics.broker_timer("map_stats"):
            return await self.map_broker.stats(channel)

    async def map_clear(self, channel: str) -> None:
        self._map_channel(channel)
        with self.metrics.broker_timer("map_clear"):
            await self.map_broker.clear(channel)

    async def _position_check_loop(self) -> None:
        interval = self.settings.channel.position_check_interval
        while True:
            await asyncio.sleep(interval)
            await self.check_positions()

    def handle_join(self, channel: str, info: bytes) -> None:
        self.hub.broadcast_join_leave(channel, "join", info)

    def handle_leave(self, channel: str, info: bytes) -> None:
        self.hub.broadcast_join_leave(channel, "leave", info)

    def handle_control(self, data: bytes) -> None:
        try:
            cmd = _control_decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("dropping malformed control message")
            return
        if cmd.op == "node":
            if cmd.payload:
                self._peers[cmd.node] = (time.monotonic(), msgspec.json.decode(cmd.payload))
            return
        for session in self._targets(cmd.user, cmd.client):
            self.spawn(session.apply_control(cmd))

    def _targets(self, user: str, client: str) -> Iterable[Connection]:
        if client:
            session = self.hub.connection(client)
            return [session] if session is not None and session.user == user else []
        return self.hub.user_connections(user)

    # ------------------------------------------------------------------ server API

    @staticmethod
    def client_info_struct(
        user: str, client: str, conn_info: bytes | None, chan_info: bytes | None
    ) -> ProtocolClientInfo:
        """The ClientInfo of presence, join and leave (JSON client protocol)."""
        return ProtocolClientInfo(
            user=user,
            client=client,
            conn_info=msgspec.Raw(conn_info) if conn_info is not None else None,
            chan_info=msgspec.Raw(chan_info) if chan_info is not None else None,
        )

    def client_info(self, user: str, client: str, conn_info: bytes | None, chan_info: bytes | None) -> bytes:
        """:meth:`client_info_struct`, encoded."""
        return _encoder.encode(self.client_info_struct(user, client, conn_info, chan_info))

    def _require_namespace(self, channel: str) -> NamespaceOptions:
        if not channel:
            raise E.BAD_REQUEST.with_message("channel required")
        if len(channel) > self.rules.max_length:
            raise E.BAD_REQUEST.with_message("channel too long")
        opts = self.namespace_options(channel)
        if opts is None:
            raise E.UNKNOWN_CHANNEL()
        return opts

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
        delta: bool = False,
    ) -> StreamPosition | None:
        """Publish encoded JSON ``data`` into ``channel``; returns the stream position with history.

        A repeated ``idempotency_key`` on the same channel within ``channel.idempotent_result_ttl``
        publishes nothing and returns the first publication's result. ``delta`` asks for delta
        compression to delta subscribers (always on in a namespace with ``delta_publish``).
        """
        opts = self._require_namespace(channel)
        return await self.publish_to(
            channel,
            opts,
            data,
            info=info,
            tags=tags,
            skip_history=skip_history,
            idempotency_key=idempotency_key,
            delta=delta,
        )

    async def publish_to(
        self,
        channel: str,
        opts: NamespaceOptions,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
        meta: bytes | None = None,
        delta: bool = False,
    ) -> StreamPosition | None:
        """:meth:`publish` for a channel the caller has already validated (``opts`` are its options).

        ``meta`` travels with the record for the publishing protocol only (see ``records.Publication``).
        A map channel takes map writes only (:meth:`map_publish`): 107.
        """
        if opts.is_map:
            raise E.BAD_REQUEST.with_message("bad request: a map channel takes map writes (map_publish) only")
        if opts.publication_data_format in ("json", "json_object"):
            _check_data_format(data, opts.publication_data_format)
        pub = Publication(
            data=data,
            info=info,
            tags=tags or None,
            time=int(time.time() * 1000),
            meta=meta,
            delta=delta or opts.delta_publish,
        )
        if skip_history:
            options = PublishOptions(
                idempotency_key=idempotency_key,
                idempotent_result_ttl=self.settings.channel.idempotent_result_ttl,
            )
        else:
            options = self.publish_options(opts, idempotency_key)
        started = time.perf_counter()
        try:
            position = await self.broker.publish(channel, pub, options)
        except Exception:
            self.metrics.broker_op("publish", time.perf_counter() - started, error=True)
            raise
        self.metrics.broker_op("publish", time.perf_counter() - started, error=False)
        self.metrics.published(self.rules.namespace_of(channel))
        return position

    async def history(
        self, channel: str, limit: int | None, since: StreamPosition | None, reverse: bool
    ) -> tuple[list[Publication], StreamPosition]:
        opts = self._require_namespace(channel)
        if not opts.history_enabled:
            raise E.NOT_AVAILABLE()
        cap = self.settings.client.history_max_publication_limit
        if limit is None or limit < 0 or (cap and limit > cap):
            limit = cap if cap else None
        query = HistoryQuery(
            limit=limit,
            since=since,
            reverse=reverse,
            history_meta_ttl=self.settings.channel.history_meta_ttl,
            placeholder_ttl=self.placeholder_ttl,
        )
        with self.metrics.broker_timer("history"):
            pubs, top = await self.broker.history(channel, query)
        if since is not None and since.epoch and since.epoch != top.epoch:
            raise E.UNRECOVERABLE_POSITION()
        return pubs, top

    async def remove_history(self, channel: str) -> None:
        self._require_namespace(channel)
        with self.metrics.broker_timer("remove_history"):
            await self.broker.remove_history(channel)

    async def presence(self, channel: str) -> dict[str, bytes]:
        opts = self._require_namespace(channel)
        if not opts.presence:
            raise E.NOT_AVAILABLE()
        with self.metrics.broker_timer("presence"):
            return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        opts = self._require_namespace(channel)
        if not opts.presence:
            raise E.NOT_AVAILABLE()
        with self.metrics.broker_timer("presence_stats"):
            return await self.presence_manager.presence_stats(channel)

    async def control(self, cmd: Control) -> None:
        with self.metrics.broker_timer("control"):
            await self.broker.publish_control(_encoder.encode(cmd))

    async def subscribe_user(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        info: bytes | None = None,
        data: bytes | None = None,
    ) -> None:
        self._require_namespace(channel)
        await self.control(
            _with_raws(Control(op="subscribe", user=user, client=client, channel=channel), info=info, data=data)
        )

    async def unsubscribe_user(self, user: str, channel: str, *, client: str = "") -> None:
        await self.control(Control(op="unsubscribe", user=user, client=client, channel=channel))

    async def disconnect_user(
        self,
        user: str,
        *,
        client: str = "",
        code: int = 3503,
        reason: str = "force disconnect",
        whitelist: list[str] | None = None,
    ) -> None:
        await self.control(
            Control(op="disconnect", user=user, client=client, code=code, reason=reason, whitelist=whitelist or [])
        )

    async def refresh_user(
        self, user: str, *, client: str = "", expire_at: int = 0, expired: bool = False, info: bytes | None = None
    ) -> None:
        cmd = Control(op="refresh", user=user, client=client, expire_at=expire_at, expired=expired)
        await self.control(_with_raws(cmd, info=info))

    # ------------------------------------------------------------------ node info

    def local_info(self) -> dict[str, Any]:
        info = {
            "uid": self.uid,
            "name": self.name,
            "version": self.version,
            "num_clients": self.hub.num_clients,
            "num_users": self.hub.num_users,
            "num_channels": self.hub.num_channels,
            "num_subs": self.hub.num_subscriptions,
            "uptime": int(time.time() - self.started_at),
            "process": {"pid": os.getpid()},
        }
        if self.worker is not None:
            info["worker"] = self.worker
        for key, compute in self.info_fields.items():
            info[key] = compute()
        return info

    def nodes(self) -> list[dict[str, Any]]:
        """This node and every peer heard from in the last 30 s (through the broker)."""
        now = time.monotonic()
        peers = [info for uid, (seen, info) in self._peers.items() if uid != self.uid and now - seen < 30]
        return [self.local_info(), *peers]

    @property
    def presence_ttl(self) -> float:
        """How long a presence entry lives in a shared store unless refreshed."""
        return self.settings.client.presence_update_interval * 3

    async def _presence_refresh_loop(self) -> None:
        """Keep this node's presence entries alive in a shared store (they expire if the node dies)."""
        interval = self.settings.client.presence_update_interval
        while True:
            await asyncio.sleep(interval)
            for session in self.hub.connections():
                for channel, info in session.presence_entries():
                    try:
                        await self.presence_manager.add_presence(
                            channel, session.client_id, session.user, info, self.presence_ttl
                        )
                    except Exception as exc:
                        log.warning("cannot refresh presence: %s", exc)
                        break

    async def _node_info_loop(self) -> None:
        while True:
            try:
                info = _encoder.encode(self.local_info())
                await self.broker.publish_control(
                    _encoder.encode(Control(op="node", node=self.uid, payload=msgspec.Raw(info)))
                )
            except Exception as exc:
                log.warning("cannot announce node info: %s", exc)
            await asyncio.sleep(5)


def _check_data_format(data: bytes, fmt: str) -> None:
    """A namespace's ``publication_data_format``: ``json`` data must be JSON, ``json_object`` a JSON object."""
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        raise E.BAD_REQUEST.with_message("publication data must be JSON") from None
    if fmt == "json_object" and not isinstance(value, dict):
        raise E.BAD_REQUEST.with_message("publication data must be a JSON object")
