"""Server API methods: decoded request in, result object out (or a ClientError).

Shared by ``POST /api/<method>``, the legacy ``POST /api`` and ``batch``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from .. import errors as E
from ..broker.base import HistoryQuery, StreamPosition
from ..broker.map_base import KeyMode, MapLimitExceeded, MapResult, MapStateQuery, MapWrite
from ..config import NamespaceOptions
from ..hub.map_options import page_limit
from ..protocol.codec import MAX_OFFSET, compact_raw, encode_publication
from ..records import Publication
from . import schemas as S

if TYPE_CHECKING:
    from ..node import Node

Result = dict[str, Any]
Method = Callable[["Node", bytes], Awaitable[Result]]
MAX_BATCH_COMMANDS = 1000
MAX_BROADCAST_CHANNELS = 1000


class MalformedBody(ValueError):
    """The request body is not JSON (or nested too deeply): the HTTP layer answers 400."""


def _decode(body: bytes, tp: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=tp)
    except msgspec.ValidationError as exc:  # JSON, but not the method's request shape
        raise E.BAD_REQUEST.with_message(f"bad request: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise MalformedBody from None


def _payload(data: Raw | None, b64data: str) -> bytes:
    if data:
        return bytes(compact_raw(bytes(data)))
    if b64data:
        try:
            raw = base64.b64decode(b64data, validate=True)
        except (binascii.Error, ValueError):
            raise E.BAD_REQUEST.with_message("bad request: invalid b64data") from None
        return msgspec.json.encode(raw.decode("latin-1"))
    raise E.BAD_REQUEST.with_message("bad request: data required")


def _position(pos: StreamPosition | None) -> Result:
    if pos is None:
        return {}
    return {"offset": pos.offset, "epoch": pos.epoch}


def _required(**fields: str) -> None:
    for name, value in fields.items():
        if not value:
            raise E.BAD_REQUEST.with_message(f"bad request: {name} required")


async def publish(node: Node, body: bytes) -> Result:
    req: S.PublishRequest = _decode(body, S.PublishRequest)
    _required(channel=req.channel)
    data = _payload(req.data, req.b64data)
    pos = await node.publish(
        req.channel,
        data,
        tags=req.tags,
        skip_history=req.skip_history,
        idempotency_key=req.idempotency_key,
        delta=req.delta,
    )
    return _position(pos)


async def broadcast(node: Node, body: bytes) -> Result:
    req: S.BroadcastRequest = _decode(body, S.BroadcastRequest)
    if not req.channels:
        raise E.BAD_REQUEST.with_message("bad request: channels required")
    if len(req.channels) > MAX_BROADCAST_CHANNELS:
        raise E.BAD_REQUEST.with_message(f"bad request: at most {MAX_BROADCAST_CHANNELS} channels per broadcast")
    data = _payload(req.data, req.b64data)
    responses: list[Result] = []
    for channel in req.channels:
        try:
            pos = await node.publish(
                channel,
                data,
                tags=req.tags,
                skip_history=req.skip_history,
                idempotency_key=req.idempotency_key,
                delta=req.delta,
            )
            responses.append({"result": _position(pos)})
        except E.ClientError as err:
            responses.append({"error": {"code": err.code, "message": err.message}})
    return {"responses": responses}


async def subscribe(node: Node, body: bytes) -> Result:
    req: S.SubscribeRequest = _decode(body, S.SubscribeRequest)
    _required(user=req.user, channel=req.channel)
    await node.subscribe_user(
        req.user,
        req.channel,
        client=req.client,
        info=bytes(compact_raw(bytes(req.info))) if req.info else None,
        data=bytes(compact_raw(bytes(req.data))) if req.data else None,
    )
    return {}


async def unsubscribe(node: Node, body: bytes) -> Result:
    req: S.UnsubscribeRequest = _decode(body, S.UnsubscribeRequest)
    _required(user=req.user, channel=req.channel)
    await node.unsubscribe_user(req.user, req.channel, client=req.client)
    return {}


async def disconnect(node: Node, body: bytes) -> Result:
    req: S.DisconnectRequest = _decode(body, S.DisconnectRequest)
    _required(user=req.user)
    spec = req.disconnect or S.DisconnectSpec()
    if not (3000 <= spec.code <= 4999):
        raise E.BAD_REQUEST.with_message("bad request: disconnect code must be 3000-4999")
    await node.disconnect_user(req.user, client=req.client, code=spec.code, reason=spec.reason, whitelist=req.whitelist)
    return {}


async def refresh(node: Node, body: bytes) -> Result:
    req: S.RefreshRequest = _decode(body, S.RefreshRequest)
    _required(user=req.user)
    await node.refresh_user(
        req.user,
        client=req.client,
        expire_at=req.expire_at,
        expired=req.expired,
        info=bytes(compact_raw(bytes(req.info))) if req.info else None,
    )
    return {}


async def presence(node: Node, body: bytes) -> Result:
    req: S.ChannelRequest = _decode(body, S.ChannelRequest)
    members = await node.presence(req.channel)
    return {"presence": {cid: Raw(info) for cid, info in members.items()}}


async def presence_stats(node: Node, body: bytes) -> Result:
    req: S.ChannelRequest = _decode(body, S.ChannelRequest)
    clients, users = await node.presence_stats(req.channel)
    return {"num_clients": clients, "num_users": users}


async def history(node: Node, body: bytes) -> Result:
    req: S.HistoryRequest = _decode(body, S.HistoryRequest)
    since = StreamPosition(req.since.offset, req.since.epoch) if req.since is not None else None
    limit = None if req.limit < 0 else req.limit
    pubs, top = await node.history(req.channel, limit, since, req.reverse)
    return {"publications": [encode_publication(p) for p in pubs], "epoch": top.epoch, "offset": top.offset}


async def history_remove(node: Node, body: bytes) -> Result:
    req: S.ChannelRequest = _decode(body, S.ChannelRequest)
    await node.remove_history(req.channel)
    return {}


async def channels(node: Node, body: bytes) -> Result:
    req: S.ChannelsRequest = _decode(body, S.ChannelsRequest)
    found = node.hub.channels()
    if req.pattern:
        found = {name: n for name, n in found.items() if fnmatch.fnmatchcase(name, req.pattern)}
    return {"channels": {name: {"num_clients": n} for name, n in found.items()}}


async def info(node: Node, body: bytes) -> Result:
    _decode(body, S.InfoRequest)
    return {"nodes": node.nodes()}


# ---------------------------------------------------------------- map subscriptions (docs/map.md)

_KEY_MODES = {mode.value: mode for mode in KeyMode}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_json_check = msgspec.json.Decoder(Raw)


def _map_namespace(node: Node, channel: str) -> NamespaceOptions:
    """The options of a map channel: 107 without a channel, 102 unknown, 107 when it is not a map."""
    _required(channel=channel)
    if len(channel) > node.rules.max_length:
        raise E.BAD_REQUEST.with_message("bad request: channel too long")
    opts = node.namespace_options(channel)
    if opts is None:
        raise E.UNKNOWN_CHANNEL()
    if not opts.is_map:
        raise E.BAD_REQUEST.with_message(
            f"bad request: not a map channel (its namespace's subscription_type is {opts.subscription_type!r})"
        )
    return opts


def _optional_payload(data: Raw, b64data: str, name: str) -> bytes | None:
    if not data and not b64data:
        return None
    try:
        return _payload(data, b64data)
    except E.ClientError:
        raise E.BAD_REQUEST.with_message(f"bad request: invalid b64{name}") from None


def _map_result(result: MapResult) -> Result:
    out = _position(result.position)
    if result.suppressed:
        out["suppressed"] = True
        out["suppress_reason"] = result.suppressed
    return out


def _entry(pub: Publication) -> Result:
    """A state or stream entry as the server API shows it (Centrifugo's MapEntry, plus ``info``)."""
    out: Result = {"key": pub.key}
    if pub.data:
        try:
            _json_check.decode(pub.data)
            out["data"] = compact_raw(pub.data)
        except (msgspec.DecodeError, RecursionError):  # binary data (a Protobuf client wrote it)
            out["b64data"] = base64.b64encode(pub.data).decode()
    if pub.removed:
        out["removed"] = True
    if pub.offset:
        out["offset"] = pub.offset
    if pub.score:
        out["score"] = pub.score
    if pub.tags:
        out["tags"] = pub.tags
    if pub.time:
        out["time"] = pub.time
    if pub.info is not None:
        info = pub.info
        out["info"] = {
            "user": info.user,
            "client": info.client,
            **({"conn_info": Raw(info.conn_info)} if info.conn_info else {}),
            **({"chan_info": Raw(info.chan_info)} if info.chan_info else {}),
        }
    return out


async def map_publish(node: Node, body: bytes) -> Result:
    req: S.MapPublishRequest = _decode(body, S.MapPublishRequest)
    _map_namespace(node, req.channel)
    _required(key=req.key)
    key_mode = _KEY_MODES.get(req.key_mode)
    if key_mode is None:
        raise E.BAD_REQUEST.with_message("bad request: key_mode must be '', 'if_new' or 'if_exists'")
    if req.version or req.version_epoch:
        raise E.BAD_REQUEST.with_message("bad request: version and version_epoch are not supported by Trunkline")
    if req.delta:
        raise E.BAD_REQUEST.with_message("bad request: delta compression is not supported for map channels")
    if not INT64_MIN <= req.score <= INT64_MAX:
        raise E.BAD_REQUEST.with_message("bad request: score must be a 64-bit signed integer")
    write = MapWrite(
        key=req.key,
        data=_payload(req.data, req.b64data),
        tags=req.tags or None,
        key_mode=key_mode,
        score=req.score,
        stream_data=_optional_payload(req.stream_data, req.b64stream_data, "stream_data"),
        idempotency_key=req.idempotency_key,
    )
    try:
        result = await node.map_publish(req.channel, write)
    except MapLimitExceeded:
        raise E.LIMIT_EXCEEDED.with_message("limit exceeded: the channel holds map.max_keys keys") from None
    return _map_result(result)


async def map_remove(node: Node, body: bytes) -> Result:
    req: S.MapRemoveRequest = _decode(body, S.MapRemoveRequest)
    _map_namespace(node, req.channel)
    _required(key=req.key)
    result = await node.map_remove(req.channel, req.key, tags=req.tags or None, idempotency_key=req.idempotency_key)
    return _map_result(result)


async def map_read_state(node: Node, body: bytes) -> Result:
    req: S.MapReadStateRequest = _decode(body, S.MapReadStateRequest)
    opts = _map_namespace(node, req.channel)
    if req.revision_offset or req.revision_epoch:
        raise E.BAD_REQUEST.with_message("bad request: revision_offset and revision_epoch are not supported")
    if req.limit == 0 and not req.key:  # only the position, as Centrifugo
        _, top = await node.map_read_stream(req.channel, HistoryQuery(limit=0))
        return {"entries": [], **_position(top), "cursor": ""}
    limit = opts.map.max_page_size if req.limit < 0 else page_limit(opts.map, req.limit)
    query = MapStateQuery(cursor=req.cursor, limit=limit, key=req.key, asc=req.asc)
    page = await node.map_read_state(req.channel, query)
    return {"entries": [_entry(p) for p in page.entries], **_position(page.position), "cursor": page.cursor}


async def map_read_stream(node: Node, body: bytes) -> Result:
    req: S.MapReadStreamRequest = _decode(body, S.MapReadStreamRequest)
    _map_namespace(node, req.channel)
    since = req.since
    if since is None and (req.since_offset or req.since_epoch):
        since = S.Position(req.since_offset, req.since_epoch)
    if since is not None and not 0 <= since.offset <= MAX_OFFSET:
        raise E.BAD_REQUEST.with_message("bad request: since offset must be a 64-bit unsigned integer")
    position = StreamPosition(since.offset, since.epoch) if since is not None else None
    query = HistoryQuery(limit=None if req.limit < 0 else req.limit, since=position, reverse=req.reverse)
    pubs, top = await node.map_read_stream(req.channel, query)
    if position is not None and position.epoch and position.epoch != top.epoch:
        raise E.UNRECOVERABLE_POSITION()
    return {"entries": [_entry(p) for p in pubs], **_position(top)}


async def map_stats(node: Node, body: bytes) -> Result:
    req: S.ChannelRequest = _decode(body, S.ChannelRequest)
    _map_namespace(node, req.channel)
    return {"num_keys": await node.map_stats(req.channel)}


async def map_clear(node: Node, body: bytes) -> Result:
    req: S.ChannelRequest = _decode(body, S.ChannelRequest)
    _map_namespace(node, req.channel)
    await node.map_clear(req.channel)
    return {}


async def shared_poll_publish(node: Node, body: bytes) -> Result:
    """Centrifugo's direct publish: a new version of one key, pushed now to the clients tracking it
    (on every node with ``publish_enabled``, else on this one)."""
    req: S.SharedPollPublishRequest = _decode(body, S.SharedPollPublishRequest)
    _required(channel=req.channel, key=req.key)
    if len(req.channel) > node.rules.max_length:
        raise E.BAD_REQUEST.with_message("bad request: channel too long")
    opts = node.namespace_options(req.channel)
    if opts is None:
        raise E.UNKNOWN_CHANNEL()
    if opts.subscription_type != "shared_poll":
        raise E.BAD_REQUEST.with_message("bad request: not a shared poll channel")
    if opts.shared_poll.mode != "versioned":
        raise E.BAD_REQUEST.with_message("bad request: shared_poll_publish needs shared_poll.mode = 'versioned'")
    if not 0 < req.version <= MAX_OFFSET:
        raise E.BAD_REQUEST.with_message("bad request: version must be a positive 64-bit integer")
    data = _payload(req.data, req.b64data)
    await node.shared_poll.direct_publish(req.channel, opts, req.key, version=req.version, data=data, epoch=req.epoch)
    return {}


async def batch(node: Node, body: bytes) -> Result:
    req: S.BatchRequest = _decode(body, S.BatchRequest)
    if len(req.commands) > MAX_BATCH_COMMANDS:
        raise E.BAD_REQUEST.with_message(f"bad request: at most {MAX_BATCH_COMMANDS} commands per batch")

    async def one(command: dict[str, Raw]) -> Result:
        if len(command) != 1:
            node.metrics.api_command("unknown", "107")
            return {"error": {"code": 107, "message": "bad request: one method per command"}}
        ((name, params),) = command.items()
        fn = METHODS.get(name)
        if fn is None or name == "batch":
            node.metrics.api_command("unknown", "104")
            return {"error": {"code": 104, "message": "method not found"}}
        try:
            result = await fn(node, bytes(params))
        except E.ClientError as err:
            node.metrics.api_command(name, str(err.code))
            return {"error": {"code": err.code, "message": err.message}}
        node.metrics.api_command(name, "ok")
        return {name: result}

    if req.parallel:
        replies = list(await asyncio.gather(*(one(c) for c in req.commands)))
    else:
        replies = [await one(c) for c in req.commands]
    return {"replies": replies}


METHODS: dict[str, Method] = {
    "publish": publish,
    "broadcast": broadcast,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "disconnect": disconnect,
    "refresh": refresh,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "history_remove": history_remove,
    "channels": channels,
    "info": info,
    "map_publish": map_publish,
    "map_remove": map_remove,
    "map_read_state": map_read_state,
    "map_read_stream": map_read_stream,
    "map_stats": map_stats,
    "map_clear": map_clear,
    "shared_poll_publish": shared_poll_publish,
    "batch": batch,
}

# Legacy numeric method ids (Centrifugo apiproto MethodType).
LEGACY_IDS = {
    0: "publish",
    1: "broadcast",
    2: "unsubscribe",
    3: "disconnect",
    4: "presence",
    5: "presence_stats",
    6: "history",
    7: "history_remove",
    8: "channels",
    9: "info",
    10: "rpc",
    11: "refresh",
    12: "subscribe",
}
