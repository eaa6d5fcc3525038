"""Joining a channel: permissions, recovery, ordering with live publications (reference §4).

``join_channel`` registers the connection as *pending* on the channel first, so
every publication that arrives while history is read is buffered; the caller writes
the subscribe reply and then calls the returned ``finish``, which writes the
buffered publications that follow the client's position and makes the
subscription live. The reply therefore always precedes the channel's live
publications, and nothing is lost or duplicated between history and live data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .. import errors as E
from ..auth import Override
from ..broker.base import ClientInfo, StreamPosition
from ..config import NamespaceOptions
from ..hub import permissions
from ..protocol.delta import DELTA_SHAPES
from ..protocol.messages import SubscribeRequest, SubscribeResult
from ..session import State, Subscription

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("trunkline.commands")
Finish = Callable[[], None]
FLAG_REJECT_UNRECOVERED = 2
#: the delta types Trunkline encodes (``SubscribeRequest.delta``)
DELTA_TYPES = frozenset({"fossil"})


def _pick(override: bool | None, default: bool) -> bool:
    return default if override is None else override


async def join_channel(
    s: Session,
    channel: str,
    opts: NamespaceOptions,
    req: SubscribeRequest,
    *,
    server_side: bool = False,
    chan_info: bytes | None = None,
    data: bytes | None = None,
    override: Override | None = None,
    expire_at: int | None = None,
) -> tuple[SubscribeResult, Finish]:
    node = s.node
    if opts.subscription_type == "shared_poll":  # tracked keys, not a stream (commands/shared_polling)
        raise E.BAD_REQUEST.with_message("bad request: a shared-poll channel is subscribed by the client (type 4)")
    override = override or Override()
    insecure = node.settings.client.insecure
    presence = _pick(override.presence, opts.presence)
    history_access = permissions.can_read_history(opts, s.user, True, insecure)
    presence_access = permissions.can_read_presence(opts, s.user, True, insecure)
    join_leave = _pick(override.join_leave, opts.join_leave)
    push_join_leave = join_leave and (
        _pick(override.force_push_join_leave, opts.force_push_join_leave) or (req.join_leave and presence_access)
    )
    history = opts.history_enabled
    recoverable = history and (
        _pick(override.force_recovery, opts.force_recovery)
        or (req.recoverable and (opts.allow_recovery or history_access))
    )
    positioned = history and (
        recoverable
        or _pick(override.force_positioning, opts.force_positioning)
        or (req.positioned and (opts.allow_positioning or history_access))
    )
    if req.delta and req.delta not in DELTA_TYPES:
        raise E.BAD_REQUEST_DISCONNECT.with_reason(f"bad request: unknown delta type {req.delta[:32]!r}")
    # delta needs the stream position (patches follow the stream), as in Centrifugo
    delta_shape = DELTA_SHAPES.get(s.shape) if positioned and req.delta in opts.allowed_delta_types else None
    sub = Subscription(
        channel=channel,
        chan_info=chan_info,
        expire_at=expire_at,
        server_side=server_side,
        presence=presence,
        join_leave=join_leave,
        push_join_leave=push_join_leave,
        recoverable=recoverable,
        positioned=positioned,
    )
    token = object()
    s.pending[channel] = token
    result = SubscribeResult()
    if expire_at:
        result.expires = True
        result.ttl = ttl_of(expire_at, node.clock.time())
    if data is not None:
        result.data = msgspec.Raw(data)
    since = StreamPosition(req.offset, req.epoch) if recoverable and req.recover else None
    try:
        joined, finish_join = await node.join(
            s,
            channel,
            positioned=positioned,
            recoverable=recoverable,
            since=since,
            reject_unrecovered=bool(req.flag & FLAG_REJECT_UNRECOVERED),
            join_leave=push_join_leave,
            shape=delta_shape,
        )
    except BaseException:
        if s.pending.get(channel) is token:
            del s.pending[channel]
        raise
    if positioned:
        result.positioned = True
        result.recoverable = recoverable
        result.epoch = joined.epoch
        result.offset = joined.offset
        result.was_recovering = joined.was_recovering
        result.recovered = joined.recovered
        if joined.recovered:
            if delta_shape is not None:
                result.publications = delta_shape.recovered(joined.publications)
            else:
                result.publications = [s.codec.publication(p) for p in joined.publications]
    if delta_shape is not None:
        result.delta = True

    def finish() -> None:
        if s.state is State.CLOSED or s.pending.get(channel) is not token:
            return
        del s.pending[channel]
        finish_join()
        s.subscriptions[channel] = sub
        if delta_shape is not None and joined.recovered and joined.publications:
            node.hub.delta_based(channel, s, joined.publications[-1])
        if expire_at:
            s.schedule_sub_expiry(sub)

    return result, finish


def ttl_of(expire_at: float, now: float) -> int:
    """Whole seconds until ``expire_at``, at least 1 (``ttl`` 0 would be omitted as a default).

    Rounded down so the SDK refreshes early rather than late; a credential less than
    a second from expiry still says ``ttl: 1`` (Centrifugo also never sends 0).
    """
    return max(int(expire_at - now), 1)


async def announce(s: Session, channel: str) -> None:
    """After the subscription is live: presence entry and join push."""
    sub = s.subscriptions.get(channel)
    if sub is None:
        return
    node = s.node
    info = node.client_info(s.user, s.client_id, s.conn_info, sub.chan_info)
    if sub.presence:
        with node.metrics.broker_timer("add_presence"):
            await node.presence_manager.add_presence(channel, s.client_id, s.user, info, node.presence_ttl)
        if s.subscriptions.get(channel) is not sub:  # released meanwhile: its remove may have run first
            await node.presence_manager.remove_presence(channel, s.client_id)
            return
    if sub.join_leave:
        with node.metrics.broker_timer("publish_join"):
            await node.broker.publish_join(channel, info)
    if node.map_presence.targets(channel):  # the keys of the map presence prefixes (hub/map_presence)
        try:
            await node.map_presence.join(channel, ClientInfo(s.user, s.client_id, s.conn_info, sub.chan_info), info)
            if s.subscriptions.get(channel) is not sub:  # released meanwhile: its leave may have run first
                await node.map_presence.leave(channel, s.client_id, s.user)
        except Exception as exc:
            log.warning("cannot write map presence of client=%s: %s", s.client_id, exc)
