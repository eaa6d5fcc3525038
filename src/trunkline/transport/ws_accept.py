"""The public listener's first protocol: plain WebSocket upgrades skip aiohttp's request machinery.

Every connection to the public port starts with an :class:`Acceptor`. It reads the
request head; when the head is an ordinary, well-formed WebSocket upgrade to
``/connection/websocket`` that would be admitted (the server accepts, the ``Origin``
is allowed, the connection limit is not reached, no compression to negotiate), it
answers ``101`` itself and hands the socket to a
:class:`~trunkline.transport.ws_connection.WebSocketConnection`: no aiohttp request
handler, request, response, router or task exists for it (issue 18: a connect's
cheapest path). Anything else (another path, the server API, a refused or malformed
upgrade, a head over 8 KiB) is handed, with the bytes read so far, to aiohttp's
request handler, which answers exactly as it would have — so every refusal and every
error keeps one implementation.

A head must be complete within ``websocket.handshake_timeout`` (as aiohttp's own
keep-alive timer enforces for what it reads), or the connection is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .admission import connection_counter, refusal
from .remote import trusted_client
from .websocket import JSON_INFO, PROTOBUF_INFO, SUBPROTOCOLS, adopt, wants_protobuf

if TYPE_CHECKING:
    from ..node import Node

PATH: Final = "/connection/websocket"
HEAD_LIMIT: Final = 8192  # bytes; a longer head goes to aiohttp (which answers 431/400)
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NAME: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # a token (RFC 9110 §5.1)
#: A whole plain head: the request line, header lines of a token, a colon and a value without
#: control characters (no obs-fold), the empty line. One match checks every line at once.
_HEAD: Final = re.compile(rf"GET ([^ ]*) HTTP/1\.1\r\n((?:{_NAME}+:[^\x00-\x08\x0a-\x1f\x7f]*+\r\n)*+)\r\n")
_FIELD: Final = re.compile(r"([^:]+):[ \t]*([^\r]*)\r\n")  # name, value with its trailing blanks, in what _HEAD matched


class Upgrade:
    """A parsed upgrade request head: its query string, headers as sent, and headers by lower-case name."""

    __slots__ = ("headers", "lower", "query")

    def __init__(self, query: str, headers: dict[str, str], lower: dict[str, str]) -> None:
        self.query = query
        self.headers = headers
        self.lower = lower


def parse_upgrade(head: bytes, path: str = PATH) -> Upgrade | None:
    """The upgrade in ``head`` (ending with an empty line), or None unless it is a plain one for ``path``.

    Plain: ``GET path[?query] HTTP/1.1``, ASCII, token header names, no repeated
    header, no control characters, no body, ``Host`` present, ``Upgrade: websocket``,
    ``Connection`` naming ``upgrade``, version 13 and a 16-byte base64 key. None is no
    verdict: aiohttp then reads the same bytes and answers.
    """
    if not head.isascii():
        return None
    match = _HEAD.fullmatch(head.decode("ascii"))
    if match is None:
        return None
    target, _, query = match[1].partition("?")
    if target != path:
        return None
    fields = _FIELD.findall(match[2])
    headers = {name: value.rstrip(" \t") for name, value in fields}
    lower = {name.lower(): value for name, value in headers.items()}
    if len(lower) != len(fields):  # a repeated header
        return None
    if "content-length" in lower or "transfer-encoding" in lower or "host" not in lower:
        return None
    if lower.get("upgrade", "").lower() != "websocket" or lower.get("sec-websocket-version") != "13":
        return None
    if "upgrade" not in (t.strip().lower() for t in lower.get("connection", "").split(",")):
        return None
    try:
        if len(base64.b64decode(lower.get("sec-websocket-key", ""), validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return Upgrade(query, headers, lower)


def subprotocol(offered: str | None) -> str | None:
    """The first of the client's subprotocols that Trunkline speaks (the client's order, as aiohttp)."""
    if not offered:
        return None
    for name in (part.strip() for part in offered.split(",")):
        if name in SUBPROTOCOLS:
            return name
    return None


def switching_protocols(key: str, protocol: str | None) -> bytes:
    """The ``101`` response to an upgrade with ``Sec-WebSocket-Key`` ``key`` (RFC 6455 §4.2.2)."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: "
    head += accept
    if protocol:
        head += b"\r\nSec-WebSocket-Protocol: " + protocol.encode()
    return head + b"\r\n\r\n"


def admitted(node: Node, upgrade: Upgrade) -> bool:
    """Whether aiohttp's endpoint would admit this upgrade (else it answers the refusal itself)."""
    if node.settings.websocket.compression and "sec-websocket-extensions" in upgrade.lower:
        return False  # permessage-deflate is negotiated by aiohttp
    return refusal(node, upgrade.lower.get("origin"), upgrade.lower.get("host")) is None


class Acceptor(asyncio.Protocol):
    """Reads a connection's first request head and serves the upgrade itself or hands the socket to aiohttp."""

    __slots__ = ("_buf", "_fallback", "_node", "_timer", "_transport")

    def __init__(self, node: Node, fallback: Callable[[], asyncio.Protocol]) -> None:
        self._node = node
        self._fallback = fallback
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # TCP_NODELAY is on already: asyncio and uvloop set it on every TCP socket
        timeout = self._node.settings.websocket.handshake_timeout
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n\r\n", 0, HEAD_LIMIT)
        if end < 0:
            if len(buf) >= HEAD_LIMIT:
                self._hand_over(buf)  # not a head this acceptor serves: aiohttp's limits answer it
            else:
                self._buf = buf
            return
        self._buf = b""
        if not self._upgrade(buf[: end + 4], buf[end + 4 :]):
            self._hand_over(buf)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self, data: bytes) -> None:
        """aiohttp's request handler takes the socket, as if it had been its protocol from the start."""
        self._stop_timer()
        handler = self._fallback()
        transport = self._transport
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def _upgrade(self, head: bytes, rest: bytes) -> bool:
        upgrade = parse_upgrade(head)
        node = self._node
        if upgrade is None or not admitted(node, upgrade):
            return False
        self._stop_timer()
        transport = self._transport
        lower = upgrade.lower
        protocol = subprotocol(lower.get("sec-websocket-protocol"))
        info = PROTOBUF_INFO if protocol == "centrifuge-protobuf" or wants_protobuf(upgrade.query) else JSON_INFO
        peername = transport.get_extra_info("peername")
        peer = peername[0] if isinstance(peername, tuple) else ""
        forwarded = (lower["x-forwarded-for"],) if "x-forwarded-for" in lower else ()
        remote = trusted_client(peer, forwarded, lower.get("x-real-ip"), node.settings.http_server.trusted_proxies)
        transport.write(switching_protocols(lower["sec-websocket-key"], protocol))
        counter = connection_counter(node)
        counter.value += 1
        adopt(node, transport, info, remote=remote, headers=upgrade.headers, data=rest, counter=counter)
        return True


def acceptor_factory(node: Node) -> Callable[[Callable[[], asyncio.Protocol]], Callable[[], asyncio.Protocol]]:
    """For :class:`~trunkline.transport.websocket.GuardedTCPSite`: wrap aiohttp's protocol factory."""

    def wrap(fallback: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: Acceptor(node, fallback)

    return wrap
