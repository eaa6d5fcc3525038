"""A TCP relay for the fault tests (asyncio, 127.0.0.1).

``SegmentingProxy(target_port, up=..., down=...)`` listens on a free port and relays
each connection to ``target_port``. Each direction can forward what it reads in
small segments, each written on its own and followed by a small delay, the way a
real network hands data to the peer (``Segments``: random sizes in a range, or a
fixed schedule of sizes, e.g. from hypothesis). Without a ``Segments`` a direction
is relayed as read.

It can also behave like a failing network: ``accepting = False`` aborts new
connections at once (``refused`` counts them, ``wait_refused`` waits for one) and
``cut()`` aborts every open link without a FIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

MSS = 1448  # a TCP segment's payload on a 1500-byte MTU path with timestamps


@dataclass
class Segments:
    """How one direction is cut: sizes in ``[min_size, max_size]``, or ``schedule`` cycled; delays in seconds."""

    min_size: int = 1
    max_size: int = MSS
    min_delay: float = 0.0
    max_delay: float = 0.002
    schedule: Sequence[int] = ()
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _next: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError("need 1 <= min_size <= max_size")
        if any(size < 1 for size in self.schedule):
            raise ValueError("segment sizes must be at least 1")
        self._rng = random.Random(self.seed)

    def size(self) -> int:
        if self.schedule:
            size = self.schedule[self._next % len(self.schedule)]
            self._next += 1
            return size
        return self._rng.randint(self.min_size, self.max_size)

    def delay(self) -> float:
        return self._rng.uniform(self.min_delay, self.max_delay)

    def copy(self) -> Segments:
        """A fresh cutter with the same settings (each link and direction gets its own)."""
        seed = None if self.seed is None else self._rng.randrange(2**32)
        return Segments(self.min_size, self.max_size, self.min_delay, self.max_delay, self.schedule, seed)


class SegmentingProxy:
    """Relay 127.0.0.1:<port> -> 127.0.0.1:<target_port>, optionally in segments."""

    def __init__(self, target_port: int, *, up: Segments | None = None, down: Segments | None = None) -> None:
        self.target_port = target_port
        self.up = up  # client -> server
        self.down = down  # server -> client
        self.port = 0
        self.accepting = True
        self.accepted = 0
        self.refused = 0
        self.segments_sent = 0
        self._refused_changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> SegmentingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> SegmentingProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def wait_refused(self, count: int, timeout: float = 5.0) -> None:
        """Until ``refused`` reaches ``count`` (bounded)."""
        async with asyncio.timeout(timeout):
            while self.refused < count:
                self._refused_changed.clear()
                await self._refused_changed.wait()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            self.refused += 1
            self._refused_changed.set()
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        up = self.up.copy() if self.up else None
        down = self.down.copy() if self.down else None
        try:
            await asyncio.gather(self._pipe(reader, up_writer, up), self._pipe(up_reader, writer, down))
        finally:
            for link in (writer, up_writer):
                self._links.discard(link)
                link.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, cut: Segments | None) -> None:
        """Forward until EOF (passed on as a half-close) or an error (the other side is aborted)."""
        try:
            while data := await src.read(65536):
                if cut is None:
                    dst.write(data)
                    await dst.drain()
                    continue
                view = memoryview(data)
                while view:
                    size = cut.size()
                    dst.write(bytes(view[:size]))
                    view = view[size:]
                    self.segments_sent += 1
                    await dst.drain()
                    if delay := cut.delay():
                        await asyncio.sleep(delay)  # the network's pace, not a synchronisation
            if dst.can_write_eof() and not dst.transport.is_closing():
                dst.write_eof()
        except (OSError, RuntimeError):
            dst.transport.abort()

    def cut(self) -> None:
        """Abort every open link, like a network that drops (no FIN, no close frame)."""
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
