"""Typed messages of the Centrifugo client protocol (reference §1.5–§5).

Commands are decoded from client JSON; unknown fields from newer SDKs are ignored.
``bytes`` fields of the protobuf schema (``data``, ``info``) travel as embedded raw
JSON and are kept as ``msgspec.Raw`` so payloads pass through untouched.

Replies are encoded with ``omit_defaults``: a result object that is present but
empty is still written (``{"id":3,"publish":{}}``), and fields the SDKs index
directly (``client``, ``user``, ``code``, ``message``…) have no default, so they are
always written.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Raw, Struct

UInt32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
UInt64 = Annotated[int, Meta(ge=0)]  # protocol uint64: msgspec decodes integers up to 2**64-1 only
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]


# ---------------------------------------------------------------- requests


class StreamPosition(Struct, omit_defaults=True):
    offset: UInt64 = 0
    epoch: str = ""


class SubscribeRequest(Struct, omit_defaults=True):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: UInt64 = 0
    data: Raw = Raw()
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    flag: int = 0
    #: the subscription type (:data:`SUB_STREAM` …); map subscriptions page through phases
    type: int = 0
    #: map subscriptions: the phase asked for (:data:`PHASE_LIVE`, :data:`PHASE_STREAM`, :data:`PHASE_STATE`)
    phase: Int32 = 0
    #: map subscriptions: the state page to read ("" = the first), the page size, ordered maps' direction
    cursor: str = ""
    limit: Int32 = 0
    asc: bool = False


#: SubscribeRequest.type values (centrifuge-js 5.8): a stream, a map, the two presence maps, shared poll
SUB_STREAM = 0
SUB_MAP = 1
SUB_MAP_CLIENTS = 2
SUB_MAP_USERS = 3
SUB_SHARED_POLL = 4
#: SubscribeRequest.phase / SubscribeResult.phase values of a map subscription
PHASE_LIVE = 0
PHASE_STREAM = 1
PHASE_STATE = 2
#: PublishRequest.type of a map write (``key``, ``removed``)
PUBLISH_MAP = 1


class ConnectRequest(Struct, omit_defaults=True):
    token: str = ""
    data: Raw = Raw()
    subs: dict[str, SubscribeRequest] = {}
    name: str = ""
    version: str = ""


class UnsubscribeRequest(Struct):
    channel: str = ""


class PublishRequest(Struct, omit_defaults=True):
    channel: str = ""
    data: Raw = Raw()
    #: :data:`PUBLISH_MAP` for a map write of ``key`` (a removal when ``removed``)
    type: Int32 = 0
    key: str = ""
    removed: bool = False


class PresenceRequest(Struct):
    channel: str = ""


class PresenceStatsRequest(Struct):
    channel: str = ""


class HistoryRequest(Struct):
    channel: str = ""
    limit: Int32 = 0
    since: StreamPosition | None = None
    reverse: bool = False


class PingRequest(Struct):
    pass


class SendRequest(Struct):
    data: Raw = Raw()


class RPCRequest(Struct):
    method: str = ""
    data: Raw = Raw()


class RefreshRequest(Struct):
    token: str = ""


class KeyedItem(Struct, omit_defaults=True):
    """A shared poll key the client tracks, with the version it has (0: none)."""

    key: str = ""
    version: UInt64 = 0


class TrackBatch(Struct, omit_defaults=True):
    """Shared poll keys the client starts tracking, signed together by the application."""

    signature: str = ""
    items: list[KeyedItem] = []


class SubRefreshRequest(Struct, omit_defaults=True):
    channel: str = ""
    token: str = ""
    #: 1 (shared poll): a track / untrack request, not a token refresh
    type: Int32 = 0
    track: list[TrackBatch] = []
    untrack: list[str] = []


class Command(Struct, omit_defaults=True):
    """One client command; exactly one request field is expected to be set."""

    id: UInt32 = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    publish: PublishRequest | None = None
    presence: PresenceRequest | None = None
    presence_stats: PresenceStatsRequest | None = None
    history: HistoryRequest | None = None
    ping: PingRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None

    @property
    def method(self) -> str:
        """The name of the request field that is set, or ``""`` for an empty command (a pong)."""
        for name in METHODS:
            if getattr(self, name) is not None:
                return name
        return ""


#: The request fields of a Command, in protocol order.
METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)


# ---------------------------------------------------------------- results


class ClientInfo(Struct, omit_defaults=True):
    user: str
    client: str
    conn_info: Raw | None = None
    chan_info: Raw | None = None


#: the data of a map removal: the default of ``Publication.data``, which omit_defaults leaves out (by identity)
NO_DATA = Raw()


class Publication(Struct, omit_defaults=True):
    #: left out only for a map removal (:data:`NO_DATA`), which carries no data
    data: Raw = NO_DATA
    info: ClientInfo | None = None
    offset: UInt64 = 0
    tags: dict[str, str] | None = None
    #: map subscriptions: the entry's key, a removal of it, its sort score (ordered maps)
    key: str = ""
    removed: bool = False
    score: int = 0
    #: shared poll: the stream epoch and the key's version
    epoch: str = ""
    version: UInt64 = 0


class DeltaPublication(Struct, omit_defaults=True):
    """A Publication of a delta subscription in JSON: ``data`` is a JSON *string* (reference: transports.md).

    The string holds the publication's JSON text when ``delta`` is false, a Fossil patch
    against the previous publication of the stream when it is true.
    """

    data: str
    info: ClientInfo | None = None
    offset: UInt64 = 0
    tags: dict[str, str] | None = None
    delta: bool = False
    key: str = ""
    removed: bool = False
    score: int = 0


class Error(Struct, omit_defaults=True):
    code: int
    message: str
    temporary: bool = False


class SubscribeResult(Struct, omit_defaults=True):
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    publications: list[Raw] | None = None
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: Raw | None = None
    was_recovering: bool = False
    #: delta compression negotiated (``SubscribeRequest.delta`` allowed by the namespace)
    delta: bool = False
    #: map subscriptions: the subscription type, the phase of this reply (:data:`PHASE_LIVE` omitted:
    #: the client is subscribed), the next state page ("" = last) and the state entries (Publications)
    type: int = 0
    phase: int = 0
    cursor: str = ""
    state: list[Raw] | None = None
    #: shared poll: how long the client waits between publishes of a key (ms)
    publish_debounce: int = 0


class ConnectResult(Struct, omit_defaults=True):
    client: str
    version: str
    expires: bool = False
    ttl: int = 0
    data: Raw | None = None
    subs: dict[str, SubscribeResult] | None = None
    ping: int = 0
    pong: bool = False
    #: the id an emulated or unidirectional connection is known by (``/emulation`` names it); secret
    session: str = ""
    #: the node holding an emulated connection, where its ``/emulation`` requests must go
    node: str = ""


class UnsubscribeResult(Struct):
    pass


class PublishResult(Struct):
    pass


class PresenceResult(Struct):
    presence: dict[str, Raw]


class PresenceStatsResult(Struct):
    num_clients: int
    num_users: int


class HistoryResult(Struct):
    publications: list[Raw]
    epoch: str
    offset: int


class PingResult(Struct):
    pass


class RPCResult(Struct, omit_defaults=True):
    data: Raw | None = None


class RefreshResult(Struct, omit_defaults=True):
    client: str
    version: str
    expires: bool = False
    ttl: int = 0


class SubRefreshResult(Struct, omit_defaults=True):
    expires: bool = False
    ttl: int = 0
    #: shared poll: the current values of the keys just tracked (Publications with key and version)
    items: list[Raw] | None = None


class Reply(Struct, omit_defaults=True):
    id: int = 0
    error: Error | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: UnsubscribeResult | None = None
    publish: PublishResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    ping: PingResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None


# ---------------------------------------------------------------- pushes


class Join(Struct):
    info: ClientInfo


class Leave(Struct):
    info: ClientInfo


class Unsubscribe(Struct):
    code: int
    reason: str


class Subscribe(Struct, omit_defaults=True):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: Raw | None = None


class Message(Struct):
    data: Raw


class DisconnectPush(Struct):
    code: int
    reason: str
    reconnect: bool


class Push(Struct, omit_defaults=True):
    channel: str = ""
    pub: Publication | None = None
    join: Join | None = None
    leave: Leave | None = None
    unsubscribe: Unsubscribe | None = None
    message: Message | None = None
    subscribe: Subscribe | None = None
    #: unidirectional transports only: the connect result, as the first push (Centrifugo's ``Connect``
    #: message has the same JSON field names as ``ConnectResult``)
    connect: ConnectResult | None = None
    disconnect: DisconnectPush | None = None


class PushReply(Struct):
    push: Push


class EmulationRequest(Struct):
    """The JSON body of ``POST /emulation``: commands for the emulated connection ``session`` on ``node``.

    ``data`` is the connection's encoded commands as a JSON string (centrifuge-js sends
    ``JSON.stringify({session, node, data})`` with ``data`` its newline-joined commands).
    """

    session: str = ""
    node: str = ""
    data: str = ""


EMPTY_RAW = Raw(b"null")

__all__ = [
    "METHODS",
    "NO_DATA",
    "ClientInfo",
    "Command",
    "ConnectRequest",
    "ConnectResult",
    "EmulationRequest",
    "Error",
    "HistoryRequest",
    "HistoryResult",
    "KeyedItem",
    "Publication",
    "Push",
    "PushReply",
    "Reply",
    "StreamPosition",
    "SubscribeRequest",
    "SubscribeResult",
    "TrackBatch",
    "msgspec",
]
