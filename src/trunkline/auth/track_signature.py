"""Shared-poll track signatures: the per-key HMAC a backend issues for ``track()`` (no I/O).

The signature is ``iat:exp:hmac_hex`` with ``hmac_hex`` the hex HMAC-SHA256, under
``shared_poll.hmac_secret_key``, of ``"iat:exp:user:channel:keys_hash"``; ``keys_hash`` is the hex
SHA-256 of the keys joined with NUL bytes, in the order the client sends them (Centrifugo's
``server/shared_poll.md``). ``exp`` 0 never expires; an expired signature is still accepted for
:data:`GRACE` seconds. During a key rotation ``hmac_previous_secret_key`` is accepted too, until
``hmac_previous_secret_key_valid_until`` (server time; 0: no limit).

:func:`verify` raises :class:`BadSignature` (malformed or wrong: the client gets 103) or
:class:`SignatureExpired` (past the grace period: 109, the SDK asks its backend for a new one),
and returns ``exp`` (0: none) otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GRACE", "BadSignature", "SignatureExpired", "TrackKeys", "sign", "verify"]

#: Seconds an expired signature is still accepted (Centrifugo: 30).
GRACE = 30
#: Longest signature string looked at (two 20-digit numbers, two colons, 64 hex digits, and room).
MAX_SIGNATURE = 160


class BadSignature(ValueError):
    """The signature is malformed or does not match the keys, user and channel."""


class SignatureExpired(ValueError):
    """The signature's ``exp`` is more than :data:`GRACE` seconds in the past."""


@dataclass(frozen=True, slots=True)
class TrackKeys:
    """The secrets that sign track requests (``shared_poll.hmac_*``)."""

    secret: str
    previous: str = ""
    previous_valid_until: int = 0  # Unix seconds; 0: the previous key has no end


def keys_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(keys).encode()).hexdigest()


def _mac(secret: str, iat: int, exp: int, *, user: str, channel: str, keys: Sequence[str]) -> str:
    payload = f"{iat}:{exp}:{user}:{channel}:{keys_hash(keys)}"
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, *, user: str, channel: str, keys: Sequence[str], iat: int, exp: int) -> str:
    """A signature as a backend makes it (tests, examples and the benchmark use it)."""
    return f"{iat}:{exp}:{_mac(secret, iat, exp, user=user, channel=channel, keys=keys)}"


def _number(text: str) -> int:
    if not text.isdigit() or len(text) > 19:  # ASCII digits only (isdigit alone accepts "²")
        raise BadSignature("signature: iat and exp must be Unix seconds")
    if not text.isascii():
        raise BadSignature("signature: iat and exp must be Unix seconds")
    return int(text)


def verify(keys: TrackKeys, signature: str, *, user: str, channel: str, items: Sequence[str], now: float) -> int:
    """``exp`` of a valid signature over ``items`` (0: no expiry); raises BadSignature / SignatureExpired."""
    if not keys.secret:
        raise BadSignature("shared_poll.hmac_secret_key is not set")
    if len(signature) > MAX_SIGNATURE:
        raise BadSignature("signature too long")
    parts = signature.split(":")
    if len(parts) != 3:
        raise BadSignature("signature must be iat:exp:hmac_hex")
    iat, exp = _number(parts[0]), _number(parts[1])
    given = parts[2].lower()
    if len(given) != 64 or not all(c in "0123456789abcdef" for c in given):
        raise BadSignature("signature: hmac must be 64 hex digits")
    ok = hmac.compare_digest(given, _mac(keys.secret, iat, exp, user=user, channel=channel, keys=items))
    if not ok and keys.previous and (keys.previous_valid_until == 0 or now <= keys.previous_valid_until):
        ok = hmac.compare_digest(given, _mac(keys.previous, iat, exp, user=user, channel=channel, keys=items))
    if not ok:
        raise BadSignature("signature does not match")
    if exp and now > exp + GRACE:
        raise SignatureExpired("signature expired")
    return exp
