"""Centrifugo token claims (reference §3.2 and §4.2), parsed from a verified payload.

The functions here only look at claim *shapes*; signature, time, audience and
issuer checks happen in :mod:`trunkline.auth.jwt` before. Every malformed claim
raises the 3500 ``invalid token: bad <claim> claim`` disconnect.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import msgspec

from trunkline.errors import INVALID_TOKEN, Disconnect

__all__ = [
    "ConnectionClaims",
    "Override",
    "SubOptions",
    "SubscriptionClaims",
    "invalid_token",
    "parse_connection_claims",
    "parse_subscription_claims",
]


def invalid_token(reason: str) -> Disconnect:
    """The 3500 disconnect ``invalid token: <reason>``; ``reason`` is fixed text, never token data."""
    return INVALID_TOKEN.with_reason(f"invalid token: {reason}")


@dataclass(frozen=True, slots=True)
class Override:
    """Namespace options a subscription token overrides; ``None`` keeps the namespace value.

    In the token each is ``{"value": bool}``.
    """

    presence: bool | None = None
    join_leave: bool | None = None
    force_push_join_leave: bool | None = None
    force_recovery: bool | None = None
    force_positioning: bool | None = None


_NO_OVERRIDE: Final = Override()
_OVERRIDE_FIELDS: Final = ("presence", "join_leave", "force_push_join_leave", "force_recovery", "force_positioning")


@dataclass(frozen=True, slots=True)
class SubOptions:
    """Options of one server-side subscription from a connection token's ``subs`` claim."""

    info: bytes | None = None
    data: bytes | None = None
    override: Override = _NO_OVERRIDE


_EMPTY_SUBS: Final[Mapping[str, SubOptions]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    """What a verified connection token grants."""

    user: str
    #: Unix seconds the connection expires at; ``None``: never.
    expire_at: int | None = None
    #: Connection info as compact JSON bytes (``info``) or raw bytes (``b64info``).
    info: bytes | None = None
    #: Channels to subscribe server-side at connect.
    channels: tuple[str, ...] = ()
    #: Server-side subscriptions with options, channel -> options.
    subs: Mapping[str, SubOptions] = field(default_factory=lambda: _EMPTY_SUBS)
    #: Server-only metadata (decoded JSON), never sent to clients.
    meta: object | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    """What a verified subscription token grants."""

    user: str
    channel: str
    expire_at: int | None = None
    info: bytes | None = None
    #: Sent back in ``SubscribeResult.data``.
    data: bytes | None = None
    override: Override = _NO_OVERRIDE


def _bad(name: str) -> Disconnect:
    return invalid_token(f"bad {name} claim")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _user(payload: Mapping[str, Any], user_id_claim: str) -> str:
    name = user_id_claim or "sub"
    value = payload.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad("sub" if name == "sub" else "user id")
    return value


def _expire_at(payload: Mapping[str, Any]) -> int | None:
    """``expire_at`` if present (``0``: never), else ``exp``, else never."""
    value = payload.get("expire_at")
    if value is not None:
        if not _is_number(value) or value < 0:
            raise _bad("expire_at")
        return int(value) or None
    exp = payload.get("exp")
    if exp is None:
        return None
    if not _is_number(exp):
        raise _bad("exp")
    return int(exp)


def _json(payload: Mapping[str, Any], name: str) -> bytes | None:
    value = payload.get(name)
    if value is None:
        return None
    try:
        return msgspec.json.encode(value)
    except (msgspec.EncodeError, UnicodeEncodeError, OverflowError, RecursionError) as exc:
        raise _bad(name) from exc


def _b64(payload: Mapping[str, Any], name: str) -> bytes | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(name)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(name) from exc


def _raw_or_b64(payload: Mapping[str, Any], name: str) -> bytes | None:
    """``b64<name>`` (base64) wins over ``<name>`` (JSON, re-encoded compactly)."""
    raw = _b64(payload, "b64" + name)
    return raw if raw is not None else _json(payload, name)


def _override(value: object) -> Override:
    if value is None:
        return _NO_OVERRIDE
    if not isinstance(value, dict):
        raise _bad("override")
    values: dict[str, bool] = {}
    for name in _OVERRIDE_FIELDS:
        item = value.get(name)
        if item is None:
            continue
        # As in Centrifugo, an object without "value" means false.
        flag = item.get("value", False) if isinstance(item, dict) else None
        if not isinstance(flag, bool):
            raise _bad("override")
        values[name] = flag
    return Override(**values) if values else _NO_OVERRIDE


def _channels(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(channel, str) for channel in value):
        raise _bad("channels")
    return tuple(value)


def _subs(value: object) -> Mapping[str, SubOptions]:
    if value is None:
        return _EMPTY_SUBS
    if not isinstance(value, dict):
        raise _bad("subs")
    subs: dict[str, SubOptions] = {}
    for channel, options in value.items():
        if options is None:
            subs[channel] = SubOptions()
            continue
        if not isinstance(options, dict):
            raise _bad("subs")
        subs[channel] = SubOptions(
            info=_raw_or_b64(options, "info"),
            data=_raw_or_b64(options, "data"),
            override=_override(options.get("override")),
        )
    return MappingProxyType(subs)


def parse_connection_claims(payload: Mapping[str, Any], *, user_id_claim: str = "") -> ConnectionClaims:
    """Claims of a connection token; a ``channel`` claim (a subscription token) is refused."""
    if "channel" in payload:
        raise invalid_token("channel claim in connection token")
    meta = payload.get("meta")
    return ConnectionClaims(
        user=_user(payload, user_id_claim),
        expire_at=_expire_at(payload),
        info=_raw_or_b64(payload, "info"),
        channels=_channels(payload.get("channels")),
        subs=_subs(payload.get("subs")),
        meta=meta,
    )


def parse_subscription_claims(payload: Mapping[str, Any], *, user_id_claim: str = "") -> SubscriptionClaims:
    """Claims of a subscription token; ``channel`` is required."""
    channel = payload.get("channel")
    if channel is None or channel == "":
        raise invalid_token("missing channel")
    if not isinstance(channel, str):
        raise _bad("channel")
    return SubscriptionClaims(
        user=_user(payload, user_id_claim),
        channel=channel,
        expire_at=_expire_at(payload),
        info=_raw_or_b64(payload, "info"),
        data=_raw_or_b64(payload, "data"),
        override=_override(payload.get("override")),
    )
