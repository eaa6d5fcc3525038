"""Persistent MQTT sessions: what outlives a connection, and catching up from channel history.

A session is persistent when an MQTT 3.1.1 client connects with clean session 0,
or an MQTT 5 client with a Session Expiry Interval above 0 (both capped by
``mqtt.session_expiry_max``). When its connection ends, :func:`save` keeps on
this node, under the client id: the subscriptions, the session's
:class:`~trunkline.mqtt.shape.Tracker` (the (offset, epoch) it reached in every
concrete channel its QoS 1/2 subscriptions delivered), the unacknowledged QoS 1/2
messages and those waiting for the in-flight window, the next packet id, and the
inbound QoS 2 ids awaiting PUBREL. The subscriptions themselves leave the hub
(no presence, nothing queued while offline): what the session misses is in the
channels' history.

A reconnect with the same client id and clean start 0 (:func:`resume`) gets
``session present`` and, in this order: the unacknowledged messages again with
DUP, the queued ones, then per channel the publications after its position from
history (:func:`replay`), then live ones, once and in order. What history no
longer holds (trimmed, expired, or more than ``mqtt.max_queued_messages``), and
a stream whose epoch changed, is counted in
``trunkline_protocol_dropped_messages{reason="history_gap"|"stream_reset"}`` and
logged. Session expiry removes the saved state.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...broker.base import HistoryQuery, StreamPosition
from ...records import Publication, Undeliverable
from ..filters import matches
from ..packets import Subscription
from ..shape import Tracker, decode_meta, with_packet_id

if TYPE_CHECKING:
    from ...clock import Timer
    from .core import MqttSession, NodeState
    from .subs import MqttSubscription

log = logging.getLogger("trunkline.mqtt")
NEVER = 0xFFFFFFFF  # MQTT 5: a session that never expires
PUBREL_MARK = b"\x62"  # an in-flight QoS 2 message past PUBREC: PUBREL is what gets resent


@dataclass(slots=True)
class Saved:
    """A subscription of a saved session."""

    option: Subscription
    sub_id: int | None


@dataclass(slots=True)
class StoredSession:
    """The state of a persistent session while its client is away."""

    user: str
    version: int  # the protocol level the saved packets are encoded for
    subscriptions: list[Saved]
    tracker: Tracker
    inflight: dict[int, bytes]
    queue: deque[tuple[bytes, float]]
    next_id: int
    awaiting_rel: set[int]
    timer: Timer | None = field(default=None)


def session_expiry(s: MqttSession, clean_start: bool, requested: int | None) -> float:
    """How long the session outlives its connection (seconds; 0: it ends with the connection)."""
    cap = s.node.settings.mqtt.session_expiry_max
    if s.version != 5:
        return 0.0 if clean_start else cap
    if not requested:
        return 0.0
    return cap if requested == NEVER else min(float(requested), cap)


def take(state: NodeState, client_id: str) -> StoredSession | None:
    """Remove and return the saved session of ``client_id`` (its expiry is cancelled)."""
    stored = state.stored.pop(client_id, None)
    if stored is not None and stored.timer is not None:
        stored.timer.cancel()
    return stored


def save(s: MqttSession) -> None:
    """Keep what the session needs after its connection (called as the connection ends)."""
    state = s.state
    client_id = s.mqtt_client_id
    tracker = s.tracker or Tracker()
    stored = StoredSession(
        user=s.user,
        version=s.version,
        subscriptions=[Saved(sub.option, sub.sub_id) for sub in s.subscriptions.values() if sub.option is not None]
        + [saved for name, saved in s.resuming.items() if name not in s.subscriptions],
        tracker=tracker,
        inflight=dict(s.inflight),
        queue=deque(s.queue),
        next_id=s.next_id,
        awaiting_rel=set(s.awaiting_rel),
    )
    tracker.held.clear()  # a catch-up cut short: its positions did not move, the next resume replays again
    take(state, client_id)
    limit = s.node.settings.mqtt.max_stored_sessions
    while limit and len(state.stored) >= limit:  # at most one pass per save once the bound holds
        oldest = next(iter(state.stored))
        take(state, oldest)
        s.node.metrics.protocol_drop(s.protocol, "session_evicted")
        log.warning("session of client=%s dropped: mqtt.max_stored_sessions (%d) reached", oldest, limit)
    state.stored[client_id] = stored
    if tracker.evicted:
        s.node.metrics.protocol_drop(s.protocol, "positions_evicted", tracker.evicted)
        log.warning(
            "session of client=%s forgot the positions of %d channels (more than %d channels seen)",
            client_id,
            tracker.evicted,
            tracker.limit,
        )
        tracker.evicted = 0

    def expire() -> None:
        if state.stored.get(client_id) is stored:
            del state.stored[client_id]
            log.info("session of client=%s expired", client_id)

    stored.timer = s.node.clock.call_later(s.session_expiry, expire)


def restore_delivery(s: MqttSession, stored: StoredSession) -> None:
    """Resend the unacknowledged messages (DUP set; PUBREL for QoS 2 past PUBREC), then the queued ones."""
    s.next_id = stored.next_id
    s.awaiting_rel = stored.awaiting_rel
    if stored.version != s.version:  # encoded for the other protocol level: they cannot be resent
        lost = len(stored.inflight) + len(stored.queue)
        if lost:
            s.node.metrics.protocol_drop(s.protocol, "version_changed", lost)
            log.warning(
                "client=%s came back with another MQTT version; %d unacknowledged messages dropped", s.client_id, lost
            )
        return
    for pid, data in stored.inflight.items():
        s.inflight[pid] = data
        if data == PUBREL_MARK:
            s.resend_pubrel(pid)
        else:
            s.writer.push(with_packet_id(data, pid, dup=True))
    s.queue.extend(stored.queue)
    s.pump()


def expired(s: MqttSession, pub: Publication) -> bool:
    """Whether an MQTT 5 Message Expiry Interval of ``pub`` has passed (it is not delivered then)."""
    meta = decode_meta(pub.meta)
    if meta is None or meta.message_expiry_interval is None or not pub.time:
        return False
    return pub.time + meta.message_expiry_interval * 1000 <= s.node.clock.time() * 1000


def _lost(s: MqttSession, channel: str, reason: str, count: int) -> None:
    s.node.metrics.protocol_drop(s.protocol, reason, count)
    if reason == "stream_reset":
        log.warning(
            "client=%s missed publications of %s while away: the stream was reset (epoch changed)", s.client_id, channel
        )
    else:
        log.warning(
            "client=%s missed %d publications of %s while away: history no longer holds them",
            s.client_id,
            count,
            channel,
        )


def _deliver(s: MqttSession, sub: MqttSubscription, channel: str, pub: Publication) -> None:
    if expired(s, pub):
        s.node.metrics.protocol_drop(s.protocol, "expired")
        return
    try:
        data = sub.shape.publication(channel, pub)
    except Undeliverable:
        return
    s.push_for(sub.shape)(data)


async def _read(s: MqttSession, channel: str, since: tuple[int, str]) -> tuple[list[Publication], StreamPosition]:
    """The publications of ``channel`` after ``since`` (the newest ``limit`` of them) and the stream top."""
    node = s.node
    limit = node.settings.mqtt.max_queued_messages + s.send_window
    ttl = node.settings.channel.history_meta_ttl
    _, top = await node.broker.history(
        channel, HistoryQuery(limit=0, history_meta_ttl=ttl, placeholder_ttl=node.placeholder_ttl)
    )
    start = max(since[0], top.offset - limit)
    if top.epoch != since[1] or top.offset <= start:
        return [], top
    pubs, top = await node.broker.history(
        channel,
        HistoryQuery(
            limit=limit,
            since=StreamPosition(start, top.epoch),
            history_meta_ttl=ttl,
            placeholder_ttl=node.placeholder_ttl,
        ),
    )
    return pubs, top


async def replay(s: MqttSession, sub: MqttSubscription, channel: str, upto: tuple[int, str] | None) -> None:
    """Deliver what ``channel`` published after the session's position, up to ``upto`` (an exact join's start).

    For a wildcard subscription (``upto`` None) the channel's live publications are
    held by the tracker meanwhile; they follow the history ones, without repeats.
    """
    tracker = s.tracker
    if tracker is None or s.closed:
        return
    since = tracker.positions.get(channel)
    pubs: list[Publication] = []
    top: StreamPosition | None = None
    if since is not None:
        try:
            pubs, top = await _read(s, channel, since)
        except Exception as exc:
            log.warning("cannot read the history of %s for client=%s: %s", channel, s.client_id, exc)
            _lost(s, channel, "stream_reset", 1)
    if s.closed:  # taken over meanwhile: the tracker is the next connection's now, leave it alone
        return
    held = tracker.held.pop(channel, None)  # from here on nothing awaits: live publications wait their turn
    if since is not None and top is not None:
        if upto is not None:
            top = StreamPosition(*upto)
        _catch_up(s, sub, channel, since, pubs, top)
    if held:
        _release_held(s, sub, channel, held)
    if tracker.overflow:
        _lost(s, channel, "history_gap", tracker.overflow)
        tracker.overflow = 0


def _catch_up(  # noqa: PLR0917
    s: MqttSession,
    sub: MqttSubscription,
    channel: str,
    since: tuple[int, str],
    pubs: list[Publication],
    top: StreamPosition,
) -> None:
    tracker = s.tracker
    assert tracker is not None
    if top.epoch != since[1]:
        _lost(s, channel, "stream_reset", 1)
        tracker.note(channel, top.offset, top.epoch)
        return
    last = since[0]
    delivered = 0
    for pub in pubs:
        if pub.offset <= last or pub.offset > top.offset or pub.epoch != top.epoch:
            continue
        _deliver(s, sub, channel, pub)
        last = pub.offset
        delivered += 1
    missing = top.offset - since[0] - delivered
    if missing > 0:
        _lost(s, channel, "history_gap", missing)
    tracker.note(channel, top.offset, top.epoch)


def _release_held(s: MqttSession, sub: MqttSubscription, channel: str, held: dict[int, Publication]) -> None:
    tracker = s.tracker
    assert tracker is not None
    position = tracker.positions.get(channel)
    last, epoch = position if position is not None else (0, "")
    for offset in sorted(held):
        pub = held[offset]
        if pub.epoch == epoch and offset <= last:
            continue  # history had it
        if pub.epoch == epoch and last and offset > last + 1:
            _lost(s, channel, "history_gap", offset - last - 1)
        _deliver(s, sub, channel, pub)
        last, epoch = offset, pub.epoch


def held_channels(s: MqttSession, topic_filter: str, exact: set[str]) -> list[str]:
    """The channels a resumed wildcard filter delivered before (not those of the session's exact filters)."""
    tracker = s.tracker
    if tracker is None:
        return []
    topics = s.state.topics
    out: list[str] = []
    for channel in tracker.positions:
        if channel in exact:
            continue
        topic = topics.topic(channel)
        if topic is not None and matches(topic_filter, topic):
            out.append(channel)
    return out


def forget(s: MqttSession, topic_filter: str) -> None:
    """After an UNSUBSCRIBE: drop the positions of channels no remaining QoS 1/2 filter reaches."""
    tracker = s.tracker
    if tracker is None or not tracker.positions:
        return
    topics = s.state.topics
    remaining = [sub.filter for sub in s.subscriptions.values() if sub.qos and sub.group is None]
    for channel in list(tracker.positions):
        topic = topics.topic(channel)
        if topic is None or not matches(topic_filter, topic):
            continue
        if not any(matches(other, topic) for other in remaining):
            del tracker.positions[channel]
