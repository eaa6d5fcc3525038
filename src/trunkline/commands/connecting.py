"""The connect and refresh commands (reference §3)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import msgspec

from .. import errors as E
from ..auth import ConnectionClaims, Override
from ..auth.claims import SubOptions
from ..config import NamespaceOptions
from ..events import ConnectEvent, Credentials
from ..node import ADMIN_META
from ..protocol.messages import Command, ConnectResult, RefreshResult, Reply, SubscribeRequest, SubscribeResult
from ..proxy import calls as proxied
from ..session import State
from .channel_ops import channel_options
from .subscribing import Finish, announce, join_channel, ttl_of

if TYPE_CHECKING:
    from ..contracts import SessionTransport
    from ..session import Session

log = logging.getLogger("trunkline.session")


def _ping_seconds(interval: float) -> int:
    return max(1, round(interval)) if interval > 0 else 0


async def connect(s: Session, cmd: Command) -> None:
    req = cmd.connect
    assert req is not None
    node = s.node
    client = node.settings.client
    if s.state is State.CONNECTED:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: already connected")
    if not node.accepting:
        raise E.SHUTDOWN()
    now = s.node.clock.time()
    claims: ConnectionClaims | None = None
    credentials: Credentials | None = None
    reply_data: bytes | None = None
    proxy_subs: Mapping[str, SubOptions] = {}
    if not req.token and node.proxies.connect is not None:  # the backend authenticates (cookies, headers)
        answer = await proxied.connect(s, node.proxies.connect, req)
        if answer is not None:
            credentials = Credentials(answer.user, answer.expire_at, answer.info, answer.channels)
            reply_data, proxy_subs, s.meta = answer.data, answer.subs, answer.meta
    if req.token:
        claims = await _admin_claims(s, req.token, now)
        if claims is None and (node.verifier.configured or not client.insecure):
            claims = await node.verifier.verify_connection(req.token, now)
            if claims.user == "" and client.disallow_anonymous_connection_tokens:
                raise E.PERMISSION_DENIED_DISCONNECT()
        if claims is not None:
            credentials = Credentials(claims.user, claims.expire_at, claims.info, claims.channels)
            if claims.meta is not None:
                s.meta = msgspec.json.encode(claims.meta)
    extra_channels: tuple[str, ...] = ()
    if node.hooks.connecting is not None:
        hook_reply = await node.hooks.connecting(
            ConnectEvent(
                client_id=s.client_id,
                transport=s.transport.info.name,
                token=req.token,
                data=bytes(req.data) if req.data else None,
                name=req.name,
                version=req.version,
                credentials=credentials,
                remote=s.remote,
                headers=s.headers,
            )
        )
        if hook_reply is not None:
            credentials = hook_reply.credentials or credentials
            reply_data = hook_reply.data if hook_reply.data is not None else reply_data
            extra_channels = hook_reply.channels
    if credentials is None:
        if not (client.insecure or client.allow_anonymous_connect_without_token):
            raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: credentials not found")
        credentials = Credentials("")
    if client.insecure:
        credentials = Credentials(credentials.user, None, credentials.info, credentials.channels)
    if credentials.expire_at is not None and credentials.expire_at <= now:
        raise E.EXPIRED()
    hub = node.hub
    if client.connection_limit and hub.num_clients >= client.connection_limit:
        raise E.CONNECTION_LIMIT.with_reason("connection limit: server is full")
    limit = client.user_connection_limit
    if limit and credentials.user and len(hub.user_connections(credentials.user)) >= limit:
        raise E.CONNECTION_LIMIT.with_reason("connection limit: too many connections for this user")

    s.user = credentials.user
    s.conn_info = credentials.info
    s.expire_at = credentials.expire_at
    # before the connection counts as connected: a 3505 here must not fire on_disconnect
    server_side = _server_side_channels(s, claims, credentials, extra_channels, proxy_subs)
    s.state = State.CONNECTED
    hub.add_connection(s.client_id, s.user, s)
    if client.subscribe_to_user_personal_channel.single_connection and s.user:
        # Centrifugo's single connection mode: the newest connection of a user wins, on every node
        node.spawn(
            node.disconnect_user(
                s.user,
                code=E.CONNECTION_LIMIT.code,
                reason="connection limit: the user connected again",
                whitelist=[s.client_id],
            )
        )

    info = s.transport.info
    pings = info.ping != "none"
    result = ConnectResult(
        client=s.client_id,
        version=node.version,
        ping=_ping_seconds(client.ping_interval) if pings else 0,
        pong=pings and info.bidirectional and client.ping_interval > 0,
    )
    if info.has_session:  # emulated and unidirectional connections (as Centrifugo)
        result.session = cast("SessionTransport", s.transport).session
    if info.emulation:  # /emulation requests must reach this node
        result.node = node.uid
    s.refresher = proxied.server_refresh(s)  # the refresh proxy: the server refreshes, not the client
    if s.expire_at is not None and s.refresher is None:
        result.expires = True
        result.ttl = ttl_of(s.expire_at, now)
    if reply_data is not None:
        result.data = msgspec.Raw(reply_data)

    finishes: list[tuple[str, Finish]] = []
    subs: dict[str, SubscribeResult] = {}
    for channel, opts, chan_info, data, override in server_side:
        sub_req = req.subs.get(channel) or SubscribeRequest(channel=channel)
        try:
            sub_result, finish = await join_channel(
                s, channel, opts, sub_req, server_side=True, chan_info=chan_info, data=data, override=override
            )
        except E.ClientError as err:
            log.warning("server-side subscription of client=%s failed: %s", s.client_id, err, extra=s.log_fields)
            continue
        subs[channel] = sub_result
        finishes.append((channel, finish))
    if subs:
        result.subs = subs
    s.reply(Reply(id=cmd.id, connect=result))
    if log.isEnabledFor(logging.DEBUG):  # not even the ``extra`` dict when debug is off
        log.debug("connected client=%s user=%s", s.client_id, s.user, extra=s.log_fields)
    for _, finish in finishes:
        finish()
    s.start_heartbeat()
    s.schedule_expiry()
    for channel, _ in finishes:
        await announce(s, channel)
    if node.hooks.connect is not None:
        await node.hooks.connect(s.view)


async def _admin_claims(s: Session, token: str, now: float) -> ConnectionClaims | None:
    """Claims of a dashboard token (signed with ``admin.secret``), or None for any other token."""
    verifier = s.node.admin_verifier
    if verifier is None:
        return None
    try:
        claims = await verifier.verify_connection(token, now)
    except E.Disconnect:
        return None
    if claims.meta != ADMIN_META:
        return None
    s.is_admin = True
    return claims


ServerSide = tuple[str, NamespaceOptions, bytes | None, bytes | None, Override | None]


def _server_side_channels(
    s: Session,
    claims: ConnectionClaims | None,
    credentials: Credentials,
    extra: tuple[str, ...],
    proxy_subs: Mapping[str, SubOptions],
) -> list[ServerSide]:
    """The server-side subscriptions of a new connection, checked like a subscribe command.

    They come from the token's ``channels`` and ``subs`` claims (or the connecting hook's
    credentials and channels, or the connect proxy's ``channels`` and ``subs``) and the
    personal channel; a channel listed twice is subscribed once, with its ``subs`` options.
    A channel the subscribe command would refuse for its name is skipped (one warning per
    connection): over
    ``channel.max_length``, an unknown namespace or a name failing ``channel_regex``,
    and, from the ``channels`` claim, a private (``$``) channel, which needs a
    subscription token. More channels than ``client.channel_limit`` close the
    connection with 3505, as Centrifugo does.
    """
    node = s.node
    rules = node.rules
    token_channels = frozenset(claims.channels) if claims is not None else frozenset()
    wanted: dict[str, tuple[bytes | None, bytes | None, Override | None]] = {}
    for channel in (*credentials.channels, *extra):
        wanted.setdefault(channel, (None, None, None))
    for channel, sub in (*(claims.subs.items() if claims is not None else ()), *proxy_subs.items()):
        wanted[channel] = (sub.info, sub.data, sub.override)
    personal = node.settings.client.subscribe_to_user_personal_channel
    if personal.enabled and s.user:
        wanted.setdefault(rules.personal_channel(s.user, personal.personal_channel_namespace), (None, None, None))
    out: list[ServerSide] = []
    skipped: dict[str, int] = {}
    for channel, (chan_info, data, override) in wanted.items():
        if channel in token_channels and (claims is None or channel not in claims.subs) and rules.is_private(channel):
            skipped["private"] = skipped.get("private", 0) + 1
            continue
        try:
            opts = channel_options(s, channel) if channel else None
        except E.ClientError as err:
            reason = "too long" if err.code == E.BAD_REQUEST.code else "unknown"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if opts is None:
            skipped["unknown"] = skipped.get("unknown", 0) + 1
            continue
        out.append((channel, opts, chan_info, data, override))
    if skipped:
        log.warning(
            "skipping server-side subscriptions of client=%s: %s",
            s.client_id,
            ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())),
            extra=s.log_fields,
        )
    limit = node.settings.client.channel_limit
    if limit and len(out) > limit:
        log.info(
            "client=%s has %d server-side channels, over client.channel_limit %d",
            s.client_id,
            len(out),
            limit,
            extra=s.log_fields,
        )
        raise E.CHANNEL_LIMIT()
    return out


async def refresh(s: Session, cmd: Command) -> None:
    req = cmd.refresh
    assert req is not None
    node = s.node
    if not req.token:
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: refresh without token")
    now = s.node.clock.time()
    if s.is_admin:  # the dashboard's connection refreshes with a new admin token
        admin = await _admin_claims(s, req.token, now)
        if admin is None:
            raise E.INVALID_TOKEN.with_reason("invalid token: not an admin token")
        claims = admin
    else:
        claims = await node.verifier.verify_connection(req.token, now)
    if claims.user != s.user:
        raise E.INVALID_TOKEN.with_reason("invalid token: user mismatch")
    if claims.expire_at is not None and claims.expire_at <= now:
        raise E.EXPIRED()
    s.expire_at = claims.expire_at
    if claims.info is not None:
        s.conn_info = claims.info
    s.schedule_expiry()
    result = RefreshResult(client=s.client_id, version=node.version)
    if s.expire_at is not None:
        result.expires = True
        result.ttl = ttl_of(s.expire_at, now)
    s.reply(Reply(id=cmd.id, refresh=result))
