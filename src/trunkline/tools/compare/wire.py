"""Bytes on the wire, counted at the client's TCP transport: HTTP headers, chunked and
WebSocket framing included (everything aiohttp writes to, and reads from, the socket).

:class:`CountingConnector` is an aiohttp ``TCPConnector`` whose connections wrap their
transport: every ``write``/``writelines`` and every ``data_received`` adds to one
:class:`WireCount`, shared by all the connections of one delivery mode.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler


class WireCount:
    """Bytes and HTTP requests of one delivery mode's clients."""

    __slots__ = ("connections", "received", "requests", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.requests = 0  # counted by the clients: one per HTTP request (a WebSocket upgrade is one)
        self.connections = 0  # TCP connections opened

    @property
    def total(self) -> int:
        return self.sent + self.received


class _CountingTransport:
    """Forwards everything to the real transport; counts what is written."""

    def __init__(self, transport: asyncio.Transport, count: WireCount) -> None:
        self._transport = transport
        self._count = count

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._count.sent += len(data)
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        chunks = list(chunks)
        self._count.sent += sum(len(c) for c in chunks)
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CountingHandler(ResponseHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, count: WireCount) -> None:
        super().__init__(loop=loop)
        self._wire_count = count

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._wire_count.connections += 1
        super().connection_made(_CountingTransport(transport, self._wire_count))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._wire_count.received += len(data)
        super().data_received(data)


class CountingConnector(aiohttp.TCPConnector):
    """A connector whose connections count their bytes into ``count``."""

    def __init__(self, count: WireCount, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = count
        factory = functools.partial(_CountingHandler, loop=self._loop, count=count)
        self._factory = cast("functools.partial[ResponseHandler]", factory)
