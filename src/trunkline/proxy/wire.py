"""Centrifugo's HTTP proxy protocol, sans I/O: request bodies out, typed answers in.

Requests and answers are the JSON of Centrifugo's ``proxyproto`` (``server/proxy.md``): every
request carries ``client``, ``transport``, ``protocol``, ``encoding`` (and ``user``, ``meta`` after
connect), plus the event's fields; an answer is ``{"result": ...}``, ``{"error": {"code",
"message"}}`` or ``{"disconnect": {"code", "reason"}}``. Payloads travel as JSON (``data``,
``info``) or, with ``binary_encoding`` or when they are not JSON, base64 (``b64data``, ``b64info``).

:func:`parse_answer` never raises anything but :class:`InvalidAnswer`: garbage from a backend is
a documented error (100, temporary) for the client, never a crash.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar

import msgspec

from ..auth.claims import Override, SubOptions
from ..errors import ClientError, Disconnect

__all__ = [
    "Caller",
    "ConnectAnswer",
    "InvalidAnswer",
    "PublishAnswer",
    "RefreshAnswer",
    "RpcAnswer",
    "SubscribeAnswer",
    "connect_request",
    "parse_connect",
    "parse_publish",
    "parse_refresh",
    "parse_rpc",
    "parse_sub_refresh",
    "parse_subscribe",
    "publish_request",
    "refresh_request",
    "rpc_request",
    "sub_refresh_request",
    "subscribe_request",
]


class InvalidAnswer(Exception):
    """The backend's answer is not Centrifugo proxy JSON (the message says what is wrong)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The connection a proxy request is about."""

    client: str
    transport: str
    protocol: str  # "json" | "protobuf"
    user: str = ""
    meta: bytes | None = None  # JSON, sent only with include_connection_meta


# ------------------------------------------------------------------------------ requests


def _payload(body: dict[str, Any], name: str, data: bytes | None, binary: bool) -> None:
    """``data`` as JSON, or ``b64data`` in binary mode or when the bytes are not JSON."""
    if data is None:
        return
    if not binary:
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError:
            binary = True
        else:
            body[name] = msgspec.Raw(data)
            return
    body["b64" + name] = base64.b64encode(data).decode()


def _base(caller: Caller, binary: bool, meta: bool, with_user: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client": caller.client,
        "transport": caller.transport,
        "protocol": caller.protocol,
        "encoding": "binary" if binary else "json",
    }
    if with_user:
        body["user"] = caller.user
    if meta and caller.meta is not None:
        body["meta"] = msgspec.Raw(caller.meta)
    return body


_encode = msgspec.json.Encoder().encode


def connect_request(
    caller: Caller, *, binary: bool, name: str, version: str, data: bytes | None, channels: list[str]
) -> bytes:
    body = _base(caller, binary, False, with_user=False)
    if name:
        body["name"] = name
    if version:
        body["version"] = version
    _payload(body, "data", data, binary)
    if channels:
        body["channels"] = channels
    return _encode(body)


def refresh_request(caller: Caller, *, binary: bool, meta: bool) -> bytes:
    return _encode(_base(caller, binary, meta))


def subscribe_request(
    caller: Caller, *, binary: bool, meta: bool, channel: str, token: str, data: bytes | None
) -> bytes:
    body = _base(caller, binary, meta)
    body["channel"] = channel
    if token:
        body["token"] = token
    _payload(body, "data", data, binary)
    return _encode(body)


def publish_request(caller: Caller, *, binary: bool, meta: bool, channel: str, data: bytes) -> bytes:
    body = _base(caller, binary, meta)
    body["channel"] = channel
    _payload(body, "data", data, binary)
    return _encode(body)


def rpc_request(caller: Caller, *, binary: bool, meta: bool, method: str, data: bytes | None) -> bytes:
    body = _base(caller, binary, meta)
    if method:
        body["method"] = method
    _payload(body, "data", data, binary)
    return _encode(body)


def sub_refresh_request(caller: Caller, *, binary: bool, meta: bool, channel: str) -> bytes:
    body = _base(caller, binary, meta)
    body["channel"] = channel
    return _encode(body)


# ------------------------------------------------------------------------------ answers (wire shapes)

_U32: Final = 4294967295


class _Error(msgspec.Struct):
    code: int
    message: str = ""
    temporary: bool = False


class _Disconnect(msgspec.Struct):
    code: int
    reason: str = ""


class _Bool(msgspec.Struct):
    value: bool = False


class _Override(msgspec.Struct):
    presence: _Bool | None = None
    join_leave: _Bool | None = None
    force_push_join_leave: _Bool | None = None
    force_recovery: _Bool | None = None
    force_positioning: _Bool | None = None


class _Payloads(msgspec.Struct):
    info: msgspec.Raw = msgspec.Raw()
    b64info: str = ""
    data: msgspec.Raw = msgspec.Raw()
    b64data: str = ""


class _SubOptions(_Payloads):
    override: _Override | None = None


class _ConnectResult(_Payloads):
    user: str = ""
    expire_at: int = 0
    channels: list[str] = []
    subs: dict[str, _SubOptions] = {}
    meta: msgspec.Raw = msgspec.Raw()


class _RefreshResult(msgspec.Struct):
    expired: bool = False
    expire_at: int = 0
    info: msgspec.Raw = msgspec.Raw()
    b64info: str = ""
    meta: msgspec.Raw = msgspec.Raw()


class _SubscribeResult(_Payloads):
    override: _Override | None = None
    expire_at: int = 0


class _PublishResult(msgspec.Struct):
    data: msgspec.Raw = msgspec.Raw()
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = ""
    delta: bool = False


class _RpcResult(msgspec.Struct):
    data: msgspec.Raw = msgspec.Raw()
    b64data: str = ""


R = TypeVar("R")


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def _decoder(result_type: type) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(result_type)
    if dec is None:
        answer = msgspec.defstruct(
            f"Answer{result_type.__name__}",
            [
                ("result", result_type | None, None),
                ("error", _Error | None, None),
                ("disconnect", _Disconnect | None, None),
            ],
        )
        dec = _decoders[result_type] = msgspec.json.Decoder(answer)
    return dec


def _decode(body: bytes, result_type: type[R], *, refusals: bool = True) -> R | None:
    """The answer's ``result`` (None when absent); raises the answer's error or disconnect."""
    try:
        answer = _decoder(result_type).decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidAnswer(str(exc)[:200]) from None
    if refusals:
        if answer.disconnect is not None:
            d = answer.disconnect
            if not 3000 <= d.code <= 4999:
                raise InvalidAnswer(f"disconnect code {d.code} outside 3000-4999")
            raise Disconnect(d.code, d.reason)
        if answer.error is not None:
            e = answer.error
            if not 0 < e.code <= _U32:
                raise InvalidAnswer(f"error code {e.code} outside 1-{_U32}")
            raise ClientError(e.code, e.message, e.temporary)
    result: R | None = answer.result
    return result


def _bytes(raw: msgspec.Raw | None, b64: str, name: str) -> bytes | None:
    """A payload from ``b64<name>`` (preferred, as Centrifugo) or ``<name>``; JSON null is absent."""
    if b64:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidAnswer(f"b64{name} is not base64") from None
    if raw is None or not len(raw):
        return None
    value = bytes(raw)
    return None if value == b"null" else value


def _expire(value: int, name: str = "expire_at") -> int | None:
    if value < 0:
        raise InvalidAnswer(f"{name} must not be negative")
    return value or None


def _override(o: _Override | None) -> Override:
    if o is None:
        return Override()

    def v(b: _Bool | None) -> bool | None:
        return None if b is None else b.value

    return Override(
        presence=v(o.presence),
        join_leave=v(o.join_leave),
        force_push_join_leave=v(o.force_push_join_leave),
        force_recovery=v(o.force_recovery),
        force_positioning=v(o.force_positioning),
    )


# ------------------------------------------------------------------------------ answers (typed)


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    user: str
    expire_at: int | None = None
    info: bytes | None = None
    data: bytes | None = None
    channels: tuple[str, ...] = ()
    subs: MappingProxyType[str, SubOptions] = field(default_factory=lambda: MappingProxyType({}))
    meta: bytes | None = None


@dataclass(frozen=True, slots=True)
class RefreshAnswer:
    expired: bool
    expire_at: int | None = None
    info: bytes | None = None
    meta: bytes | None = None


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    info: bytes | None = None
    data: bytes | None = None
    override: Override = field(default_factory=Override)
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class PublishAnswer:
    data: bytes | None = None
    skip_history: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class RpcAnswer:
    data: bytes | None = None


def _meta(raw: msgspec.Raw | None) -> bytes | None:
    value = _bytes(raw, "", "meta")
    if value is not None and not value.lstrip().startswith(b"{"):
        raise InvalidAnswer("meta must be a JSON object")
    return value


def parse_connect(body: bytes) -> ConnectAnswer | None:
    """None: the backend gave no ``result`` (no credentials: the connection is not authenticated)."""
    r = _decode(body, _ConnectResult)
    if r is None:
        return None
    subs = {
        ch: SubOptions(_bytes(o.info, o.b64info, "info"), _bytes(o.data, o.b64data, "data"), _override(o.override))
        for ch, o in r.subs.items()
    }
    return ConnectAnswer(
        user=r.user,
        expire_at=_expire(r.expire_at),
        info=_bytes(r.info, r.b64info, "info"),
        data=_bytes(r.data, r.b64data, "data"),
        channels=tuple(r.channels),
        subs=MappingProxyType(subs),
        meta=_meta(r.meta),
    )


def parse_refresh(body: bytes) -> RefreshAnswer:
    """No ``result`` means expired (as Centrifugo); errors and disconnects do not apply to refresh."""
    r = _decode(body, _RefreshResult, refusals=False)
    if r is None or r.expired:
        return RefreshAnswer(expired=True)
    return RefreshAnswer(
        expired=False, expire_at=_expire(r.expire_at), info=_bytes(r.info, r.b64info, "info"), meta=_meta(r.meta)
    )


def parse_sub_refresh(body: bytes) -> RefreshAnswer:
    r = _decode(body, _RefreshResult, refusals=False)
    if r is None or r.expired:
        return RefreshAnswer(expired=True)
    return RefreshAnswer(expired=False, expire_at=_expire(r.expire_at), info=_bytes(r.info, r.b64info, "info"))


def parse_subscribe(body: bytes) -> SubscribeAnswer:
    r = _decode(body, _SubscribeResult)
    if r is None:
        return SubscribeAnswer()
    return SubscribeAnswer(
        info=_bytes(r.info, r.b64info, "info"),
        data=_bytes(r.data, r.b64data, "data"),
        override=_override(r.override),
        expire_at=_expire(r.expire_at),
    )


def parse_publish(body: bytes) -> PublishAnswer:
    r = _decode(body, _PublishResult)
    if r is None:
        return PublishAnswer()
    return PublishAnswer(
        data=_bytes(r.data, r.b64data, "data"),
        skip_history=r.skip_history,
        tags=dict(r.tags),
        idempotency_key=r.idempotency_key,
    )


def parse_rpc(body: bytes) -> RpcAnswer:
    r = _decode(body, _RpcResult)
    return RpcAnswer() if r is None else RpcAnswer(data=_bytes(r.data, r.b64data, "data"))
