"""Delta compression proven with centrifuge-python, JSON and Protobuf, across a dropped link with recovery.

Two clients subscribe to one channel through their own counting TCP relays, one with
``delta=DeltaType.FOSSIL`` and one without. The server API publishes versions of a
2 KiB JSON document (exact bytes, non-ASCII included); the delta client's link is
cut abruptly mid-stream and it recovers. Both must see every version, the delta
client's SDK holding exactly the published bytes; its relay must have carried far
fewer bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from centrifuge import DeltaType, PublicationContext, SubscribedContext, SubscriptionEventHandler

from tests.conftest import API_KEY, Running, eventually, token
from tests.delta.helpers import NAMESPACES, document
from tests.sdk.helpers import new_client

FORMATS = ["json", "protobuf"]
VERSIONS = 40
CUT_AT = 20  # versions before the link drops; the rest are published while it is down (10) and after


class CountingRelay:
    """127.0.0.1:<port> -> the server; counts bytes towards the client; ``cut()`` drops every link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepting = True
        self.down_bytes = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> CountingRelay:
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
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if down:
                        self.down_bytes += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
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


class Seen(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.data: list[Any] = []
        self.subscribed: list[SubscribedContext] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.data.append(ctx.pub.data)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)


async def api_publish(session: aiohttp.ClientSession, url: str, channel: str, data: bytes) -> None:
    """Publish exactly ``data`` (raw JSON in the request body, not re-encoded by a client library)."""
    body = b'{"channel":' + json.dumps(channel).encode() + b',"data":' + data + b"}"
    async with session.post(f"{url}/publish", data=body, headers={"X-API-Key": API_KEY}) as resp:
        assert resp.status == 200, await resp.text()
        assert "error" not in await resp.json()


def as_published(fmt: str, raw: bytes) -> Any:
    return raw if fmt == "protobuf" else json.loads(raw)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_delta_stream_through_a_dropped_link(start_server: Any, fmt: str) -> None:
    srv: Running = await start_server({"channel": {"namespaces": NAMESPACES}})
    relays = [await CountingRelay(srv.port).start() for _ in range(2)]
    seen = [Seen(), Seen()]
    clients = [new_client(r.ws_url, token=token(f"u{i}"), use_protobuf=fmt == "protobuf") for i, r in enumerate(relays)]
    subs = [
        clients[0].new_subscription("delta:book", seen[0], delta=DeltaType.FOSSIL),
        clients[1].new_subscription("delta:book", seen[1]),
    ]
    versions = [document(i) for i in range(VERSIONS)]
    try:
        for client, sub in zip(clients, subs, strict=True):
            await client.connect()
            await sub.subscribe()
            await sub.ready(5)
        assert subs[0]._delta_negotiated is True
        assert subs[1]._delta_negotiated is False
        async with aiohttp.ClientSession() as http:
            for data in versions[:CUT_AT]:
                await api_publish(http, srv.api_url, "delta:book", data)
            await eventually(lambda: len(seen[0].data) == CUT_AT and len(seen[1].data) == CUT_AT)

            relays[0].accepting = False
            relays[0].cut()  # no close frame: the network drops
            for data in versions[CUT_AT : CUT_AT + 10]:
                await api_publish(http, srv.api_url, "delta:book", data)
            relays[0].accepting = True
            await eventually(lambda: len(seen[0].subscribed) >= 2, timeout=10)
            for data in versions[CUT_AT + 10 :]:
                await api_publish(http, srv.api_url, "delta:book", data)
            await eventually(lambda: len(seen[0].data) == VERSIONS and len(seen[1].data) == VERSIONS, timeout=10)

        expected = [as_published(fmt, v) for v in versions]
        assert seen[0].data == expected
        assert seen[1].data == expected
        assert subs[0]._prev_data == versions[-1]  # the SDK's delta base: exactly the published bytes
        resumed = seen[0].subscribed[-1]
        assert resumed.was_recovering and resumed.recovered
        # same publications, same protocol: the delta client's link carried a fraction of the bytes
        assert relays[0].down_bytes < relays[1].down_bytes / 3, (relays[0].down_bytes, relays[1].down_bytes)
    finally:
        for client in clients:
            await client.disconnect()
        for relay in relays:
            await relay.close()
