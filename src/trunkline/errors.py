"""One exception tree for Trunkline, with the Centrifugo codes clients see.

::

    TrunklineError
    ├── ConfigError              a setting is missing or invalid (names key and file)
    │   └── ConfigErrors         several of them, found in one pass
    ├── StartupError             the server cannot start as configured (names the setting)
    ├── ClientError              a reply error: {"code": N, "message": "..."}; the connection stays
    └── Disconnect               the connection is closed with a close code and reason

A ``ClientError`` travels inside a reply; a ``Disconnect`` becomes a WebSocket
close frame whose reason is at most 123 bytes. Codes and their meaning to the
SDKs are those of the Centrifugo protocol (reference §7).

The constants below (``PERMISSION_DENIED``, ``SHUTDOWN``, ...) are templates
shared by every connection: raise a fresh copy, ``raise PERMISSION_DENIED()``
(or ``PERMISSION_DENIED.with_message(...)``), never the constant itself, which
would keep the raiser's traceback, and with it its frames, on the shared object.
A copy compares equal to its constant.
"""

from __future__ import annotations

from typing import Final


class TrunklineError(Exception):
    """Base of every error raised by Trunkline on purpose."""


class ConfigError(TrunklineError):
    """A configuration value is missing, unknown or invalid."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.message = message
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{key}: {message}{where}")


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass; ``errors`` lists each (the first is this one)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.key, first.message, first.source)
        self.errors = errors
        more = len(errors) - 1
        self.args = (f"{first} (and {more} more error{'s' if more > 1 else ''})",)


class StartupError(TrunklineError):
    """The settings are valid but the server cannot start with them: a port in use, an
    unreadable TLS file, a broker that does not answer. ``setting`` names the key to look at."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")


class ClientError(TrunklineError):
    """An error reply: the command failed, the connection stays open."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        self.code = code
        self.message = message
        self.temporary = temporary
        super().__init__(f"{code} {message}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientError) and (self.code, self.message, self.temporary) == (
            other.code,
            other.message,
            other.temporary,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __call__(self) -> ClientError:
        """A fresh copy to raise: ``raise PERMISSION_DENIED()``."""
        return ClientError(self.code, self.message, self.temporary)

    def with_message(self, message: str) -> ClientError:
        return ClientError(self.code, message, self.temporary)


class Disconnect(TrunklineError):
    """Close the connection with a code and a short reason (reference §7.3)."""

    def __init__(self, code: int, reason: str) -> None:
        encoded = reason.encode()
        if len(encoded) > 123:
            reason = encoded[:123].decode(errors="ignore")
        self.code = code
        self.reason = reason
        super().__init__(f"{code} {reason}")

    @property
    def reconnect(self) -> bool:
        """Whether the SDKs reconnect after this code (3500–3999, 4500–4999 are terminal)."""
        return not (3500 <= self.code <= 3999 or 4500 <= self.code <= 4999)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Disconnect) and (self.code, self.reason) == (other.code, other.reason)

    def __hash__(self) -> int:
        return hash((self.code, self.reason))

    def __call__(self) -> Disconnect:
        """A fresh copy to raise: ``raise SHUTDOWN()``."""
        return Disconnect(self.code, self.reason)

    def with_reason(self, reason: str) -> Disconnect:
        return Disconnect(self.code, reason)


# Reply error codes (reference §7.1).
INTERNAL: Final = ClientError(100, "internal server error", temporary=True)
UNAUTHORIZED: Final = ClientError(101, "unauthorized")
UNKNOWN_CHANNEL: Final = ClientError(102, "unknown channel")
PERMISSION_DENIED: Final = ClientError(103, "permission denied")
METHOD_NOT_FOUND: Final = ClientError(104, "method not found")
ALREADY_SUBSCRIBED: Final = ClientError(105, "already subscribed")
LIMIT_EXCEEDED: Final = ClientError(106, "limit exceeded")
BAD_REQUEST: Final = ClientError(107, "bad request")
NOT_AVAILABLE: Final = ClientError(108, "not available")
TOKEN_EXPIRED: Final = ClientError(109, "token expired")
EXPIRED: Final = ClientError(110, "expired")
TOO_MANY_REQUESTS: Final = ClientError(111, "too many requests", temporary=True)
UNRECOVERABLE_POSITION: Final = ClientError(112, "unrecoverable position")

# Unsubscribe push codes (reference §7.2): below 2500 terminal, from 2500 resubscribe.
UNSUBSCRIBE_SERVER: Final = (2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE: Final = (2500, "insufficient state")
UNSUBSCRIBE_EXPIRED: Final = (2501, "subscription expired")

# Disconnect codes (reference §7.3). 3000–3499: the client reconnects; 3500+: terminal.
SHUTDOWN: Final = Disconnect(3001, "shutdown")
SERVER_ERROR: Final = Disconnect(3004, "internal server error")
CONNECTION_EXPIRED: Final = Disconnect(3005, "connection expired")
SUBSCRIPTION_EXPIRED: Final = Disconnect(3006, "subscription expired")
SLOW: Final = Disconnect(3008, "slow")
WRITE_ERROR: Final = Disconnect(3009, "write error")
INSUFFICIENT_STATE: Final = Disconnect(3010, "insufficient state")
FORCE_RECONNECT: Final = Disconnect(3011, "force reconnect")
NO_PONG: Final = Disconnect(3012, "no pong")
TOO_MANY_REQUESTS_DISCONNECT: Final = Disconnect(3013, "too many requests")
INVALID_TOKEN: Final = Disconnect(3500, "invalid token")
BAD_REQUEST_DISCONNECT: Final = Disconnect(3501, "bad request")
STALE: Final = Disconnect(3502, "stale")
FORCE_DISCONNECT: Final = Disconnect(3503, "force disconnect")
CONNECTION_LIMIT: Final = Disconnect(3504, "connection limit")
CHANNEL_LIMIT: Final = Disconnect(3505, "channel limit")
INAPPROPRIATE_PROTOCOL: Final = Disconnect(3506, "inappropriate protocol")
PERMISSION_DENIED_DISCONNECT: Final = Disconnect(3507, "permission denied")
NOT_AVAILABLE_DISCONNECT: Final = Disconnect(3508, "not available")
TOO_MANY_ERRORS: Final = Disconnect(3509, "too many errors")

# WebSocket close code for an oversized message (RFC 6455); the SDKs treat it as terminal.
MESSAGE_TOO_BIG: Final = Disconnect(1009, "message too big")
