"""One MQTT connection on the node's engine: a :class:`~trunkline.contracts.Connection`.

The transport feeds the bytes it reads to :meth:`MqttSession.handle_frame` (WebSocket
frames or TCP reads: packets may be split across them or share one); the
session's :class:`~trunkline.mqtt.codec.Decoder` cuts them into packets, which run
one after another. Everything the session sends goes through one bounded
:class:`~trunkline.transport.writer.Writer` (the same slow-consumer cut-off as
Centrifugo connections), so packets leave in order.

Outbound QoS 1: the hub hands every subscriber of a shape the same bytes, encoded
with a placeholder packet identifier; :meth:`MqttSession.deliver_qos` gives the
session's copy its own identifier and keeps it until PUBACK, at most
``max_inflight`` (or the client's Receive Maximum) at a time, then queues up to
``mqtt.max_queued_messages``. QoS 0 subscriptions push the shared bytes directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import errors as E
from ...broker.base import ClientInfo
from ...events import ClientView, DisconnectEvent
from ...transport.writer import Writer
from .. import reasons as R
from ..codec import Decoder, MalformedPacket, encode
from ..packets import (
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
    Will,
)
from ..shape import MqttShape, TopicCache, Tracker, expiry_at, packet_qos, with_expiry, with_packet_id
from ..topics import Mode, TopicMapping
from . import handlers as P
from . import persist
from .shared import SharedGroup
from .subs import Access, MqttSubscription

if TYPE_CHECKING:
    from ...clock import Timer
    from ...contracts import Transport
    from ...hub.registry import WireShape
    from ...node import Control, Node
    from ..packets import Packet

log = logging.getLogger("trunkline.mqtt")


class NodeState:
    """What every MQTT session of one node shares: the topic mapping, sessions by client id, wills."""

    def __init__(self, node: Node) -> None:
        s = node.settings
        m = s.mqtt.topic_mapping
        ch = s.channel
        mode: Mode = "prefix" if m.mode == "prefix" else "namespace"
        self.mapping = TopicMapping(
            mode=mode,
            prefix=m.prefix,
            max_channel_length=ch.max_length,
            namespace_boundary=ch.namespace_boundary,
            user_boundary=ch.user_boundary,
            private_prefix=ch.private_prefix,
        )
        self.topics = TopicCache(self.mapping)
        self.access = Access(node)
        self.sessions: dict[str, MqttSession] = {}
        self.delayed_wills: dict[str, Timer] = {}
        #: persistent sessions whose client is away, by client id (this node only)
        self.stored: dict[str, persist.StoredSession] = {}
        #: shared subscriptions ($share/<group>/<filter>) of this node's sessions
        self.shared: dict[tuple[str, str], SharedGroup] = {}
        self.retained: Any = None  # the retained-message store (set by the first session that needs it)


_states: weakref.WeakKeyDictionary[Node, NodeState] = weakref.WeakKeyDictionary()


def node_state(node: Node) -> NodeState:
    state = _states.get(node)
    if state is None:
        state = _states[node] = NodeState(node)
    return state


class MqttSession:
    """An MQTT 3.1.1 or 5 client connection."""

    def __init__(self, node: Node, transport: Transport, remote: str = "", headers: dict[str, str] | None = None):
        self.node = node
        self.transport = transport
        self.remote = remote
        self.headers = headers or {}
        self.state = node_state(node)
        mqtt = node.settings.mqtt
        self.decoder = Decoder(mqtt.max_packet_size)
        self.version = 0
        self.client_id = ""
        self.mqtt_client_id = ""
        self.user = ""
        self.conn_info: bytes | None = None
        self.expire_at: int | None = None
        self.connected = False
        self._closed = False
        self.keepalive = 0
        self.will: Will | None = None
        self.auth_method: str | None = None  # MQTT 5 enhanced authentication (``jwt``), for AUTH
        #: seconds the session outlives the connection (0: ends with it); its channel positions
        self.session_expiry = 0.0
        self.tracker: Tracker | None = None
        self.resuming: dict[str, persist.Saved] = {}  # saved subscriptions not resubscribed yet
        self.subscriptions: dict[str, MqttSubscription] = {}
        self.channels: dict[str, MqttSubscription] = {}  # exact filters by channel
        # outbound QoS 1/2
        self.inflight: dict[int, bytes] = {}
        self.queue: deque[tuple[bytes, float]] = deque()  # (PUBLISH, when queued: monotonic)
        self.send_window = mqtt.max_inflight
        self.max_outgoing_packet = 0  # the client's Maximum Packet Size (MQTT 5); 0: no limit
        self.next_id = 1
        # inbound QoS 2 (ids awaiting PUBREL) and topic aliases (MQTT 5)
        self.awaiting_rel: set[int] = set()
        self.topic_aliases: dict[int, str] = {}
        self.dropped = 0
        self._last_packet = 0.0
        self._timers: dict[str, Timer] = {}
        self._closing: asyncio.Future[None] | None = None
        self._close_code = 0
        client = node.settings.client
        self.writer = Writer(
            transport.send,
            client.queue_max_size,
            self._on_overflow,
            self._on_write_error,
            node.metrics.outbound,
            delay=client.write_delay,
            separator=b"",
        )
        self.writer.start()
        self._shape = MqttShape(self.state.topics, MQTT_5)
        self._set_timer("stale", client.stale_close_delay, self._on_stale)
        node.metrics.connection_opened(transport.info.name)

    # ------------------------------------------------------------------ Connection contract

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def shape(self) -> WireShape:
        return self._shape

    @property
    def push(self) -> Callable[[bytes], None]:
        return self.writer.push

    @property
    def view(self) -> ClientView:
        return ClientView(self.client_id, self.user, self.conn_info)

    def sample_write(self, started: float) -> None:
        self.writer.sample(started)

    def presence_entries(self) -> list[tuple[str, bytes]]:
        return [
            (channel, self.node.client_info(self.user, self.client_id, self.conn_info, None))
            for channel, sub in self.channels.items()
            if sub.presence
        ]

    def resubscribe(self, channel: str) -> None:
        """The node found publications of ``channel`` missing: rejoin it from the session's position."""
        if self.connected and channel in self.channels:
            self.node.spawn(P.rejoin(self, channel))

    async def apply_control(self, cmd: Control) -> None:
        if not self.connected:
            return
        if cmd.op == "disconnect":
            if self.client_id not in cmd.whitelist:
                await self.close_with(R.ADMINISTRATIVE_ACTION, cmd.reason or "force disconnect")
        elif cmd.op == "unsubscribe":
            sub = self.channels.get(cmd.channel)
            if sub is not None:
                await self.drop_subscription(sub)
        elif cmd.op == "refresh":
            if cmd.expired:
                await self.close_with(R.MAXIMUM_CONNECT_TIME, "connection expired")
                return
            self.expire_at = cmd.expire_at or None
            self.schedule_expiry()

    async def close(self, disconnect: Any = None) -> None:
        """Close from the node (shutdown, 3506…): MQTT 5 clients get a DISCONNECT first."""
        if disconnect is None:
            await self.end(send_will=True)
            return
        code = R.SERVER_SHUTTING_DOWN if disconnect == E.SHUTDOWN else R.IMPLEMENTATION_SPECIFIC_ERROR
        if disconnect == E.SLOW:
            code = R.QUOTA_EXCEEDED
        await self.close_with(code, disconnect.reason, close_code=disconnect.code)

    # ------------------------------------------------------------------ input

    async def handle_frame(self, frame: bytes) -> None:
        if self._closed:
            return
        if frame:
            self.node.metrics.received(len(frame))
        try:
            packets = self.decoder.feed(frame)
        except MalformedPacket as exc:
            for packet in exc.packets:
                if self._closed:
                    return
                await self._handle(packet)
            await self._malformed(exc)
            return
        for packet in packets:
            if self._closed:
                return
            await self._handle(packet)

    async def _malformed(self, exc: MalformedPacket) -> None:
        log.info("malformed MQTT packet from client=%s: %s", self.client_id or self.remote, exc.message)
        if not self.connected:
            # MQTT 5 always answers with a CONNACK; 3.1.1 has return codes for exactly these two
            # (1 unacceptable protocol version, 2 identifier rejected: MQTT-3.1.3-8), encode maps them
            if self.decoder.version == MQTT_5 or exc.reason_code in (
                R.UNSUPPORTED_PROTOCOL_VERSION,
                R.CLIENT_IDENTIFIER_NOT_VALID,
            ):
                version = self.decoder.version or 4
                self.send(ConnAck(False, exc.reason_code), version)
            await self.end(send_will=False, code=exc.reason_code)
            return
        await self.close_with(exc.reason_code, exc.message)

    async def _handle(self, packet: Packet) -> None:
        self._last_packet = self.node.clock.monotonic()
        self.node.metrics.protocol_packet(
            "mqtt5" if self.decoder.version == MQTT_5 else "mqtt3.1.1", "in", type(packet).__name__.lower()
        )
        if isinstance(packet, Connect):
            if self.connected:
                await self.close_with(R.PROTOCOL_ERROR, "second CONNECT")
                return
            await P.handle_connect(self, packet)
            return
        if not self.connected:
            await self.end(send_will=False, code=R.PROTOCOL_ERROR)
            return
        if isinstance(packet, Publish):
            await P.handle_publish(self, packet)
        elif isinstance(packet, PubAck):
            sent = self.inflight.get(packet.packet_id)
            if sent is not None and sent != persist.PUBREL_MARK and packet_qos(sent) == 1:
                self.acknowledged(packet.packet_id)
        elif isinstance(packet, PubRec):
            self._pubrec(packet)
        elif isinstance(packet, PubRel):
            found = packet.packet_id in self.awaiting_rel
            self.awaiting_rel.discard(packet.packet_id)
            self.send(PubComp(packet.packet_id, 0 if found else R.PACKET_IDENTIFIER_NOT_FOUND))
        elif isinstance(packet, PubComp):
            if self.inflight.get(packet.packet_id) == persist.PUBREL_MARK:
                self.acknowledged(packet.packet_id)
        elif isinstance(packet, Subscribe):
            await P.handle_subscribe(self, packet)
        elif isinstance(packet, Unsubscribe):
            await P.handle_unsubscribe(self, packet)
        elif isinstance(packet, PingReq):
            self.send(PingResp())
        elif isinstance(packet, Disconnect):
            await P.handle_disconnect(self, packet)
        elif isinstance(packet, Auth):
            await P.handle_auth(self, packet)
        else:
            await self.close_with(R.PROTOCOL_ERROR, f"unexpected {type(packet).__name__}")

    def _pubrec(self, packet: PubRec) -> None:
        """Outbound QoS 2, step two: PUBREC -> PUBREL (the message is then only a packet id until PUBCOMP)."""
        pid = packet.packet_id
        sent = self.inflight.get(pid)
        if sent is None or sent == persist.PUBREL_MARK or packet_qos(sent) != 2:
            if sent is None:
                self.send(PubRel(pid, R.PACKET_IDENTIFIER_NOT_FOUND if self.version == MQTT_5 else 0))
            elif sent == persist.PUBREL_MARK:
                self.resend_pubrel(pid)  # a repeated PUBREC: PUBREL again
            return
        if packet.reason_code >= 0x80:  # MQTT 5: the client refused the message; the exchange ends here
            self.acknowledged(pid)
            return
        self.inflight[pid] = persist.PUBREL_MARK
        self.resend_pubrel(pid)

    def resend_pubrel(self, packet_id: int) -> None:
        self.send(PubRel(packet_id))

    # ------------------------------------------------------------------ output

    def send(self, packet: Packet, version: int | None = None) -> None:
        self.writer.push(encode(packet, version or self.version))

    def next_packet_id(self) -> int:
        for _ in range(65535):
            pid = self.next_id
            self.next_id = pid + 1 if pid < 65535 else 1
            if pid not in self.inflight:
                return pid
        raise RuntimeError("no free packet identifier")  # pragma: no cover - bounded by the in-flight window

    def deliver_qos(self, data: bytes) -> None:
        """Push one encoded PUBLISH of a QoS 1 subscription (the hub calls this per delivery)."""
        if not data or self._closed:
            return
        if self.max_outgoing_packet and len(data) > self.max_outgoing_packet:
            self.dropped += 1  # MQTT 5: never send a packet bigger than the client's maximum
            self.node.metrics.protocol_drop(self.protocol, "too_large")
            return
        if packet_qos(data) == 0:
            self.writer.push(data)
            return
        if len(self.inflight) < self.send_window:
            pid = self.next_packet_id()
            out = with_packet_id(data, pid)
            self.inflight[pid] = out
            self.writer.push(out)
            return
        if len(self.queue) >= self.node.settings.mqtt.max_queued_messages:
            self.dropped += 1
            self.node.metrics.protocol_drop(self.protocol, "queue_full")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "client=%s does not acknowledge QoS 1 messages; %d dropped (mqtt.max_queued_messages)",
                    self.client_id,
                    self.dropped,
                )
            return
        self.queue.append((data, self.node.clock.monotonic()))

    def deliver_plain(self, data: bytes) -> None:
        """Push shared QoS 0 bytes, leaving out the empty encodings of no-local subscriptions."""
        if data and not (self.max_outgoing_packet and len(data) > self.max_outgoing_packet):
            self.writer.push(data)

    def acknowledged(self, packet_id: int) -> None:
        if self.inflight.pop(packet_id, None) is None:
            return
        self.pump()

    def pump(self) -> None:
        """Send queued messages while the in-flight window has room."""
        while self.queue and len(self.inflight) < self.send_window:
            data, queued_at = self.queue.popleft()
            if self.version == MQTT_5:
                fresh = self._unexpired(data, queued_at)
                if fresh is None:
                    continue
                data = fresh
            pid = self.next_packet_id()
            out = with_packet_id(data, pid)
            self.inflight[pid] = out
            self.writer.push(out)

    def _unexpired(self, data: bytes, queued_at: float) -> bytes | None:
        """A queued MQTT 5 PUBLISH with the expiry interval that is left; None once it has expired."""
        found = expiry_at(data)
        if found is None:
            return data
        at, interval = found
        waited = int(self.node.clock.monotonic() - queued_at)
        if waited <= 0:
            return data
        if waited >= interval:
            self.dropped += 1
            self.node.metrics.protocol_drop(self.protocol, "expired")
            return None
        return with_expiry(data, at, interval - waited)

    def push_for(self, shape: MqttShape) -> Callable[[bytes], None]:
        if shape.qos:
            return self.deliver_qos
        if shape.no_local is not None or self.max_outgoing_packet:
            return self.deliver_plain
        return self.writer.push

    @property
    def protocol(self) -> str:
        return "mqtt5" if self.version == MQTT_5 else "mqtt3.1.1"

    def client_info(self) -> ClientInfo:
        return ClientInfo(self.user, self.client_id, self.conn_info, None)

    # ------------------------------------------------------------------ timers

    def _set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if delay > 0:
            self._timers[name] = self.node.clock.call_later(delay, callback)

    def cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _on_stale(self) -> None:
        if not self.connected and not self._closed:
            self.node.spawn(self.end(send_will=False))

    def start_keepalive(self) -> None:
        self.cancel_timer("stale")
        if self.keepalive > 0:
            self._last_packet = self.node.clock.monotonic()
            self._set_timer("keepalive", self.keepalive * 1.5, self._check_keepalive)

    def _check_keepalive(self) -> None:
        if self._closed:
            return
        limit = self.keepalive * 1.5
        idle = self.node.clock.monotonic() - self._last_packet
        if idle >= limit - 1e-6:
            log.info("client=%s sent nothing for %.1fs (keepalive %ds)", self.client_id, idle, self.keepalive)
            self.node.spawn(self.close_with(R.KEEP_ALIVE_TIMEOUT, "keep alive timeout", send_will=True))
            return
        self._set_timer("keepalive", limit - idle, self._check_keepalive)

    def schedule_expiry(self) -> None:
        if self.expire_at is None:
            self.cancel_timer("expire")
            return
        delay = self.expire_at - self.node.clock.time() + self.node.settings.client.expired_close_delay
        self._set_timer("expire", max(delay, 0.001), self._on_expired)

    def _on_expired(self) -> None:
        if self.expire_at is not None and self.expire_at <= self.node.clock.time():
            self.node.spawn(self.close_with(R.MAXIMUM_CONNECT_TIME, "token expired", send_will=True))

    # ------------------------------------------------------------------ ending

    def _on_overflow(self) -> None:
        self.node.metrics.slow_consumer()
        self.node.spawn(self.end(send_will=True, code=E.SLOW.code, abort=True))

    def _on_write_error(self, exc: BaseException) -> None:
        if not self._closed:
            log.info("write failed for client=%s: %s", self.client_id, exc)
            self.node.spawn(self.end(send_will=True))

    async def close_with(self, reason_code: int, reason: str, *, send_will: bool = True, close_code: int = 0) -> None:
        """End the connection with an MQTT 5 DISCONNECT (3.1.1: just close)."""
        if self._closed:
            return
        if self.connected and self.version == MQTT_5 and reason_code in R.DISCONNECT_CODES:
            props = Properties(reason_string=reason[:100]) if reason else Properties()
            self.send(Disconnect(reason_code, props))
        await self.end(send_will=send_will, code=close_code or reason_code)

    async def drop_subscription(self, sub: MqttSubscription) -> None:
        await P.release(self, sub)

    async def end(self, *, send_will: bool, code: int = 0, abort: bool = False) -> None:
        """Close once: subscriptions, presence, will, transport."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._end(send_will, code, abort)
        finally:
            self._closing.set_result(None)

    async def _end(self, send_will: bool, code: int, abort: bool) -> None:
        was_connected = self.connected
        self._closed = True
        self.connected = False
        self._close_code = code
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        node = self.node
        if was_connected:
            node.hub.remove_connection(self.client_id, self.user, self)
            if self.state.sessions.get(self.mqtt_client_id) is self:
                del self.state.sessions[self.mqtt_client_id]
        if was_connected and self.session_expiry > 0 and self.mqtt_client_id:
            persist.save(self)
        for sub in list(self.subscriptions.values()):
            await self.drop_subscription(sub)
        self.queue.clear()
        self.inflight.clear()
        if was_connected and send_will and self.will is not None:
            P.schedule_will(self, self.will)
        self.will = None
        if abort:
            self.writer.abort()
            self.transport.abort()
        else:
            await self.writer.drain_and_stop(node.settings.websocket.write_timeout)
            try:
                await asyncio.wait_for(self.transport.close(1000, "mqtt"), node.settings.websocket.write_timeout)
            except (TimeoutError, ConnectionError, RuntimeError):
                self.transport.abort()
        self.writer.abort()
        node.metrics.connection_closed(self.transport.info.name, code)
        if was_connected and node.hooks.disconnect is not None:
            try:
                await node.hooks.disconnect(DisconnectEvent(self.view, code, "mqtt disconnect"))
            except Exception:
                log.exception("on_disconnect hook failed")


def now_ms() -> int:
    return int(time.time() * 1000)
