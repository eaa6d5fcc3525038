"""Channel commands: subscribe, unsubscribe, publish, presence, history, sub_refresh (reference §4–§5)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from .. import errors as E
from ..auth import Override
from ..broker.base import ClientInfo, StreamPosition
from ..config import NamespaceOptions
from ..events import PublishEvent, SubscribeEvent
from ..hub import permissions
from ..node import SYSTEM_PREFIX
from ..protocol.messages import (
    PUBLISH_MAP,
    SUB_SHARED_POLL,
    Command,
    HistoryResult,
    PresenceResult,
    PresenceStatsResult,
    PublishResult,
    Reply,
    SubRefreshResult,
    SubscribeRequest,
    UnsubscribeResult,
)
from ..proxy import calls as proxied
from ..proxy.wire import PublishAnswer
from . import map_subscribing, shared_polling
from .map_subscribing import Grant
from .subscribing import announce, join_channel, ttl_of

if TYPE_CHECKING:
    from ..session import Session


#: what a publish without a proxy goes on with, and its (empty) result: shared, never changed
_NO_ANSWER: Final = PublishAnswer()
_PUBLISHED: Final = PublishResult()


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def channel_options(s: Session, channel: str) -> NamespaceOptions:
    """Validate a channel name and return its namespace options (107 / 102 otherwise)."""
    node = s.node
    if len(channel) > node.rules.max_length:
        raise E.BAD_REQUEST.with_message("bad request: channel too long")
    opts = node.namespace_options(channel)
    if opts is None:
        raise E.UNKNOWN_CHANNEL()
    if opts.channel_regex and not _regex(opts.channel_regex).fullmatch(node.rules.name_after_namespace(channel)):
        raise E.UNKNOWN_CHANNEL()
    return opts


async def subscribe(s: Session, cmd: Command) -> None:
    req = cmd.subscribe
    assert req is not None
    node = s.node
    channel = req.channel
    if not channel:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: empty channel")
    if channel.startswith(SYSTEM_PREFIX):
        await _subscribe_system(s, cmd, channel)
        return
    opts = channel_options(s, channel)
    if opts.is_map or req.type in map_subscribing.MAP_TYPES:  # a flow of phases, authorized on its first
        await map_subscribing.subscribe(s, cmd, opts, authorize)
        return
    if req.type == SUB_SHARED_POLL or opts.subscription_type == "shared_poll":
        shared_polling.check_type(opts, req.type)
    elif req.type != 0:
        raise E.PERMISSION_DENIED()
    if channel in s.subscriptions or channel in s.pending:
        raise E.ALREADY_SUBSCRIBED()
    limit = node.settings.client.channel_limit
    if limit and len(s.subscriptions) + len(s.pending) >= limit:
        raise E.CHANNEL_LIMIT()
    chan_info, data, override, expire_at = await authorize(s, channel, opts, req)
    if opts.subscription_type == "shared_poll":
        shared_polling.subscribe(s, cmd, channel, opts, chan_info=chan_info, expire_at=expire_at)
        return
    result, finish = await join_channel(
        s, channel, opts, req, chan_info=chan_info, data=data, override=override, expire_at=expire_at
    )
    finish = proxied.sub_refresh_finish(s, channel, opts, result, finish)
    s.reply(Reply(id=cmd.id, subscribe=result))
    finish()
    await announce(s, channel)


async def authorize(s: Session, channel: str, opts: NamespaceOptions, req: SubscribeRequest) -> Grant:
    """May this connection subscribe? Token, private and user-limited channels, proxy, hook, permissions.

    Returns what the subscription is granted: ``(chan_info, data, override, expire_at)``.
    """
    node = s.node
    chan_info: bytes | None = None
    data: bytes | None = None
    override: Override | None = None
    expire_at: int | None = None
    rules = node.rules
    if req.token:
        try:
            claims = await node.sub_verifier.verify_subscription(req.token, node.clock.time())
        except E.Disconnect:
            raise E.PERMISSION_DENIED() from None
        if claims.user != s.user or claims.channel != channel:
            raise E.INVALID_TOKEN.with_reason("invalid token: subscription token for another user or channel")
        chan_info, data, override, expire_at = claims.info, claims.data, claims.override, claims.expire_at
        if expire_at is not None and expire_at <= node.clock.time():
            raise E.TOKEN_EXPIRED()
    elif rules.is_private(channel):
        raise E.PERMISSION_DENIED()
    elif opts.allow_user_limited_channels and rules.is_user_limited(channel):
        if not rules.user_allowed(channel, s.user):
            raise E.PERMISSION_DENIED()
    elif (proxy := node.proxies.subscribe(opts)) is not None:  # the backend decides, then the hook
        chan_info, data, override, expire_at = await proxied.subscribe(s, proxy, channel, req)
    elif node.hooks.subscribe is not None:
        hook_reply = await node.hooks.subscribe(SubscribeEvent(s.view, channel, bytes(req.data) if req.data else None))
        if hook_reply is not None:
            chan_info, data = hook_reply.info, hook_reply.data
    elif not permissions.can_subscribe(opts, s.user, node.settings.client.insecure):
        raise E.PERMISSION_DENIED()
    return chan_info, data, override, expire_at


async def _subscribe_system(s: Session, cmd: Command, channel: str) -> None:
    """The node's own channels (dashboard stats): admin connections only, no history."""
    assert cmd.subscribe is not None
    if not s.is_admin:
        raise E.PERMISSION_DENIED()
    if channel in s.subscriptions or channel in s.pending:
        raise E.ALREADY_SUBSCRIBED()
    result, finish = await join_channel(s, channel, NamespaceOptions(), cmd.subscribe)
    s.reply(Reply(id=cmd.id, subscribe=result))
    finish()


async def unsubscribe(s: Session, cmd: Command) -> None:
    req = cmd.unsubscribe
    assert req is not None
    if not req.channel:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: empty channel")
    await s.release(req.channel)
    s.reply(Reply(id=cmd.id, unsubscribe=UnsubscribeResult()))


async def publish(s: Session, cmd: Command) -> None:
    req = cmd.publish
    assert req is not None
    node = s.node
    channel = req.channel
    if not channel:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: empty channel")
    opts = channel_options(s, channel)
    if req.type or opts.is_map:
        if req.type != PUBLISH_MAP or not opts.is_map:
            raise E.BAD_REQUEST.with_message("bad request: a map channel takes map writes (type 1) only")
        await map_subscribing.publish(s, cmd, opts)
        return
    if not req.data:
        raise E.BAD_REQUEST.with_message("bad request: empty data")
    data = bytes(req.data)
    sub = s.subscriptions.get(channel)
    answer = _NO_ANSWER
    if (proxy := node.proxies.publish(opts)) is not None:  # the backend decides (may rewrite), then the hook
        data, answer = await proxied.publish(s, proxy, channel, data)
    elif node.hooks.publish is not None:
        hook_reply = await node.hooks.publish(PublishEvent(s.view, channel, data))
        if hook_reply is not None and hook_reply.data is not None:
            data = hook_reply.data
    elif not permissions.can_publish(opts, s.user, sub is not None, node.settings.client.insecure):
        raise E.PERMISSION_DENIED()
    info = ClientInfo(s.user, s.client_id, s.conn_info, sub.chan_info if sub is not None else None)
    await node.publish_to(
        channel,
        opts,
        data,
        info=info,
        tags=answer.tags or None,
        skip_history=answer.skip_history,
        idempotency_key=answer.idempotency_key,
    )
    s.reply(Reply(id=cmd.id, publish=_PUBLISHED))


def _check_presence(s: Session, channel: str) -> None:
    """Presence must be on in the namespace (108) and readable by this connection (103)."""
    opts = channel_options(s, channel)
    if not opts.presence:
        raise E.NOT_AVAILABLE()
    if not permissions.can_read_presence(opts, s.user, channel in s.subscriptions, s.node.settings.client.insecure):
        raise E.PERMISSION_DENIED()


async def presence(s: Session, cmd: Command) -> None:
    """The channel's presence, or error 106 when the encoded reply would pass the limit.

    The limit is ``client.presence_max_size``, by default half the outbound queue, never
    more than the queue: a bigger reply would cut the caller with 3008 and the SDK would
    reconnect and ask again, forever; 106 tells it the channel is too big to list
    (``presence_stats`` still answers).
    """
    req = cmd.presence
    assert req is not None
    _check_presence(s, req.channel)
    with s.node.metrics.broker_timer("presence"):
        members = await s.node.presence_manager.presence(req.channel)
    client = s.node.settings.client
    limit = min(client.presence_max_size or client.queue_max_size // 2, client.queue_max_size)
    # Each entry costs at least its id, its info and `"":,` around them: refuse early without encoding.
    if sum(len(cid) + len(info) + 4 for cid, info in members.items()) > limit:
        raise E.LIMIT_EXCEEDED()
    result = PresenceResult({cid: s.codec.client_info(info) for cid, info in members.items()})
    encoded = s.codec.encode_reply(Reply(id=cmd.id, presence=result))
    if len(encoded) > limit:
        raise E.LIMIT_EXCEEDED()
    s.writer.push(encoded)


async def presence_stats(s: Session, cmd: Command) -> None:
    req = cmd.presence_stats
    assert req is not None
    _check_presence(s, req.channel)
    with s.node.metrics.broker_timer("presence_stats"):
        clients, users = await s.node.presence_manager.presence_stats(req.channel)
    s.reply(Reply(id=cmd.id, presence_stats=PresenceStatsResult(clients, users)))


async def history(s: Session, cmd: Command) -> None:
    req = cmd.history
    assert req is not None
    opts = channel_options(s, req.channel)
    if not opts.history_enabled:
        raise E.NOT_AVAILABLE()
    if not permissions.can_read_history(opts, s.user, req.channel in s.subscriptions, s.node.settings.client.insecure):
        raise E.PERMISSION_DENIED()
    since = StreamPosition(req.since.offset, req.since.epoch) if req.since is not None else None
    limit = None if req.limit < 0 else req.limit
    pubs, top = await s.node.history(req.channel, limit, since, req.reverse)
    s.reply(Reply(id=cmd.id, history=HistoryResult([s.codec.publication(p) for p in pubs], top.epoch, top.offset)))


async def sub_refresh(s: Session, cmd: Command) -> None:
    req = cmd.sub_refresh
    assert req is not None
    if req.type:  # shared poll: track / untrack keys
        await shared_polling.sub_refresh(s, cmd)
        return
    if not req.channel or not req.token:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: sub_refresh needs channel and token")
    sub = s.subscriptions.get(req.channel)
    if sub is None:
        raise E.PERMISSION_DENIED()
    now = s.node.clock.time()
    try:
        claims = await s.node.sub_verifier.verify_subscription(req.token, now)
    except E.Disconnect:
        raise E.PERMISSION_DENIED() from None
    if claims.user != s.user or claims.channel != req.channel:
        raise E.INVALID_TOKEN.with_reason("invalid token: subscription token for another user or channel")
    if claims.expire_at is not None and claims.expire_at <= now:
        raise E.EXPIRED()
    sub.expire_at = claims.expire_at
    if claims.info is not None:
        sub.chan_info = claims.info
    s.schedule_sub_expiry(sub)
    result = SubRefreshResult()
    if sub.expire_at is not None:
        result.expires = True
        result.ttl = ttl_of(sub.expire_at, now)
    s.reply(Reply(id=cmd.id, sub_refresh=result))
