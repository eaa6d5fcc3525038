"""Permission decisions (reference §4.3 steps 6–7, §5.2–§5.4), one table per command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from trunkline.config import NamespaceOptions
from trunkline.hub.permissions import can_publish, can_read_history, can_read_presence, can_subscribe

USER = "42"
ANON = ""


def opts(**flags: Any) -> NamespaceOptions:
    return NamespaceOptions(**flags)


# (flags, user, insecure, expected)
SUBSCRIBE = [
    ({}, USER, False, False),
    ({}, ANON, False, False),
    ({}, USER, True, True),
    ({}, ANON, True, True),
    ({"allow_subscribe_for_client": True}, USER, False, True),
    ({"allow_subscribe_for_client": True}, ANON, False, False),
    ({"allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}, ANON, False, True),
    ({"allow_subscribe_for_anonymous": True}, ANON, False, False),  # anonymous alone grants nothing
    ({"allow_subscribe_for_anonymous": True}, USER, False, False),
    # unrelated options do not leak into subscribe
    ({"allow_publish_for_client": True, "allow_history_for_client": True}, USER, False, False),
]


@pytest.mark.parametrize(("flags", "user", "insecure", "expected"), SUBSCRIBE)
def test_can_subscribe(flags: dict[str, bool], user: str, insecure: bool, expected: bool) -> None:
    assert can_subscribe(opts(**flags), user, insecure) is expected


def table(kind: str) -> list[tuple[dict[str, bool], str, bool, bool, bool]]:
    """(flags, user, subscribed, insecure, expected) for publish, presence and history alike."""
    client = f"allow_{kind}_for_client"
    subscriber = f"allow_{kind}_for_subscriber"
    anonymous = f"allow_{kind}_for_anonymous"
    return [
        ({}, USER, False, False, False),
        ({}, USER, True, False, False),
        ({}, ANON, True, False, False),
        ({}, USER, False, True, True),
        ({}, ANON, False, True, True),
        ({client: True}, USER, False, False, True),
        ({client: True}, USER, True, False, True),
        ({client: True}, ANON, False, False, False),
        ({client: True, anonymous: True}, ANON, False, False, True),
        ({subscriber: True}, USER, True, False, True),
        ({subscriber: True}, USER, False, False, False),
        ({subscriber: True}, ANON, True, False, False),
        ({subscriber: True, anonymous: True}, ANON, True, False, True),
        ({subscriber: True, anonymous: True}, ANON, False, False, False),
        ({anonymous: True}, ANON, True, False, False),
        ({anonymous: True}, USER, True, False, False),
        ({client: True, subscriber: True}, USER, False, False, True),
        ({subscriber: True}, USER, False, True, True),
    ]


CHECKS: dict[str, Callable[[NamespaceOptions, str, bool, bool], bool]] = {
    "publish": can_publish,
    "presence": can_read_presence,
    "history": can_read_history,
}


@pytest.mark.parametrize(("kind", "row"), [(kind, row) for kind in CHECKS for row in table(kind)])
def test_publish_presence_history(kind: str, row: tuple[dict[str, bool], str, bool, bool, bool]) -> None:
    flags, user, subscribed, insecure, expected = row
    assert CHECKS[kind](opts(**flags), user, subscribed, insecure) is expected


@pytest.mark.parametrize("kind", list(CHECKS))
def test_options_of_other_commands_do_not_grant(kind: str) -> None:
    others = {
        f"allow_{other}_for_{who}": True
        for other in ("publish", "presence", "history", "subscribe")
        if other != kind
        for who in ("client", "subscriber", "anonymous")
        if not (other == "subscribe" and who == "subscriber")
    }
    assert CHECKS[kind](opts(**others), USER, True, False) is False
    assert CHECKS[kind](opts(**others), ANON, True, False) is False
