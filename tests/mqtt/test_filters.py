"""Topic names and filters: MQTT 5 §4.7 rules, $share parsing, and the filter trie."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mqtt.filters import (
    MAX_LENGTH,
    FilterTrie,
    InvalidTopic,
    SharedSubscription,
    is_wildcard,
    matches,
    parse_shared,
    validate_filter,
    validate_topic,
)

# --- validation (§4.7.1, §4.7.3, §1.5.4) -----------------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "sport/tennis/#", "+", "+/tennis/#", "sport/+/player1", "/+", "+/+", "a//b", "/", "$SYS/#", "sport/"],
)
def test_valid_filters(topic_filter: str) -> None:
    validate_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "reason"),
    [
        ("sport/tennis#", "'#' must be the whole last level"),
        ("sport/tennis/#/ranking", "'#' must be the whole last level"),
        ("#/a", "'#' must be the whole last level"),
        ("sport+", "'+' must be a whole level"),
        ("sport/+x/a", "'+' must be a whole level"),
        ("", "topic filter is empty"),
        ("a\x00b", "U+0000"),
        ("a/\ud800", "lone surrogate"),
    ],
)
def test_invalid_filters(topic_filter: str, reason: str) -> None:
    with pytest.raises(InvalidTopic, match=re.escape(reason)) as info:
        validate_filter(topic_filter)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    "topic", ["a", "sport/tennis/player1", "/finance", "a//b", "Accounts payable", "$SYS/x", "é/ü"]
)
def test_valid_topic_names(topic: str) -> None:
    validate_topic(topic)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [("a/+", "wildcard"), ("a/#", "wildcard"), ("sport+", "wildcard"), ("", "empty"), ("\x00", "U+0000")],
)
def test_invalid_topic_names(topic: str, reason: str) -> None:
    with pytest.raises(InvalidTopic, match=re.escape(reason)):
        validate_topic(topic)


def test_length_limit_counts_utf8_bytes() -> None:
    validate_topic("a" * MAX_LENGTH)
    validate_filter("a" * (MAX_LENGTH - 2) + "/#")
    with pytest.raises(InvalidTopic, match="65536 bytes"):
        validate_topic("a" * (MAX_LENGTH + 1))
    # 21 845 three-byte characters are 65 535 bytes; one more ASCII byte is too many
    validate_topic("€" * (MAX_LENGTH // 3))
    with pytest.raises(InvalidTopic, match="more than 65535"):
        validate_topic("€" * (MAX_LENGTH // 3) + "a")


def test_is_wildcard() -> None:
    assert is_wildcard("a/+/b") and is_wildcard("#") and not is_wildcard("a/b")


# --- matching (§4.7.1.2, §4.7.1.3, §4.7.2) ------------------------------------------

SPEC_CASES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/#", "finance", True),
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("a/+/$x", "a/b/$x", True),  # only the first level has the $ rule
    ("a/#", "a/$x", True),
    ("ACCOUNTS", "Accounts", False),
    ("Accounts payable", "Accounts payable", True),
    ("/finance", "finance", False),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC_CASES)
def test_spec_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected
    trie: FilterTrie[str] = FilterTrie()
    trie.add(topic_filter, "k")
    assert trie.match(topic) == ([(topic_filter, "k")] if expected else [])


# --- shared subscriptions (§4.8.2) ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$share/g1/sport/#", SharedSubscription("g1", "sport/#")),
        ("$share/g/#", SharedSubscription("g", "#")),
        ("$share/consumer-1/a//b", SharedSubscription("consumer-1", "a//b")),
        ("$share/g/$SYS/x", SharedSubscription("g", "$SYS/x")),
        ("$share", None),
        ("$shared/g/a", None),
        ("sport/#", None),
    ],
)
def test_parse_shared(text: str, expected: SharedSubscription | None) -> None:
    assert parse_shared(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("$share//a", "without a share name"),
        ("$share/", "without a share name"),
        ("$share/g", "without a topic filter"),
        ("$share/g/", "without a topic filter"),
        ("$share/g+/a", "share name contains a wildcard"),
        ("$share/#/a", "share name contains a wildcard"),
        ("$share/g/a#", "'#' must be the whole last level"),
        ("$share/g/a\x00", "U+0000"),
    ],
)
def test_parse_shared_refuses(text: str, reason: str) -> None:
    with pytest.raises(InvalidTopic, match=re.escape(reason)):
        parse_shared(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parsers_raise_only_invalid_topic(text: str) -> None:
    """Garbage gets InvalidTopic (a reason the session can send), never another exception."""
    for check in (validate_topic, validate_filter, parse_shared):
        try:
            check(text)
        except InvalidTopic as exc:
            assert exc.reason


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab/+#$\x00", max_size=12))
def test_parse_shared_agrees_with_validate_filter(text: str) -> None:
    shared = "$share/g/" + text
    try:
        validate_filter(text)
        valid = True
    except InvalidTopic:
        valid = False
    if valid:
        assert parse_shared(shared) == SharedSubscription("g", text)
    else:
        with pytest.raises(InvalidTopic):
            parse_shared(shared)


# --- the trie -----------------------------------------------------------------------


def test_trie_add_remove_and_several_filters_per_key() -> None:
    trie: FilterTrie[int] = FilterTrie()
    assert trie.add("a/+", 1)
    assert not trie.add("a/+", 1)  # already there
    assert trie.add("a/#", 1)
    assert trie.add("a/b", 2)
    assert trie.add("#", 3)
    assert len(trie) == 4
    assert sorted(trie.match("a/b")) == [("#", 3), ("a/#", 1), ("a/+", 1), ("a/b", 2)]
    assert sorted(trie.match("a")) == [("#", 3), ("a/#", 1)]
    assert trie.match("$a/b") == []
    assert trie.remove("a/+", 1)
    assert not trie.remove("a/+", 1)
    assert not trie.remove("x/y", 1)
    assert not trie.remove("a/b", 1)  # filter there, key not
    assert sorted(trie.match("a/b")) == [("#", 3), ("a/#", 1), ("a/b", 2)]
    for f, k in [("a/#", 1), ("a/b", 2), ("#", 3)]:
        assert trie.remove(f, k)
    assert len(trie) == 0
    assert trie._root.children == {}  # empty branches are pruned


def test_trie_filters_lists_every_pair() -> None:
    trie: FilterTrie[str] = FilterTrie()
    pairs = {("a/+", "x"), ("a/+", "y"), ("#", "x"), ("b", "z")}
    for f, k in pairs:
        trie.add(f, k)
    assert set(trie.filters()) == pairs


LEVELS = st.sampled_from(["a", "b", "", "$s"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(["a", "b", "", "$s", "+"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "+"


def regex_matches(topic_filter: str, topic: str) -> bool:
    """An independent matcher: the filter as a regular expression."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if topic_filter == "#":
        return True
    parts = topic_filter.split("/")
    tail = ""
    if parts[-1] == "#":
        parts.pop()
        tail = "(/.*)?"
    body = "/".join("[^/]*" if p == "+" else re.escape(p) for p in parts)
    return re.fullmatch(body + tail, topic, re.DOTALL) is not None


@settings(max_examples=500, deadline=None)
@given(filters(), TOPICS)
def test_matches_agrees_with_a_regex(topic_filter: str, topic: str) -> None:
    assert matches(topic_filter, topic) == regex_matches(topic_filter, topic)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(filters(), st.integers(0, 3), st.booleans()), max_size=30),
    st.lists(TOPICS, min_size=1, max_size=10),
)
def test_trie_agrees_with_brute_force(ops: list[tuple[str, int, bool]], topics: list[str]) -> None:
    """After any sequence of adds and removes, match() gives exactly what matches() says."""
    trie: FilterTrie[int] = FilterTrie()
    model: set[tuple[str, int]] = set()
    for topic_filter, key, add in ops:
        validate_filter(topic_filter)
        if add:
            assert trie.add(topic_filter, key) == ((topic_filter, key) not in model)
            model.add((topic_filter, key))
        else:
            assert trie.remove(topic_filter, key) == ((topic_filter, key) in model)
            model.discard((topic_filter, key))
    assert len(trie) == len(model)
    for topic in topics:
        found = trie.match(topic)
        assert len(found) == len(set(found))
        assert set(found) == {(f, k) for f, k in model if matches(f, topic)}
