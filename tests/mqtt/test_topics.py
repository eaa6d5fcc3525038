"""The topic <-> channel mapping: examples, refusals, and round trips by hypothesis."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trunkline.hub.channels import ChannelRules
from trunkline.mqtt.filters import InvalidTopic, matches
from trunkline.mqtt.topics import FilterScope, TopicMapping, Unmappable

DEFAULT = TopicMapping()
PREFIX = TopicMapping(mode="prefix", prefix="mqtt")
FLAT = TopicMapping(mode="prefix", prefix="")
DOTTED = TopicMapping(level_separator=".")
AT_USERS = TopicMapping(user_boundary="@")  # channel.user_boundary = "@"
LONG = 100_000
MAPPINGS = {
    "namespace": TopicMapping(max_channel_length=LONG),
    "prefix": TopicMapping(mode="prefix", prefix="mqtt", max_channel_length=LONG),
    "flat": TopicMapping(mode="prefix", prefix="", max_channel_length=LONG),
    "dotted": TopicMapping(level_separator=".", max_channel_length=LONG),
    "at-users": TopicMapping(user_boundary="@", max_channel_length=LONG),
}

# (topic, channel) in namespace mode: the table of docs/mqtt.md
EXAMPLES = [
    ("chat/room1", "chat:room1"),
    ("news", "news"),
    ("news/sports", "news:sports"),
    ("sensors/dev1/temp", "sensors:dev1/temp"),
    ("news/sports:football", "news:sports:football"),  # ":" after the namespace is a plain character
    ("a:b/c", "a%3Ab:c"),  # ":" in the namespace level is escaped
    ("a:b", "a%3Ab"),  # ... and in a one-level topic (no namespace)
    ("dialogs/chat%2342,43", "dialogs:chat#42,43"),  # user-limited channel
    ("personal/%2342", "personal:#42"),
    ("%2342", "#42"),  # personal channel without namespace
    ("a/b%2Bc", "a:b+c"),
    ("chat/$x", "chat:$x"),  # "$" is special only at the start of a channel
    ("100%/x", "100%25:x"),
    ("100%23/x", "100#:x"),
    ("chat/%2b", "chat:%252b"),  # only the uppercase forms %23, %2B stand for # and +
    ("x/*&", "x:%2A%26"),
    ("x/a b", "x:a%20b"),
    ("x/tab\there", "x:tab%09here"),
    ("x/\x7f", "x:%7F"),
    ("café/été", "caf%C3%A9:%C3%A9t%C3%A9"),
    ("x/😀", "x:%F0%9F%98%80"),
    ("/a", ":a"),  # empty levels are kept
    ("a/", "a:"),
    ("a//b", "a:/b"),
    ("/", ":"),
    ("ACCOUNTS/Payable", "ACCOUNTS:Payable"),
]


@pytest.mark.parametrize(("topic", "channel"), EXAMPLES)
def test_examples(topic: str, channel: str) -> None:
    assert DEFAULT.to_channel(topic) == channel
    assert DEFAULT.to_topic(channel) == topic


@pytest.mark.parametrize(
    ("mapping", "topic", "channel"),
    [
        (PREFIX, "chat/room1", "mqtt:chat/room1"),
        (PREFIX, "news", "mqtt:news"),
        (PREFIX, "a:b/c:d", "mqtt:a:b/c:d"),  # the namespace is the prefix, so ":" stays
        (PREFIX, "dev/%2342", "mqtt:dev/#42"),
        (FLAT, "chat/room1", "chat/room1"),
        (FLAT, "a:b/c", "a%3Ab/c"),  # no namespace: ":" is escaped everywhere
        (DOTTED, "sensors/dev1/temp", "sensors:dev1.temp"),
        (DOTTED, "sensors/v1.2/temp", "sensors:v1%2E2.temp"),
        (AT_USERS, "dialogs/chat%4042", "dialogs:chat@42"),
        (AT_USERS, "mail/bob@example.com", "mail:bob%40example.com"),  # "@" is the user boundary here
        (AT_USERS, "x/%2342", "x:#42"),  # "#" is a plain channel character, still not allowed in topics
    ],
)
def test_modes_and_separators(mapping: TopicMapping, topic: str, channel: str) -> None:
    assert mapping.to_channel(topic) == channel
    assert mapping.to_topic(channel) == topic


def test_every_reserved_character_is_escaped_in_a_channel() -> None:
    for ch in ":*&% \x01\x7f\u00e9\u2603":
        channel = DEFAULT.to_channel(f"{ch}/x{ch}")  # in the namespace level and after it
        head, _, rest = channel.partition(":")
        if ch != "%":  # the escapes themselves start with "%"
            assert ch not in head
            assert ch not in rest or ch == ":"
        assert channel.isascii() and channel.isprintable()
        assert DEFAULT.to_topic(channel) == f"{ch}/x{ch}"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("$SYS/broker/uptime", "reserved for the server"),
        ("$share/g/a", "reserved for the server"),
        ("$", "reserved for the server"),
        ("a" * 256, "more than channel.max_length (255)"),
        ("ns/" + "é" * 84, "507 characters"),  # escaping makes it longer: 3 + 84 * 6 = 507
    ],
)
def test_unmappable_topics(topic: str, reason: str) -> None:
    with pytest.raises(Unmappable, match=re.escape(reason)) as info:
        DEFAULT.to_channel(topic)
    assert info.value.reason


def test_length_limit_applies_to_the_escaped_channel() -> None:
    mapping = TopicMapping(max_channel_length=10)
    assert mapping.to_channel("ab/cdefghi") == "ab:cdefghi"
    with pytest.raises(Unmappable, match="11 characters"):
        mapping.to_channel("ab/cdefghij")
    with pytest.raises(Unmappable, match="14 characters"):
        mapping.to_channel("ab/cdefgé")  # 8 characters of topic, 14 of channel


@pytest.mark.parametrize("topic", ["a/+", "a/#", "", "a\x00"])
def test_invalid_topics_are_invalid_topic(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        DEFAULT.to_channel(topic)


def test_private_prefix_from_config_is_never_produced() -> None:
    mapping = TopicMapping(private_prefix="priv-")
    with pytest.raises(Unmappable, match="would be private"):
        mapping.to_channel("priv-x/y")
    with pytest.raises(Unmappable, match="need a subscription token"):
        mapping.to_topic("priv-x:y")
    assert mapping.to_channel("x/priv-y") == "x:priv-y"


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("", "empty channel"),
        ("$private:x", "need a subscription token"),
        ("a:b*", "'*' of the channel has no topic form"),
        ("a:b&c", "'&' of the channel has no topic form"),
        ("a:b c", "' ' of the channel has no topic form"),
        ("a:é", "'é' of the channel has no topic form"),
        ("a/b", "without namespace is a one-level topic"),
        ("a:b%41", "not in mapped form"),  # "A" never needs an escape
        ("a:b%2523", "not in mapped form"),  # the topic "b%23" is the channel "b#"
        ("a:b%e9", "uppercase hex"),
        ("a:b%4", "uppercase hex"),
        ("a:b%", "uppercase hex"),
        ("a:%C3", "not UTF-8"),
        ("a:b%2Fc", "not in mapped form"),  # would be a level separator
        ("a:b%00", "U+0000"),
        ("a:b%2B", "wildcard"),  # would be a "+" in the topic
        ("%24x:y", "reserved for the server"),  # the topic "$x/y"
    ],
)
def test_unmappable_channels(channel: str, reason: str) -> None:
    with pytest.raises(Unmappable, match=re.escape(reason)) as info:
        DEFAULT.to_topic(channel)
    assert info.value.reason


def test_channel_outside_the_prefix_namespace() -> None:
    with pytest.raises(Unmappable, match="outside the MQTT namespace 'mqtt'"):
        PREFIX.to_topic("chat:room1")
    with pytest.raises(Unmappable, match="outside the MQTT namespace"):
        PREFIX.to_topic("mqttx:a")


def test_namespace_of() -> None:
    assert DEFAULT.namespace_of("chat/room1") == "chat"
    assert DEFAULT.namespace_of("chat") == ""
    assert DEFAULT.namespace_of("/x") == ""
    assert DEFAULT.namespace_of("a:b/c") == "a%3Ab"  # no such namespace can be configured
    assert PREFIX.namespace_of("chat/room1") == "mqtt"
    assert FLAT.namespace_of("chat/room1") == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "topics"}, "mode must be one of"),
        ({"mode": "prefix", "prefix": "a"}, "not a namespace name"),
        ({"mode": "prefix", "prefix": "mq:tt"}, "not a namespace name"),
        ({"level_separator": "ab"}, "one ASCII punctuation character"),
        ({"level_separator": "x"}, "one ASCII punctuation character"),
        ({"level_separator": "%"}, "cannot be"),
        ({"level_separator": "+"}, "cannot be"),
        ({"level_separator": ":"}, "must differ"),
        ({"namespace_boundary": "#"}, "cannot be"),
        ({"user_boundary": " "}, "one ASCII punctuation character"),
        ({"max_channel_length": 0}, "at least 1"),
    ],
)
def test_invalid_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicMapping(**options)  # type: ignore[arg-type]


# --- filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "scope"),
    [
        ("sensors/dev1/temp", FilterScope(frozenset({"sensors"}), "sensors:dev1/temp", "sensors:dev1/temp")),
        ("news", FilterScope(frozenset({""}), "news", "news")),
        ("sensors/+/temp", FilterScope(frozenset({"sensors"}), "sensors:")),
        ("sensors/dev1/+", FilterScope(frozenset({"sensors"}), "sensors:dev1/")),
        ("sensors/dev1/#", FilterScope(frozenset({"sensors"}), "sensors:dev1")),
        ("sensors/#", FilterScope(frozenset({"", "sensors"}), "sensors")),  # "sensors" itself too
        ("+", FilterScope(frozenset({""}), "")),  # one-level topics only
        ("+/temp", FilterScope(None, "")),
        ("#", FilterScope(None, "")),
        ("+/#", FilterScope(None, "")),
    ],
)
def test_filter_scope(topic_filter: str, scope: FilterScope) -> None:
    assert DEFAULT.filter_scope(topic_filter) == scope


def test_filter_scope_in_prefix_mode() -> None:
    assert PREFIX.filter_scope("#") == FilterScope(frozenset({"mqtt"}), "mqtt:")
    assert PREFIX.filter_scope("+/temp") == FilterScope(frozenset({"mqtt"}), "mqtt:")
    assert PREFIX.filter_scope("a/+") == FilterScope(frozenset({"mqtt"}), "mqtt:a/")
    assert PREFIX.filter_scope("a/#") == FilterScope(frozenset({"mqtt"}), "mqtt:a")
    assert FLAT.filter_scope("a:b/#") == FilterScope(frozenset({""}), "a%3Ab")


def test_filter_scope_reachable() -> None:
    configured = ["chat", "sensors"]
    assert DEFAULT.filter_scope("#").reachable(configured) == {"", "chat", "sensors"}
    assert DEFAULT.filter_scope("sensors/#").reachable(configured) == {"", "sensors"}
    assert DEFAULT.filter_scope("#").reaches("anything")
    assert not DEFAULT.filter_scope("sensors/+").reaches("chat")


@pytest.mark.parametrize(
    ("topic_filter", "error"),
    [("$SYS/#", Unmappable), ("$share/g/a", Unmappable), ("a/#/b", InvalidTopic), ("a+", InvalidTopic)],
)
def test_filter_scope_refuses(topic_filter: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        DEFAULT.filter_scope(topic_filter)


def test_filter_scope_refuses_too_long_prefix() -> None:
    with pytest.raises(Unmappable, match=r"longer than channel\.max_length"):
        TopicMapping(max_channel_length=5).filter_scope("abc/def/+")


# --- hypothesis: round trips ----------------------------------------------------------

LEVEL_CHARS = st.characters(codec="utf-8", exclude_characters="\x00+#/")
LEVEL = st.one_of(
    st.text(LEVEL_CHARS, max_size=8),
    st.text(alphabet="%23Bb:$@.a", max_size=8),  # the characters the mapping treats specially
)
TOPIC = st.lists(LEVEL, min_size=1, max_size=5).map("/".join).filter(lambda t: bool(t) and not t.startswith("$"))


@pytest.mark.parametrize("name", MAPPINGS)
@settings(max_examples=200, deadline=None)
@given(topic=TOPIC)
def test_topic_round_trip(name: str, topic: str) -> None:
    mapping = MAPPINGS[name]
    channel = mapping.to_channel(topic)
    assert channel.isascii() and channel.isprintable()
    assert " " not in channel
    assert mapping.to_topic(channel) == topic


CHANNEL = st.text(alphabet=string.printable + "é\x00", max_size=20)


@pytest.mark.parametrize("name", MAPPINGS)
@settings(max_examples=200, deadline=None)
@given(channel=st.one_of(CHANNEL, st.text(alphabet="ab:/#+%23AF$@.,", max_size=16)))
def test_channel_round_trip(name: str, channel: str) -> None:
    mapping = MAPPINGS[name]
    try:
        topic = mapping.to_topic(channel)
    except Unmappable as exc:
        assert exc.reason
        return
    assert mapping.to_channel(topic) == channel


NS = st.from_regex(r"[-a-zA-Z0-9_]{2,8}", fullmatch=True)
NAME = st.text(alphabet=string.ascii_letters + string.digits + "-_.,:=@!~/", max_size=12)
USERS = st.lists(st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=6), max_size=3)


@settings(max_examples=300, deadline=None)
@given(NS, NAME, st.one_of(st.none(), USERS), st.booleans())
def test_centrifugo_shaped_channels_map(namespace: str, name: str, users: list[str] | None, with_ns: bool) -> None:
    """Channels of the documented shape ([ns:]name[#user,...]) always have a topic."""
    if not with_ns:
        name = name.replace("/", "").replace(":", "")  # a one-level topic
    channel = f"{namespace}:{name}" if with_ns else name or "x"
    if users is not None:
        channel += "#" + ",".join(users)
    topic = DEFAULT.to_topic(channel)
    assert DEFAULT.to_channel(topic) == channel
    if with_ns:
        assert topic.split("/")[0] == namespace


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b:c", "é", "%23", "", "+"]), min_size=1, max_size=4),
    st.booleans(),
    TOPIC,
)
def test_filter_scope_covers_every_matching_topic(levels: list[str], hashed: bool, topic: str) -> None:
    """A topic the filter matches maps to a channel in the scope's namespaces and prefix."""
    topic_filter = "/".join([*levels, "#"] if hashed else levels)
    assume(topic_filter)
    rules = ChannelRules()
    for name in ("namespace", "prefix", "flat"):
        mapping = MAPPINGS[name]
        scope = mapping.filter_scope(topic_filter)
        candidates = [topic, topic_filter.replace("+", "x").removesuffix("/#"), topic_filter.replace("+", "")]
        for candidate in candidates:
            if "#" in candidate or not candidate or not matches(topic_filter, candidate):
                continue
            channel = mapping.to_channel(candidate)
            assert channel.startswith(scope.channel_prefix), (topic_filter, candidate, channel, scope)
            assert scope.reaches(rules.namespace_of(channel)), (topic_filter, candidate, channel, scope)
            if scope.channel is not None:
                assert channel == scope.channel


def test_the_table_in_docs_mqtt_md_is_true() -> None:
    """Every row of the example table in docs/mqtt.md is what the mapping does."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)`[^|]*\| ([^|]+) \|$", doc, re.MULTILINE)
    assert len(rows) >= 10
    for topic, channel, namespace in rows:
        assert DEFAULT.to_channel(topic) == channel, topic
        assert DEFAULT.to_topic(channel) == topic, channel
        expected = "" if namespace.strip() == "none" else namespace.strip().split("`")[1]
        assert DEFAULT.namespace_of(topic) == expected, topic


def _slow(mapping: TopicMapping) -> TopicMapping:
    """The same mapping without its whole-name fast paths."""
    slow = TopicMapping(max_channel_length=mapping.max_channel_length)
    object.__setattr__(slow, "_fast_topic", None)
    object.__setattr__(slow, "_fast_channel", None)
    return slow


SLOW = _slow(DEFAULT)


def _outcome(call: Callable[[str], str], name: str) -> str | type[Exception]:
    try:
        return call(name)
    except (Unmappable, InvalidTopic) as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TOPIC, st.text(alphabet="ab:/$%#+ .", max_size=10)))
def test_fast_paths_agree_with_the_general_code(name: str) -> None:
    assert _outcome(DEFAULT.to_channel, name) == _outcome(SLOW.to_channel, name)
    assert _outcome(DEFAULT.to_topic, name) == _outcome(SLOW.to_topic, name)
    short, slow_short = TopicMapping(max_channel_length=4), _slow(TopicMapping(max_channel_length=4))
    assert _outcome(short.to_channel, name) == _outcome(slow_short.to_channel, name)
    assert _outcome(short.to_topic, name) == _outcome(slow_short.to_topic, name)
