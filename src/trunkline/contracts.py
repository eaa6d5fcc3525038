"""The small interfaces that connect the layers (``Protocol``s and plain records, no logic).

Dependencies point one way: transports → protocol sessions (Centrifugo
``commands`` + ``session``, MQTT later) → node → hub/broker. Each layer types
against what is declared here instead of importing the layer above it:

- a **transport** describes itself with :class:`TransportInfo` and offers
  :class:`Transport` to the session that speaks over it;
- a **session** is a :class:`Connection` to the node (and a
  :class:`~trunkline.hub.registry.WireShape`-keyed subscriber of the hub);
- the node creates sessions through an injected :data:`SessionFactory`, so it
  never imports a client protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .hub.registry import WireShape


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """What a transport is, so sessions and metrics need not know its class.

    ``protocol`` is the wire format (``json`` or ``protobuf``); ``binary`` frames
    are sent as binary WebSocket messages; a unidirectional transport receives no
    commands after the connect (its client sends a bare connect request and gets
    bare pushes); ``ping`` is ``"protocol"`` when the session's empty-message
    ping keeps the connection alive (a bidirectional client answers it with a pong,
    a unidirectional one only reads it), ``"none"`` otherwise. An ``emulation``
    transport (HTTP-streaming, SSE) carries the server's half of a bidirectional
    connection; the client's commands arrive through ``POST /emulation``.
    """

    name: str
    protocol: str = "json"
    bidirectional: bool = True
    binary: bool = False
    ping: str = "protocol"
    emulation: bool = False

    @property
    def pushes_disconnect(self) -> bool:
        """Whether a disconnect travels as a Disconnect push before the stream ends.

        Every transport but the WebSocket (whose close frame carries code and reason) does,
        as in Centrifugo.
        """
        return self.emulation or not self.bidirectional

    @property
    def has_session(self) -> bool:
        """Whether the connect result names the connection's session (emulated and unidirectional)."""
        return self.emulation or not self.bidirectional


class Transport(Protocol):
    """What a session needs from its connection."""

    @property
    def info(self) -> TransportInfo: ...

    async def send(self, frame: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


class SessionTransport(Transport, Protocol):
    """A transport whose connection is known by a session id (``TransportInfo.has_session``).

    The id is secret (unlike the client id, which presence and publications show to
    others): an ``/emulation`` request that names it acts as the connection.
    """

    @property
    def session(self) -> str: ...


class Outbound(Protocol):
    """A connection's outbound buffer, as the node's metrics see it."""

    @property
    def buffered(self) -> int: ...


class Connection(Hashable, Protocol):
    """What the node and the transports need from a client session, whatever its protocol."""

    @property
    def client_id(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def shape(self) -> WireShape: ...

    @property
    def writer(self) -> Outbound: ...

    @property
    def push(self) -> Callable[[bytes], None]:
        """Queues bytes encoded by ``shape`` for writing: the hub stores and calls it once per delivery,
        so it should be the outbound buffer's own bound method, not a wrapper."""

    def resubscribe(self, channel: str) -> None:
        """This subscriber missed publications of ``channel``: drop it and tell the client to resubscribe."""

    def sample_write(self, started: float) -> None:
        """Report the publish-to-write latency of what was just pushed."""

    async def handle_frame(self, frame: bytes) -> None: ...

    async def apply_control(self, cmd: Any) -> None:
        """Apply a node-to-node control command (server API actions) to this connection."""

    async def close(self, disconnect: Any = None) -> None: ...

    def presence_entries(self) -> list[tuple[str, bytes]]:
        """(channel, encoded client info) of every subscription with presence, for refreshing."""


#: ``factory(node, transport, remote, headers)``: a new session of the node's client protocol.
SessionFactory = Callable[[Any, Transport, str, "dict[str, str]"], Connection]
