"""Hook events: what an application sees when it plugs plain async functions into a node.

::

    node = Node(settings)

    @node.on_connecting
    async def authenticate(event: ConnectEvent) -> ConnectReply | None:
        ...  # return credentials, None to keep what the token gave, or raise ClientError / Disconnect

A hook that raises ``ClientError`` answers the command with that error; one that
raises ``Disconnect`` closes the connection with that code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who the connection is: from a verified token or from an ``on_connecting`` hook."""

    user: str
    expire_at: int | None = None
    info: bytes | None = None
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    client_id: str
    transport: str
    token: str
    data: bytes | None
    name: str
    version: str
    credentials: Credentials | None
    remote: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectReply:
    credentials: Credentials | None = None
    data: bytes | None = None
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientView:
    """The connection a hook is about."""

    client_id: str
    user: str
    info: bytes | None


@dataclass(frozen=True, slots=True)
class SubscribeEvent:
    client: ClientView
    channel: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class SubscribeReply:
    info: bytes | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class PublishEvent:
    client: ClientView
    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PublishReply:
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class RPCEvent:
    client: ClientView
    method: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    client: ClientView
    data: bytes | None


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    client: ClientView
    code: int
    reason: str


OnConnecting = Callable[[ConnectEvent], Awaitable[ConnectReply | None]]
OnConnect = Callable[[ClientView], Awaitable[None]]
OnSubscribe = Callable[[SubscribeEvent], Awaitable[SubscribeReply | None]]
OnPublish = Callable[[PublishEvent], Awaitable[PublishReply | None]]
OnRPC = Callable[[RPCEvent], Awaitable[bytes | None]]
OnMessage = Callable[[MessageEvent], Awaitable[None]]
OnDisconnect = Callable[[DisconnectEvent], Awaitable[None]]


@dataclass(slots=True)
class Hooks:
    """The hooks a node calls; each stays off until set."""

    connecting: OnConnecting | None = None
    connect: OnConnect | None = None
    subscribe: OnSubscribe | None = None
    publish: OnPublish | None = None
    rpc: OnRPC | None = None
    message: OnMessage | None = None
    disconnect: OnDisconnect | None = None
