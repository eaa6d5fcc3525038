"""A channel's stream position (NEXT / STALE / GAP) and what the hub makes of it for positioned subscribers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.hub.position import Position, Verdict
from trunkline.hub.registry import Hub
from trunkline.records import Publication

# ---------------------------------------------------------------- Position


def at(offset: int, epoch: str = "e") -> Position:
    position = Position()
    assert position.advance(offset, epoch) is Verdict.NEXT
    return position


def test_an_unknown_start_takes_the_first_publication() -> None:
    position = Position()
    assert position.offset is None
    assert not position.behind(100, "e"), "nothing known yet: nothing to be behind of"
    assert position.advance(41, "e") is Verdict.NEXT
    assert (position.offset, position.epoch) == (41, "e")


def test_the_next_offset_is_delivered() -> None:
    position = at(5)
    assert position.advance(6, "e") is Verdict.NEXT
    assert position.advance(7, "e") is Verdict.NEXT
    assert position.offset == 7


def test_an_offset_already_seen_is_stale_and_moves_nothing() -> None:
    position = at(5)
    assert position.advance(5, "e") is Verdict.STALE
    assert position.advance(1, "e") is Verdict.STALE
    assert (position.offset, position.epoch) == (5, "e")
    assert position.advance(6, "e") is Verdict.NEXT


def test_a_jump_ahead_is_a_gap_and_moves_to_it() -> None:
    position = at(5)
    assert position.advance(8, "e") is Verdict.GAP
    assert position.offset == 8
    assert position.advance(9, "e") is Verdict.NEXT


def test_another_epoch_is_a_gap_whatever_the_offset() -> None:
    for offset in (1, 5, 6, 100):
        position = at(5)
        assert position.advance(offset, "f") is Verdict.GAP
        assert (position.offset, position.epoch) == (offset, "f")


def test_behind() -> None:
    position = at(5)
    assert position.behind(6, "e")
    assert not position.behind(5, "e")
    assert not position.behind(4, "e")
    assert position.behind(5, "f")
    assert position.behind(0, "f")


def test_offsets_near_two_to_the_sixty_four() -> None:
    position = at(2**64 - 2)
    assert position.advance(2**64 - 1, "e") is Verdict.NEXT
    assert position.advance(2**63, "e") is Verdict.STALE


deliveries = st.lists(st.tuples(st.integers(1, 12), st.sampled_from(["e", "f"])), max_size=60)


@settings(max_examples=400, deadline=None)
@given(st.none() | st.tuples(st.integers(0, 12), st.sampled_from(["e", "f"])), deliveries)
def test_position_against_a_model(start: tuple[int, str] | None, sequence: list[tuple[int, str]]) -> None:
    position = Position()
    model: tuple[int, str] | None = None
    if start is not None:
        position.advance(*start)
        model = start
    for offset, epoch in sequence:
        if model is None:
            expected, model = Verdict.NEXT, (offset, epoch)
        elif epoch != model[1] or offset > model[0] + 1:
            expected, model = Verdict.GAP, (offset, epoch)
        elif offset == model[0] + 1:
            expected, model = Verdict.NEXT, (offset, epoch)
        else:
            expected = Verdict.STALE
        assert position.advance(offset, epoch) is expected
        assert (position.offset, position.epoch) == model


# ---------------------------------------------------------------- positioned subscribers in the hub


class Shape:
    def publication(self, channel: str, pub: Publication) -> bytes:
        return b"%d:%s" % (pub.offset, pub.epoch.encode())

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return kind.encode()


SHAPE = Shape()


@dataclass(eq=False)
class Sub:
    name: str
    #: (epoch, offset) the subscriber was positioned at for each of its joins, and what it received after
    runs: list[tuple[tuple[str, int], list[tuple[str, int]]]] = field(default_factory=list)

    def push(self, data: bytes) -> None:
        offset, _, epoch = data.partition(b":")
        self.runs[-1][1].append((epoch.decode(), int(offset)))

    def buffer(self, pub: Publication) -> None:
        pass


def join(hub: Hub[Sub], sub: Sub, offset: int, epoch: str) -> None:
    """As a (re)subscribe does: pending, positioned at the stream top it read, then active."""
    hub.add_pending("ch", sub, sub.buffer)
    ready, missed = hub.join_position("ch", sub, offset, epoch, lambda ok: None)
    assert ready
    assert missed == []
    hub.activate("ch", sub, SHAPE, sub.push, positioned=True)
    sub.runs.append(((epoch, offset), []))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 5), st.sampled_from(["e", "f"]), deliveries, st.integers(1, 3))
def test_positioned_subscribers_only_ever_see_a_contiguous_run(
    start: int, start_epoch: str, sequence: list[tuple[int, str]], count: int
) -> None:
    """Whatever arrives, each join sees its position + 1, + 2, … of one epoch; every gap drops them all."""
    hub: Hub[Sub] = Hub()
    subs = [Sub(str(i)) for i in range(count)]
    for sub in subs:
        join(hub, sub, start, start_epoch)
    live: list[bytes] = []
    watcher = Sub("live")
    hub.add_pending("ch", watcher, watcher.buffer)
    hub.activate("ch", watcher, SHAPE, live.append)
    model = (start, start_epoch)
    for offset, epoch in sequence:
        gap = epoch != model[1] or offset > model[0] + 1
        nxt = not gap and offset == model[0] + 1
        count_before = [sum(len(r) for _, r in s.runs) for s in subs]
        delivered, missed = hub.broadcast("ch", Publication(data=b"", offset=offset, epoch=epoch))
        assert live[-1] == b"%d:%s" % (offset, epoch.encode()), "live subscribers get everything"
        if gap:
            assert set(missed) == set(subs), "a gap returns every positioned subscriber"
            assert delivered == 1
            for sub in subs:  # they resubscribe and recover up to the new top
                join(hub, sub, offset, epoch)
            model = (offset, epoch)
        else:
            assert missed == []
            assert delivered == (1 + len(subs) if nxt else 1)
            if nxt:
                model = (offset, epoch)
        for sub, before in zip(subs, count_before, strict=True):
            after = sum(len(r) for _, r in sub.runs)
            assert after == before + (1 if nxt else 0)
        assert hub.position("ch") == model
    for sub in subs:
        for (epoch, offset), received in sub.runs:
            assert received == [(epoch, offset + k) for k in range(1, len(received) + 1)]
