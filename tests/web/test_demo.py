"""``trunkline.web.demo``: the request parser and the token it signs, without a server."""

from __future__ import annotations

import re
from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.web.demo import TOKEN_TTL, demo_token, new_user_id, parse_request

SECRET = "test-secret"
NAME_RE = re.compile(r"[\w .\-]{1,32}")
ID_RE = re.compile(r"[0-9a-f]{12}")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.text(max_size=40)
ids = st.one_of(st.none(), st.from_regex(ID_RE, fullmatch=True), json_values)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"user": names}, optional={"id": ids, "x": json_values})))
def test_any_body_is_parsed_or_refused_with_a_message(body: Any) -> None:
    parsed = parse_request(body)
    if isinstance(parsed, str):
        assert parsed.startswith(("body must be", "user must be", "id must be"))
        return
    name, earlier = parsed
    assert NAME_RE.fullmatch(name) and name == name.strip()
    assert isinstance(body, dict) and body["user"].strip() == name
    if body.get("id") is None:
        assert earlier is None
    else:
        assert earlier == body["id"] and ID_RE.fullmatch(body["id"])


@given(st.from_regex(NAME_RE, fullmatch=True), st.from_regex(ID_RE, fullmatch=True))
def test_a_valid_name_and_id_are_accepted(name: str, user: str) -> None:
    padded = f"  {name} "
    expected = name.strip()
    result = parse_request({"user": padded, "id": user})
    assert result == (expected, user) if expected else isinstance(result, str)


def test_new_ids_are_random_hex() -> None:
    made = {new_user_id() for _ in range(50)}
    assert len(made) == 50
    assert all(ID_RE.fullmatch(user) for user in made)


def test_token_claims() -> None:
    claims = jwt.decode(
        demo_token("0123456789ab", "Ann", SECRET, now=1_000),
        SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {"sub": "0123456789ab", "iat": 1_000, "exp": 1_000 + TOKEN_TTL, "info": {"name": "Ann"}}
