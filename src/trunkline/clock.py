"""Time as the engine sees it: wall time, a monotonic clock and timers, injectable.

Sessions and the node read time and arm timers only through a :class:`Clock`, so
tests can drive heartbeats, expiry and rate limits with a manual clock instead of
sleeping. :class:`LoopClock` is the real one (the running asyncio loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock Unix time in seconds (token expiry)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (rate limits)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` after ``delay`` seconds."""


class LoopClock:
    """The real clock: ``time.time`` and the running event loop's timers."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()  # not the loop's time(): on 3.11 finding the running loop is a getpid() call

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


REAL_CLOCK = LoopClock()
