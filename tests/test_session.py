"""A Session and the Centrifugo commands driven directly: in-memory transport, manual clock.

No sockets and no sleeps: JSON frames go in through ``Session.handle_frame``, the
writer's frames are decoded from a :class:`MemoryTransport`, and heartbeats, stale
and expiry timers and the command rate limit run on a :class:`ManualClock`.

Token checks at connect, subscribe and refresh use the real wall clock (the JWT
``exp`` is verified against ``time.time()``), so tokens are valid at real now and the
manual clock's wall time starts at real ``time.time()``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import pytest

from tests.conftest import SECRET, make_settings, token
from tests.manual_clock import ManualClock
from tests.memory_transport import MemoryTransport
from trunkline import errors as E
from trunkline.commands import new_session
from trunkline.node import Node
from trunkline.session import Session, State

PING_INTERVAL = 10.0
PONG_TIMEOUT = 3.0
STALE_CLOSE_DELAY = 5.0
EXPIRED_CLOSE_DELAY = 2.0
EXPIRED_SUB_CLOSE_DELAY = 2.0

CLIENT = {
    "ping_interval": f"{PING_INTERVAL}s",
    "pong_timeout": f"{PONG_TIMEOUT}s",
    "stale_close_delay": f"{STALE_CLOSE_DELAY}s",
    "expired_close_delay": f"{EXPIRED_CLOSE_DELAY}s",
    "expired_sub_close_delay": f"{EXPIRED_SUB_CLOSE_DELAY}s",
}
NO_PING = {"ping_interval": "0s"}  # for tests that move the clock far: no heartbeat to answer


async def flushed() -> None:
    """Let the writer's flush (scheduled with ``call_soon`` when something is pushed) run."""
    await asyncio.sleep(0)


class RecordingNode(Node):
    """A node that keeps the tasks it spawns for sessions (closes from timers), so tests can await them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spawned: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = super().spawn(coro)
        self.spawned.append(task)
        return task

    async def settle(self) -> None:
        """Run every task spawned since the last settle (and what they spawn) to completion, then flush."""
        while self.spawned:
            tasks, self.spawned = self.spawned, []
            await asyncio.gather(*tasks)
        await flushed()


class Client:
    """One session over one memory transport, with numbered JSON commands."""

    def __init__(self, session: Session, transport: MemoryTransport) -> None:
        self.session = session
        self.transport = transport
        self._ids = itertools.count(1)

    @property
    def id(self) -> str:
        return self.session.client_id

    async def send(self, *commands: dict[str, Any]) -> None:
        """One frame of commands, as given (``id`` included or not)."""
        await self.session.handle_frame(b"\n".join(json.dumps(c).encode() for c in commands))

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its whole reply (``{"id": n, method: {...}}`` or ``{"id": n, "error": ...}``)."""
        command_id = next(self._ids)
        await self.send({"id": command_id, method: params or {}})
        return await self.transport.reply(command_id)

    async def ok(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command that must succeed; return its result."""
        reply = await self.call(method, params)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply[method]
        return result


class Harness:
    def __init__(self, node: RecordingNode, clock: ManualClock) -> None:
        self.node = node
        self.clock = clock

    def client(self) -> Client:
        transport = MemoryTransport()
        session = self.node.new_session(transport, remote="memory")
        assert isinstance(session, Session)
        return Client(session, transport)

    async def connect(self, user: str = "42", **token_args: Any) -> tuple[Client, dict[str, Any]]:
        c = self.client()
        result = await c.ok("connect", {"token": token(user, **token_args)})
        return c, result

    async def advance(self, seconds: float) -> None:
        """Move the manual clock and let what its timers started finish."""
        self.clock.advance(seconds)
        await self.node.settle()


StartNode = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """``await start_node(client_overrides)``: a started node on a manual clock, shut down after the test."""
    started: list[Harness] = []

    async def start(client: dict[str, Any] | None = None) -> Harness:
        clock = ManualClock()  # wall time starts at the real time.time(): JWTs are checked against it
        settings = make_settings({"client": {**CLIENT, **(client or {})}}, port=8000)
        node = RecordingNode(settings, clock=clock)
        node.session_factory = new_session
        await node.start()
        node.spawned.clear()  # the node's own loops: cancelled at shutdown, never awaited here
        harness = Harness(node, clock)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.node.shutdown(timeout=1)


@pytest.fixture
async def h(start_node: StartNode) -> Harness:
    return await start_node()


def short_lived(user: str, **claims: Any) -> str:
    """A token whose ``exp`` is the next whole second: less than one second ahead of real now."""
    return jwt.encode({"sub": user, "exp": math.floor(time.time()) + 1, **claims}, SECRET, algorithm="HS256")


async def call_short_lived(
    make_client: Callable[[], Awaitable[Client]], method: str, params: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``method`` with a token under a second from expiry; retried if the real second turned meanwhile (110)."""
    for _ in range(3):
        c = await make_client()
        reply = await c.call(method, params())
        if reply.get("error", {}).get("code") != E.EXPIRED.code:
            return reply
    raise AssertionError("token expired before use three times")


# ---------------------------------------------------------------------- the manual clock itself


def test_manual_clock_runs_due_timers_in_order_and_skips_cancelled() -> None:
    clock = ManualClock(wall=5000.0, monotonic=10.0)
    ran: list[tuple[str, float, float]] = []

    def note(name: str) -> Callable[[], None]:
        return lambda: ran.append((name, clock.monotonic(), clock.time()))

    clock.call_later(3, note("c"))
    clock.call_later(1, note("a"))
    cancelled = clock.call_later(2, note("x"))
    clock.call_later(2, lambda: clock.call_later(0.5, note("armed-by-callback")))
    cancelled.cancel()
    assert clock.pending() == [1, 2, 3]

    clock.advance(2.9)
    assert ran == [("a", 11.0, 5001.0), ("armed-by-callback", 12.5, 5002.5)]
    assert (clock.monotonic(), clock.time()) == (12.9, 5002.9)
    clock.advance(0.1)
    assert ran[-1] == ("c", 13.0, 5003.0)
    assert clock.pending() == []
    with pytest.raises(ValueError):
        clock.advance(-1)


# ---------------------------------------------------------------------- connect


async def test_connect_with_token(h: Harness) -> None:
    c, result = await h.connect("42", ttl=3600)
    assert result["client"] == c.id
    assert result["version"] == h.node.version
    assert result["ping"] == PING_INTERVAL
    assert result["pong"] is True
    assert result["expires"] is True
    assert 3598 <= result["ttl"] <= 3600
    assert c.session.state is State.CONNECTED
    assert c.session.user == "42"
    assert h.node.hub.user_connections("42")


async def test_connect_token_without_exp_does_not_expire(h: Harness) -> None:
    _, result = await h.connect("42", ttl=None)
    assert "expires" not in result
    assert "ttl" not in result


async def test_connect_without_credentials_closes_3501(h: Harness) -> None:
    c = h.client()
    await c.send({"id": 1, "connect": {}})
    code, reason = await c.transport.closed_with()
    assert code == 3501
    assert "credentials" in reason
    assert c.transport.messages == []
    assert c.session.closed


async def test_connect_with_bad_token_closes_3500(h: Harness) -> None:
    c = h.client()
    await c.send({"id": 1, "connect": {"token": token("42", secret="another-secret")}})
    code, _ = await c.transport.closed_with()
    assert code == 3500


@pytest.mark.parametrize(
    "command",
    [
        {"id": 1, "subscribe": {"channel": "room"}},
        {"id": 1, "publish": {"channel": "room", "data": {"x": 1}}},
        {"id": 1, "presence": {"channel": "room"}},
        {"id": 1, "history": {"channel": "room", "limit": 10}},
        {"id": 1, "ping": {}},
        {"id": 1, "refresh": {"token": "x"}},
        {},
    ],
    ids=["subscribe", "publish", "presence", "history", "ping", "refresh", "pong"],
)
async def test_command_before_connect_closes_3501(h: Harness, command: dict[str, Any]) -> None:
    c = h.client()
    await c.send(command)
    code, reason = await c.transport.closed_with()
    assert (code, reason) == (3501, "bad request: connect first")
    assert c.transport.messages == []


async def test_second_connect_closes_3501(h: Harness) -> None:
    c, _ = await h.connect()
    await c.send({"id": 9, "connect": {"token": token("42")}})
    code, reason = await c.transport.closed_with()
    assert (code, reason) == (3501, "bad request: already connected")


async def test_ping_command_replies(h: Harness) -> None:
    c, _ = await h.connect()
    assert await c.call("ping") == {"id": 2, "ping": {}}


# ---------------------------------------------------------------------- channels


async def test_publication_reaches_the_subscriber_of_another_session(h: Harness) -> None:
    a, _ = await h.connect("1")
    b, _ = await h.connect("2")
    sub_a = await a.ok("subscribe", {"channel": "room"})
    await b.ok("subscribe", {"channel": "room"})
    assert sub_a["recoverable"] is True
    assert sub_a["epoch"]

    assert await b.ok("publish", {"channel": "room", "data": {"text": "hi"}}) == {}

    pub = await a.transport.push("pub", "room")
    assert pub["channel"] == "room"
    assert pub["pub"]["data"] == {"text": "hi"}
    assert pub["pub"]["offset"] == 1
    assert pub["pub"]["info"]["user"] == "2"
    assert pub["pub"]["info"]["client"] == b.id
    # the publisher is subscribed too and gets its own publication
    assert (await b.transport.push("pub", "room"))["pub"]["data"] == {"text": "hi"}
    # force_push_join_leave: the first subscriber saw the second one join
    await a.transport.wait_for(lambda: any(p["join"]["info"]["client"] == b.id for p in a.transport.pushes("join")))


async def test_publication_to_a_channel_without_subscribers_of_this_session_is_not_pushed(h: Harness) -> None:
    a, _ = await h.connect("1")
    b, _ = await h.connect("2")
    await a.ok("subscribe", {"channel": "room"})
    await b.ok("subscribe", {"channel": "other"})
    await b.ok("publish", {"channel": "other", "data": {"n": 1}})
    await b.transport.push("pub", "other")
    await h.node.settle()
    assert a.transport.pushes("pub") == []


async def test_history_and_presence(h: Harness) -> None:
    a, _ = await h.connect("1")
    b, _ = await h.connect("2")
    sub = await a.ok("subscribe", {"channel": "room"})
    await b.ok("subscribe", {"channel": "room"})
    for n in (1, 2):
        await b.ok("publish", {"channel": "room", "data": {"n": n}})

    history = await a.ok("history", {"channel": "room", "limit": 10})
    assert [p["data"] for p in history["publications"]] == [{"n": 1}, {"n": 2}]
    assert [p["offset"] for p in history["publications"]] == [1, 2]
    assert history["offset"] == 2
    assert history["epoch"] == sub["epoch"]

    reverse = await a.ok("history", {"channel": "room", "limit": 1, "reverse": True})
    assert [p["data"] for p in reverse["publications"]] == [{"n": 2}]

    presence = await a.ok("presence", {"channel": "room"})
    assert set(presence["presence"]) == {a.id, b.id}
    assert presence["presence"][a.id]["user"] == "1"
    assert presence["presence"][b.id]["user"] == "2"

    stats = await a.ok("presence_stats", {"channel": "room"})
    assert stats == {"num_clients": 2, "num_users": 2}


async def test_history_of_a_namespace_without_history_is_not_available(h: Harness) -> None:
    c, _ = await h.connect()
    reply = await c.call("history", {"channel": "nohistory:room", "limit": 10})
    assert reply["error"]["code"] == E.NOT_AVAILABLE.code


async def test_unsubscribe(h: Harness) -> None:
    a, _ = await h.connect("1")
    b, _ = await h.connect("2")
    await a.ok("subscribe", {"channel": "room"})
    await b.ok("subscribe", {"channel": "room"})

    assert await a.ok("unsubscribe", {"channel": "room"}) == {}
    assert "room" not in a.session.subscriptions
    leave = await b.transport.push("leave", "room")
    assert leave["leave"]["info"]["client"] == a.id

    presence = await b.ok("presence", {"channel": "room"})
    assert set(presence["presence"]) == {b.id}

    await b.ok("publish", {"channel": "room", "data": {"after": True}})
    await b.transport.push("pub", "room")
    await h.node.settle()
    assert a.transport.pushes("pub") == []

    # subscribing again works and delivers again
    await a.ok("subscribe", {"channel": "room"})
    await b.ok("publish", {"channel": "room", "data": {"again": True}})
    assert (await a.transport.push("pub", "room"))["pub"]["data"] == {"again": True}


async def test_subscribe_twice_is_error_105(h: Harness) -> None:
    c, _ = await h.connect()
    await c.ok("subscribe", {"channel": "room"})
    reply = await c.call("subscribe", {"channel": "room"})
    assert reply["error"]["code"] == E.ALREADY_SUBSCRIBED.code
    assert not c.transport.closed


# ---------------------------------------------------------------------- heartbeats and stale


async def test_server_pings_after_ping_interval_and_closes_3012_without_pong(h: Harness) -> None:
    c, _ = await h.connect()
    seen = len(c.transport.messages)

    await h.advance(PING_INTERVAL - 0.5)
    assert len(c.transport.messages) == seen  # no ping yet

    await h.advance(0.5)
    assert await c.transport.message(seen) == {}  # the ping: an empty message
    assert len(c.transport.messages) == seen + 1

    await h.advance(PONG_TIMEOUT - 0.5)
    assert not c.transport.closed

    await h.advance(0.5)
    code, _ = await c.transport.closed_with()
    assert code == E.NO_PONG.code == 3012
    assert c.session.closed


async def test_pong_in_time_keeps_the_connection(h: Harness) -> None:
    c, _ = await h.connect()
    for round_ in range(3):
        seen = len(c.transport.messages)
        await h.advance(PING_INTERVAL if round_ == 0 else PING_INTERVAL - PONG_TIMEOUT - 1)  # the next ping
        assert await c.transport.message(seen) == {}
        await c.send({})  # pong
        await h.advance(PONG_TIMEOUT + 1)  # past the pong deadline
        assert not c.transport.closed
        assert c.session.state is State.CONNECTED
    assert await c.call("ping") == {"id": 2, "ping": {}}


async def test_unexpected_pong_closes_3501(h: Harness) -> None:
    c, _ = await h.connect()
    await c.send({})
    code, reason = await c.transport.closed_with()
    assert (code, reason) == (3501, "bad request: unexpected pong")


async def test_stale_connection_closes_3502(h: Harness) -> None:
    c = h.client()
    await h.advance(STALE_CLOSE_DELAY - 0.5)
    assert not c.transport.closed
    await h.advance(0.5)
    code, _ = await c.transport.closed_with()
    assert code == E.STALE.code == 3502


async def test_connect_in_time_cancels_stale(h: Harness) -> None:
    c = h.client()
    await h.advance(STALE_CLOSE_DELAY - 0.5)
    await c.ok("connect", {"token": token("42")})
    await h.advance(1.0)
    assert not c.transport.closed
    assert c.session.state is State.CONNECTED


# ---------------------------------------------------------------------- expiry and refresh


async def test_expired_token_closes_3005_after_expired_close_delay(start_node: StartNode) -> None:
    h = await start_node(NO_PING)
    c, result = await h.connect("42", ttl=60)
    expire_at = c.session.expire_at
    assert expire_at is not None
    assert result["expires"] is True
    until_close = expire_at - h.clock.time() + EXPIRED_CLOSE_DELAY

    await h.advance(until_close - 0.5)
    assert not c.transport.closed
    await h.advance(0.5)
    code, _ = await c.transport.closed_with()
    assert code == E.CONNECTION_EXPIRED.code == 3005


async def test_refresh_extends_the_connection(start_node: StartNode) -> None:
    h = await start_node(NO_PING)
    c, _ = await h.connect("42", ttl=60)
    first_expiry = c.session.expire_at
    assert first_expiry is not None

    result = await c.ok("refresh", {"token": token("42", ttl=3600)})
    assert result["client"] == c.id
    assert result["expires"] is True
    assert 3598 <= result["ttl"] <= 3600

    await h.advance(first_expiry - h.clock.time() + EXPIRED_CLOSE_DELAY + 60)
    assert not c.transport.closed
    assert c.session.state is State.CONNECTED

    expire_at = c.session.expire_at
    assert expire_at is not None
    await h.advance(expire_at - h.clock.time() + EXPIRED_CLOSE_DELAY + 0.5)
    code, _ = await c.transport.closed_with()
    assert code == 3005


async def test_refresh_with_token_of_another_user_closes_3500(h: Harness) -> None:
    c, _ = await h.connect("42", ttl=60)
    await c.send({"id": 7, "refresh": {"token": token("43", ttl=3600)}})
    code, _ = await c.transport.closed_with()
    assert code == 3500


async def test_expiring_subscription_is_unsubscribed_2501(start_node: StartNode) -> None:
    h = await start_node(NO_PING)
    c, _ = await h.connect("42", ttl=None)
    sub_token = token("42", ttl=60, channel="$secret")
    result = await c.ok("subscribe", {"channel": "$secret", "token": sub_token})
    assert result["expires"] is True
    expire_at = c.session.subscriptions["$secret"].expire_at
    assert expire_at is not None

    await h.advance(expire_at - h.clock.time() + EXPIRED_SUB_CLOSE_DELAY - 0.5)
    assert c.transport.pushes("unsubscribe") == []
    await h.advance(1.0)
    push = await c.transport.push("unsubscribe", "$secret")
    assert push["unsubscribe"] == {"code": 2501, "reason": "subscription expired"}
    assert "$secret" not in c.session.subscriptions
    assert not c.transport.closed


# ---------------------------------------------------------------------- ttl of credentials under a second from expiry
# (issue 10 §3: `"expires": true` with no `ttl` makes centrifuge-python crash with KeyError: 'ttl')


async def test_connect_with_token_expiring_within_a_second_has_ttl(h: Harness) -> None:
    async def fresh() -> Client:
        return h.client()

    reply = await call_short_lived(fresh, "connect", lambda: {"token": short_lived("42")})
    result = reply["connect"]
    assert result["expires"] is True
    assert result.get("ttl", 0) >= 1, result


async def test_refresh_with_token_expiring_within_a_second_has_ttl(h: Harness) -> None:
    async def connected() -> Client:
        c, _ = await h.connect("42", ttl=60)
        return c

    reply = await call_short_lived(connected, "refresh", lambda: {"token": short_lived("42")})
    result = reply["refresh"]
    assert result["expires"] is True
    assert result.get("ttl", 0) >= 1, result


async def test_subscribe_with_token_expiring_within_a_second_has_ttl(h: Harness) -> None:
    async def connected() -> Client:
        c, _ = await h.connect("42", ttl=None)
        return c

    reply = await call_short_lived(
        connected, "subscribe", lambda: {"channel": "$secret", "token": short_lived("42", channel="$secret")}
    )
    result = reply["subscribe"]
    assert result["expires"] is True
    assert result.get("ttl", 0) >= 1, result


async def test_sub_refresh_with_token_expiring_within_a_second_has_ttl(h: Harness) -> None:
    async def subscribed() -> Client:
        c, _ = await h.connect("42", ttl=None)
        await c.ok("subscribe", {"channel": "$secret", "token": token("42", ttl=60, channel="$secret")})
        return c

    reply = await call_short_lived(
        subscribed, "sub_refresh", lambda: {"channel": "$secret", "token": short_lived("42", channel="$secret")}
    )
    result = reply["sub_refresh"]
    assert result["expires"] is True
    assert result.get("ttl", 0) >= 1, result


# ---------------------------------------------------------------------- command rate limit


async def test_command_rate_limit_errors_111_then_closes_3013(start_node: StartNode) -> None:
    h = await start_node({"command_rate_limit": 2, "command_rate_burst": 2})
    c, _ = await h.connect()  # 1 of the burst of 2
    # tokens: 1 -> 0 (ok), -1 (111), -2 (111), -3: more than a burst over -> 3013
    await c.send(*({"id": n, "ping": {}} for n in range(10, 15)))
    code, _ = await c.transport.closed_with()
    assert code == E.TOO_MANY_REQUESTS_DISCONNECT.code == 3013
    by_id = {m["id"]: m for m in c.transport.messages if "id" in m}
    assert by_id[10] == {"id": 10, "ping": {}}
    for n in (11, 12):
        assert by_id[n]["error"]["code"] == E.TOO_MANY_REQUESTS.code == 111
        assert by_id[n]["error"]["temporary"] is True
    assert 13 not in by_id
    assert 14 not in by_id


async def test_command_rate_limit_refills_with_monotonic_time(start_node: StartNode) -> None:
    h = await start_node({"command_rate_limit": 2, "command_rate_burst": 2, **NO_PING})
    c, _ = await h.connect()
    assert "error" not in await c.call("ping")
    assert (await c.call("ping"))["error"]["code"] == 111
    await h.advance(1.5)  # refused commands cost a token too: -1 + 1.5 s * 2/s = 2, the burst
    assert "error" not in await c.call("ping")
    assert "error" not in await c.call("ping")
    assert (await c.call("ping"))["error"]["code"] == 111
    assert not c.transport.closed
