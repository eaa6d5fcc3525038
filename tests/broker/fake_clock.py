"""A monotonic clock for the memory brokers that moves only when the test moves ``now``."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock moved by the test (``now``, starting at 1000.0)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
