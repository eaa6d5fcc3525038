"""The administration endpoints over real sockets: CSRF, the audit log, channels, connections, actions."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from centrifuge import ClientEventHandler, DisconnectedContext

from tests.conftest import Running, eventually, token
from trunkline.api.methods import METHODS
from trunkline.observe import admin_auth

from . import connect, subscribe
from .test_dashboard import ADMIN, ADMIN_SECRET, http_session, login


async def logged_in(http: aiohttp.ClientSession, base: str) -> str:
    """Log in; returns the session's CSRF token."""
    assert (await login(http, base)).status == 303
    async with http.get(f"{base}/dashboard/session") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body["methods"]) == set(METHODS)
    assert re.fullmatch(r"[0-9a-f]{64}", body["csrf"])
    return str(body["csrf"])


async def post(
    http: aiohttp.ClientSession, base: str, method: str, body: Any, csrf: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = {admin_auth.CSRF_HEADER: csrf} if csrf is not None else {}
    async with http.post(f"{base}/dashboard/api/{method}", json=body, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_actions_need_the_session_csrf_token(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    base = running.http_url
    listener = await connect(running.ws_url, token("reader"))
    _, received = await subscribe(listener, "news")
    try:
        async with http_session() as http:
            # not logged in: 401, whatever the token
            assert await post(http, base, "publish", {"channel": "news", "data": {}}) == (
                401,
                {"error": "login required"},
            )
            csrf = await logged_in(http, base)
            refused = (403, {"error": "missing or wrong CSRF token"})
            # logged in (the cookie is sent) but no token: what a cross-site page can make a browser do
            assert await post(http, base, "publish", {"channel": "news", "data": {"n": 1}}) == refused
            async with http.post(
                f"{base}/dashboard/api/publish",
                data={"channel": "news", "data": '{"n": 2}'},
                headers={"Origin": "http://evil.example", "Referer": "http://evil.example/"},
            ) as resp:  # a plain HTML form post
                assert (resp.status, await resp.json()) == refused
            assert await post(http, base, "publish", {"channel": "news", "data": {"n": 3}}, "0" * 64) == refused
            # the token of another session does not fit this one
            async with http_session() as other:
                other_csrf = await logged_in(other, base)
            assert other_csrf != csrf
            assert await post(http, base, "publish", {"channel": "news", "data": {"n": 4}}, other_csrf) == refused
            assert received.publications == []

            # the session's own token: the server API's answer
            status, body = await post(http, base, "publish", {"channel": "news", "data": {"n": 5}}, csrf)
            assert status == 200
            assert set(body["result"]) == {"offset", "epoch"}
            await received.wait_for(1)
            assert received.publications == [{"n": 5}]

            async with http.get(f"{base}/dashboard/api/publish") as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "POST"
    finally:
        await listener.disconnect()


async def test_every_action_is_logged_with_who_did_it(
    start_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    running: Running = await start_server(ADMIN)
    base = running.http_url
    caplog.set_level(logging.INFO, logger="trunkline.admin")
    async with http_session() as http:
        csrf = await logged_in(http, base)
        async with http.get(f"{base}/dashboard/session") as resp:
            session = (await resp.json())["session"]
        assert re.fullmatch(r"[0-9a-f]{12}", session)
        assert await post(http, base, "publish", {"channel": "news", "data": {"secret": "s3cr3t"}}, csrf) == (
            200,
            {"result": {"offset": 1, "epoch": (await _epoch(http, base, csrf))}},
        )
        await post(http, base, "disconnect", {"user": "42", "client": "c-1"}, csrf)
        await post(http, base, "publish", {"channel": "nosuchns:x", "data": {}}, csrf)
        await post(http, base, "publish", {"channel": "news", "data": {}})  # refused: no token

    lines = [r.getMessage() for r in caplog.records if r.name == "trunkline.admin"]
    who = f"session={session} from=127.0.0.1"
    assert any(line.startswith("dashboard login from 127.0.0.1: session=") for line in lines)
    assert f"admin action publish by {who}: channel='news' -> ok" in lines
    assert f"admin action disconnect by {who}: user='42' client='c-1' -> ok" in lines
    assert f"admin action publish by {who}: channel='nosuchns:x' -> error 102 unknown channel" in lines
    assert f"admin request refused (no CSRF token) POST /dashboard/api/publish by {who}" in lines
    assert not any("s3cr3t" in line for line in lines)  # the data itself is never logged
    assert all(admin_auth.COOKIE not in line for line in lines)


async def _epoch(http: aiohttp.ClientSession, base: str, csrf: str) -> str:
    _, body = await post(http, base, "history", {"channel": "news", "limit": 0}, csrf)
    return str(body["result"]["epoch"])


async def test_action_refusals_are_clear(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({**ADMIN, "http_api": {"max_body_size": 1000}})
    base = running.http_url
    async with http_session() as http:
        csrf = await logged_in(http, base)
        headers = {admin_auth.CSRF_HEADER: csrf}
        assert await post(http, base, "nosuch", {}, csrf) == (404, {"error": "no server API method 'nosuch'"})
        cases: list[tuple[bytes, str, int, str]] = [
            (b'{"channel": "news"}', "text/plain", 415, "send the parameters as application/json"),
            (b'{"channel": "\xff"}', "application/json", 400, "the body is not UTF-8"),
            (b'{"channel": ', "application/json", 400, "malformed JSON body"),
            (b'{"data": "' + b"x" * 2000 + b'"}', "application/json", 413, "request body over 1000 bytes"),
        ]
        for body, ctype, status, message in cases:
            async with http.post(
                f"{base}/dashboard/api/publish", data=body, headers={**headers, "Content-Type": ctype}
            ) as resp:
                assert (resp.status, await resp.json()) == (status, {"error": message}), body[:40]
        # a method's own error is the server API's error object
        assert await post(http, base, "publish", {"channel": "news"}, csrf) == (
            200,
            {"error": {"code": 107, "message": "bad request: data required"}},
        )
        assert await post(http, base, "disconnect", {"user": "u", "disconnect": {"code": 1}}, csrf) == (
            200,
            {"error": {"code": 107, "message": "bad request: disconnect code must be 3000-4999"}},
        )
        # batch answers as the server API does, and info works in-process
        status, body = await post(http, base, "batch", {"commands": [{"info": {}}, {"nosuch": {}}]}, csrf)
        assert status == 200
        assert body["replies"][0]["info"]["nodes"][0]["uid"] == running.server.node.uid
        assert body["replies"][1] == {"error": {"code": 104, "message": "method not found"}}
        for path in (
            "/dashboard/channel?name=" + "x" * 2000,
            "/dashboard/channel",
            "/dashboard/channel?name=__trunkline:stats",
        ):
            async with http.get(base + path) as resp:
                assert resp.status == 400, path
                assert "error" in await resp.json()


async def test_reads_need_a_login(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    async with aiohttp.ClientSession() as http:
        for path in ("session", "channels", "channel?name=news", "connections", "connections?user=1", "events"):
            async with http.get(f"{running.http_url}/dashboard/{path}") as resp:
                assert resp.status == 401, path
                assert await resp.json() == {"error": "login required"}


async def test_channel_browser_and_channel_view(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    base = running.http_url
    alice = await connect(running.ws_url, token("alice", info={"name": "Alice"}))
    bob = await connect(running.ws_url, token("bob"))
    try:
        await subscribe(alice, "news")
        await subscribe(bob, "news")
        await subscribe(bob, "smallhistory:room")
        await alice.publish("news", {"text": "first"})
        await bob.publish("news", {"text": "second"})
        async with http_session() as http:
            await logged_in(http, base)
            async with http.get(f"{base}/dashboard/channels") as resp:
                body = await resp.json()
            assert body == {
                "namespaces": [
                    {"namespace": "", "channels": [{"channel": "news", "num_clients": 2}], "num_clients": 2},
                    {
                        "namespace": "smallhistory",
                        "channels": [{"channel": "smallhistory:room", "num_clients": 1}],
                        "num_clients": 1,
                    },
                ],
                "total": 2,
                "truncated": False,
            }
            async with http.get(f"{base}/dashboard/channels?pattern=small*") as resp:
                assert [ns["namespace"] for ns in (await resp.json())["namespaces"]] == ["smallhistory"]

            async with http.get(f"{base}/dashboard/channel?name=news") as resp:
                view = await resp.json()
            assert view["local_subscribers"] == 2
            members = sorted(view["presence"]["result"]["presence"].values(), key=lambda m: m["user"])
            assert [m["user"] for m in members] == ["alice", "bob"]
            assert members[0]["conn_info"] == {"name": "Alice"}
            assert view["presence_stats"] == {"result": {"num_clients": 2, "num_users": 2}}
            pubs = view["history"]["result"]["publications"]
            assert [p["data"]["text"] for p in pubs] == ["second", "first"]  # newest first
            assert pubs[0]["info"]["user"] == "bob"

            # a namespace without presence says so in its part, the rest still answers
            async with http.get(f"{base}/dashboard/channel?name=smallhistory:room") as resp:
                view = await resp.json()
            assert view["presence"] == {"error": {"code": 108, "message": "not available"}}
            assert view["history"]["result"]["publications"] == []
    finally:
        await alice.disconnect()
        await bob.disconnect()


class _Disconnects(ClientEventHandler):
    def __init__(self) -> None:
        self.codes: list[int] = []

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.codes.append(ctx.code)


async def test_connection_view_and_disconnect(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    base = running.http_url
    events = _Disconnects()
    first = await connect(running.ws_url, token("carol"), events=events)
    second = await connect(running.ws_url, token("carol"))
    other = await connect(running.ws_url, token("dave"))
    try:
        await subscribe(first, "news")
        async with http_session() as http:
            csrf = await logged_in(http, base)
            async with http.get(f"{base}/dashboard/connections") as resp:
                body = await resp.json()
            assert body["users"] == [{"user": "carol", "connections": 2}, {"user": "dave", "connections": 1}]
            assert body["total"] == 2 and not body["truncated"]
            async with http.get(f"{base}/dashboard/connections?search=av") as resp:
                assert (await resp.json())["users"] == [{"user": "dave", "connections": 1}]
            async with http.get(f"{base}/dashboard/connections?user=carol") as resp:
                conns = (await resp.json())["connections"]
            assert {c["client"] for c in conns} == {first.client_id, second.client_id}
            mine = next(c for c in conns if c["subscriptions"])
            assert mine["subscriptions"] == ["news"]
            assert (mine["transport"], mine["protocol"], mine["remote"]) == ("websocket", "json", "127.0.0.1")

            status, body = await post(http, base, "disconnect", {"user": "carol", "client": mine["client"]}, csrf)
            assert (status, body) == (200, {"result": {}})
            await eventually(lambda: events.codes == [3503])
            async with http.get(f"{base}/dashboard/connections?user=carol") as resp:
                assert len((await resp.json())["connections"]) == 1  # the other one stays
    finally:
        for client in (first, second, other):
            await client.disconnect()


async def test_insecure_admin_still_needs_the_csrf_token(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({"admin": {"enabled": True, "insecure": True, "secret": ADMIN_SECRET}})
    base = running.http_url
    async with aiohttp.ClientSession() as http:
        assert await post(http, base, "info", {}) == (403, {"error": "missing or wrong CSRF token"})
        async with http.get(f"{base}/dashboard/session") as resp:
            body = await resp.json()
        assert body["session"] == "insecure"
        status, answer = await post(http, base, "info", {}, body["csrf"])
        assert status == 200 and answer["result"]["nodes"]


async def test_with_redis_actions_reach_other_nodes(start_server: Callable[..., Any], redis_url: str) -> None:
    """The dashboard of node A disconnects a client of node B, and reads B's presence and history."""
    engine = {"engine": {"type": "redis", "redis": {"address": redis_url, "prefix": f"admin-{id(object())}"}}}
    a: Running = await start_server({**ADMIN, **engine})
    b: Running = await start_server({**ADMIN, **engine})
    seen = _Disconnects()
    far = await connect(b.ws_url, token("zoe"), events=seen)
    try:
        await subscribe(far, "news")
        await far.publish("news", {"text": "from node b"})
        async with http_session() as http:
            csrf = await logged_in(http, a.http_url)
            async with http.get(f"{a.http_url}/dashboard/channel?name=news") as resp:
                view = await resp.json()
            assert view["local_subscribers"] == 0  # not on this node
            assert [m["user"] for m in view["presence"]["result"]["presence"].values()] == ["zoe"]
            assert [p["data"] for p in view["history"]["result"]["publications"]] == [{"text": "from node b"}]
            async with http.get(f"{a.http_url}/dashboard/connections?user=zoe") as resp:
                assert (await resp.json())["connections"] == []  # a node lists its own connections
            assert await post(http, a.http_url, "disconnect", {"user": "zoe"}, csrf) == (200, {"result": {}})
        await eventually(lambda: seen.codes == [3503])
    finally:
        await far.disconnect()
