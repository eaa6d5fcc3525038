"""Helpers for tests that drive Trunkline through the real SDKs.

- ``Recorder``: a centrifuge-python event handler that records everything it sees.
- ``TcpProxy``: a real TCP relay between a client and the server that can cut the
  link abruptly (no close frame, the way a network drops) and refuse reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ServerJoinContext,
    ServerPublicationContext,
    ServerSubscribedContext,
    ServerUnsubscribedContext,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
    UnsubscribedContext,
)


@dataclass
class Recorder(SubscriptionEventHandler):
    """Records a subscription's events; ``publications`` holds (offset, data)."""

    publications: list[tuple[int, Any]] = field(default_factory=list)
    subscribed: list[SubscribedContext] = field(default_factory=list)
    unsubscribed: list[UnsubscribedContext] = field(default_factory=list)
    joins: list[JoinContext] = field(default_factory=list)
    leaves: list[LeaveContext] = field(default_factory=list)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.append((ctx.pub.offset, ctx.pub.data))

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx)


@dataclass
class ClientRecorder(ClientEventHandler):
    connected: list[ConnectedContext] = field(default_factory=list)
    connecting: list[ConnectingContext] = field(default_factory=list)
    disconnected: list[DisconnectedContext] = field(default_factory=list)
    server_subscribed: list[ServerSubscribedContext] = field(default_factory=list)
    server_unsubscribed: list[ServerUnsubscribedContext] = field(default_factory=list)
    server_publications: list[ServerPublicationContext] = field(default_factory=list)
    server_joins: list[ServerJoinContext] = field(default_factory=list)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.server_subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: ServerUnsubscribedContext) -> None:
        self.server_unsubscribed.append(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.server_publications.append(ctx)

    async def on_join(self, ctx: ServerJoinContext) -> None:
        self.server_joins.append(ctx)


def new_client(url: str, events: ClientEventHandler | None = None, **kwargs: Any) -> Client:
    kwargs.setdefault("max_reconnect_delay", 0.5)
    kwargs.setdefault("proxy", None)
    return Client(url, events=events, **kwargs)


class TcpProxy:
    """Relay 127.0.0.1:<port> -> target; ``cut()`` aborts every link like a dropped network."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepting = True
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.discard(writer)
        self._links.discard(up_writer)

    def cut(self) -> None:
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def subscribe_ready(sub: Subscription, timeout: float = 5.0) -> Subscription:
    """Subscribe and wait until the server confirmed the subscription."""
    await sub.subscribe()
    await sub.ready(timeout)
    return sub
