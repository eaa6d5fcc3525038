"""Recovery decisions (reference §4.5): a gap is never reported as recovered."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trunkline.broker.base import Publication, StreamPosition
from trunkline.hub.recovery import Recovery, decide, live_after


def pubs(*offsets: int, epoch: str = "e") -> list[Publication]:
    return [Publication(data=b'{"data":%d}' % o, offset=o, epoch=epoch if o else "") for o in offsets]


def offsets(items: list[Publication] | None) -> list[int] | None:
    return None if items is None else [p.offset for p in items]


# ---------------------------------------------------------------- decide


def test_missed_publications_are_recovered() -> None:
    history = pubs(7, 8)
    assert decide(StreamPosition(6, "ab12"), history, StreamPosition(8, "ab12")) == Recovery(True, history)


def test_epoch_change_is_not_recovered() -> None:
    history = pubs(7, 8)
    assert decide(StreamPosition(6, "old"), history, StreamPosition(8, "new")) == Recovery(False, [])


def test_epoch_change_with_nothing_missed_is_not_recovered() -> None:
    assert decide(StreamPosition(8, "old"), [], StreamPosition(8, "new")) == Recovery(False, [])


def test_empty_client_epoch_skips_the_epoch_check() -> None:
    history = pubs(3)
    assert decide(StreamPosition(2, ""), history, StreamPosition(3, "e")) == Recovery(True, history)
    assert decide(StreamPosition(3, ""), [], StreamPosition(3, "e")) == Recovery(True, [])


def test_gap_at_start_is_not_recovered() -> None:
    # The client saw 6; history only starts at 8 (7 was trimmed).
    assert decide(StreamPosition(6, "e"), pubs(8, 9), StreamPosition(9, "e")) == Recovery(False, [])


def test_trimmed_history_is_not_recovered() -> None:
    # history_size 2: the client at 1 missed 2..5, only 4 and 5 are left.
    assert decide(StreamPosition(1, "e"), pubs(4, 5), StreamPosition(5, "e")) == Recovery(False, [])


def test_history_cut_by_the_limit_is_not_recovered() -> None:
    # recovery_max_publication_limit returned 7..9 of 7..12.
    assert decide(StreamPosition(6, "e"), pubs(7, 8, 9), StreamPosition(12, "e")) == Recovery(False, [])


def test_hole_in_the_middle_is_not_recovered() -> None:
    assert decide(StreamPosition(6, "e"), pubs(7, 9), StreamPosition(9, "e")) == Recovery(False, [])


def test_duplicate_or_unordered_history_is_not_recovered() -> None:
    assert decide(StreamPosition(6, "e"), pubs(7, 7, 8), StreamPosition(8, "e")).recovered is False
    assert decide(StreamPosition(6, "e"), pubs(8, 7), StreamPosition(8, "e")).recovered is False


def test_empty_history_with_equal_top_is_recovered() -> None:
    assert decide(StreamPosition(8, "e"), [], StreamPosition(8, "e")) == Recovery(True, [])
    assert decide(StreamPosition(0, "e"), [], StreamPosition(0, "e")) == Recovery(True, [])


def test_empty_history_with_different_top_is_not_recovered() -> None:
    # Everything after 3 expired (ttl) while the stream moved on to 8.
    assert decide(StreamPosition(3, "e"), [], StreamPosition(8, "e")) == Recovery(False, [])
    # A client ahead of the stream (e.g. a reset without an epoch change).
    assert decide(StreamPosition(9, "e"), [], StreamPosition(8, "e")) == Recovery(False, [])


def test_history_beyond_the_top_is_not_recovered() -> None:
    assert decide(StreamPosition(6, "e"), pubs(7, 8, 9), StreamPosition(8, "e")).recovered is False


# ---------------------------------------------------------------- live_after


def test_live_after_drops_what_recovery_already_delivered() -> None:
    assert offsets(live_after(pubs(7, 8, 9, 10), 8)) == [9, 10]


def test_live_after_drops_duplicates() -> None:
    assert offsets(live_after(pubs(9, 9, 10, 10, 11), 8)) == [9, 10, 11]


def test_live_after_detects_a_hole() -> None:
    assert live_after(pubs(10), 8) is None
    assert live_after(pubs(9, 11), 8) is None


def test_live_after_keeps_publications_without_offset() -> None:
    assert offsets(live_after(pubs(0, 9, 0, 10), 8)) == [0, 9, 0, 10]
    assert offsets(live_after(pubs(0, 0), 5)) == [0, 0]


def test_live_after_with_nothing_buffered() -> None:
    assert live_after([], 8) == []


def test_live_after_keeps_the_exact_objects() -> None:
    buffered = pubs(8, 9)
    out = live_after(buffered, 8)
    assert out is not None
    assert out[0] is buffered[1]


@pytest.mark.parametrize("offset", [2**63 - 1, 2**63, 2**64 - 1])
def test_a_client_far_ahead_of_the_stream_is_not_recovered(offset: int) -> None:
    """Issue 9 item 10: any uint64 position gets an answer; one the stream never reached is not recovered."""
    assert decide(StreamPosition(offset, "e"), [], StreamPosition(8, "e")) == Recovery(False, [])
    assert decide(StreamPosition(offset, ""), [], StreamPosition(0, "e")) == Recovery(False, [])
    assert decide(StreamPosition(offset - 1, "e"), pubs(offset), StreamPosition(offset, "e")) == Recovery(
        True, pubs(offset)
    ), "offsets are plain integers: no overflow near 2**64"


def test_recovered_publications_keep_their_records() -> None:
    history = [Publication(data=b"x", tags={"k": "v"}, time=7, offset=7, epoch="e")]
    result = decide(StreamPosition(6, "e"), history, StreamPosition(7, "e"))
    assert result.recovered
    assert result.publications[0] is history[0]


# ---------------------------------------------------------------- properties


@st.composite
def streams(draw: st.DrawFn) -> tuple[StreamPosition, list[Publication], StreamPosition]:
    """A stream with top T whose history keeps a window; a client somewhere; a broker read after it."""
    top = draw(st.integers(0, 60))
    kept = draw(st.integers(0, top))  # history_size / ttl trimming
    first = top - kept + 1
    position = draw(st.integers(0, top + 3))
    epoch = draw(st.sampled_from(["e", "", "old"]))
    limit = draw(st.none() | st.integers(0, 70))  # recovery_max_publication_limit
    after = [o for o in range(first, top + 1) if o > position]
    if limit is not None:
        after = after[:limit]
    return StreamPosition(position, epoch), pubs(*after), StreamPosition(top, "e")


@settings(max_examples=400, deadline=None)
@given(streams())
def test_recovered_exactly_when_nothing_is_missing(
    case: tuple[StreamPosition, list[Publication], StreamPosition],
) -> None:
    since, history, top = case
    result = decide(since, history, top)
    # A client ahead of the stream has not seen what the stream says; never "recovered".
    complete = since.offset <= top.offset and offsets(history) == list(range(since.offset + 1, top.offset + 1))
    epoch_ok = since.epoch in ("", top.epoch)
    assert result.recovered is (complete and epoch_ok)
    if result.recovered:
        assert offsets(result.publications) == list(range(since.offset + 1, top.offset + 1))
        assert result.publications == history
    else:
        assert result.publications == []


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 30),
    st.lists(st.integers(0, 40), max_size=12),
    st.integers(0, 40),
    st.sampled_from(["e", "", "x"]),
)
def test_arbitrary_history_is_recovered_only_without_gaps(
    position: int, history_offsets: list[int], top: int, epoch: str
) -> None:
    """Whatever a (possibly buggy) broker returns, a recovered result is exactly position+1..top."""
    history = pubs(*history_offsets)
    result = decide(StreamPosition(position, epoch), history, StreamPosition(top, "e"))
    if result.recovered:
        assert epoch in ("", "e")
        assert offsets(result.publications) == list(range(position + 1, top + 1))
    else:
        assert result.publications == []


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 20), st.lists(st.integers(0, 30), max_size=15))
def test_live_after_continues_the_position_without_holes(last: int, buffered_offsets: list[int]) -> None:
    buffered = pubs(*buffered_offsets)
    out = live_after(buffered, last)
    positioned = [o for o in buffered_offsets if o]
    if out is None:
        # There is an offset that cannot follow what was delivered so far.
        assume(positioned)
        seen = last
        hole = False
        for o in positioned:
            if o > seen + 1:
                hole = True
                break
            seen = max(seen, o)
        assert hole
        return
    got = [p.offset for p in out if p.offset]
    assert got == list(range(last + 1, last + 1 + len(got)))
    assert [p.offset for p in out if not p.offset] == [o for o in buffered_offsets if not o]
    # Nothing newer than the client's position is dropped.
    assert set(got) == {o for o in positioned if o > last}
