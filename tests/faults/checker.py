"""The delivery guarantee as a pure function: received exactly once in order, or told.

Inputs are what a test observed, nothing else:

- ``acks``: the publications the server API acknowledged, each with the payload id
  the publisher put in it, and the epoch and offset from the API reply, and when
  the reply arrived (``time.monotonic()``);
- ``events``: one subscriber's events in the order its handler saw them — its
  ``subscribed`` events (position, ``was_recovering``, ``recovered``) and the
  publications it received (payload id and offset);
- ``attempted``: the ids of every publish that was sent, acknowledged or not (a
  publish whose reply was an error or a timeout may still have been applied).

:func:`replay` walks the events the way a client keeps its position and says, for
every acknowledged publication, whether the subscriber received it or was told it
may have missed it. A subscriber is *told* by a ``subscribed`` event that recovered
nothing (``was_recovering`` and not ``recovered``) or that moved it to another
epoch; it covers the acknowledged publications between the subscriber's previous
position and the new one (in an older epoch: all of them up to that event). Any
acknowledged publication that is neither received nor covered is a silent loss.
Receiving one twice, out of order, with an offset other than the API's, or from
another epoch than the subscriber's is a problem as well.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Ack:
    """A publication the server API acknowledged."""

    pid: int
    epoch: str
    offset: int
    t: float = 0.0


@dataclass(frozen=True, slots=True)
class Received:
    """A publication a subscriber's handler got."""

    pid: int
    offset: int
    t: float = 0.0


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A ``subscribed`` event and the stream position it reported."""

    epoch: str
    offset: int
    was_recovering: bool = False
    recovered: bool = False
    t: float = 0.0

    @property
    def unrecovered(self) -> bool:
        return self.was_recovering and not self.recovered


Event = Received | Subscribed


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    received: set[int] = field(default_factory=set)  # acknowledged ids received
    told: set[int] = field(default_factory=set)  # acknowledged ids covered by a subscribed event
    missing: list[Ack] = field(default_factory=list)  # acknowledged, in scope, neither received nor told
    position: tuple[str, int] | None = None  # where the subscriber stands after its events
    unrecovered: int = 0  # subscribed events that told of a possible loss

    @property
    def ok(self) -> bool:
        return not self.problems


def _ranges(offsets: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3,7"``."""
    out: list[str] = []
    start = prev = None
    for off in sorted(offsets):
        if prev is not None and off == prev + 1:
            prev = off
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = off
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


def replay(acks: Sequence[Ack], events: Sequence[Event], attempted: Collection[int] = ()) -> Outcome:
    """Account for every acknowledged publication against one subscriber's events."""
    out = Outcome()
    by_pid = {a.pid: a for a in acks}
    known = set(attempted) | by_pid.keys()
    first_ack: dict[str, float] = {}
    for a in acks:
        first_ack[a.epoch] = min(first_ack.get(a.epoch, a.t), a.t)
    subs = [e for e in events if isinstance(e, Subscribed)]
    if not subs:
        out.problems.append("never subscribed")
        out.missing = list(acks)
        return out
    if not isinstance(events[0], Subscribed):
        out.problems.append("a publication arrived before the first subscribed event")

    start = subs[0]

    def epoch_key(epoch: str, seen_at: float) -> float:
        # Epochs are ordered by when they first showed up: in an acknowledgement or
        # in this subscribed event, whichever came first.
        return min(first_ack.get(epoch, seen_at), seen_at)

    def in_scope(a: Ack) -> bool:
        if a.epoch == start.epoch:
            return a.offset > start.offset
        return first_ack.get(a.epoch, a.t) >= epoch_key(start.epoch, start.t)

    scope = [a for a in acks if in_scope(a)]
    accounted: set[int] = set()
    seen_count: dict[int, int] = {}
    epoch, offset = start.epoch, start.offset

    for index, ev in enumerate(events):
        if isinstance(ev, Subscribed):
            if ev is start:
                continue
            if not ev.was_recovering:
                out.problems.append(
                    f"event {index}: resubscribed without recovering (epoch {ev.epoch!r}, offset {ev.offset})"
                )
            if ev.recovered and ev.epoch != epoch:
                out.problems.append(f"event {index}: recovered: true across epochs ({epoch!r} -> {ev.epoch!r})")
            told = ev.unrecovered or ev.epoch != epoch
            if not told:
                continue
            out.unrecovered += 1
            key = epoch_key(ev.epoch, ev.t)
            low = offset if ev.epoch == epoch else 0
            for a in scope:
                if a.pid in accounted:
                    continue
                if a.epoch == ev.epoch:
                    covered = low < a.offset <= ev.offset
                else:
                    covered = first_ack.get(a.epoch, a.t) < key and not (a.epoch == epoch and a.offset <= offset)
                if covered:
                    accounted.add(a.pid)
                    out.told.add(a.pid)
            epoch, offset = ev.epoch, ev.offset
            continue

        seen_count[ev.pid] = seen_count.get(ev.pid, 0) + 1
        if seen_count[ev.pid] > 1:
            out.problems.append(f"event {index}: publication id {ev.pid} (offset {ev.offset}) received again")
            continue
        if ev.pid not in known:
            out.problems.append(f"event {index}: publication id {ev.pid} was never published")
            continue
        ack = by_pid.get(ev.pid)
        if ack is not None:
            if ack.offset != ev.offset:
                out.problems.append(
                    f"event {index}: id {ev.pid} arrived with offset {ev.offset}, the API acknowledged {ack.offset}"
                )
            if ack.epoch != epoch:
                out.problems.append(
                    f"event {index}: id {ev.pid} of epoch {ack.epoch!r} delivered to a subscriber positioned in "
                    f"epoch {epoch!r} without a subscribed event telling of the new epoch"
                )
        if ev.offset <= offset:
            out.problems.append(f"event {index}: offset {ev.offset} arrived after offset {offset} (out of order)")
        else:
            skipped = [
                a.offset for a in scope if a.epoch == epoch and offset < a.offset < ev.offset and a.pid not in accounted
            ]
            if skipped:
                out.problems.append(
                    f"event {index}: offset {ev.offset} delivered after {offset}; acknowledged offsets "
                    f"{_ranges(skipped)} in between were neither received nor told (silent gap)"
                )
            offset = ev.offset
        if ack is not None and ack in scope:
            accounted.add(ack.pid)
            out.received.add(ack.pid)

    out.position = (epoch, offset)
    out.missing = [a for a in scope if a.pid not in accounted]
    if out.missing:
        by_epoch: dict[str, list[int]] = {}
        for a in out.missing:
            by_epoch.setdefault(a.epoch, []).append(a.offset)
        detail = "; ".join(f"epoch {e!r}: offsets {_ranges(offs)}" for e, offs in by_epoch.items())
        out.problems.append(
            f"{len(out.missing)} acknowledged publications neither received nor told ({detail}); "
            f"the subscriber ends at epoch {epoch!r} offset {offset}"
        )
    return out


def caught_up(acks: Sequence[Ack], events: Sequence[Event]) -> bool:
    """Whether the subscriber's position has reached the last acknowledged publication."""
    if not acks:
        return True
    last = acks[-1]
    epoch: str | None = None
    offset = 0
    for ev in events:
        if isinstance(ev, Subscribed):
            if epoch is None or ev.unrecovered or ev.epoch != epoch:
                epoch, offset = ev.epoch, ev.offset
        elif ev.offset > offset:
            offset = ev.offset
    return epoch == last.epoch and offset >= last.offset
