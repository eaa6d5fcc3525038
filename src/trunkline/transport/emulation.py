"""``POST /emulation``: the commands of HTTP-streaming and SSE connections.

An emulated connection's stream only goes from the server to the client; its
commands (and pongs) arrive here, each request naming the connection by the
``session`` and ``node`` of its connect result:

- JSON (any ``Content-Type`` but ``application/octet-stream``):
  ``{"session": "…", "node": "…", "data": "<the commands, as a JSON string>"}``;
- Protobuf (``application/octet-stream``): an ``EmulationRequest{node=1, session=2,
  data=3}`` whose ``data`` holds varint-delimited commands.

Answers (JSON body on every refusal): ``204`` once the commands have run (their
replies travel on the stream), ``400`` for a body that does not parse or whose format
is not the connection's, ``403`` for an origin not allowed, ``404`` for an unknown
node or session (the stream has ended, or the session lives on another node),
``408``/``413`` for a slow or oversized body, ``429`` when too many requests of one
connection are already waiting.

Requests of one connection run one after another, in arrival order, like the frames
of a WebSocket: each waits for the one before (at most :data:`MAX_WAITING` wait).
The session id is a secret random id, not the client id that presence and
publications show to others.

Several processes on one port (``trunkline serve --workers N``): the request must reach
the process whose node id it names. A node given a forwarder (:func:`set_forwarder`;
the workers pass requests to each other over a private Unix socket) hands a request
for another node to it and answers with the owner's answer; a forwarded request
(header :data:`FORWARDED_HEADER`) is never forwarded again. Without a forwarder, or
when no local process owns the node, the answer is ``404 unknown node``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import msgspec
from aiohttp import web

from ..appkeys import NODE_KEY
from ..protocol.codec import ProtocolError
from ..protocol.messages import EmulationRequest
from ..protocol.protobuf import decode_emulation_request
from .admission import origin_allowed
from .http_body import cors_headers, error, is_protobuf, preflight, read_body

if TYPE_CHECKING:
    from ..contracts import Connection
    from ..node import Node
    from .stream import StreamTransport

log = logging.getLogger("trunkline.transport")
#: Requests of one connection that may wait for the one running; more get 429.
MAX_WAITING: Final = 64
_decoder = msgspec.json.Decoder(EmulationRequest)
#: Set on a request one process passes to another; such a request is not passed on again.
FORWARDED_HEADER: Final = "X-Trunkline-Forwarded"

#: ``forward(node_id, request, body)``: the owner's answer, or None when no process here owns ``node_id``.
Forward = Callable[[str, web.Request, bytes], Awaitable[web.StreamResponse | None]]
_forwarders: weakref.WeakKeyDictionary[Node, Forward] = weakref.WeakKeyDictionary()


def set_forwarder(node: Node, forward: Forward | None) -> None:
    """Let ``node`` pass ``/emulation`` requests for other nodes to ``forward`` (None: stop)."""
    if forward is None:
        _forwarders.pop(node, None)
    else:
        _forwarders[node] = forward


class Emulated:
    """One emulated connection as ``/emulation`` sees it."""

    __slots__ = ("conn", "lock", "protocol", "waiting")

    def __init__(self, conn: Connection, protocol: str) -> None:
        self.conn = conn
        self.protocol = protocol
        self.lock = asyncio.Lock()
        self.waiting = 0  # requests running or waiting to run


_sessions: weakref.WeakKeyDictionary[Node, dict[str, Emulated]] = weakref.WeakKeyDictionary()


def sessions(node: Node) -> dict[str, Emulated]:
    """The emulated connections of ``node`` by session id."""
    return _sessions.setdefault(node, {})


def registration(node: Node) -> Callable[[StreamTransport, Connection], Callable[[], None]]:
    """``serve_stream``'s ``on_session``: register the new connection, return its unregistration."""

    def register(transport: StreamTransport, conn: Connection) -> Callable[[], None]:
        table = sessions(node)
        table[transport.session] = Emulated(conn, transport.info.protocol)

        def unregister() -> None:
            table.pop(transport.session, None)

        return unregister

    return register


def parse(body: bytes, protobuf: bool) -> tuple[str, str, bytes]:
    """``(node, session, data)`` of an emulation request body; :class:`ProtocolError` if malformed."""
    if protobuf:
        return decode_emulation_request(body)
    try:
        req = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed emulation request: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed emulation request: nested too deeply") from None
    return req.node, req.session, req.data.encode()


async def emulation_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    if request.method == "OPTIONS":
        return preflight(request, node)
    if request.method != "POST":
        return error(405, "method not allowed: POST commands of an emulated connection", {"Allow": "POST, OPTIONS"})
    origin = request.headers.get("Origin")
    if origin and not origin_allowed(origin, request.host, node.settings.client.allowed_origins):
        return error(403, "origin not allowed")
    cors = cors_headers(request, node)
    body = await read_body(request, node, node.settings.emulation.max_request_body_size)
    if isinstance(body, web.Response):
        return body
    protobuf = is_protobuf(request)
    try:
        node_id, session_id, data = parse(body, protobuf)
    except ProtocolError as exc:
        return error(400, f"bad request: {exc}", cors)
    if node_id and node_id != node.uid:
        forward = _forwarders.get(node)
        if forward is not None and FORWARDED_HEADER not in request.headers:
            answer = await forward(node_id, request, body)
            if answer is not None:
                return answer
        return error(404, "unknown node: the session lives on another node (or one that has restarted)", cors)
    entry = sessions(node).get(session_id)
    if entry is None:
        return error(404, "unknown session: its stream has ended", cors)
    if (entry.protocol == "protobuf") != protobuf:
        return error(400, f"bad request: the session speaks {entry.protocol}", cors)
    if entry.waiting > MAX_WAITING:  # the one running and MAX_WAITING behind it
        return error(429, "too many emulation requests of this session waiting", cors)
    entry.waiting += 1
    try:
        async with entry.lock:
            await entry.conn.handle_frame(data)
    finally:
        entry.waiting -= 1
    return web.Response(status=204, headers=cors)
