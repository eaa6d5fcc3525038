"""The persistent sessions' tracked shapes (trunkline.mqtt.shape.Tracker): positions, holding, shared encodings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mqtt.shape import MqttShape, TopicCache, Tracker
from trunkline.mqtt.topics import TopicMapping
from trunkline.records import ClientInfo, Publication

MAPPING = TopicMapping(
    mode="namespace", prefix="", max_channel_length=255, namespace_boundary=":", user_boundary="#", private_prefix="$"
)


def pub(offset: int, data: bytes = b"x", client: str = "c") -> Publication:
    return Publication(data, info=ClientInfo("u", client), offset=offset, epoch="e")


def test_positions_are_noted_and_held_channels_keep_publications() -> None:
    topics = TopicCache(MAPPING)
    tracker = Tracker()
    shape = MqttShape(topics, 5, 1, tracker=tracker)
    assert shape.publication("a:b", pub(1))
    assert tracker.positions == {"a:b": (1, "e")}
    tracker.held["a:b"] = {}
    assert shape.publication("a:b", pub(2)) == b""  # held: not sent now
    assert shape.publication("a:b", pub(2)) == b""  # a second shape of the session: kept once
    assert list(tracker.held["a:b"]) == [2]
    assert tracker.positions == {"a:b": (1, "e")}
    # no-local still leaves the client's own publications out, but they count as seen
    own = MqttShape(topics, 5, 1, no_local="me", tracker=tracker)
    del tracker.held["a:b"]
    assert own.publication("a:b", pub(3, client="me")) == b""
    assert tracker.positions["a:b"] == (3, "e")


def test_positions_are_bounded() -> None:
    tracker = Tracker(limit=2)
    for i, channel in enumerate(("a:1", "a:2", "a:3"), 1):
        tracker.note(channel, i, "e")
    assert list(tracker.positions) == ["a:2", "a:3"] and tracker.evicted == 1


def test_tracked_shapes_share_one_encoding_per_option_set() -> None:
    topics = TopicCache(MAPPING)
    first = MqttShape(topics, 5, 1, tracker=Tracker())
    second = MqttShape(topics, 5, 1, tracker=Tracker())
    with_id = MqttShape(topics, 5, 1, subscription_id=7, tracker=Tracker())
    p = pub(1)
    a, b, c = (s.publication("a:b", p) for s in (first, second, with_id))
    assert a is b and a != c
    assert first.publication("a:b", pub(2, b"y")) != a  # the next publication is encoded anew


@settings(max_examples=200, deadline=None)
@given(
    options=st.lists(
        st.tuples(st.sampled_from([4, 5]), st.sampled_from([0, 1, 2]), st.booleans(), st.none() | st.integers(1, 9)),
        min_size=1,
        max_size=6,
    ),
    payloads=st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=4),
)
def test_tracked_encoding_equals_the_untracked_one(
    options: list[tuple[int, int, bool, int | None]], payloads: list[bytes]
) -> None:
    topics = TopicCache(MAPPING)
    for offset, data in enumerate(payloads, 1):
        p = pub(offset, data)
        for version, qos, rap, sub_id in options:
            tracked = MqttShape(topics, version, qos, rap, sub_id if version == 5 else None, tracker=Tracker())
            plain = MqttShape(TopicCache(MAPPING), version, qos, rap, sub_id if version == 5 else None)
            assert tracked.publication("a:b/c", p) == plain.publication("a:b/c", p)
