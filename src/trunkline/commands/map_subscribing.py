"""Map subscriptions, the client side of the protocol (centrifuge-js 5.8 ``newMapSubscription``).

A map subscribe is a *flow* of subscribe commands of one channel, each answering one phase:

- **state** (``phase: 2``): a page of the channel's entries (``state``), the next ``cursor``
  ("" on the last page) and the stream position (``epoch``, ``offset``), which the client
  freezes on the first page. The page size is the asked ``limit`` clamped to the namespace's
  ``map.min_page_size`` … ``map.max_page_size`` (``map.default_page_size`` if none).
- **stream** (``phase: 1``): the stream entries after the client's offset, a page at a time.
  Once the client is within ``map.live_transition_max_publication_limit`` of the top, the
  server answers **live** (``phase: 0``, left out in JSON) with the rest of the catch-up in
  ``publications``, and the subscription is live. The join is the stream subscriptions' one
  (:meth:`Node.join`, positioned from the client's offset on the map stream): what arrives
  meanwhile is buffered and follows the reply, nothing is lost or repeated.
- **ephemeral** maps keep no stream: the first state page joins the hub (every update from
  then on is buffered), the last page is the live reply, and the buffered updates follow it.

A stream that no longer covers the client's position (trimmed, another epoch) is error 112,
on which centrifuge-js starts over from a state snapshot; so is a page of a flow that did not
go live within ``map.subscribe_catch_up_timeout``. A reconnecting client recovers (``recover``
with its offset and epoch) straight in the stream phase and gets the updates it missed.

The first command of a flow is authorized as any subscribe (token, proxy, hook, permissions);
the flow is then the session's subscribe in progress (``Session.pending``) until it is live.
Client writes (``publish`` with ``type: 1``, a ``key`` and ``removed`` for a removal) follow the
namespace's ``map.allow_publish_for_*`` / ``allow_remove_for_*`` and ``map.client_key``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from .. import errors as E
from ..auth import Override
from ..broker.base import ClientInfo, HistoryQuery, StreamPosition
from ..broker.map_base import MapLimitExceeded, MapStateQuery, MapWrite
from ..clock import Timer
from ..config import MapNamespace, NamespaceOptions
from ..hub.map_options import page_limit, stream_limit
from ..protocol.messages import (
    PHASE_LIVE,
    PHASE_STATE,
    PHASE_STREAM,
    SUB_MAP,
    SUB_MAP_CLIENTS,
    SUB_MAP_USERS,
    SUB_SHARED_POLL,
    Command,
    PublishResult,
    Reply,
    SubscribeRequest,
    SubscribeResult,
)
from ..session import State, Subscription
from .subscribing import announce, ttl_of

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("trunkline.map")

__all__ = ["MAP_TYPES", "Authorize", "Grant", "MapFlow", "can_write", "publish", "subscribe"]

#: SubscribeRequest.type of each map subscription type
MAP_TYPES = {SUB_MAP: "map", SUB_MAP_CLIENTS: "map_clients", SUB_MAP_USERS: "map_users"}
#: the longest key a client may write
MAX_KEY_LENGTH = 1024

Grant = tuple[bytes | None, bytes | None, Override | None, int | None]
#: the stream subscribe's checks: ``(chan_info, data, override, expire_at)``, or it raises
Authorize = Callable[["Session", str, NamespaceOptions, SubscribeRequest], Awaitable[Grant]]
Finish = Callable[[], None]


@dataclass(eq=False)
class MapFlow:
    """A map subscribe in progress: what its first command was granted, an ephemeral map's join."""

    chan_info: bytes | None
    data: bytes | None
    expire_at: int | None
    #: an ephemeral map's pending join (its updates are buffered from the first state page on)
    finish: Finish | None = None
    timer: Timer | None = None


def _starts_flow(req: SubscribeRequest) -> bool:
    """The first state page, or a recovery straight into the stream phase."""
    if req.phase == PHASE_STATE:
        return not req.cursor and not req.epoch
    return req.recover


def check_request(req: SubscribeRequest, opts: NamespaceOptions) -> None:
    """The type must be the namespace's (103 otherwise), the phase and paging fields valid (107)."""
    if not 0 <= req.type <= SUB_SHARED_POLL:
        raise E.BAD_REQUEST.with_message(f"bad request: unknown subscription type {req.type}")
    if MAP_TYPES.get(req.type) != opts.subscription_type:
        raise E.PERMISSION_DENIED.with_message(
            f"permission denied: the channel's subscription type is {opts.subscription_type}"
        )
    if req.phase not in {PHASE_STATE, PHASE_STREAM}:
        raise E.BAD_REQUEST.with_message("bad request: a map subscribe asks for the state (2) or stream (1) phase")
    if req.limit < 0:
        raise E.BAD_REQUEST.with_message("bad request: negative limit")
    if req.phase == PHASE_STREAM and (req.cursor or not req.epoch):
        raise E.BAD_REQUEST.with_message("bad request: the stream phase takes an epoch and offset, no cursor")


async def subscribe(s: Session, cmd: Command, opts: NamespaceOptions, authorize: Authorize) -> None:
    """One command of a map subscribe flow (the caller has validated the channel name)."""
    req = cmd.subscribe
    assert req is not None
    channel = req.channel
    check_request(req, opts)
    if channel in s.subscriptions:
        raise E.ALREADY_SUBSCRIBED()
    flow = s.pending.get(channel)
    if flow is not None and not isinstance(flow, MapFlow):
        raise E.ALREADY_SUBSCRIBED()
    if flow is None:
        if not _starts_flow(req):  # its flow timed out (or never was): the client starts over
            raise E.UNRECOVERABLE_POSITION.with_message("unrecoverable position: the map subscribe timed out")
        flow = await _start(s, channel, opts, req, authorize)
    elif _starts_flow(req):  # the client starts over (a new epoch): a fresh ephemeral join, a fresh timeout
        _leave(s, channel, flow)
        _arm(s, channel, opts, flow)
    try:
        if req.phase == PHASE_STATE:
            await _state(s, cmd, req, opts, flow)
        else:
            await _stream(s, cmd, req, opts, flow)
    except BaseException:
        _abandon(s, channel, flow)  # centrifuge-js starts a new flow after any error
        raise
    if s.state is State.CLOSED:  # closed while a page was read: a join made meanwhile must go too
        _abandon(s, channel, flow)


async def _start(
    s: Session, channel: str, opts: NamespaceOptions, req: SubscribeRequest, authorize: Authorize
) -> MapFlow:
    limit = s.node.settings.client.channel_limit
    if limit and len(s.subscriptions) + len(s.pending) >= limit:
        raise E.CHANNEL_LIMIT()
    chan_info, data, _, expire_at = await authorize(s, channel, opts, req)
    if channel in s.subscriptions or channel in s.pending:  # another subscribe won meanwhile
        raise E.ALREADY_SUBSCRIBED()
    flow = MapFlow(chan_info=chan_info, data=data, expire_at=expire_at)
    s.pending[channel] = flow
    _arm(s, channel, opts, flow)
    return flow


def _arm(s: Session, channel: str, opts: NamespaceOptions, flow: MapFlow) -> None:
    """``map.subscribe_catch_up_timeout``: the flow must be live by then, else it is dropped."""
    if flow.timer is not None:
        flow.timer.cancel()
        flow.timer = None
    timeout = opts.map.subscribe_catch_up_timeout
    if timeout > 0:
        flow.timer = s.node.clock.call_later(timeout, lambda: _abandon(s, channel, flow))


def _leave(s: Session, channel: str, flow: MapFlow) -> None:
    """Drop an ephemeral flow's pending join."""
    if flow.finish is not None:
        flow.finish = None
        node = s.node
        if node.hub.remove(channel, s):
            node.detach_channel(channel)


def _abandon(s: Session, channel: str, flow: MapFlow) -> None:
    """The flow ends without going live (an error, the catch-up timeout): drop it and any join it made."""
    if flow.timer is not None:
        flow.timer.cancel()
        flow.timer = None
    flow.finish = None
    current = s.pending.get(channel)
    if current is flow:
        del s.pending[channel]
    elif current is not None or channel in s.subscriptions:
        return  # the channel belongs to another subscribe now
    node = s.node
    if node.hub.remove(channel, s):
        node.detach_channel(channel)


async def _state(s: Session, cmd: Command, req: SubscribeRequest, opts: NamespaceOptions, flow: MapFlow) -> None:
    node = s.node
    channel = req.channel
    options = node.map_channel_options(channel)
    assert options is not None
    ephemeral = not options.keeps_stream
    if ephemeral and flow.finish is None:
        if req.cursor:  # a page of a flow whose join was dropped
            raise E.UNRECOVERABLE_POSITION()
        _, flow.finish = await node.join(s, channel)  # buffer every update from before the first page
    query = MapStateQuery(cursor=req.cursor, limit=page_limit(opts.map, req.limit), asc=req.asc)
    page = await node.map_read_state(channel, query)
    result = SubscribeResult(
        type=req.type,
        phase=PHASE_STATE,
        epoch=page.position.epoch,
        offset=page.position.offset,
        cursor=page.cursor,
        state=[s.codec.publication(entry) for entry in page.entries],
    )
    if ephemeral and not page.cursor:
        assert flow.finish is not None
        result.phase = PHASE_LIVE
        _go_live(s, cmd, channel, opts, flow, result, flow.finish, positioned=False)
        return
    s.reply(Reply(id=cmd.id, subscribe=result))


async def _stream(s: Session, cmd: Command, req: SubscribeRequest, opts: NamespaceOptions, flow: MapFlow) -> None:
    node = s.node
    channel = req.channel
    options = node.map_channel_options(channel)
    assert options is not None
    if not options.keeps_stream:
        raise E.UNRECOVERABLE_POSITION.with_message("unrecoverable position: an ephemeral map keeps no stream")
    m = opts.map
    since = StreamPosition(req.offset, req.epoch)
    _, top = await node.map_read_stream(channel, HistoryQuery(limit=0))
    if top.epoch != since.epoch or since.offset > top.offset:
        raise E.UNRECOVERABLE_POSITION()
    if top.offset - since.offset > stream_limit(m):  # too far behind to go live: one more page
        pubs, top = await node.map_read_stream(channel, HistoryQuery(limit=page_limit(m, req.limit), since=since))
        if top.epoch != since.epoch or not pubs or pubs[0].offset != since.offset + 1:
            raise E.UNRECOVERABLE_POSITION()  # the stream was trimmed past the client
        page = SubscribeResult(
            type=req.type,
            phase=PHASE_STREAM,
            epoch=top.epoch,
            offset=pubs[-1].offset,
            publications=[s.codec.publication(p) for p in pubs],
        )
        s.reply(Reply(id=cmd.id, subscribe=page))
        return
    joined, finish = await node.join(
        s,
        channel,
        positioned=True,
        recoverable=True,
        since=since,
        reject_unrecovered=True,  # not contiguous any more (trimmed meanwhile): 112, from a snapshot
        recovery_limit=options.stream_size,
    )
    pubs = joined.publications
    result = SubscribeResult(
        type=req.type,
        epoch=joined.epoch,
        offset=pubs[-1].offset if pubs else since.offset,
        recoverable=True,
        positioned=True,
        recovered=req.recover,
        was_recovering=req.recover,
        publications=[s.codec.publication(p) for p in pubs] or None,
    )
    _go_live(s, cmd, channel, opts, flow, result, finish, positioned=True)


def _go_live(  # noqa: PLR0917
    s: Session,
    cmd: Command,
    channel: str,
    opts: NamespaceOptions,
    flow: MapFlow,
    result: SubscribeResult,
    finish: Finish,
    positioned: bool,
) -> None:
    """Reply live, then make the subscription live (the buffered updates follow the reply)."""
    if s.state is State.CLOSED:
        return
    if s.pending.get(channel) is not flow:  # timed out while the stream was read
        raise E.UNRECOVERABLE_POSITION.with_message("unrecoverable position: the map subscribe timed out")
    if flow.timer is not None:
        flow.timer.cancel()
        flow.timer = None
    node = s.node
    if flow.expire_at:
        result.expires = True
        result.ttl = ttl_of(flow.expire_at, node.clock.time())
    if flow.data is not None:
        result.data = msgspec.Raw(flow.data)
    sub = Subscription(
        channel=channel,
        chan_info=flow.chan_info,
        expire_at=flow.expire_at,
        recoverable=positioned,
        positioned=positioned,
    )
    if opts.map.remove_client_on_unsubscribe:
        sub.on_release = lambda: node.spawn(_remove_client_key(s, channel))
    s.reply(Reply(id=cmd.id, subscribe=result))
    del s.pending[channel]
    flow.finish = None
    finish()
    s.subscriptions[channel] = sub
    if flow.expire_at:
        s.schedule_sub_expiry(sub)
    if node.map_presence.targets(channel):  # the namespace's map presence prefixes (hub/map_presence)
        node.spawn(announce(s, channel))


async def _remove_client_key(s: Session, channel: str) -> None:
    """``map.remove_client_on_unsubscribe``: the entry keyed by the client id goes with its subscription."""
    try:
        await s.node.map_remove(channel, s.client_id, info=ClientInfo(s.user, s.client_id, s.conn_info, None))
    except Exception as exc:  # the broker is down: the key goes by its TTL
        log.warning("cannot remove the map key of client=%s: %s", s.client_id, exc)


# ---------------------------------------------------------------- client writes


def can_write(m: MapNamespace, user: str, subscribed: bool, remove: bool, insecure: bool) -> bool:
    """``map.allow_publish_for_*`` (``allow_remove_for_*`` for a removal), as the stream publish permissions."""
    if remove:
        client, subscriber, anonymous = (
            m.allow_remove_for_client,
            m.allow_remove_for_subscriber,
            m.allow_remove_for_anonymous,
        )
    else:
        client, subscriber, anonymous = (
            m.allow_publish_for_client,
            m.allow_publish_for_subscriber,
            m.allow_publish_for_anonymous,
        )
    if client and (user or anonymous):
        return True
    if subscriber and subscribed and (user or anonymous):
        return True
    return insecure


def _key(s: Session, m: MapNamespace, asked: str) -> str:
    """The key a client writes: its own id or user with ``map.client_key``, else the one it names."""
    if m.client_key == "client_id":
        return s.client_id
    if m.client_key == "user_id":
        if not s.user:
            raise E.PERMISSION_DENIED.with_message("permission denied: client_key user_id needs a user")
        return s.user
    if not asked:
        raise E.BAD_REQUEST.with_message("bad request: a map write needs a key")
    if len(asked) > MAX_KEY_LENGTH:
        raise E.BAD_REQUEST.with_message(f"bad request: key longer than {MAX_KEY_LENGTH}")
    return asked


async def publish(s: Session, cmd: Command, opts: NamespaceOptions) -> None:
    """A client's map write: ``publish`` with ``type: 1``, a key, data (or ``removed``)."""
    req = cmd.publish
    assert req is not None
    node = s.node
    channel = req.channel
    if not opts.is_map:
        raise E.BAD_REQUEST.with_message("bad request: not a map channel")
    m = opts.map
    sub = s.subscriptions.get(channel)
    if not can_write(m, s.user, sub is not None, req.removed, node.settings.client.insecure):
        raise E.PERMISSION_DENIED()
    key = _key(s, m, req.key)
    info = ClientInfo(s.user, s.client_id, s.conn_info, sub.chan_info if sub is not None else None)
    if req.removed:
        if req.data:
            raise E.BAD_REQUEST.with_message("bad request: a removal carries no data")
        await node.map_remove(channel, key, info=info)
    else:
        if not req.data:
            raise E.BAD_REQUEST.with_message("bad request: empty data")
        try:
            await node.map_publish(channel, MapWrite(key=key, data=bytes(req.data), info=info))
        except MapLimitExceeded:
            raise E.LIMIT_EXCEEDED.with_message("limit exceeded: the channel holds map.max_keys keys") from None
    s.reply(Reply(id=cmd.id, publish=PublishResult()))
