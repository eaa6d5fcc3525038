"""A :class:`trunkline.clock.Clock` that moves only when a test says so.

``advance(seconds)`` moves wall and monotonic time together and runs every timer
that falls due on the way, in due order (timers armed by a callback run too if
they fall within the step). Callbacks run synchronously inside ``advance``; what
they schedule on the event loop (a session's ``node.spawn(close(...))``) runs
when the test next awaits.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class ManualTimer:
    due: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Wall time starts at ``wall`` (default: the real ``time.time()``), monotonic time at ``monotonic``."""

    def __init__(self, wall: float | None = None, *, monotonic: float = 1000.0) -> None:
        self._wall = time.time() if wall is None else wall
        self._mono = monotonic
        self._timers: list[ManualTimer] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[[], object]) -> ManualTimer:
        timer = ManualTimer(self._mono + max(delay, 0.0), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running the timers that fall due, in order."""
        if seconds < 0:
            raise ValueError("time does not go back")
        target = self._mono + seconds
        while self._timers and self._timers[0].due <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._step_to(timer.due)
            timer.callback()
        self._step_to(target)

    def pending(self) -> list[float]:
        """Seconds from now until each armed (not cancelled) timer, soonest first."""
        return sorted(t.due - self._mono for t in self._timers if not t.cancelled)

    def _step_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += mono - self._mono
            self._mono = mono
