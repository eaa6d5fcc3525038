"""The node: owns the hub, broker, presence, token verifiers, hooks and metrics.

Transports create a :class:`~trunkline.session.Session` per connection through
:meth:`Node.new_session`; the server API and embedding applications call the
node's methods (``publish``, ``presence``, ``history``, ``disconnect_user``…).
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
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from . import __version__
from . import errors as E
from .auth import TokenVerifier
from .broker.base import (
    Broker,
    BrokerEventHandler,
    HistoryQuery,
    PresenceManager,
    PublishOptions,
    StreamPosition,
    StreamPublication,
)
from .broker.memory import MemoryBroker, MemoryPresence
from .config import NamespaceOptions, Settings
from .events import Hooks
from .hub.channels import ChannelRules
from .hub.registry import Hub
from .observe.metrics import WRITE_SAMPLE_SUBSCRIBERS, Metrics
from .protocol.messages import ClientInfo, Publication

if TYPE_CHECKING:
    from .session import Session, Transport

log = logging.getLogger("trunkline.node")
F = TypeVar("F", bound=Callable[..., Any])
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
    ) -> None:
        self.settings = settings or Settings()
        ch = self.settings.channel
        self.rules = ChannelRules(
            namespace_boundary=ch.namespace_boundary,
            private_prefix=ch.private_prefix,
            user_boundary=ch.user_boundary,
            user_separator=ch.user_separator,
            max_length=ch.max_length,
        )
        self.hub: Hub[Session] = Hub()
        self.broker: Broker = broker or MemoryBroker()
        self.presence_manager: PresenceManager = presence or MemoryPresence()
        self.metrics = metrics or Metrics()
        self.metrics.track_hub(self.hub)
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
        self.uid = str(uuid.uuid4())
        self.name = self.settings.node.name or f"{socket.gethostname()}_{self.settings.http_server.port}"
        self.version = __version__
        self.started_at = time.time()
        self.accepting = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        self._offsets: dict[str, int] = {}
        self._peers: dict[str, tuple[float, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ hooks (decorators)

    def on_connecting(self, fn: F) -> F:
        self.hooks.connecting = fn
        return fn

    def on_connect(self, fn: F) -> F:
        self.hooks.connect = fn
        return fn

    def on_subscribe(self, fn: F) -> F:
        self.hooks.subscribe = fn
        return fn

    def on_publish(self, fn: F) -> F:
        self.hooks.publish = fn
        return fn

    def on_rpc(self, fn: F) -> F:
        self.hooks.rpc = fn
        return fn

    def on_message(self, fn: F) -> F:
        self.hooks.message = fn
        return fn

    def on_disconnect(self, fn: F) -> F:
        self.hooks.disconnect = fn
        return fn

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.broker.start(self)
        self.accepting = True
        self.spawn(self._node_info_loop())
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

    def new_session(self, transport: Transport, remote: str = "", headers: dict[str, str] | None = None) -> Session:
        from .session import Session

        return Session(self, transport, remote=remote, headers=headers or {})

    # ------------------------------------------------------------------ channels

    def namespace_options(self, channel: str) -> NamespaceOptions | None:
        if channel.startswith(SYSTEM_PREFIX):
            return None
        return self.settings.namespace(self.rules.namespace_of(channel))

    def publish_options(self, opts: NamespaceOptions) -> PublishOptions:
        return PublishOptions(
            history_size=opts.history_size,
            history_ttl=opts.history_ttl,
            history_meta_ttl=self.settings.channel.history_meta_ttl,
        )

    async def attach_channel(self, channel: str) -> None:
        """Make sure this node receives ``channel`` from the broker (first local subscriber)."""
        fut = self._broker_subs.get(channel)
        if fut is None:
            fut = self._broker_subs[channel] = asyncio.ensure_future(self.broker.subscribe(channel))
        try:
            await asyncio.shield(fut)
        except ConnectionError as exc:
            if self._broker_subs.get(channel) is fut:
                del self._broker_subs[channel]
            log.warning("broker unavailable, cannot subscribe a channel: %s", exc)
            raise E.INTERNAL.with_message("broker unavailable") from None

    def detach_channel(self, channel: str) -> None:
        self._offsets.pop(channel, None)
        if self._broker_subs.pop(channel, None) is not None:
            self.spawn(self.broker.unsubscribe(channel))

    # ------------------------------------------------------------------ broker events

    def handle_publication(self, channel: str, data: bytes, offset: int) -> None:
        started = time.perf_counter()
        if offset and channel in self._broker_subs:
            last = self._offsets.get(channel)
            self._offsets[channel] = offset
            if last is not None and offset != last + 1:
                self._stream_gap(channel)
        count = self.hub.broadcast_publication(channel, data, offset)
        if count:
            metrics = self.metrics
            metrics.fanout(self.rules.namespace_of(channel), count, time.perf_counter() - started)
            if metrics.sample_write(started):  # publish-to-write latency, on a few subscribers
                subscribers = self.hub.subscribers(channel)
                for session in subscribers[:: max(1, len(subscribers) // WRITE_SAMPLE_SUBSCRIBERS)]:
                    session.writer.sample(started)

    def _stream_gap(self, channel: str) -> None:
        """This node missed publications of ``channel`` (e.g. the broker link dropped).

        Positioned subscribers are told to resubscribe (2500), which recovers the gap
        from history or reports it honestly as not recovered.
        """
        log.warning(
            "publications missed on a channel of namespace %r; resubscribing positioned clients",
            self.rules.namespace_of(channel),
        )
        for session in self.hub.subscribers(channel):
            sub = session.subscriptions.get(channel)
            if sub is not None and sub.positioned:
                self.spawn(session.server_unsubscribe(channel, *E.UNSUBSCRIBE_INSUFFICIENT_STATE))

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

    def _targets(self, user: str, client: str) -> Iterable[Session]:
        if client:
            session = self.hub.connection(client)
            return [session] if session is not None and session.user == user else []
        return self.hub.user_connections(user)

    # ------------------------------------------------------------------ server API

    @staticmethod
    def client_info_struct(user: str, client: str, conn_info: bytes | None, chan_info: bytes | None) -> ClientInfo:
        """The ClientInfo of publications, presence, join and leave."""
        return ClientInfo(
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
            raise E.UNKNOWN_CHANNEL
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
    ) -> StreamPosition | None:
        """Publish encoded JSON ``data`` into ``channel``; returns the stream position with history.

        A repeated ``idempotency_key`` on the same channel within ``channel.idempotent_result_ttl``
        publishes nothing and returns the first publication's result.
        """
        opts = self._require_namespace(channel)
        return await self.publish_to(
            channel, opts, data, info=info, tags=tags, skip_history=skip_history, idempotency_key=idempotency_key
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
    ) -> StreamPosition | None:
        """:meth:`publish` for a channel the caller has already validated (``opts`` are its options)."""
        pub = Publication(data=msgspec.Raw(data), info=info, tags=tags or None)
        options = self.publish_options(opts) if not skip_history else PublishOptions()
        started = time.perf_counter()
        try:
            position = await self.broker.publish(channel, _encoder.encode(pub), options)
        except Exception:
            self.metrics.broker_op("publish", time.perf_counter() - started, error=True)
            raise
        self.metrics.broker_op("publish", time.perf_counter() - started, error=False)
        self.metrics.published(self.rules.namespace_of(channel))
        return position

    async def history(
        self, channel: str, limit: int | None, since: StreamPosition | None, reverse: bool
    ) -> tuple[list[StreamPublication], StreamPosition]:
        opts = self._require_namespace(channel)
        if not opts.history_enabled:
            raise E.NOT_AVAILABLE
        cap = self.settings.client.history_max_publication_limit
        if limit is None or limit < 0 or (cap and limit > cap):
            limit = cap if cap else None
        query = HistoryQuery(
            limit=limit, since=since, reverse=reverse, history_meta_ttl=self.settings.channel.history_meta_ttl
        )
        with self.metrics.broker_timer("history"):
            pubs, top = await self.broker.history(channel, query)
        if since is not None and since.epoch and since.epoch != top.epoch:
            raise E.UNRECOVERABLE_POSITION
        return pubs, top

    async def remove_history(self, channel: str) -> None:
        self._require_namespace(channel)
        with self.metrics.broker_timer("remove_history"):
            await self.broker.remove_history(channel)

    async def presence(self, channel: str) -> dict[str, bytes]:
        opts = self._require_namespace(channel)
        if not opts.presence:
            raise E.NOT_AVAILABLE
        with self.metrics.broker_timer("presence"):
            return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        opts = self._require_namespace(channel)
        if not opts.presence:
            raise E.NOT_AVAILABLE
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
        return {
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
                for channel, sub in list(session.subscriptions.items()):
                    if not sub.presence:
                        continue
                    info = self.client_info(session.user, session.client_id, session.conn_info, sub.chan_info)
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
