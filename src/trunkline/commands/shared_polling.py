"""Shared-poll subscriptions: subscribe (type 4) and ``sub_refresh`` track / untrack (type 1 / 2).

A shared-poll subscribe is light: no history, no recovery, no presence; the reply carries the
channel state's ``epoch`` (centrifuge-js resets its stored versions when it changes). Data flows
once the client *tracks* keys: ``sub_refresh{type: 1, track: [{signature, items: [{key,
version}]}], untrack: [...]}``. Every batch's HMAC signature must cover its keys, the user and the
channel (:mod:`trunkline.auth.track_signature`): a wrong one is 103 (permission denied), one
expired past the grace period 109 (the SDK fetches a fresh one). The keys go over
``max_keys_per_connection`` / ``max_keys_per_channel``: 106 (limit exceeded), nothing tracked.
The reply carries the items the node already holds newer than the client; later changes come as
publication pushes (``key``, ``version``, ``removed``). ``type: 2`` untracks. Unsubscribing or
disconnecting untracks every key of the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .. import errors as E
from ..auth.track_signature import BadSignature, SignatureExpired, TrackKeys, verify
from ..config import NamespaceOptions
from ..hub.shared_poll import LimitExceeded
from ..protocol import protobuf
from ..protocol.codec import Codec
from ..protocol.messages import SUB_SHARED_POLL, Command, Publication, Reply, SubRefreshResult, SubscribeResult
from ..session import Subscription
from .subscribing import ttl_of

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["TRACK", "UNTRACK", "sub_refresh", "subscribe"]

#: SubRefreshRequest.type of a shared-poll track / untrack
TRACK = 1
UNTRACK = 2
#: longest key accepted (a key is an application id: post id, ticker…)
MAX_KEY_LENGTH = 1024

_json = msgspec.json.Encoder()


def track_keys(s: Session) -> TrackKeys:
    sp = s.node.settings.shared_poll
    return TrackKeys(sp.hmac_secret_key, sp.hmac_previous_secret_key, sp.hmac_previous_secret_key_valid_until)


def check_type(opts: NamespaceOptions, kind: int) -> None:
    """A shared-poll namespace takes shared-poll subscribes (type 4) only, and the other way round."""
    if (opts.subscription_type == "shared_poll") != (kind == SUB_SHARED_POLL):
        raise E.BAD_REQUEST.with_message("bad request: the subscription type does not match the channel's namespace")


def subscribe(
    s: Session,
    cmd: Command,
    channel: str,
    opts: NamespaceOptions,
    *,
    chan_info: bytes | None = None,
    expire_at: int | None = None,
) -> None:
    """Join the shared-poll channel and reply (the caller has checked the permissions)."""
    if s.closed:  # closed while the subscription was being authorized: nothing to join
        return
    if channel in s.subscriptions:  # another subscribe of the channel finished meanwhile
        raise E.ALREADY_SUBSCRIBED()
    state = s.node.shared_poll.join(channel, opts, s)
    sub = Subscription(channel=channel, chan_info=chan_info, expire_at=expire_at)
    sub.on_release = lambda: s.node.shared_poll.leave(channel, s)
    s.subscriptions[channel] = sub
    result = SubscribeResult(epoch=state.epoch)
    if expire_at:
        result.expires = True
        result.ttl = ttl_of(expire_at, s.node.clock.time())
        s.schedule_sub_expiry(sub)
    s.reply(Reply(id=cmd.id, subscribe=result))


def _item(codec: Codec, pub: Publication) -> msgspec.Raw:
    if isinstance(codec, protobuf.ProtobufCodec):
        return protobuf.encode_publication(pub)
    return msgspec.Raw(_json.encode(pub))


async def sub_refresh(s: Session, cmd: Command) -> None:
    req = cmd.sub_refresh
    assert req is not None
    channel = req.channel
    if not channel:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: sub_refresh needs a channel")
    poll = s.node.shared_poll
    state = poll.channel(channel)
    if channel not in s.subscriptions or state is None or s not in state.members:
        raise E.PERMISSION_DENIED()
    if req.type == UNTRACK:
        if not req.untrack:
            raise E.BAD_REQUEST.with_message("bad request: untrack without keys")
        poll.untrack(channel, s, req.untrack)
        s.reply(Reply(id=cmd.id, sub_refresh=SubRefreshResult()))
        return
    if req.type != TRACK or not req.track:
        raise E.BAD_REQUEST.with_message("bad request: track without batches")
    now = s.node.clock.time()
    keys = track_keys(s)
    expires: list[int] = []
    tracked: list[str] = []
    for batch in req.track:
        names = [item.key for item in batch.items]
        # a NUL would make two key lists hash alike (the signature joins keys with NUL)
        if not names or any(not k or len(k) > MAX_KEY_LENGTH or "\x00" in k for k in names):
            raise E.BAD_REQUEST.with_message("bad request: a track batch needs keys of 1-1024 characters, no NUL")
        try:
            exp = verify(keys, batch.signature, user=s.user, channel=channel, items=names, now=now)
        except SignatureExpired:
            raise E.TOKEN_EXPIRED() from None
        except BadSignature:
            raise E.PERMISSION_DENIED() from None
        expires.append(exp)
        tracked += names
    untrack = set(req.untrack)
    try:
        state.check_room(s, (k for k in tracked if k not in untrack))
    except LimitExceeded:
        raise E.LIMIT_EXCEEDED() from None
    cold: list[str] = []
    for batch, exp in zip(req.track, expires, strict=True):
        for item in batch.items:
            if state.track(s, item.key, item.version) and item.version == 0:
                cold.append(item.key)
        state.set_expiry(s, (item.key for item in batch.items), exp)
    poll.untrack(channel, s, untrack)
    cached = state.cached(s, dict.fromkeys(k for k in tracked if k not in untrack))
    result = SubRefreshResult()
    if cached:
        result.items = [_item(s.codec, Publication(msgspec.Raw(c.data), key=c.key, version=c.version)) for c in cached]
    soonest = min((e for e in expires if e), default=0)
    if soonest:
        result.expires = True
        result.ttl = max(int(soonest - now), 0)
    s.reply(Reply(id=cmd.id, sub_refresh=result))
    poll.poll_cold(channel, (k for k in cold if k not in untrack))
