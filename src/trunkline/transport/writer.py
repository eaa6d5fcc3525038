"""A connection's bounded, batched outbound buffer.

``push`` only appends bytes. Once per event-loop turn one shared flusher writes
every connection that received something: everything pushed to a connection during
that turn leaves in one WebSocket frame (messages joined by the codec's
separator: ``\\n`` for JSON, nothing for length-prefixed Protobuf), so a fan-out
to N subscribers costs N appends plus one write per connection per turn — and no
task per connection.

The write itself is aiohttp's ``send_frame`` coroutine, started eagerly: for an
uncompressed frame it writes to the transport and returns without suspending, so
the flusher just runs it to completion in place (Python 3.11 has no eager tasks).
Only when the socket pushes back (the kernel buffer is full) does the coroutine
suspend; the rest of that frame and whatever queues meanwhile are then written by
a task that waits for the socket to drain.

When the queued bytes pass ``max_size`` (the client does not read) the writer stops,
drops its queue and reports the overflow — the connection is closed with 3008
"slow" instead of growing memory.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

from ..observe.metrics import Outbound
from .per_owner import PerOwner

SendFrame = Callable[[bytes], Coroutine[Any, Any, None]]
MAX_FRAME = 64 * 1024


class FrameSink(Protocol):
    """A synchronous way to put a whole frame on the socket (what a WebSocket offers when uncompressed).

    ``write`` frames ``payload`` and hands it to the transport at once; it returns
    False when the socket now pushes back, and then nothing more may be written
    until ``drain`` returns. It raises ``ConnectionError`` once the connection is closing.
    """

    def write(self, payload: bytes) -> bool: ...

    async def drain(self) -> None: ...


def _sink_of(send: SendFrame) -> FrameSink | None:
    """The transport's :class:`FrameSink`, if the object whose ``send`` this is offers one (``frame_sink()``)."""
    make = getattr(getattr(send, "__self__", None), "frame_sink", None)
    sink: FrameSink | None = make() if callable(make) else None
    return sink


class _Flusher:
    """Writes every writer that got data during this loop turn, once, on the next turn.

    With a ``delay`` the flush waits that long instead, so more messages share a frame
    (fewer writes under heavy fan-out, at the price of that much latency).
    """

    __slots__ = ("_delay", "_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float = 0.0) -> None:
        self._loop = weakref.ref(loop)  # weakly: the flushers are kept per loop, for as long as it lives
        self._delay = delay
        self._dirty: list[Writer] = []
        self._scheduled = False

    def mark(self, writer: Writer) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop()
        if loop is None:  # pragma: no cover - a writer outlived its loop
            return
        self._scheduled = True
        if self._delay > 0:
            loop.call_later(self._delay, self._run)
        else:
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for writer in dirty:
            writer._flush()


_flushers: PerOwner[asyncio.AbstractEventLoop, dict[float, _Flusher]] = PerOwner(dict)


def _flusher(loop: asyncio.AbstractEventLoop, delay: float) -> _Flusher:
    by_delay = _flushers(loop)
    flusher = by_delay.get(delay)
    if flusher is None:
        flusher = by_delay[delay] = _Flusher(loop, delay)
    return flusher


class Writer:
    __slots__ = (
        "_buf",
        "_closed",
        "_draining",
        "_flusher",
        "_loop",
        "_marked",
        "_max_size",
        "_on_error",
        "_on_overflow",
        "_out",
        "_sample",
        "_sampled_at",
        "_send",
        "_separator",
        "_sink",
        "_size",
        "_started",
        "bytes_sent",
        "frames_sent",
    )

    def __init__(
        self,
        send: SendFrame,
        max_size: int,
        on_overflow: Callable[[], None],
        on_error: Callable[[BaseException], None],
        counters: Outbound | None = None,
        *,
        delay: float = 0.0,
        separator: bytes = b"\n",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._send = send
        self._sink: FrameSink | None = None  # found at start(): frames then skip the coroutine of ``send``
        self._separator = separator
        self._max_size = max_size
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._buf: list[bytes] = []
        self._size = 0
        self._closed = False
        self._started = False
        self._marked = False
        self._loop = loop or asyncio.get_running_loop()
        self._flusher = _flusher(self._loop, delay)
        self._draining: asyncio.Task[None] | None = None
        self.bytes_sent = 0
        self.frames_sent = 0
        self._out = counters if counters is not None else Outbound()
        self._sampled_at = 0.0  # perf_counter() at which a sampled publication now queued entered the node
        self._sample = 0.0  # the same, once taken for writing

    def sample(self, entered: float) -> None:
        """Time the message just pushed: report its publish-to-write latency once it is written."""
        if not self._sampled_at and self._buf:
            self._sampled_at = entered

    def start(self) -> None:
        self._sink = _sink_of(self._send)
        self._started = True
        if self._buf:
            self._mark()

    @property
    def buffered(self) -> int:
        """Bytes waiting to be written."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, data: bytes) -> None:
        """Queue one encoded message. Never blocks, never raises."""
        if self._closed:
            return
        self._buf.append(data)
        self._size += len(data)
        if self._size > self._max_size:
            self._closed = True
            self._buf = []
            self._size = 0
            self._loop.call_soon(self._on_overflow)
            return
        if not self._marked and self._started and self._draining is None:
            self._marked = True
            flusher = self._flusher  # Flusher.mark, inlined: this runs once per delivery
            flusher._dirty.append(self)
            if not flusher._scheduled:
                flusher._schedule()

    def _mark(self) -> None:
        self._marked = True
        self._flusher.mark(self)

    def _take(self) -> list[bytes]:
        buf = self._buf
        if not buf:
            return []
        self._buf = []
        self._size = 0
        self._out.messages += len(buf)
        self._sample = self._sampled_at
        self._sampled_at = 0.0
        return _frames(buf, self._separator)

    def _written(self) -> None:
        """Everything taken has been written: report the sampled latency, if any."""
        if self._sample:
            self._out.observe_write(time.perf_counter() - self._sample)
            self._sample = 0.0

    def _flush(self) -> None:
        """Write what is queued, in place unless the socket pushes back."""
        self._marked = False
        if self._draining is not None:
            return
        sink = self._sink
        if sink is not None:
            buf = self._buf
            if len(buf) == 1:  # the common case under fan-out: one message this turn, written in place
                self._write_one(sink, buf[0])
            elif buf:
                self._flush_to(sink, self._take())
            return
        frames = self._take()
        for i, frame in enumerate(frames):
            coro = self._send(frame)
            try:
                pending = _step(coro)
            except StopIteration:
                size = len(frame)
                self.bytes_sent += size
                self.frames_sent += 1
                out = self._out
                out.bytes += size
                out.frames += 1
                continue
            except Exception as exc:
                self._fail(exc)
                return
            self._draining = self._loop.create_task(self._drain(coro, pending, frames[i:]))
            return
        self._written()

    def _write_one(self, sink: FrameSink, data: bytes) -> None:
        """:meth:`_take` + :meth:`_flush_to` for a single message, with no list made (fewer GC runs)."""
        self._buf.clear()
        self._size = 0
        out = self._out
        out.messages += 1
        try:
            flowing = sink.write(data)
        except Exception as exc:
            self._fail(exc)
            return
        size = len(data)
        self.bytes_sent += size
        self.frames_sent += 1
        out.bytes += size
        out.frames += 1
        if self._sampled_at:
            out.observe_write(time.perf_counter() - self._sampled_at)
            self._sampled_at = 0.0
        if not flowing:
            self._draining = self._loop.create_task(self._drain_sink(sink, []))

    def _flush_to(self, sink: FrameSink, frames: list[bytes]) -> None:
        """Write ``frames`` straight to the socket; once it pushes back, a task writes the rest after a drain."""
        for i, frame in enumerate(frames):
            try:
                flowing = sink.write(frame)
            except Exception as exc:
                self._fail(exc)
                return
            self._account(frame)
            if not flowing:
                self._draining = self._loop.create_task(self._drain_sink(sink, frames[i + 1 :]))
                return
        self._written()

    async def _drain_sink(self, sink: FrameSink, frames: list[bytes]) -> None:
        """Wait for the socket, write what is left and what queued meanwhile, until nothing is queued."""
        try:
            while True:
                await sink.drain()
                for frame in frames:
                    flowing = sink.write(frame)
                    self._account(frame)
                    if not flowing:
                        await sink.drain()
                self._written()
                frames = self._take()
                if not frames:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._draining = None

    async def _drain(self, coro: Coroutine[Any, Any, None], pending: Any, frames: list[bytes]) -> None:
        """Finish a suspended write, then keep writing until nothing is queued."""
        try:
            await _resume(coro, pending)
            self._account(frames[0])
            for frame in frames[1:]:
                await self._send(frame)
                self._account(frame)
            self._written()
            while frames := self._take():
                for frame in frames:
                    await self._send(frame)
                    self._account(frame)
                self._written()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._draining = None

    def _account(self, frame: bytes) -> None:
        size = len(frame)
        self.bytes_sent += size
        self.frames_sent += 1
        out = self._out
        out.bytes += size
        out.frames += 1

    def _fail(self, exc: BaseException) -> None:
        self._closed = True
        self._buf = []
        self._size = 0
        self._on_error(exc)

    async def drain_and_stop(self, timeout: float) -> None:
        """Stop accepting pushes, write what is queued (bounded by ``timeout``)."""
        self._closed = True
        if self._draining is None and self._buf:
            self._flush()
        task = self._draining
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()

    def abort(self) -> None:
        """Stop at once, dropping whatever is queued."""
        self._closed = True
        self._buf = []
        self._size = 0
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()


def _step(coro: Coroutine[Any, Any, None]) -> Any:
    """Run ``coro`` until it suspends (returns what it waits on) or finishes (StopIteration)."""
    try:
        return coro.send(None)
    except BaseException:
        coro.close()
        raise


async def _resume(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    """Continue a coroutine started by :func:`_step` that suspended on ``pending``."""
    while True:
        try:
            if pending is None:
                await asyncio.sleep(0)
            else:
                await _Wait(pending)
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            pending = coro.send(None)
        except StopIteration:
            return


class _Wait:
    """Await a future that a coroutine yielded, on that coroutine's behalf."""

    __slots__ = ("_fut",)

    def __init__(self, fut: Any) -> None:
        self._fut = fut

    def __await__(self) -> Generator[Any, None, None]:
        if not self._fut.done():
            yield self._fut
        if self._fut.cancelled():
            raise asyncio.CancelledError
        exc = self._fut.exception()
        if exc is not None:
            raise exc


def _frames(messages: list[bytes], separator: bytes = b"\n") -> list[bytes]:
    """Join messages into frames of at most ``MAX_FRAME`` bytes (or one message).

    ``separator`` comes from the codec: ``\n`` for JSON lines, nothing for
    Protobuf's length-prefixed messages.
    """
    if len(messages) == 1:
        return messages
    frames: list[bytes] = []
    start = 0
    size = 0
    extra = len(separator)
    for i, msg in enumerate(messages):
        if size and size + len(msg) + extra > MAX_FRAME:
            frames.append(separator.join(messages[start:i]))
            start, size = i, 0
        size += len(msg) + extra
    frames.append(separator.join(messages[start:]))
    return frames
