"""Joining a channel: permissions, recovery, ordering with live publications (reference §4).

``join_channel`` registers the connection as *pending* on the channel first, so
every publication that arrives while history is read is buffered; the caller writes
the subscribe reply and then calls the returned ``finish``, which writes the
buffered publications that follow the client's position and makes the
subscription live. The reply therefore always precedes the channel's live
publications, and nothing is lost or duplicated between history and live data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .. import errors as E
from ..auth import Override
from ..broker.base import HistoryQuery, StreamPosition, StreamPublication
from ..config import NamespaceOptions
from ..hub import permissions
from ..hub.recovery import decide, live_after
from ..protocol.messages import SubscribeRequest, SubscribeResult
from ..session import State, Subscription

if TYPE_CHECKING:
    from ..session import Session

Finish = Callable[[], None]
FLAG_REJECT_UNRECOVERED = 2


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
    buffered: list[StreamPublication] = []
    s.pending[channel] = buffered
    node.hub.add_pending(channel, s, lambda offset, push: buffered.append(StreamPublication(offset, push)))
    result = SubscribeResult()
    if expire_at:
        result.expires = True
        result.ttl = max(int(expire_at - time.time()), 0)
    if data is not None:
        result.data = msgspec.Raw(data)
    try:
        await node.attach_channel(channel)
        position = -1
        if positioned:
            result.positioned = True
            result.recoverable = recoverable
            position = await _position(s, channel, req, result, recoverable)
    except BaseException:
        s.pending.pop(channel, None)
        if node.hub.remove(channel, s):
            node.detach_channel(channel)
        raise

    def finish() -> None:
        if s.state is State.CLOSED or s.pending.get(channel) is not buffered:
            return
        del s.pending[channel]
        live = live_after(buffered, position) if position >= 0 else buffered
        if live is None:
            node.hub.remove(channel, s)
            raise E.INSUFFICIENT_STATE
        for pub in live:
            s.writer.push(pub.data)
        node.hub.activate(channel, s, s.writer.push, push_join_leave)
        s.subscriptions[channel] = sub
        if expire_at:
            s.schedule_sub_expiry(sub)

    return result, finish


async def _position(s: Session, channel: str, req: SubscribeRequest, result: SubscribeResult, recoverable: bool) -> int:
    """Fill offset/epoch (and recovered publications); return the client's position after the reply."""
    node = s.node
    meta_ttl = node.settings.channel.history_meta_ttl
    if recoverable and req.recover:
        since = StreamPosition(req.offset, req.epoch)
        limit = node.settings.client.recovery_max_publication_limit or None
        with node.metrics.broker_timer("history"):
            pubs, top = await node.broker.history(
                channel, HistoryQuery(limit=limit, since=since, history_meta_ttl=meta_ttl)
            )
        recovery = decide(since, pubs, top)
        result.was_recovering = True
        result.epoch = top.epoch
        node.metrics.recovery(recovery.recovered)
        if recovery.recovered:
            result.recovered = True
            result.offset = since.offset
            result.publications = [msgspec.Raw(p.data) for p in recovery.publications]
            return recovery.publications[-1].offset if recovery.publications else since.offset
        if req.flag & FLAG_REJECT_UNRECOVERED:
            raise E.UNRECOVERABLE_POSITION
        result.offset = top.offset
        return top.offset
    with node.metrics.broker_timer("history"):
        _, top = await node.broker.history(channel, HistoryQuery(limit=0, history_meta_ttl=meta_ttl))
    result.epoch = top.epoch
    result.offset = top.offset
    return top.offset


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
    if sub.join_leave:
        with node.metrics.broker_timer("publish_join"):
            await node.broker.publish_join(channel, info)
