"""Asking the backend on behalf of a client command: the glue between a session and the proxy.

The proxy and the Python hooks compose in one order: **the proxy first, then the hook**. The
proxy is the authority a Centrifugo deployment already has (it decides, and can refuse with its
``error`` or ``disconnect``); a hook of the program that embeds Trunkline then sees what the proxy
allowed (the connect hook gets the proxy's credentials, the publish hook the rewritten data) and
may still refuse by raising, or change what it returns. RPC is answered by one of them: the
method's namespace proxy when it has one, else the ``on_rpc`` hook.

A proxy that gives no usable answer (timeout, connection refused, a status other than 200, an
answer that is not proxy JSON, too many requests in flight) is error 100 ``internal server
error`` (temporary: the SDKs retry) for connect, subscribe, publish and RPC; a failed refresh or
sub refresh keeps the connection or subscription for :data:`RETRY_AFTER` seconds and asks again,
as Centrifugo does, so a backend restart does not drop connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from .. import errors as E
from ..auth.claims import Override
from ..config import NamespaceOptions
from ..events import PublishEvent, SubscribeEvent
from . import wire
from .endpoint import Endpoint, ProxyFailure
from .wire import ConnectAnswer, PublishAnswer

_A = TypeVar("_A")

if TYPE_CHECKING:
    from ..protocol.messages import ConnectRequest, SubscribeRequest, SubscribeResult
    from ..session import Session

__all__ = [
    "RETRY_AFTER",
    "connect",
    "publish",
    "rpc",
    "server_refresh",
    "sub_refresh_finish",
    "subscribe",
]

log = logging.getLogger("trunkline.proxy")

#: Seconds a connection or subscription lives on when its refresh proxy gave no answer (Centrifugo: 60).
RETRY_AFTER = 60.0


def caller(s: Session) -> wire.Caller:
    info = s.transport.info
    return wire.Caller(s.client_id, info.name, info.protocol, s.user, s.meta)


def _payload(data: msgspec.Raw | bytes | None) -> bytes | None:
    return bytes(data) if data else None


async def connect(s: Session, proxy: Endpoint, req: ConnectRequest) -> ConnectAnswer | None:
    """The connect proxy's credentials for a connection without a token (None: no ``result``)."""
    body = wire.connect_request(
        caller(s),
        binary=proxy.binary,
        name=req.name,
        version=req.version,
        data=_payload(req.data),
        channels=list(req.subs),
    )
    try:
        return await proxy.call("connect", body, s.headers, wire.parse_connect, s.client_id)
    except ProxyFailure:
        raise E.INTERNAL() from None


async def subscribe(
    s: Session, proxy: Endpoint, channel: str, req: SubscribeRequest
) -> tuple[bytes | None, bytes | None, Override | None, int | None]:
    """(channel info, data, override, expire_at) the subscribe proxy (then the hook) grants."""
    data = _payload(req.data)
    body = wire.subscribe_request(
        caller(s), binary=proxy.binary, meta=proxy.include_meta, channel=channel, token=req.token, data=data
    )
    try:
        answer = await proxy.call("subscribe", body, s.headers, wire.parse_subscribe, s.client_id)
    except ProxyFailure:
        raise E.INTERNAL() from None
    if answer.expire_at is not None and answer.expire_at <= s.node.clock.time():
        raise E.EXPIRED()
    chan_info, reply_data = answer.info, answer.data
    hook = s.node.hooks.subscribe
    if hook is not None:
        hook_reply = await hook(SubscribeEvent(s.view, channel, data))
        if hook_reply is not None:
            chan_info = hook_reply.info if hook_reply.info is not None else chan_info
            reply_data = hook_reply.data if hook_reply.data is not None else reply_data
    return chan_info, reply_data, answer.override, answer.expire_at


async def publish(s: Session, proxy: Endpoint, channel: str, data: bytes) -> tuple[bytes, PublishAnswer]:
    """The data to publish (the proxy's, else the client's; then the hook's) and the proxy's options."""
    body = wire.publish_request(caller(s), binary=proxy.binary, meta=proxy.include_meta, channel=channel, data=data)
    try:
        answer = await proxy.call("publish", body, s.headers, wire.parse_publish, s.client_id)
    except ProxyFailure:
        raise E.INTERNAL() from None
    if answer.data is not None:
        data = answer.data
    hook = s.node.hooks.publish
    if hook is not None:
        hook_reply = await hook(PublishEvent(s.view, channel, data))
        if hook_reply is not None and hook_reply.data is not None:
            data = hook_reply.data
    return data, answer


async def rpc(s: Session, proxy: Endpoint, method: str, data: msgspec.Raw | None) -> bytes | None:
    body = wire.rpc_request(caller(s), binary=proxy.binary, meta=proxy.include_meta, method=method, data=_payload(data))
    try:
        answer = await proxy.call("rpc", body, s.headers, wire.parse_rpc, s.client_id)
    except ProxyFailure:
        raise E.INTERNAL() from None
    return answer.data


# ------------------------------------------------------------------------------ server-side refresh


def server_refresh(s: Session) -> Callable[[], object] | None:
    """The session's expiry callback when the refresh proxy is on (None: client-side refresh)."""
    proxy = s.node.proxies.refresh
    if proxy is None or s.is_admin:
        return None
    return lambda: s.node.spawn(_refresh(s, proxy))


async def _ask(s: Session, proxy: Endpoint, event: str, body: bytes, parse: Callable[[bytes], _A]) -> _A | None:
    """A refresh the server makes for a connection: the answer, or None when the backend failed
    (ask again later). A disconnect answer (or a status transformed into one) closes the connection."""
    try:
        return await proxy.call(event, body, s.headers, parse, s.client_id)
    except E.Disconnect as disconnect:
        if not s.closed:
            await s.close(disconnect)
        return None
    except (ProxyFailure, E.ClientError):
        return None


async def _refresh(s: Session, proxy: Endpoint) -> None:
    if s.closed:
        return
    body = wire.refresh_request(caller(s), binary=proxy.binary, meta=proxy.include_meta)
    now = s.node.clock.time()
    answer = await _ask(s, proxy, "refresh", body, wire.parse_refresh)
    if s.closed:
        return
    if answer is None:  # the backend may be restarting: ask again later
        s.expire_at = int(now + RETRY_AFTER)
    elif answer.expired or (answer.expire_at is not None and answer.expire_at <= now):
        await s.close(E.CONNECTION_EXPIRED())
        return
    else:
        s.expire_at = answer.expire_at
        if answer.info is not None:
            s.conn_info = answer.info
        if answer.meta is not None:
            s.meta = answer.meta
    s.schedule_expiry()


def sub_refresh_finish(
    s: Session, channel: str, opts: NamespaceOptions, result: SubscribeResult, finish: Callable[[], None]
) -> Callable[[], None]:
    """With the namespace's sub refresh proxy, an expiring subscription is refreshed by the server:
    the reply says nothing of expiry, and ``finish`` arms the proxy call at ``expire_at``."""
    proxy = s.node.proxies.sub_refresh(opts)
    if proxy is None or not result.expires:
        return finish
    result.expires = False
    result.ttl = 0

    def armed() -> None:
        finish()
        sub = s.subscriptions.get(channel)
        if sub is not None:
            sub.refresher = lambda: s.node.spawn(_sub_refresh(s, proxy, channel))
            s.schedule_sub_expiry(sub)

    return armed


async def _sub_refresh(s: Session, proxy: Endpoint, channel: str) -> None:
    sub = s.subscriptions.get(channel)
    if s.closed or sub is None:
        return
    body = wire.sub_refresh_request(caller(s), binary=proxy.binary, meta=proxy.include_meta, channel=channel)
    now = s.node.clock.time()
    answer = await _ask(s, proxy, "sub_refresh", body, wire.parse_sub_refresh)
    if s.closed or s.subscriptions.get(channel) is not sub:
        return
    if answer is None:
        sub.expire_at = int(now + RETRY_AFTER)
    elif answer.expired or (answer.expire_at is not None and answer.expire_at <= now):
        if sub.server_side:
            await s.close(E.SUBSCRIPTION_EXPIRED())
        else:
            await s.server_unsubscribe(channel, *E.UNSUBSCRIBE_EXPIRED)
        return
    else:
        sub.expire_at = answer.expire_at
        if answer.info is not None:
            sub.chan_info = answer.info
    s.schedule_sub_expiry(sub)
