"""Admission of a client connection, for every transport: Origin, shutdown and connection limit.

A request that may not become a connection is refused before any upgrade or
stream starts, with an HTTP status and a JSON body that names the reason:
``403 origin not allowed`` (cross-site WebSocket hijacking and its HTTP-streaming
equivalents), ``503 connection limit reached`` (``client.connection_limit``
counts every open connection of every transport, also those that have not sent
``connect`` yet) and ``503 server is shutting down``.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING, Final

from aiohttp import web

from .per_owner import PerOwner
from .remote import client_ip

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.transport")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A serialized origin as browsers send it: scheme "://" host [":" port], nothing else
# (no path, no user info). Hosts are ASCII (IDNs arrive punycoded) or bracketed IPv6.
_ORIGIN: Final = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")
_HOST: Final = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")
_LOG_CLIP: Final = 100


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


#: Open client connections per node, connected or not yet (a node does not know about sockets).
_open: PerOwner[Node, _Counter] = PerOwner(_Counter)


def open_connections(node: Node) -> int:
    """Client connections of ``node`` open right now, including those that have not sent ``connect``."""
    counter = _open.get(node)
    return counter.value if counter is not None else 0


def connection_counter(node: Node) -> _Counter:
    """The counter a transport raises while a connection is open (and lowers after)."""
    return _open(node)


def _port(text: str | None, default: int) -> int | None:
    if not text:
        return default
    port = int(text)
    return port if 0 < port <= 65535 else None


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a serialized origin, lower-cased, the port made explicit;
    ``None`` for anything a browser would not send (paths, user info, bad ports, ``null``)."""
    match = _ORIGIN.fullmatch(origin.strip().lower())
    if match is None:
        return None
    scheme, host, port_text = match.groups()
    port = _port(port_text, _DEFAULT_PORTS.get(scheme, 0))
    if port is None:
        return None
    return scheme, host, port


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters, ``?`` one; everything else is literal."""
    pattern = pattern.strip().lower().rstrip("/")
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts))


def origin_allowed(origin: str | None, host: str | None, patterns: tuple[str, ...]) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` header may proceed.

    Browsers always send Origin; non-browser SDKs usually do not and are allowed
    (cross-site WebSocket hijacking needs a victim's browser). With no patterns only
    a same-origin page may connect (the Origin's host and port equal the ``Host``
    header's); ``*`` allows every origin; other patterns are globs on the origin
    ``scheme://host[:port]`` (default ports omitted), e.g. ``https://*.example.com``.
    ``null`` (sandboxed frames, ``file:`` pages) and malformed origins are refused
    unless ``*`` is configured (or, for ``null``, the pattern ``null``).
    """
    if not origin:
        return True
    normalized = tuple(p.strip().lower() for p in patterns)
    if "*" in normalized:
        return True
    value = origin.strip().lower()
    if value == "null":
        return "null" in normalized
    parsed = parse_origin(value)
    if parsed is None:
        return False
    scheme, origin_host, port = parsed
    default = _DEFAULT_PORTS.get(scheme, 0)
    if normalized:
        explicit = f"{scheme}://{origin_host}:{port}"
        canonical = f"{scheme}://{origin_host}" if port == default else explicit
        return any(_glob(p).fullmatch(canonical) or _glob(p).fullmatch(explicit) for p in normalized)
    match = _HOST.fullmatch((host or "").strip().lower())
    if match is None:
        return False
    # A Host without a port means the default port of the scheme the page was loaded with.
    return match.group(1) == origin_host and _port(match.group(2), default) == port


def _clip(text: str) -> str:
    return text if len(text) <= _LOG_CLIP else text[:_LOG_CLIP] + "..."


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers={"Cache-Control": "no-store"})


def refusal(node: Node, origin: str | None, host: str | None) -> tuple[int, str, str] | None:
    """(status, reason, what to log or "") refusing a new connection with these ``Origin`` and ``Host``, or None."""
    if not node.accepting:
        return 503, "server is shutting down", ""
    if origin and not origin_allowed(origin, host, node.settings.client.allowed_origins):
        return 403, "origin not allowed", f"origin {_clip(origin)!r} not allowed"
    limit = node.settings.client.connection_limit
    if limit and (open_connections(node) >= limit or node.hub.num_clients >= limit):
        return 503, "connection limit reached", f"connection limit {limit} reached"
    return None


def refuse(request: web.Request, node: Node, kind: str) -> web.Response | None:
    """The refusal of a new ``kind`` connection (``websocket``, ``http_stream``…), or None to admit it."""
    refused = refusal(node, request.headers.get("Origin"), request.host)
    if refused is None:
        return None
    status, reason, detail = refused
    if detail:
        log.info("refused %s from %s: %s", kind, client_ip(request, node.settings), detail)
    return _refuse(status, reason)
