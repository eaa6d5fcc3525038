"""Channel permissions end to end: subscription tokens, private and user-limited channels,
per-namespace allow-options for clients, subscribers and anonymous users, name limits."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from centrifuge import SubscribedContext, SubscriptionEventHandler, UnsubscribedContext

from tests.conftest import Running, eventually
from tests.security.conftest import Closed, RawClient, conn_token, sdk_client, sub_token

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]

HISTORY = {"presence": True, "history_size": 10, "history_ttl": "60s"}
ALL_FOR_CLIENT = {f"allow_{op}_for_client": True for op in ("subscribe", "publish", "presence", "history")}
CONFIG: dict[str, Any] = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {
        "namespaces": [
            {"name": "open", **HISTORY, **ALL_FOR_CLIENT},
            {
                "name": "members",
                **HISTORY,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "allow_history_for_subscriber": True,
            },
            {
                "name": "public",
                **HISTORY,
                **ALL_FOR_CLIENT,
                **{f"allow_{op}_for_anonymous": True for op in ("subscribe", "publish", "presence", "history")},
            },
            {"name": "closed", **HISTORY},
            {"name": "dm", "allow_user_limited_channels": True, "allow_subscribe_for_client": True},
            {"name": "feat", **HISTORY, "allow_presence_for_subscriber": True},
        ]
    },
}
OPS = ("subscribe", "publish", "presence", "history")
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("open", "client"): set(OPS),
    ("open", "subscriber"): {"publish", "presence", "history"},
    ("open", "anonymous"): set(),
    ("members", "client"): {"subscribe"},
    ("members", "subscriber"): {"publish", "presence", "history"},
    ("members", "anonymous"): set(),
    ("public", "client"): set(OPS),
    ("public", "subscriber"): {"publish", "presence", "history"},
    ("public", "anonymous"): set(OPS),
    ("closed", "client"): set(),
    ("closed", "subscriber"): set(),  # the token grants the subscription, nothing more
    ("closed", "anonymous"): set(),
}


def error_of(result: dict[str, Any] | Closed) -> tuple[int, str] | None:
    assert isinstance(result, dict), f"closed instead of replying: {result}"
    error = result.get("error")
    return (error["code"], error["message"]) if error else None


async def client_for(raw: Raw, running: Running, user: str | None) -> RawClient:
    client = await raw(running.ws_url)
    result = await client.connect(conn_token(user) if user is not None else None)
    assert isinstance(result, dict) and "connect" in result, result
    return client


@pytest.mark.parametrize(("namespace", "actor"), sorted(ALLOWED))
async def test_namespace_allow_options(serve: Serve, raw: Raw, namespace: str, actor: str) -> None:
    running = await serve(CONFIG)
    channel = f"{namespace}:room"
    user = {"client": "42", "subscriber": "43", "anonymous": None}[actor]
    client = await client_for(raw, running, user)
    if actor == "subscriber":
        reply = await client.call("subscribe", {"channel": channel, "token": sub_token("43", channel)})
        assert "subscribe" in reply, reply
    results: dict[str, tuple[int, str] | None] = {}
    if actor != "subscriber":
        results["subscribe"] = error_of(await client.attempt("subscribe", {"channel": f"{namespace}:other"}))
    results["publish"] = error_of(await client.attempt("publish", {"channel": channel, "data": {"m": 1}}))
    results["presence"] = error_of(await client.attempt("presence", {"channel": channel}))
    results["history"] = error_of(await client.attempt("history", {"channel": channel, "limit": 10}))
    expected = {op: None if op in ALLOWED[namespace, actor] else (103, "permission denied") for op in results}
    assert results == expected


# ----------------------------------------------------------------------------------- tokens


async def test_private_channel_needs_a_token(serve: Serve, raw: Raw) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    assert error_of(await client.attempt("subscribe", {"channel": "$secret"})) == (103, "permission denied")
    reply = await client.call("subscribe", {"channel": "$secret", "token": sub_token("42", "$secret")})
    assert "subscribe" in reply


@pytest.mark.parametrize(
    ("token_user", "token_channel"), [("43", "$secret"), ("42", "$other"), ("", "$secret")], ids=str
)
async def test_subscription_token_of_another_user_or_channel_is_3500(
    serve: Serve, raw: Raw, token_user: str, token_channel: str
) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    result = await client.attempt("subscribe", {"channel": "$secret", "token": sub_token(token_user, token_channel)})
    assert result == Closed(3500, "invalid token: subscription token for another user or channel")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("forged", (103, "permission denied")),
        ("not yet valid", (103, "permission denied")),
        ("garbage", (103, "permission denied")),
        ("connection token", (103, "permission denied")),
        ("expired", (109, "token expired")),
    ],
)
async def test_bad_subscription_tokens(serve: Serve, raw: Raw, kind: str, expected: tuple[int, str]) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    token = {
        "forged": sub_token("42", "$secret", key="attacker-" + "a" * 40),
        "not yet valid": sub_token("42", "$secret", nbf=int(time.time() + 600)),
        "garbage": "not.a.token",
        "connection token": conn_token("42"),
        "expired": sub_token("42", "$secret", ttl=-60),
    }[kind]
    assert error_of(await client.attempt("subscribe", {"channel": "$secret", "token": token})) == expected


async def test_subscription_token_with_sdk(serve: Serve) -> None:
    """centrifuge-python: a genuine token subscribes; a forged one ends unsubscribed with 103."""
    running = await serve(CONFIG)

    class Sub(SubscriptionEventHandler):
        def __init__(self) -> None:
            self.subscribed: list[SubscribedContext] = []
            self.unsubscribed: list[UnsubscribedContext] = []

        async def on_subscribed(self, ctx: SubscribedContext) -> None:
            self.subscribed.append(ctx)

        async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
            self.unsubscribed.append(ctx)

    good, bad = Sub(), Sub()
    async with sdk_client(running.ws_url, conn_token("42")) as (client, _):
        client.new_subscription("$good", good, token=sub_token("42", "$good"))
        client.new_subscription("$bad", bad, token=sub_token("42", "$bad", key="attacker-" + "a" * 40))
        await client.connect()
        await client.ready(timeout=5)
        await client.get_subscription("$good").subscribe()  # type: ignore[union-attr]
        await client.get_subscription("$bad").subscribe()  # type: ignore[union-attr]
        await eventually(lambda: good.subscribed and bad.unsubscribed, timeout=5)
        assert bad.unsubscribed[0].code == 103
        assert not bad.subscribed


async def test_subscription_token_info_becomes_chan_info(serve: Serve, raw: Raw) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    token = sub_token("42", "$room", info={"role": "moderator"})
    await client.call("subscribe", {"channel": "$room", "token": token})
    presence = (await client.call("presence", {"channel": "$room"}))["presence"]["presence"]
    (entry,) = presence.values()
    assert entry["user"] == "42"
    assert entry["chan_info"] == {"role": "moderator"}


async def test_subscription_token_override(serve: Serve, raw: Raw) -> None:
    """``override`` changes namespace options for this subscription only."""
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    plain = await client.call("subscribe", {"channel": "feat:a", "token": sub_token("42", "feat:a")})
    assert not plain["subscribe"].get("recoverable")
    override = {"force_recovery": {"value": True}, "presence": {"value": False}}
    forced = await client.call(
        "subscribe", {"channel": "feat:b", "token": sub_token("42", "feat:b", override=override)}
    )
    assert forced["subscribe"]["recoverable"] is True
    assert (await client.call("presence", {"channel": "feat:a"}))["presence"]["presence"]
    assert (await client.call("presence", {"channel": "feat:b"}))["presence"] == {"presence": {}}


async def test_subscription_token_expiry_unsubscribes(serve: Serve, raw: Raw) -> None:
    running = await serve({**CONFIG, "client": {**CONFIG["client"], "expired_sub_close_delay": "0s"}})
    client = await client_for(raw, running, "42")
    reply = await client.call("subscribe", {"channel": "$short", "token": sub_token("42", "$short", ttl=1.5)})
    assert reply["subscribe"]["expires"] is True

    async def unsubscribed() -> bool:
        await client.pump(0.2)
        return any(p.get("channel") == "$short" and "unsubscribe" in p for p in client.pushes)

    await eventually(unsubscribed, timeout=5)
    push = next(p for p in client.pushes if "unsubscribe" in p)
    assert push["unsubscribe"] == {"code": 2501, "reason": "subscription expired"}


# ----------------------------------------------------------------------------------- user-limited


@pytest.mark.parametrize(("user", "allowed"), [("42", True), ("43", True), ("44", False), ("4", False), (None, False)])
async def test_user_limited_channel(serve: Serve, raw: Raw, user: str | None, allowed: bool) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, user)
    result = error_of(await client.attempt("subscribe", {"channel": "dm:chat#42,43"}))
    assert result == (None if allowed else (103, "permission denied"))


# ----------------------------------------------------------------------------------- names


async def test_channel_over_the_length_limit_is_107(serve: Serve, raw: Raw) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    longest = "open:" + "x" * 250
    assert len(longest) == 255
    assert "subscribe" in await client.call("subscribe", {"channel": longest})
    too_long = longest + "x"
    for method, params in (
        ("subscribe", {"channel": too_long}),
        ("publish", {"channel": too_long, "data": {}}),
        ("presence", {"channel": too_long}),
        ("history", {"channel": too_long}),
    ):
        assert error_of(await client.attempt(method, params)) == (107, "bad request: channel too long"), method
    huge = "x" * 60_000
    assert error_of(await client.attempt("subscribe", {"channel": huge})) == (107, "bad request: channel too long")


async def test_unknown_namespace_is_102(serve: Serve, raw: Raw) -> None:
    running = await serve(CONFIG)
    client = await client_for(raw, running, "42")
    assert error_of(await client.attempt("subscribe", {"channel": "nope:room"})) == (102, "unknown channel")
    token = sub_token("42", "$nope:room")
    assert error_of(await client.attempt("subscribe", {"channel": "$nope:room", "token": token})) == (
        102,
        "unknown channel",
    )


async def test_denied_subscriber_receives_nothing(serve: Serve, raw: Raw) -> None:
    """A refused subscription gets no publications of the channel."""
    running = await serve(CONFIG)
    owner = await client_for(raw, running, "42")
    await owner.call("subscribe", {"channel": "$vault", "token": sub_token("42", "$vault")})
    intruder = await client_for(raw, running, "44")
    assert error_of(await intruder.attempt("subscribe", {"channel": "$vault"})) == (103, "permission denied")
    await owner.call("publish", {"channel": "$vault", "data": {"secret": 1}})
    await owner.pump(0.2)
    await intruder.pump(0.3)
    assert any(p.get("pub") for p in owner.pushes)
    assert not intruder.pushes
    assert intruder.close is None
