"""Where a channel's positioned subscribers stand in its stream (pure, no I/O).

Every positioned subscriber of a channel on this node has received the same
publications, so one position per channel says where all of them are. Each
publication from the broker is checked against it before it reaches them:

- the next offset of the same epoch is delivered (``NEXT``);
- an offset at or below the position is one they already have (``STALE``): it
  arrived late, after a subscriber joined from a newer stream top;
- a jump ahead, or another epoch, means publications were lost on the way
  (``GAP``): none of the positioned subscribers may receive it, they must
  resubscribe and recover (2500) — a publication after a gap never reaches a
  client positioned before it.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    NEXT = 1
    STALE = 2
    GAP = 3


class Position:
    """The stream position of a channel's positioned subscribers (``offset`` None: not known yet)."""

    __slots__ = ("epoch", "offset")

    def __init__(self) -> None:
        self.offset: int | None = None
        self.epoch = ""

    def advance(self, offset: int, epoch: str) -> Verdict:
        """Account for a publication with this offset and epoch."""
        current = self.offset
        if current is None:
            self.offset, self.epoch = offset, epoch
            return Verdict.NEXT
        if epoch != self.epoch:
            self.offset, self.epoch = offset, epoch
            return Verdict.GAP
        if offset == current + 1:
            self.offset = offset
            return Verdict.NEXT
        if offset <= current:
            return Verdict.STALE
        self.offset = offset
        return Verdict.GAP

    def behind(self, offset: int, epoch: str) -> bool:
        """Whether a stream top of ``offset``/``epoch`` is past what subscribers have seen."""
        return self.offset is not None and (epoch != self.epoch or offset > self.offset)
