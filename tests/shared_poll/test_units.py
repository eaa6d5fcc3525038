"""The shared-poll cores without sockets: signatures, the refresh answer parser, the per-channel state.

Hypothesis against both parsers (garbage gets a documented error, nothing else) and a model of
the tracking state (its indexes agree whatever the order of tracks, untracks, answers and drops).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.auth.track_signature import GRACE, BadSignature, SignatureExpired, TrackKeys, sign, verify
from trunkline.errors import ClientError
from trunkline.hub.shared_poll import LimitExceeded, PollChannel, PolledItem
from trunkline.proxy.shared_poll import parse_refresh, refresh_request
from trunkline.proxy.wire import InvalidAnswer

KEYS = TrackKeys("secret")
NOW = 1_700_000_000


def test_sign_and_verify_round_trip() -> None:
    sig = sign("secret", user="42", channel="c", keys=["a", "b"], iat=NOW, exp=NOW + 60)
    assert verify(KEYS, sig, user="42", channel="c", items=["a", "b"], now=NOW) == NOW + 60
    assert verify(KEYS, sig, user="42", channel="c", items=["a", "b"], now=NOW + 60 + GRACE) == NOW + 60
    with pytest.raises(SignatureExpired):
        verify(KEYS, sig, user="42", channel="c", items=["a", "b"], now=NOW + 61 + GRACE)
    with pytest.raises(BadSignature):
        verify(KEYS, sig, user="42", channel="c", items=["a"], now=NOW)
    # the keys are NUL-joined: ["a\0b"] hashes as ["a", "b"] (so the track command refuses NUL in keys)
    assert verify(KEYS, sig, user="42", channel="c", items=["a\x00b"], now=NOW)
    with pytest.raises(BadSignature):
        verify(TrackKeys(""), sig, user="42", channel="c", items=["a", "b"], now=NOW)
    rotated = TrackKeys("new", previous="secret", previous_valid_until=NOW + 5)
    assert verify(rotated, sig, user="42", channel="c", items=["a", "b"], now=NOW + 5)
    with pytest.raises(BadSignature):
        verify(rotated, sig, user="42", channel="c", items=["a", "b"], now=NOW + 6)


@given(st.text(max_size=300), st.text(max_size=20), st.lists(st.text(max_size=10), max_size=4))
def test_verify_answers_garbage_with_its_two_errors(signature: str, user: str, keys: list[str]) -> None:
    try:
        verify(KEYS, signature, user=user, channel="c", items=keys, now=NOW)
    except (BadSignature, SignatureExpired):
        return
    raise AssertionError(f"accepted {signature!r}")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_item = st.fixed_dictionaries(
    {"key": st.text(max_size=8)},
    optional={"data": _json, "version": st.integers(), "removed": _json, "prev_data": _json},
)
_answer = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "result": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {}, optional={"items": st.one_of(_json, st.lists(_item, max_size=4)), "epoch": _json}
                ),
            )
        },
    ),
    st.fixed_dictionaries({"error": st.one_of(_json, st.fixed_dictionaries({"code": st.integers()}))}),
)


@given(st.one_of(_answer.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)))
@settings(max_examples=150)
def test_parse_refresh_answers_anything_with_items_or_a_documented_error(body: bytes) -> None:
    try:
        items, epoch = parse_refresh(body)
    except (InvalidAnswer, ClientError):
        return
    assert isinstance(epoch, str)
    for item in items:
        assert isinstance(item.key, str) and 0 <= item.version < 2**64
        assert item.data is None or json.loads(item.data) is not None or item.data == b"null"


def test_refresh_request_shape() -> None:
    body = json.loads(refresh_request("c", [("a", 0), ("b", 5)], versioned=True))
    assert body == {"channel": "c", "items": [{"key": "a"}, {"key": "b", "version": 5}]}
    assert json.loads(refresh_request("c", [("b", 5)], versioned=False)) == {"channel": "c", "items": [{"key": "b"}]}


def test_versionless_changes_by_content_and_removals() -> None:
    ch: PollChannel[str] = PollChannel(versioned=False, max_keys=10, max_keys_per_connection=10)
    assert ch.track("c1", "k", 0) is True and ch.track("c2", "k", 0) is False
    changes, reset = ch.apply([PolledItem("k", b"1")])
    assert not reset and [(c.key, c.version, c.data, sorted(c.targets)) for c in changes] == [
        ("k", 1, b"1", ["c1", "c2"])
    ]
    assert ch.apply([PolledItem("k", b"1")]) == ([], False)  # same content: nothing
    assert ch.apply([PolledItem("other", b"1")]) == ([], False)  # not tracked: ignored
    (change,), _ = ch.apply([PolledItem("k", b"2")])
    assert change.version == 2
    ch.track("c3", "k", 0)
    assert [(c.key, c.data, c.targets) for c in ch.cached("c3", ["k"])] == [("k", b"2", ("c3",))]
    (removal,), _ = ch.apply([PolledItem("k", removed=True)])
    assert removal.removed and sorted(removal.targets) == ["c1", "c2", "c3"] and ch.keys() == [] and ch.by_conn == {}


def test_versioned_changes_by_version_and_epoch_resets() -> None:
    ch: PollChannel[str] = PollChannel(versioned=True, max_keys=10, max_keys_per_connection=10)
    ch.track("c1", "k", 0)
    (change,), _ = ch.apply([PolledItem("k", b"a", 3)], epoch="e1")
    assert change.version == 3 and ch.epoch == "e1"
    assert ch.apply([PolledItem("k", b"b", 3)], "e1") == ([], False)  # same version
    assert ch.apply([PolledItem("k", None, 9)], "e1") == ([], False)  # no data: unchanged
    assert ch.apply([PolledItem("k", b"c", 4)], "")[0][0].version == 4  # "" never resets
    assert ch.apply([PolledItem("k", b"d", 1)], "e2") == ([], True)  # a new epoch: reset
    assert ch.apply([PolledItem("k", b"d", 1)], "e2")[0][0].version == 1
    assert ch.publish("k", 1, b"x") is None and ch.publish("k", 2, b"x") is not None
    assert ch.poll_items() == []  # fresh from the publish: skipped once
    assert ch.poll_items() == [("k", 2)]


def test_limits() -> None:
    ch: PollChannel[str] = PollChannel(versioned=False, max_keys=3, max_keys_per_connection=2)
    ch.check_room("c1", ["a", "b"])
    with pytest.raises(LimitExceeded):
        ch.check_room("c1", ["a", "b", "c"])
    for k in ("a", "b"):
        ch.track("c1", k, 0)
    ch.check_room("c1", ["a", "b"])  # already tracked keys do not count twice
    ch.check_room("c2", ["a", "c"])
    with pytest.raises(LimitExceeded):
        ch.check_room("c2", ["c", "d"])  # the channel would hold 4 distinct keys


_ops = st.lists(
    st.tuples(
        st.sampled_from(["track", "untrack", "drop", "answer", "remove", "expire"]),
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 3),
    ),
    max_size=40,
)


@given(_ops)
@settings(max_examples=200)
def test_the_indexes_agree_whatever_happens(ops: list[tuple[str, str, str, int]]) -> None:
    ch: PollChannel[str] = PollChannel(versioned=False, max_keys=0, max_keys_per_connection=100)
    model: dict[str, set[str]] = {}
    for op, conn, key, n in ops:
        if op == "track":
            ch.members.add(conn)
            ch.track(conn, key, n)
            ch.set_expiry(conn, [key], NOW + n)
            model.setdefault(conn, set()).add(key)
        elif op == "untrack":
            ch.untrack(conn, key)
            model.get(conn, set()).discard(key)
        elif op == "drop":
            ch.drop(conn)
            model.pop(conn, None)
        elif op == "answer":
            for change in ch.apply([PolledItem(key, str(n).encode())])[0]:
                assert set(change.targets) <= {c for c, keys in model.items() if key in keys}
        elif op == "remove":
            ch.apply([PolledItem(key, removed=True)])
            for keys in model.values():
                keys.discard(key)
        else:
            for c, gone in ch.expired(NOW + n, 0):
                for k in gone:
                    ch.untrack(c, k)
                    model[c].discard(k)
        model = {c: keys for c, keys in model.items() if keys}
        assert ch.by_conn == model
        assert sorted(ch.keys()) == sorted(set().union(*model.values())) if model else ch.keys() == []
        assert all(k in model.get(c, set()) for c, exp in ch._expiry.items() for k in exp)


def test_keys_nobody_tracks_are_kept_for_a_while_and_not_polled() -> None:
    ch: PollChannel[str] = PollChannel(versioned=False, max_keys=2, max_keys_per_connection=5, keep=1.0)
    ch.track("c1", "a", 0)
    ch.apply([PolledItem("a", b"1")])
    ch.untrack("c1", "a", now=10.0)
    assert ch.keys() == [] and len(ch) == 1 and ch.poll_items() == []
    assert ch.track("c2", "a", 1) is False  # kept with its data: not cold, and c2 holds the version
    assert ch.apply([PolledItem("a", b"1")]) == ([], False)
    ch.untrack("c2", "a", now=20.0)
    assert ch.sweep(20.5) == 0 and ch.sweep(21.0) == 1 and len(ch) == 0
    # kept keys make room for tracked ones: max_keys_per_channel counts only what must stay
    for key in ("a", "b"):
        ch.track("c1", key, 0)
        ch.apply([PolledItem(key, b"x")])
        ch.untrack("c1", key, now=30.0)
    ch.check_room("c3", ["c", "d"])
    assert len(ch) == 0
