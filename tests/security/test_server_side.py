"""Server-side subscriptions from a connection token obey the limits of the subscribe command.

``client.channel_limit`` (over it: close 3505, as Centrifugo does), ``channel.max_length``
and the private prefix (a ``$`` channel in the ``channels`` claim needs a subscription
token, so it is skipped) — checked with real tokens over a real WebSocket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import Running, eventually
from tests.security.conftest import Closed, RawClient, conn_token
from trunkline.events import ClientView, DisconnectEvent

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]


async def _connect(raw: Raw, running: Running, token: str) -> dict[str, object] | Closed:
    client = await raw(running.ws_url)
    return await client.connect(token)


async def test_channels_claim_over_the_default_limit_is_3505(serve: Serve, raw: Raw) -> None:
    """The issue's case: 1000 channels in the token, ``client.channel_limit`` 128."""
    running = await serve()
    hub = running.server.node.hub
    result = await _connect(raw, running, conn_token("42", channels=[f"c{i}" for i in range(1000)]))
    assert result == Closed(3505, "channel limit")
    await eventually(lambda: hub.num_clients == 0)
    assert hub.num_subscriptions == 0 and hub.num_channels == 0


async def test_channel_limit_counts_channels_subs_and_personal_once(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"channel_limit": 4, "subscribe_to_user_personal_channel": {"enabled": True}}})
    # 3 + the personal channel "#42" = 4 = the limit; duplicates and a channel in both claims count once
    at_limit = conn_token("42", channels=["a", "b", "a", "a"], subs={"b": {}, "c": {"info": {"x": 1}}})
    result = await _connect(raw, running, at_limit)
    assert isinstance(result, dict), result
    assert set(result["connect"]["subs"]) == {"a", "b", "c", "#42"}  # type: ignore[index]

    over = conn_token("43", channels=["a", "b"], subs={"c": {}, "d": {}})  # 4 + "#43" = 5
    assert await _connect(raw, running, over) == Closed(3505, "channel limit")


async def test_channels_claim_skips_long_and_private_names(serve: Serve, raw: Raw) -> None:
    running = await serve()
    hub = running.server.node.hub
    longest, too_long = "l" * 255, "l" * 256
    channels = ["ok", longest, too_long, "$private", "unknownns:x"]
    result = await _connect(raw, running, conn_token("42", channels=channels))
    assert isinstance(result, dict), result
    assert set(result["connect"]["subs"]) == {"ok", longest}  # type: ignore[index]
    assert hub.num_subscriptions == 2
    assert not hub.subscribers(too_long) and not hub.subscribers("$private")


async def test_private_channel_in_subs_claim_stays_allowed(serve: Serve, raw: Raw) -> None:
    """``subs`` names a channel with its options on purpose (the application signed it); ``channels`` does not."""
    running = await serve()
    result = await _connect(raw, running, conn_token("42", subs={"$room": {}}, channels=["$other"]))
    assert isinstance(result, dict), result
    assert set(result["connect"]["subs"]) == {"$room"}  # type: ignore[index]


async def test_subs_claim_name_over_the_length_limit_is_skipped(serve: Serve, raw: Raw) -> None:
    running = await serve({"channel": {"max_length": 10}})
    result = await _connect(raw, running, conn_token("42", subs={"s" * 11: {}, "short": {}}))
    assert isinstance(result, dict), result
    assert set(result["connect"]["subs"]) == {"short"}  # type: ignore[index]


async def test_a_connect_refused_with_3505_never_reaches_the_connection_hooks(serve: Serve, raw: Raw) -> None:
    """3505 comes before the connection counts as connected: no on_connect, no on_disconnect."""
    running = await serve()
    node = running.server.node
    seen: list[str] = []

    async def connected(client: ClientView) -> None:
        seen.append("connect")

    async def disconnected(event: DisconnectEvent) -> None:
        seen.append(f"disconnect {event.code}")

    node.on_connect(connected)
    node.on_disconnect(disconnected)
    over = await _connect(raw, running, conn_token("42", channels=[f"c{i}" for i in range(200)]))
    assert over == Closed(3505, "channel limit")
    fine = await _connect(raw, running, conn_token("43", channels=["a"]))
    assert isinstance(fine, dict)
    await eventually(lambda: seen == ["connect"])
    assert node.hub.num_clients == 1
