"""``GET /connection/poll``: a channel's history stream by offset, over plain HTTP.

For clients that cannot keep a connection open (or need not): each request names a
channel and the last offset the client has, and gets the publications after it::

    GET /connection/poll?channel=news&since=41&epoch=xyz&limit=100[&wait=25]
    Authorization: Bearer <connection JWT>        (or ?token=<JWT>)

    200 {"publications": [{"data": …, "offset": 42}, …], "offset": 42, "epoch": "xyz",
         "recovered": true, "more": false}

- ``since`` absent: the stream's current position only (a client's first request);
  ``since=0``: everything the history still holds.
- ``recovered: false`` (only when ``since`` was given) means the client missed data: the
  epoch changed (the stream was lost and started again) or the history no longer holds
  the publications after ``since``. The answer then carries what the history has (the new
  epoch's, or the oldest retained ones) and the client continues from ``offset``.
- ``more: true``: the ``limit`` cut the answer; ask again at once from ``offset``.
- ``wait=<seconds>`` (long poll): when nothing is new the request is held open until a
  publication arrives or ``wait`` (at most ``poll.max_wait``) passes. The waiting request
  joins the channel on the node's engine (:meth:`Node.join`) like any subscriber, so it
  is woken by the fan-out itself, without polling the broker; at most
  ``poll.max_waiting`` wait at once, and each counts in ``client.connection_limit``.

Access is that of a subscriber with recovery: the same connection token (or anonymous
access when the server allows it), the same channel rules (private channels need a
subscription token in ``sub_token``; user-limited channels; ``allow_subscribe_*``, or
the token's ``channels``/``subs`` claims), and reading the stream needs what recovery
needs (``allow_recovery``, ``force_recovery`` or ``allow_history_for_*``). The
namespace must keep history. Channels that only the ``on_subscribe`` hook authorises
need a subscription token: the hook takes a connection, which a poll does not have.
Refusals are JSON ``{"error": "<reason>", "code": <Centrifugo code>}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import base64
import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from .. import errors as E
from ..appkeys import NODE_KEY
from ..auth import ConnectionClaims, Override
from ..broker.base import HistoryQuery, Publication, StreamPosition
from ..hub import permissions
from ..protocol.codec import encode_publication
from ..records import Undeliverable
from .admission import connection_counter, refuse
from .http_body import cors_headers, preflight

if TYPE_CHECKING:
    from ..config import NamespaceOptions, Poll
    from ..node import Node

MAX_OFFSET: Final = 2**64 - 1
_MAX_EPOCH: Final = 256
_MAX_TOKEN: Final = 16384
_DIGITS: Final = re.compile(r"[0-9]{1,20}")
_SECONDS: Final = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_SINGLE: Final = ("channel", "since", "epoch", "limit", "wait", "token", "sub_token")
_encoder = msgspec.json.Encoder()


class Refused(Exception):
    """A request that gets no publications: HTTP status, reason and Centrifugo code."""

    def __init__(self, status: int, reason: str, code: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


# ------------------------------------------------------------------------------ the query (pure)


@dataclass(frozen=True, slots=True)
class PollQuery:
    channel: str
    since: int | None = None
    epoch: str = ""
    limit: int = 0
    wait: float = 0.0
    token: str = ""
    sub_token: str = ""


def _integer(name: str, text: str, top: int) -> int:
    if not _DIGITS.fullmatch(text) or int(text) > top:
        raise Refused(400, f"bad request: {name} must be an integer from 0 to {top}", E.BAD_REQUEST.code)
    return int(text)


def parse_query(items: Iterable[tuple[str, str]], settings: Poll) -> PollQuery:
    """The poll request in a query string's ``(name, value)`` pairs; :class:`Refused` (400) if malformed.

    Unknown parameters are ignored (cache-busters); a known one given twice is refused.
    ``limit`` is cut to ``poll.max_limit`` (default: that), ``wait`` to ``poll.max_wait``.
    """
    values: dict[str, str] = {}
    for name, value in items:
        if name in _SINGLE:
            if name in values:
                raise Refused(400, f"bad request: {name} given twice", E.BAD_REQUEST.code)
            values[name] = value
    channel = values.get("channel", "")
    if not channel:
        raise Refused(400, "bad request: channel required", E.BAD_REQUEST.code)
    since = _integer("since", values["since"], MAX_OFFSET) if "since" in values else None
    epoch = values.get("epoch", "")
    if len(epoch) > _MAX_EPOCH:
        raise Refused(400, f"bad request: epoch over {_MAX_EPOCH} characters", E.BAD_REQUEST.code)
    limit = settings.max_limit
    if "limit" in values:
        limit = min(_integer("limit", values["limit"], MAX_OFFSET), settings.max_limit)
        if limit < 1:
            raise Refused(400, "bad request: limit must be at least 1", E.BAD_REQUEST.code)
    wait = 0.0
    if "wait" in values:
        if not _SECONDS.fullmatch(values["wait"]):
            raise Refused(400, "bad request: wait must be a number of seconds", E.BAD_REQUEST.code)
        wait = min(float(values["wait"]), settings.max_wait)
    token, sub_token = values.get("token", ""), values.get("sub_token", "")
    if len(token) > _MAX_TOKEN or len(sub_token) > _MAX_TOKEN:
        raise Refused(400, "bad request: token too long", E.BAD_REQUEST.code)
    return PollQuery(channel, since, epoch, limit, wait, token, sub_token)


# ------------------------------------------------------------------------------ the answer (pure)


class Answer(msgspec.Struct, omit_defaults=True):
    publications: list[msgspec.Raw]
    offset: int
    epoch: str
    recovered: bool | None = None
    more: bool = False


class _BinaryPublication(msgspec.Struct, omit_defaults=True):
    """A publication whose data is not JSON (published by a Protobuf client): base64, as the server API."""

    b64data: str
    offset: int = 0
    tags: dict[str, str] | None = None


def _encode(pub: Publication) -> msgspec.Raw:
    try:
        return encode_publication(pub)
    except Undeliverable:
        return msgspec.Raw(
            _encoder.encode(_BinaryPublication(base64.b64encode(pub.data).decode(), pub.offset, pub.tags))
        )


def answer(since: StreamPosition | None, pubs: list[Publication], top: StreamPosition, limit: int) -> Answer:
    """The answer to a poll from ``since`` given the publications after it (at most ``limit + 1``).

    ``recovered`` says whether ``pubs`` continue ``since`` without a hole in the same epoch.
    """
    more = len(pubs) > limit
    recovered: bool | None = None
    if since is not None:
        same_epoch = not since.epoch or since.epoch == top.epoch
        follows = pubs[0].offset == since.offset + 1 if pubs else top.offset == since.offset
        recovered = same_epoch and follows
    pubs = pubs[:limit]
    offset = pubs[-1].offset if pubs else top.offset
    return Answer([_encode(p) for p in pubs], offset, top.epoch, recovered, more)


def continues(since: StreamPosition, pubs: list[Publication], epoch: str) -> list[Publication] | None:
    """The publications of ``pubs`` after ``since``, if they follow it without a hole in ``epoch``."""
    out = [p for p in pubs if p.offset > since.offset]
    if not out or any(p.epoch != epoch for p in out):
        return None
    for expected, pub in enumerate(out, start=since.offset + 1):
        if pub.offset != expected:
            return None
    return out


# ------------------------------------------------------------------------------ access


def _token(request: web.Request, query: PollQuery) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return query.token


def _as_refusal(err: E.ClientError | E.Disconnect) -> Refused:
    if isinstance(err, E.Disconnect):
        status = 401 if err.code == E.INVALID_TOKEN.code else 403
        return Refused(status, err.reason, err.code)
    status = {
        E.UNAUTHORIZED.code: 401,
        E.TOKEN_EXPIRED.code: 401,
        E.EXPIRED.code: 401,
        E.UNKNOWN_CHANNEL.code: 404,
        E.PERMISSION_DENIED.code: 403,
        E.INTERNAL.code: 503,
    }.get(err.code, 400)
    return Refused(status, err.message, err.code)


async def authenticate(node: Node, token: str) -> ConnectionClaims | None:
    """The claims of the connection token, or None for an anonymous poll the server allows."""
    client = node.settings.client
    now = node.clock.time()
    if not token:
        if client.insecure or client.allow_anonymous_connect_without_token:
            return None
        raise Refused(401, "unauthorized: a connection token is required", E.UNAUTHORIZED.code)
    if not node.verifier.configured and client.insecure:
        return None
    try:
        claims = await node.verifier.verify_connection(token, now)
    except (E.ClientError, E.Disconnect) as err:
        raise _as_refusal(err) from None
    if claims.user == "" and client.disallow_anonymous_connection_tokens:
        raise Refused(403, "permission denied: anonymous tokens are not allowed", E.PERMISSION_DENIED.code)
    if not client.insecure and claims.expire_at is not None and claims.expire_at <= now:
        raise Refused(401, "token expired", E.TOKEN_EXPIRED.code)
    return claims


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _denied(reason: str) -> Refused:
    return Refused(403, f"permission denied: {reason}", E.PERMISSION_DENIED.code)


async def authorize(node: Node, query: PollQuery, claims: ConnectionClaims | None) -> NamespaceOptions:
    """The channel's options if this poll may read it (as a subscriber with recovery could)."""
    channel, rules = query.channel, node.rules
    user = claims.user if claims is not None else ""
    if len(channel) > rules.max_length:
        raise Refused(400, "bad request: channel too long", E.BAD_REQUEST.code)
    opts = node.namespace_options(channel)
    if opts is None or (
        opts.channel_regex and not _regex(opts.channel_regex).fullmatch(rules.name_after_namespace(channel))
    ):
        raise Refused(404, "unknown channel", E.UNKNOWN_CHANNEL.code)
    if not opts.history_enabled:
        raise Refused(400, "not available: polling needs history in the channel's namespace", E.NOT_AVAILABLE.code)
    insecure = node.settings.client.insecure
    override = Override()
    if query.sub_token:
        try:
            sub = await node.sub_verifier.verify_subscription(query.sub_token, node.clock.time())
        except (E.ClientError, E.Disconnect) as err:
            raise _denied(f"subscription token: {_as_refusal(err).reason}") from None
        if sub.user != user or sub.channel != channel:
            raise _denied("subscription token for another user or channel")
        if sub.expire_at is not None and sub.expire_at <= node.clock.time():
            raise Refused(401, "subscription token expired", E.TOKEN_EXPIRED.code)
        override = sub.override
    elif rules.is_private(channel):
        raise _denied("a private channel needs a subscription token (sub_token)")
    elif claims is not None and (channel in claims.subs or channel in claims.channels):
        override = claims.subs[channel].override if channel in claims.subs else override
    elif opts.allow_user_limited_channels and rules.is_user_limited(channel):
        if not rules.user_allowed(channel, user):
            raise _denied("channel limited to other users")
    elif node.hooks.subscribe is not None:
        raise _denied("this channel is authorised by the subscribe hook: poll it with a subscription token")
    elif not permissions.can_subscribe(opts, user, insecure):
        raise _denied("subscribing is not allowed")
    force_recovery = opts.force_recovery if override.force_recovery is None else override.force_recovery
    if not (force_recovery or opts.allow_recovery or permissions.can_read_history(opts, user, True, insecure)):
        raise _denied("reading the stream needs allow_recovery or allow_history_for_subscriber")
    return opts


# ------------------------------------------------------------------------------ reading and waiting


async def read(node: Node, channel: str, since: StreamPosition | None, limit: int) -> Answer:
    """One history read (two when the epoch changed): the answer to a poll from ``since``."""
    ttl, placeholder = node.settings.channel.history_meta_ttl, node.placeholder_ttl
    count = limit + 1 if since is not None else 0
    query = HistoryQuery(limit=count, since=since, history_meta_ttl=ttl, placeholder_ttl=placeholder)
    try:
        with node.metrics.broker_timer("history"):
            pubs, top = await node.broker.history(channel, query)
            if since is not None and since.epoch and since.epoch != top.epoch:  # a new stream: from its start
                restart = StreamPosition(0, top.epoch)
                query = HistoryQuery(limit=count, since=restart, history_meta_ttl=ttl, placeholder_ttl=placeholder)
                pubs, top = await node.broker.history(channel, query)
    except ConnectionError:
        raise Refused(503, "broker unavailable", E.INTERNAL.code) from None
    return answer(since, pubs, top, limit)


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


_waiting: weakref.WeakKeyDictionary[Node, _Counter] = weakref.WeakKeyDictionary()


def waiting(node: Node) -> int:
    """Long polls of ``node`` waiting right now."""
    counter = _waiting.get(node)
    return counter.value if counter is not None else 0


class _Writer:
    buffered = 0


class Waiter:
    """A long poll while it waits: a subscriber of one channel on the node's engine.

    It is its own wire shape, so the hub hands it the publication records themselves;
    their arrival wakes the request.
    """

    __slots__ = ("__weakref__", "event", "received")

    writer: Final = _Writer()
    client_id: Final = ""
    user: Final = ""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.received: list[Publication] = []

    # the wire shape
    def publication(self, channel: str, pub: Publication) -> bytes:
        self.received.append(pub)
        return b""

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return b""

    # the connection
    @property
    def closed(self) -> bool:
        return self.event.is_set()

    @property
    def shape(self) -> Waiter:
        return self

    @property
    def push(self) -> Callable[[bytes], None]:
        return self._wake

    def _wake(self, data: bytes) -> None:
        self.event.set()

    def resubscribe(self, channel: str) -> None:
        self.event.set()  # the stream has a hole: the answer is read from history

    def sample_write(self, started: float) -> None:
        return

    async def handle_frame(self, frame: bytes) -> None:
        return

    async def apply_control(self, cmd: Any) -> None:
        return

    async def close(self, disconnect: Any = None) -> None:
        self.event.set()

    def presence_entries(self) -> list[tuple[str, bytes]]:
        return []


async def long_poll(node: Node, channel: str, since: StreamPosition | None, limit: int, wait: float) -> Answer:
    """Read from ``since``; with nothing new, wait up to ``wait`` seconds for the next publication."""
    settings = node.settings.poll
    counter = _waiting.setdefault(node, _Counter())
    if counter.value >= settings.max_waiting:
        raise Refused(503, "too many long polls waiting: retry later", E.CONNECTION_LIMIT.code)
    connections = connection_counter(node)
    counter.value += 1
    connections.value += 1
    waiter = Waiter()
    try:
        try:  # joined before the read: nothing published meanwhile can fall between the two
            _, finish = await node.join(waiter, channel, shape=waiter, push=waiter.push)
        except E.ClientError as err:
            raise _as_refusal(err) from None
        first = await read(node, channel, since, limit)
        if first.publications or first.recovered is False:
            return first
        position = StreamPosition(first.offset, first.epoch)
        finish()
        try:
            async with asyncio.timeout(wait):
                await waiter.event.wait()
        except TimeoutError:
            return Answer([], position.offset, position.epoch, first.recovered)
        pubs = continues(position, waiter.received, position.epoch)
        if pubs is None:
            return await read(node, channel, since or position, limit)
        woke = answer(position, pubs, StreamPosition(pubs[-1].offset, position.epoch), limit)
        woke.recovered = first.recovered
        return woke
    finally:
        waiter.event.set()
        if node.hub.remove(channel, waiter):
            node.detach_channel(channel)
        counter.value -= 1
        connections.value -= 1


# ------------------------------------------------------------------------------ the handler


def _json(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **headers},
    )


def _refusal(refused: Refused, headers: dict[str, str]) -> web.Response:
    body = {"error": refused.reason, "code": refused.code} if refused.code else {"error": refused.reason}
    extra = {"Retry-After": "1"} if refused.status == 503 else {}
    return _json(refused.status, _encoder.encode(body), {**headers, **extra})


async def poll_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method != "GET":
        return _refusal(Refused(405, "method not allowed: GET"), {"Allow": "GET, OPTIONS"})
    refusal = refuse(request, node, "poll")
    if refusal is not None:
        return refusal
    cors = cors_headers(request, node)
    try:
        query = parse_query(request.query.items(), node.settings.poll)
        claims = await authenticate(node, _token(request, query))
        await authorize(node, query, claims)
        since = StreamPosition(query.since, query.epoch) if query.since is not None else None
        if query.wait > 0:
            result = await long_poll(node, query.channel, since, query.limit, query.wait)
        else:
            result = await read(node, query.channel, since, query.limit)
    except Refused as refused:
        return _refusal(refused, cors)
    return _json(200, _encoder.encode(result), cors)
