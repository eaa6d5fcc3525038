"""A connection's bounded, batched outbound buffer.

``push`` only appends bytes and wakes the writer task; everything pushed during
one event-loop turn leaves in one WebSocket frame (messages joined by ``\\n``, as
the JSON protocol allows), so a fan-out to N subscribers costs N appends plus one
write per connection per turn. When the buffered bytes pass ``max_size`` (the
client does not read), the writer stops, drops the buffer and reports the overflow
— the connection is closed with 3008 "slow" instead of growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

SendFrame = Callable[[bytes], Awaitable[None]]
MAX_FRAME = 64 * 1024


class Writer:
    __slots__ = (
        "_buf",
        "_closed",
        "_loop",
        "_max_size",
        "_on_error",
        "_on_overflow",
        "_send",
        "_size",
        "_task",
        "_wakeup",
        "bytes_sent",
        "frames_sent",
    )

    def __init__(
        self,
        send: SendFrame,
        max_size: int,
        on_overflow: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._send = send
        self._max_size = max_size
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._buf: list[bytes] = []
        self._size = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.bytes_sent = 0
        self.frames_sent = 0

    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

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
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _run(self) -> None:
        try:
            while True:
                if not self._buf:
                    if self._closed:
                        return
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                buf = self._buf
                self._buf = []
                self._size = 0
                for frame in _frames(buf):
                    await self._send(frame)
                    self.bytes_sent += len(frame)
                    self.frames_sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket failed: let the session close
            self._closed = True
            self._on_error(exc)

    async def drain_and_stop(self, timeout: float) -> None:
        """Stop accepting pushes, write what is queued (bounded by ``timeout``)."""
        self._closed = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        task = self._task
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
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _frames(messages: list[bytes]) -> list[bytes]:
    """Join messages with ``\\n`` into frames of at most ``MAX_FRAME`` bytes (or one message)."""
    if len(messages) == 1:
        return messages
    frames: list[bytes] = []
    start = 0
    size = 0
    for i, msg in enumerate(messages):
        if size and size + len(msg) + 1 > MAX_FRAME:
            frames.append(b"\n".join(messages[start:i]))
            start, size = i, 0
        size += len(msg) + 1
    frames.append(b"\n".join(messages[start:]))
    return frames
