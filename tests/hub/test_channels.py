"""Channel-name rules (reference §9.1): namespaces, the private prefix, user-limited and personal channels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.hub.channels import ChannelRules

rules = ChannelRules()


@pytest.mark.parametrize(
    ("channel", "namespace"),
    [
        ("news", ""),
        ("", ""),
        ("chat:room", "chat"),
        ("chat:room:sub", "chat"),
        ("chat:", "chat"),
        (":room", ""),
        ("$chat:room", "chat"),
        ("$room", ""),
        ("$", ""),
        ("dialogs:chat#42,43", "dialogs"),
        ("news#42", ""),
        ("#42", ""),
        ("personal:#42", "personal"),
        ("a$b:c", "a$b"),
        ("$$x:y", "$x"),
    ],
)
def test_namespace_of(channel: str, namespace: str) -> None:
    assert rules.namespace_of(channel) == namespace


@pytest.mark.parametrize(
    ("channel", "private"),
    [("$secret", True), ("$ns:secret", True), ("$", True), ("public", False), ("ns:$x", False), ("", False)],
)
def test_private_prefix(channel: str, private: bool) -> None:
    assert rules.is_private(channel) is private


@pytest.mark.parametrize(
    ("channel", "limited", "users"),
    [
        ("news#42", True, ["42"]),
        ("dialogs:chat#42,43", True, ["42", "43"]),
        ("chat#42,,43,", True, ["42", "43"]),
        ("chat#", True, []),
        ("a#b#42", True, ["42"]),
        ("#42", True, ["42"]),
        ("", False, []),
    ],
)
def test_user_limited_channels(channel: str, limited: bool, users: list[str]) -> None:
    assert rules.is_user_limited(channel) is limited
    assert rules.allowed_users(channel) == users


def test_a_channel_without_user_boundary_lists_no_users() -> None:
    assert rules.allowed_users("news") == []
    assert rules.user_allowed("news", "news") is False


@pytest.mark.parametrize(
    ("channel", "user", "allowed"),
    [
        ("news#42", "42", True),
        ("news#42", "4", False),
        ("news#42", "420", False),
        ("dialogs:chat#42,43", "43", True),
        ("dialogs:chat#42,43", "44", False),
        ("chat#", "", False),
        ("chat#,", "", False),
        ("news#42", "", False),
        ("a#42#43", "42", False),  # only the part after the last boundary counts
        ("a#42#43", "43", True),
    ],
)
def test_user_allowed(channel: str, user: str, allowed: bool) -> None:
    assert rules.user_allowed(channel, user) is allowed


def test_personal_channel() -> None:
    assert rules.personal_channel("42") == "#42"
    assert rules.personal_channel("42", "personal") == "personal:#42"
    assert rules.namespace_of(rules.personal_channel("42", "personal")) == "personal"
    assert rules.user_allowed(rules.personal_channel("42"), "42")


@pytest.mark.parametrize(
    ("channel", "name"),
    [
        ("news", "news"),
        ("chat:room", "room"),
        ("chat:room:sub", "room:sub"),
        ("$chat:room", "room"),
        ("$room", "room"),
        ("chat:", ""),
    ],
)
def test_name_after_namespace(channel: str, name: str) -> None:
    assert rules.name_after_namespace(channel) == name


def test_custom_separators() -> None:
    custom = ChannelRules(namespace_boundary="/", private_prefix="private-", user_boundary="@", user_separator=";")
    assert custom.namespace_of("private-chat/room") == "chat"
    assert custom.namespace_of("chat:room") == ""
    assert custom.is_private("private-x")
    assert not custom.is_private("$x")
    assert custom.allowed_users("dm/x@1;2") == ["1", "2"]
    assert custom.user_allowed("dm/x@1;2", "2")
    assert not custom.is_user_limited("news#42")
    assert custom.personal_channel("7", "users") == "users/@7"
    assert custom.name_after_namespace("private-chat/room/1") == "room/1"


# ---------------------------------------------------------------- properties

channel_names = st.text(alphabet=st.sampled_from("ab:$#,_-é\x00 ") | st.characters(), max_size=40)


@settings(max_examples=500, deadline=None)
@given(channel_names, st.text(max_size=10))
def test_random_names_never_raise(channel: str, user: str) -> None:
    namespace = rules.namespace_of(channel)
    assert ":" not in namespace
    assert isinstance(rules.is_private(channel), bool)
    assert isinstance(rules.is_user_limited(channel), bool)
    users = rules.allowed_users(channel)
    assert all(u and "," not in u and "#" not in u for u in users)
    assert isinstance(rules.user_allowed(channel, user), bool)
    assert isinstance(rules.name_after_namespace(channel), str)
    if ":" not in channel:
        assert namespace == ""
    if rules.is_user_limited(channel) and rules.user_allowed(channel, user):
        assert user
        assert user in users


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_characters=":#,"), min_size=1, max_size=20),
    st.sampled_from(["", "personal", "users"]),
)
def test_personal_channel_is_limited_to_its_user(user: str, namespace: str) -> None:
    channel = rules.personal_channel(user, namespace)
    assert rules.is_user_limited(channel)
    assert rules.user_allowed(channel, user)
    assert rules.allowed_users(channel) == [user]
    if not user.startswith("$"):
        assert rules.namespace_of(channel) == namespace


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_characters=":$"), min_size=2, max_size=10),
    channel_names,
    st.booleans(),
)
def test_namespace_and_name_split_the_channel(namespace: str, name: str, private: bool) -> None:
    channel = ("$" if private else "") + namespace + ":" + name
    assert rules.namespace_of(channel) == namespace
    assert rules.name_after_namespace(channel) == name
    assert rules.is_private(channel) is private
