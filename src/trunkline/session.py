"""One client connection's life: connect, commands, heartbeats, expiry, close.

A transport feeds whole frames to :meth:`Session.handle_frame`, awaited in order,
so a connection's commands run one after another (as Centrifugo does by default).
Replies and pushes go through one bounded :class:`~trunkline.transport.writer.Writer`,
which keeps their order. Command handlers live in :mod:`trunkline.commands`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import errors as E
from .events import ClientView, DisconnectEvent
from .hub.registry import WireShape
from .protocol.codec import JSON_SHAPE, UNI_JSON_SHAPE, Codec, JsonCodec, ProtocolError, UniJsonCodec
from .protocol.messages import Command, DisconnectPush, Error, Push, Reply, Unsubscribe
from .protocol.protobuf import PROTOBUF_SHAPE, ProtobufCodec
from .records import Undeliverable
from .transport.writer import Writer

if TYPE_CHECKING:
    from .clock import Timer
    from .contracts import Transport
    from .node import Control, Node

log = logging.getLogger("trunkline.session")
JSON_CODEC = JsonCodec()  # stateless: one instance serves every connection
#: wire format name (``TransportInfo.protocol``) -> (codec, wire shape of its channel pushes)
FORMATS: dict[str, tuple[Codec, WireShape]] = {
    "json": (JSON_CODEC, JSON_SHAPE),
    "protobuf": (ProtobufCodec(), PROTOBUF_SHAPE),
}
#: the same for unidirectional transports (bare pushes; JSON only, as in Centrifugo)
UNIDIRECTIONAL_FORMATS: dict[str, tuple[Codec, WireShape]] = {
    "json": (UniJsonCodec(), UNI_JSON_SHAPE),
}
#: what a failed connect becomes on a unidirectional connection, which has no error replies
#: (Centrifugo: expired -> 3005, permission denied -> 3507, anything else 3004)
_UNI_CONNECT_ERRORS: dict[int, E.Disconnect] = {
    E.TOKEN_EXPIRED.code: E.CONNECTION_EXPIRED,
    E.EXPIRED.code: E.CONNECTION_EXPIRED,
    E.PERMISSION_DENIED.code: E.PERMISSION_DENIED_DISCONNECT,
}


class _RandomIds:
    """Random (version 4) UUID strings, as Centrifugo's client ids.

    ``uuid.uuid4()`` makes one ``getrandom`` system call per id (about 10 µs here); this
    draws 4 KiB at a time and cuts it into ids: the same randomness at a third of the cost.
    """

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        b = bytearray(self._pool[at : at + 16])
        b[6] = b[6] & 0x0F | 0x40  # version 4
        b[8] = b[8] & 0x3F | 0x80  # the RFC 4122 variant
        h = b.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def forget(self) -> None:
        """Drop the drawn bytes (a forked child must not hand out its parent's ids)."""
        self._pool = b""
        self._at = 0


new_client_id = _RandomIds()
os.register_at_fork(after_in_child=new_client_id.forget)


def unidirectional_disconnect(err: E.ClientError) -> E.Disconnect:
    """The disconnect a unidirectional connection gets instead of the error reply ``err``."""
    return _UNI_CONNECT_ERRORS.get(err.code, E.SERVER_ERROR)()


class CommandTable(Protocol):
    """The client protocol's command handlers, injected into every session."""

    async def dispatch(self, session: Session, command: Command, method: str) -> None:
        """Run one command (``method``: ``command.method``); raises ClientError (error reply) or Disconnect (close)."""

    async def apply_control(self, session: Session, cmd: Control) -> None:
        """Apply a server API action (a node control message) to a connected session."""


class State(enum.Enum):
    CONNECTING = 1
    CONNECTED = 2
    CLOSED = 3


@dataclass(slots=True)
class Subscription:
    """A channel this connection is subscribed to."""

    channel: str
    chan_info: bytes | None = None
    expire_at: int | None = None
    server_side: bool = False
    presence: bool = False
    join_leave: bool = False
    push_join_leave: bool = False
    recoverable: bool = False
    positioned: bool = False
    #: called at expire_at instead of unsubscribing (server-side refresh: the sub refresh proxy)
    refresher: Callable[[], object] | None = None
    #: called once when the subscription is dropped (unsubscribe, disconnect, 2500), e.g. to untrack
    #: a shared-poll subscription's keys
    on_release: Callable[[], object] | None = None


class Session:
    __slots__ = (
        "__weakref__",
        "_burst",
        "_clock",
        "_closing",
        "_commands",
        "_loop",
        "_ping_outstanding",
        "_rate",
        "_shape",
        "_timers",
        "_tokens",
        "_tokens_at",
        "client_id",
        "close_code",
        "codec",
        "conn_info",
        "expire_at",
        "headers",
        "is_admin",
        "meta",
        "node",
        "pending",
        "refresher",
        "remote",
        "state",
        "subscriptions",
        "transport",
        "user",
        "writer",
    )

    def __init__(
        self,
        node: Node,
        transport: Transport,
        remote: str = "",
        headers: dict[str, str] | None = None,
        *,
        commands: CommandTable,
    ) -> None:
        self.node = node
        self._commands = commands
        self.transport = transport
        self.remote = remote
        self.headers = headers or {}
        info = transport.info
        self.codec, self._shape = (FORMATS if info.bidirectional else UNIDIRECTIONAL_FORMATS)[info.protocol]
        self.client_id = new_client_id()
        self.user = ""
        self.conn_info: bytes | None = None
        self.expire_at: int | None = None
        self.is_admin = False
        self.meta: bytes | None = None  # server-only JSON from the token or the connect proxy
        #: called at expire_at instead of closing (server-side refresh: the refresh proxy)
        self.refresher: Callable[[], object] | None = None
        self.state = State.CONNECTING
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: dict[str, object] = {}  # channel -> token of the subscribe in progress
        self.close_code = 0
        client = node.settings.client
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.writer = Writer(
            transport.send,
            client.queue_max_size,
            self._on_overflow,
            self._on_write_error,
            node.metrics.outbound,
            delay=client.write_delay,
            separator=self.codec.separator,
            loop=loop,
        )
        self.writer.start()
        self._clock = node.clock
        self._timers: dict[str, Timer] = {}
        self._ping_outstanding = False
        self._closing: asyncio.Future[None] | None = None
        self._rate = float(client.command_rate_limit)
        self._burst = float(client.command_rate_burst or client.command_rate_limit)
        self._tokens = self._burst
        self._tokens_at = self._clock.monotonic()
        self._set_timer("stale", client.stale_close_delay, self._on_stale)
        node.metrics.connection_opened(transport.info.name)

    # ------------------------------------------------------------------ public

    @property
    def view(self) -> ClientView:
        return ClientView(self.client_id, self.user, self.conn_info)

    @property
    def log_fields(self) -> dict[str, str]:
        """``extra`` for log lines about this connection (JSON logs get ``client`` and ``user`` fields)."""
        return {"client": self.client_id, "user": self.user}

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def shape(self) -> WireShape:
        """How this connection's channel pushes are encoded (its wire format)."""
        return self._shape

    @property
    def push(self) -> Callable[[bytes], None]:
        return self.writer.push

    def sample_write(self, started: float) -> None:
        self.writer.sample(started)

    def presence_entries(self) -> list[tuple[str, bytes]]:
        node = self.node
        return [
            (channel, node.client_info(self.user, self.client_id, self.conn_info, sub.chan_info))
            for channel, sub in self.subscriptions.items()
            if sub.presence
        ]

    def resubscribe(self, channel: str) -> None:
        """Missed publications of ``channel``: unsubscribe with 2500 so the client resubscribes and recovers."""
        sub = self._forget(channel)
        if sub is None:
            return
        code, reason = E.UNSUBSCRIBE_INSUFFICIENT_STATE
        self.writer.push(self.codec.encode_push(Push(channel=channel, unsubscribe=Unsubscribe(code, reason))))
        self.node.spawn(self._announce_leave(channel, sub))

    async def handle_frame(self, frame: bytes) -> None:
        """Decode and run every command of one frame, in order."""
        if self.state is State.CLOSED:
            return
        if self.state is State.CONNECTED and not self.transport.info.bidirectional:
            return  # a unidirectional client sends nothing after its connect request
        self.node.metrics.received(len(frame))
        try:
            commands = self.codec.decode_commands(frame)
        except ProtocolError as exc:
            log.info("bad frame from client=%s user=%s: %s", self.client_id, self.user, exc, extra=self.log_fields)
            await self.close(E.BAD_REQUEST_DISCONNECT)
            return
        dispatch = self._commands.dispatch
        metrics = self.node.metrics
        for command in commands:
            if self.closed:
                return
            if not self._take_token():
                if self._tokens < -self._burst:
                    await self.close(E.TOO_MANY_REQUESTS_DISCONNECT)
                    return
                if command.id:
                    self.reply_error(command, E.TOO_MANY_REQUESTS)
                continue
            started = time.perf_counter()
            method = command.method
            code = 0
            try:
                await dispatch(self, command, method)
            except E.ClientError as err:
                code = err.code
                if self.transport.info.bidirectional:
                    self.reply_error(command, err)
                else:
                    await self.close(unidirectional_disconnect(err))
            except E.Disconnect as disconnect:
                code = disconnect.code
                await self.close(disconnect)
            except Undeliverable:  # e.g. binary history data for a JSON client
                code = E.INAPPROPRIATE_PROTOCOL.code
                await self.close(E.INAPPROPRIATE_PROTOCOL)
            except Exception:
                code = 100
                log.exception(
                    "command %s failed for client=%s user=%s",
                    method or "pong",
                    self.client_id,
                    self.user,
                    extra=self.log_fields,
                )
                self.reply_error(command, E.INTERNAL)
            metrics.command(method or "pong", code, time.perf_counter() - started)

    def reply(self, reply: Reply) -> None:
        self.writer.push(self.codec.encode_reply(reply))

    def reply_error(self, command: Command, err: E.ClientError) -> None:
        if command.id:
            self.reply(Reply(id=command.id, error=Error(err.code, err.message, err.temporary)))

    async def close(self, disconnect: E.Disconnect | None = None) -> None:
        """Close once: free subscriptions and presence, then close the transport with ``disconnect``."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = self._loop.create_future()
        try:
            await self._close(disconnect)
        finally:
            self._closing.set_result(None)

    async def _close(self, disconnect: E.Disconnect | None) -> None:
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        code = disconnect.code if disconnect is not None else 3000
        self.close_code = code
        if disconnect is not None:
            log.info(
                "disconnect client=%s user=%s code=%d reason=%s",
                self.client_id,
                self.user,
                disconnect.code,
                disconnect.reason,
                extra=self.log_fields,
            )
        if was_connected:
            self.node.hub.remove_connection(self.client_id, self.user, self)
        await self._release_subscriptions()
        if disconnect is not None:
            if disconnect.code == E.SLOW.code:
                self.writer.abort()
            else:
                if self.transport.info.pushes_disconnect:  # no close frame carries the code: a push does
                    push = Push(disconnect=DisconnectPush(disconnect.code, disconnect.reason, disconnect.reconnect))
                    self.writer.push(self.codec.encode_push(push))
                await self.writer.drain_and_stop(self.node.settings.websocket.write_timeout)
            try:
                await asyncio.wait_for(
                    self.transport.close(disconnect.code, disconnect.reason), self.node.settings.websocket.write_timeout
                )
            except (TimeoutError, ConnectionError, RuntimeError):
                self.transport.abort()
        self.writer.abort()
        self.node.metrics.connection_closed(self.transport.info.name, code)
        if was_connected and self.node.hooks.disconnect is not None:
            reason = disconnect.reason if disconnect is not None else "connection closed"
            try:
                await self.node.hooks.disconnect(DisconnectEvent(self.view, code, reason))
            except Exception:
                log.exception("on_disconnect hook failed")

    async def _release_subscriptions(self) -> None:
        channels = list(self.subscriptions) + [c for c in self.pending if c not in self.subscriptions]
        for channel in channels:
            await self.release(channel)

    async def release(self, channel: str) -> None:
        """Drop one subscription: hub, presence, leave push, broker interest."""
        sub = self._forget(channel)
        if sub is not None:
            await self._announce_leave(channel, sub)

    def _forget(self, channel: str) -> Subscription | None:
        """Drop a subscription (or a subscribe in progress) from this node at once."""
        sub = self.subscriptions.pop(channel, None)
        self.pending.pop(channel, None)
        node = self.node
        if node.hub.remove(channel, self):
            node.detach_channel(channel)
        if sub is not None and sub.expire_at is not None:
            self.cancel_timer("sub:" + channel)
        if sub is not None and sub.on_release is not None:
            sub.on_release()
        return sub

    async def _announce_leave(self, channel: str, sub: Subscription) -> None:
        """Remove the presence entry and publish the leave of a dropped subscription."""
        node = self.node
        info = node.client_info(self.user, self.client_id, self.conn_info, sub.chan_info)
        try:
            if sub.presence:
                with node.metrics.broker_timer("remove_presence"):
                    await node.presence_manager.remove_presence(channel, self.client_id)
            if sub.join_leave:
                with node.metrics.broker_timer("publish_leave"):
                    await node.broker.publish_leave(channel, info)
        except Exception as exc:
            log.warning(
                "cannot remove presence of client=%s in a channel: %s", self.client_id, exc, extra=self.log_fields
            )
        try:  # the keys of the map presence prefixes (hub/map_presence)
            await node.map_presence.leave(channel, self.client_id, self.user)
        except Exception as exc:
            log.warning("cannot remove map presence of client=%s: %s", self.client_id, exc, extra=self.log_fields)

    # ------------------------------------------------------------------ heartbeats and timers

    def _set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if delay > 0:
            self._timers[name] = self._clock.call_later(delay, callback)

    def cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def start_heartbeat(self) -> None:
        self.cancel_timer("stale")
        if self.transport.info.ping == "none":
            return
        self._set_timer("ping", self.node.settings.client.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        if self.state is not State.CONNECTED:
            return
        client = self.node.settings.client
        self.writer.push(self.codec.ping)
        if not self.transport.info.bidirectional:  # read, never answered
            self._set_timer("ping", client.ping_interval, self._send_ping)
            return
        if not self._ping_outstanding:
            self._ping_outstanding = True
            self._set_timer("pong", client.pong_timeout, self._on_no_pong)
        self._set_timer("ping", client.ping_interval, self._send_ping)

    def handle_pong(self) -> None:
        if not self._ping_outstanding:
            raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: unexpected pong")
        self._ping_outstanding = False
        self.cancel_timer("pong")

    def _on_no_pong(self) -> None:
        self.node.spawn(self.close(E.NO_PONG))

    def _on_stale(self) -> None:
        if self.state is State.CONNECTING:
            self.node.spawn(self.close(E.STALE))

    def schedule_expiry(self) -> None:
        """Close with 3005 at expire_at + expired_close_delay unless refreshed before."""
        if self.expire_at is None:
            self.cancel_timer("expire")
            return
        if self.refresher is not None:
            self._set_timer("expire", max(self.expire_at - self._clock.time(), 0.001), self.refresher)
            return
        delay = self.expire_at - self._clock.time() + self.node.settings.client.expired_close_delay
        self._set_timer("expire", max(delay, 0.001), self._on_expired)

    def _on_expired(self) -> None:
        if self.expire_at is not None and self.expire_at <= self._clock.time():
            self.node.spawn(self.close(E.CONNECTION_EXPIRED))

    def schedule_sub_expiry(self, sub: Subscription) -> None:
        name = "sub:" + sub.channel
        if sub.expire_at is None:
            self.cancel_timer(name)
            return
        if sub.refresher is not None:
            self._set_timer(name, max(sub.expire_at - self._clock.time(), 0.001), sub.refresher)
            return
        delay = sub.expire_at - self._clock.time() + self.node.settings.client.expired_sub_close_delay
        self._set_timer(name, max(delay, 0.001), lambda: self._on_sub_expired(sub.channel))

    def _on_sub_expired(self, channel: str) -> None:
        sub = self.subscriptions.get(channel)
        if sub is None or sub.expire_at is None or sub.expire_at > self._clock.time():
            return
        if sub.server_side:
            self.node.spawn(self.close(E.SUBSCRIPTION_EXPIRED))
            return
        self.node.spawn(self.server_unsubscribe(channel, *E.UNSUBSCRIBE_EXPIRED))

    async def server_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        if channel not in self.subscriptions:
            return
        await self.release(channel)
        self.writer.push(self.codec.encode_push(Push(channel=channel, unsubscribe=Unsubscribe(code, reason))))

    def _take_token(self) -> bool:
        if self._rate <= 0:
            return True
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        self._tokens -= 1
        return self._tokens >= 0

    # ------------------------------------------------------------------ writer callbacks

    def _on_overflow(self) -> None:
        self.node.metrics.slow_consumer()
        self.node.spawn(self.close(E.SLOW))

    def _on_write_error(self, exc: BaseException) -> None:
        if self.state is not State.CLOSED:
            log.info("write failed for client=%s: %s", self.client_id, exc, extra=self.log_fields)
            self.node.spawn(self.close(None))

    # ------------------------------------------------------------------ control (server API)

    async def apply_control(self, cmd: Control) -> None:
        if self.state is State.CONNECTED:
            await self._commands.apply_control(self, cmd)
