"""The delivery checker fails on every silent loss, duplicate and reordering, and accepts honest reports."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.faults.checker import Ack, Event, Received, Subscribed, caught_up, replay

E1, E2 = "epoch-one", "epoch-two"


def acks(n: int, epoch: str = E1, first: int = 1, pid0: int = 0, t0: float = 10.0) -> list[Ack]:
    return [Ack(pid0 + i, epoch, first + i, t0 + i) for i in range(n)]


def got(items: list[Ack]) -> list[Event]:
    return [Received(a.pid, a.offset) for a in items]


START: Subscribed = Subscribed(E1, 0, t=1.0)


def test_everything_received_in_order_passes() -> None:
    log = acks(10)
    out = replay(log, [START, *got(log)])
    assert out.ok, out.problems
    assert len(out.received) == 10
    assert caught_up(log, [START, *got(log)])


def test_a_silent_gap_fails() -> None:
    log = acks(10)
    events = [START, *got(log[:4]), *got(log[6:])]
    out = replay(log, events)
    assert not out.ok
    assert any("silent gap" in p and "5-6" in p for p in out.problems), out.problems
    assert [a.offset for a in out.missing] == [5, 6]
    assert caught_up(log, events), "caught up (the position is at the top) but not complete"


def test_a_missing_tail_fails_and_is_not_caught_up() -> None:
    log = acks(10)
    events = [START, *got(log[:7])]
    out = replay(log, events)
    assert [a.offset for a in out.missing] == [8, 9, 10]
    assert any("neither received nor told" in p for p in out.problems)
    assert not caught_up(log, events)


def test_a_duplicate_fails() -> None:
    log = acks(5)
    out = replay(log, [START, *got(log[:3]), Received(log[2].pid, 3), *got(log[3:])])
    assert any("received again" in p for p in out.problems), out.problems


def test_out_of_order_fails() -> None:
    log = acks(5)
    out = replay(log, [START, *got([log[0], log[2], log[1], log[3], log[4]])])
    assert any("out of order" in p for p in out.problems), out.problems


def test_an_offset_other_than_the_acknowledged_one_fails() -> None:
    log = acks(3)
    out = replay(log, [START, Received(0, 1), Received(1, 7), Received(2, 8)])
    assert any("the API acknowledged 2" in p for p in out.problems), out.problems


def test_recovered_false_covers_what_it_skips() -> None:
    log = acks(10)
    told = Subscribed(E1, 7, was_recovering=True, recovered=False, t=30.0)
    out = replay(log, [START, *got(log[:3]), told, *got(log[7:])])
    assert out.ok, out.problems
    assert {log[i].pid for i in range(3, 7)} == out.told
    assert out.unrecovered == 1


def test_recovered_false_does_not_cover_later_publications() -> None:
    log = acks(10)
    told = Subscribed(E1, 5, was_recovering=True, recovered=False, t=30.0)
    out = replay(log, [START, *got(log[:3]), told, *got(log[8:])])
    assert [a.offset for a in out.missing] == [6, 7, 8]
    assert any("silent gap" in p for p in out.problems)


def test_recovered_true_after_a_gap_fails() -> None:
    """Issue 9 item 1: the publication after the gap reached the client, then it 'recovered' from there."""
    log = acks(10)
    again = Subscribed(E1, 10, was_recovering=True, recovered=True, t=30.0)
    out = replay(log, [START, *got(log[:3]), *got(log[5:7]), again, *got(log[7:])])
    assert [a.offset for a in out.missing] == [4, 5]
    assert any("silent gap" in p for p in out.problems)


def test_recovery_that_replays_the_gap_passes() -> None:
    log = acks(10)
    again = Subscribed(E1, 10, was_recovering=True, recovered=True, t=30.0)
    out = replay(log, [START, *got(log[:3]), again, *got(log[3:])])
    assert out.ok, out.problems


def test_a_new_epoch_covers_the_old_one() -> None:
    old = acks(6)
    new = acks(5, epoch=E2, pid0=100, t0=50.0)
    told = Subscribed(E2, 2, was_recovering=True, recovered=False, t=52.5)
    events = [START, *got(old[:3]), told, *got(new[2:])]
    out = replay(old + new, events)
    assert out.ok, out.problems
    assert out.told == {3, 4, 5, 100, 101}
    assert caught_up(old + new, events)


def test_a_new_epoch_does_not_cover_what_its_position_does_not_include() -> None:
    old = acks(3)
    new = acks(5, epoch=E2, pid0=100, t0=50.0)
    told = Subscribed(E2, 1, was_recovering=True, recovered=False, t=51.5)
    out = replay(old + new, [START, *got(old), told, *got(new[3:])])
    assert [(a.epoch, a.offset) for a in out.missing] == [(E2, 2), (E2, 3)]


def test_a_publication_of_another_epoch_without_being_told_fails() -> None:
    old = acks(3)
    new = acks(3, epoch=E2, pid0=100, t0=50.0)
    out = replay(old + new, [START, *got(old), *got(new)])
    assert any("without a subscribed event telling of the new epoch" in p for p in out.problems), out.problems


def test_unacknowledged_publications_may_arrive_unknown_ones_may_not() -> None:
    log = acks(3)
    late = Ack(50, E1, 4)  # the API answered with an error, Redis applied it anyway
    after = Ack(51, E1, 5, 20.0)
    out = replay([*log, after], [START, *got(log), Received(late.pid, 4), Received(after.pid, 5)], attempted={50})
    assert out.ok, out.problems
    out = replay([*log, after], [START, *got(log), Received(99, 4), Received(after.pid, 5)], attempted={50})
    assert any("never published" in p for p in out.problems)


def test_publications_before_the_subscribe_are_out_of_scope() -> None:
    log = acks(10)
    start = Subscribed(E1, 4, t=13.5)
    out = replay(log, [start, *got(log[4:])])
    assert out.ok, out.problems


def test_never_subscribed_fails() -> None:
    assert not replay(acks(2), []).ok


def test_resubscribing_without_recovery_fails() -> None:
    log = acks(4)
    out = replay(log, [START, *got(log[:2]), Subscribed(E1, 4, t=30.0), *got(log[2:])])
    assert any("without recovering" in p for p in out.problems)


@settings(max_examples=60, deadline=None, database=None)
@given(
    n=st.integers(2, 40),
    data=st.data(),
)
def test_dropping_any_publication_is_always_caught(n: int, data: st.DataObject) -> None:
    """Delete one or more received publications at random (without a told event): the check always fails."""
    log = acks(n)
    drop = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))
    events: list[Event] = [START, *got([a for i, a in enumerate(log) if i not in drop])]
    out = replay(log, events)
    assert not out.ok
    assert {log[i].pid for i in drop} == {a.pid for a in out.missing}


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(2, 40), data=st.data())
def test_an_unrecovered_report_anywhere_keeps_the_check_green(n: int, data: st.DataObject) -> None:
    """A gap followed by an honest recovered: false at the stream top passes, wherever it is."""
    log = acks(n)
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo, n))
    told = Subscribed(E1, hi, was_recovering=True, recovered=False, t=100.0)
    events: list[Event] = [START, *got(log[:lo]), told, *got(log[hi:])]
    assert replay(log, events).ok
