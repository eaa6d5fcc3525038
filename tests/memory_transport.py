"""An in-memory :class:`trunkline.contracts.Transport`: records what a session sends, no sockets.

Every frame the session's writer sends is kept (``frames``) and split into decoded
JSON messages (``messages``); ``close`` and ``abort`` are recorded. Waiting is on an
event that ``send`` and ``close`` set, bounded by a timeout so a missing message
fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from trunkline.contracts import TransportInfo

WAIT = 2.0  # seconds a test waits for something the session should send at once


class MemoryTransport:
    info = TransportInfo("memory")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.aborted = False
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ Transport

    async def send(self, frame: bytes) -> None:
        if self.close_code is not None or self.aborted:
            raise ConnectionError("memory transport closed")
        self.frames.append(frame)
        self.messages.extend(json.loads(line) for line in frame.split(b"\n"))
        self._changed.set()

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._changed.set()

    def abort(self) -> None:
        self.aborted = True
        self._changed.set()

    # ------------------------------------------------------------------ for tests

    @property
    def closed(self) -> bool:
        return self.close_code is not None or self.aborted

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every send or close); return its value."""
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                self._changed.clear()
                await self._changed.wait()
        return value

    async def reply(self, command_id: int, timeout: float = WAIT) -> dict[str, Any]:
        """The reply to command ``command_id``."""

        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages if m.get("id") == command_id), None)

        found: dict[str, Any] = await self.wait_for(find, timeout)
        return found

    def pushes(self, kind: str, channel: str | None = None) -> list[dict[str, Any]]:
        """The ``push`` bodies of one kind (``pub``, ``join``, ``leave``, ``unsubscribe``…) received so far."""
        return [
            m["push"]
            for m in self.messages
            if kind in m.get("push", {}) and (channel is None or m["push"].get("channel") == channel)
        ]

    async def message(self, index: int, timeout: float = WAIT) -> dict[str, Any]:
        """The ``index``-th message received (0-based), once it has arrived."""
        await self.wait_for(lambda: len(self.messages) > index, timeout)
        return self.messages[index]

    async def push(self, kind: str, channel: str | None = None, *, count: int = 1) -> dict[str, Any]:
        """Wait for the ``count``-th push of ``kind`` (on ``channel``) and return it."""
        await self.wait_for(lambda: len(self.pushes(kind, channel)) >= count)
        return self.pushes(kind, channel)[count - 1]

    async def closed_with(self, timeout: float = WAIT) -> tuple[int, str]:
        """Wait for the session to close the transport; (code, reason)."""
        await self.wait_for(lambda: self.close_code is not None, timeout)
        assert self.close_code is not None
        return self.close_code, self.close_reason
