"""hypothesis against what the administration endpoints parse: cookies, CSRF tokens, bodies, query strings.

Live, against a real server on its own loop in a thread: every answer is a status the
endpoint documents with a JSON body, never a 500; the pure parsers never raise.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import deep_merge, make_settings
from trunkline.app import Server
from trunkline.config import settings_from_mapping
from trunkline.observe import admin_auth, admin_views

from .test_dashboard import ADMIN, PASSWORD

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["channel", "channels", "user", "client", "data", "commands", "disconnect", "limit", "x"])
objects = st.dictionaries(fields, json_values, max_size=5)
bodies = (
    st.binary(max_size=300)
    | objects.map(lambda o: json.dumps(o).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Live:
    """A server with the dashboard on its own event loop in a thread, and a logged-in session."""

    def __init__(self) -> None:
        self.settings = make_settings({**ADMIN, "log": {"level": "error"}})
        self.loop = asyncio.new_event_loop()
        self.server = Server(self.settings)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cookie = ""
        self.csrf = ""

    def __enter__(self) -> Live:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        status, headers, _ = self.request(
            "POST",
            "/dashboard/login",
            urllib.parse.urlencode({"password": PASSWORD}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 303
        self.cookie = headers["Set-Cookie"].split(";")[0]
        status, _, body = self.request("GET", "/dashboard/session", headers={"Cookie": self.cookie})
        assert status == 200
        self.csrf = json.loads(body)["csrf"]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(timeout=2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def admin(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Cookie": self.cookie, admin_auth.CSRF_HEADER: self.csrf, **(extra or {})}


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with Live() as server:
        yield server


def assert_json(status: int, body: bytes, allowed: set[int]) -> object:
    assert status in allowed, (status, body[:200])
    answer = json.loads(body)
    if status >= 400:
        assert isinstance(answer["error"], str) and answer["error"], answer
    return answer


@FUZZ
@given(st.sampled_from(sorted(admin_views.METHODS)) | st.text(min_size=1, max_size=30), bodies)
def test_live_actions(live: Live, method: str, body: bytes) -> None:
    path = "/dashboard/api/" + urllib.parse.quote(method, safe="")
    status, _, answer = live.request("POST", path, body, live.admin({"Content-Type": "application/json"}))
    assert_json(status, answer, {200, 400, 404})
    assert live.server.node.hub.num_clients == 0


@FUZZ
@given(
    st.text(max_size=1200),
    st.sampled_from(["channel?name=", "channels?pattern=", "connections?user=", "connections?search="]),
)
def test_live_read_queries(live: Live, value: str, path: str) -> None:
    status, _, answer = live.request(
        "GET", "/dashboard/" + path + urllib.parse.quote(value, safe=""), headers=live.admin()
    )
    assert_json(status, answer, {200, 400})


@FUZZ
@given(st.text(max_size=200), st.text(max_size=100))
def test_live_cookies_and_tokens(live: Live, cookie: str, token: str) -> None:
    headers = {
        "Cookie": f"{admin_auth.COOKIE}={urllib.parse.quote(cookie)}",
        admin_auth.CSRF_HEADER: urllib.parse.quote(token),
        "Content-Type": "application/json",
    }
    status, _, answer = live.request("POST", "/dashboard/api/info", b"{}", headers)
    assert_json(status, answer, {401})
    # the real session with a wrong token
    status, _, answer = live.request(
        "POST", "/dashboard/api/info", b"{}", {**live.admin(), admin_auth.CSRF_HEADER: urllib.parse.quote(token)}
    )
    assert_json(status, answer, {200} if urllib.parse.quote(token) == live.csrf else {403})


SETTINGS = settings_from_mapping(deep_merge({}, ADMIN))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120) | st.builds(lambda a, b: f"v1.{a}.{b}.{'0' * 64}", st.integers(), st.text(max_size=20)))
def test_session_values_parse_or_are_refused(value: str) -> None:
    assert admin_auth.session_nonce(SETTINGS, value) is None
    good = admin_auth.new_session_value(SETTINGS)
    assert admin_auth.session_nonce(SETTINGS, good) == good.split(".")[2]


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_audit_targets_never_raise(body: bytes) -> None:
    summary = admin_views.targets(body)
    assert isinstance(summary, str) and summary
    assert len(summary) < 2000
