"""A middlebox that breaks WebSocket: a TCP relay that refuses every Upgrade request.

Corporate proxies and some carriers answer the WebSocket handshake with an error and let
plain HTTP through. ``UpgradeBlockingProxy`` does the same on 127.0.0.1: it reads the head
of the first request on each connection (browsers open a fresh connection for every
WebSocket), answers ``403`` when it asks for ``Upgrade: websocket`` and otherwise relays the
bytes both ways untouched. The ``Host`` header is relayed as sent, so a page loaded through
the proxy is same-origin for the server behind it.
"""

from __future__ import annotations

import asyncio
import contextlib

MAX_HEAD = 65536  # bytes of request head read before relaying; more is refused
REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
    b"WebSocket blocked here.\n"
)


class UpgradeBlockingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refused = 0  # WebSocket handshakes answered with 403
        self.relayed = 0  # connections relayed to the server
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> UpgradeBlockingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                return
            if len(head) > MAX_HEAD:
                return
            lines = [line.strip().lower() for line in head.split(b"\r\n")]
            if b"upgrade: websocket" in lines:
                self.refused += 1
                writer.write(REFUSAL)
                with contextlib.suppress(OSError):
                    await writer.drain()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self.relayed += 1
            self._links.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            self._links.discard(up_writer)
        finally:
            self._links.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
