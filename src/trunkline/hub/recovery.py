"""Recovery decisions (reference §4.5): pure functions, no I/O.

Given what a client last saw (offset, epoch) and a history snapshot, decide which
publications to replay, or report that the position cannot be recovered. A gap is
never reported as recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from ..broker.base import Publication, StreamPosition


@dataclass(frozen=True, slots=True)
class Recovery:
    recovered: bool
    publications: list[Publication]


def decide(since: StreamPosition, history: list[Publication], top: StreamPosition) -> Recovery:
    """Decide recovery from ``since`` given the publications after it and the stream top."""
    if since.epoch and since.epoch != top.epoch:
        return Recovery(False, [])
    if not history:
        return Recovery(top.offset == since.offset, [])
    contiguous = history[0].offset == since.offset + 1 and history[-1].offset == top.offset
    contiguous = contiguous and all(b.offset == a.offset + 1 for a, b in pairwise(history))
    return Recovery(True, history) if contiguous else Recovery(False, [])


def live_after(buffered: list[Publication], last: int) -> list[Publication] | None:
    """Buffered live publications the client still needs after position ``last``.

    Publications at or below ``last`` were already delivered (by recovery) and are
    dropped; the rest must continue ``last`` without a hole, else ``None``
    (insufficient state). Publications without offset (no history) are all kept.
    """
    out: list[Publication] = []
    for pub in buffered:
        if pub.offset == 0:
            out.append(pub)
            continue
        if pub.offset <= last:
            continue
        if pub.offset != last + 1:
            return None
        out.append(pub)
        last = pub.offset
    return out
