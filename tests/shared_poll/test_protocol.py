"""Shared poll over the bare JSON protocol: signatures, limits, tracking, polling and its bounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import Running, eventually, token
from trunkline.auth.track_signature import sign

from .conftest import HMAC, INTERVAL, Backend, poll_config
from .wsclient import WsClient


def signed(channel: str, keys: list[str], *, user: str = "42", secret: str = HMAC, exp_in: int = 3600) -> str:
    now = int(time.time())
    return sign(secret, user=user, channel=channel, keys=keys, iat=now, exp=now + exp_in if exp_in else 0)


def track(channel: str, keys: list[str], signature: str | None = None, **versions: int) -> dict[str, Any]:
    items = [{"key": k, **({"version": versions[k]} if versions.get(k) else {})} for k in keys]
    return {"channel": channel, "type": 1, "track": [{"signature": signature or signed(channel, keys), "items": items}]}


async def subscribed(
    server: Running, channel: str, user: str = "42", shared: aiohttp.ClientSession | None = None
) -> WsClient:
    client = await WsClient.connect(server, user, shared)
    reply = await client.call("subscribe", {"channel": channel, "type": 4})
    assert "subscribe" in reply, reply
    return client


async def test_signatures_are_checked(poll_server: Running, backend: Backend) -> None:
    channel = "votes:sig"
    c = await subscribed(poll_server, channel)
    keys = ["a", "b"]
    bad = {
        "wrong secret": signed(channel, keys, secret="not-it"),
        "another user": signed(channel, keys, user="43"),
        "another channel": signed("votes:other", keys),
        "keys in another order": signed(channel, ["b", "a"]),
        "garbage": "12:34:zz",
        "no parts": "deadbeef",
    }
    for why, signature in bad.items():
        reply = await c.call("sub_refresh", track(channel, keys, signature))
        assert reply.get("error", {}).get("code") == 103, (why, reply)
    assert poll_server.server.node.shared_poll.channel(channel).keys() == []  # type: ignore[union-attr]
    # expired past the 30 s grace: 109 (the SDK fetches a new signature); within the grace: accepted
    expired = await c.call("sub_refresh", track(channel, keys, signed(channel, keys, exp_in=-60)))
    assert expired["error"]["code"] == 109
    grace = await c.call("sub_refresh", track(channel, keys, signed(channel, keys, exp_in=-5)))
    assert grace["sub_refresh"].get("expires") is True and "error" not in grace
    ok = await c.call("sub_refresh", track(channel, keys, signed(channel, keys, exp_in=100)))
    assert ok["sub_refresh"]["expires"] is True and 95 <= ok["sub_refresh"]["ttl"] <= 100
    forever = await c.call("sub_refresh", track(channel, keys, signed(channel, keys, exp_in=0)))
    assert forever["sub_refresh"] == {}
    await c.close()


async def test_previous_secret_during_rotation(start_server: Callable[..., Any], backend: Backend) -> None:
    rotating = {"hmac_secret_key": "new-secret", "hmac_previous_secret_key": HMAC}
    server: Running = await start_server(poll_config(backend.url, **rotating))
    channel = "votes:rot"
    c = await subscribed(server, channel)
    old = await c.call("sub_refresh", track(channel, ["k"], signed(channel, ["k"], secret=HMAC)))
    assert "error" not in old
    new = await c.call("sub_refresh", track(channel, ["k"], signed(channel, ["k"], secret="new-secret")))
    assert "error" not in new
    await c.close()
    # past hmac_previous_secret_key_valid_until (server time) the previous secret is refused
    ended = {**rotating, "hmac_previous_secret_key_valid_until": int(time.time()) - 10}
    server = await start_server(poll_config(backend.url, **ended))
    c = await subscribed(server, channel)
    refused = await c.call("sub_refresh", track(channel, ["k"], signed(channel, ["k"], secret=HMAC)))
    assert refused["error"]["code"] == 103
    await c.close()


async def test_limits_and_bad_requests(poll_server: Running, backend: Backend) -> None:
    channel = "small:lim"
    a = await subscribed(poll_server, channel)
    # max_keys_per_connection = 3: four keys are refused with 106 and nothing is tracked
    over = await a.call("sub_refresh", track(channel, ["k1", "k2", "k3", "k4"]))
    assert over["error"]["code"] == 106
    state = poll_server.server.node.shared_poll.channel(channel)
    assert state is not None and state.keys() == []
    assert "error" not in await a.call("sub_refresh", track(channel, ["k1", "k2", "k3"]))
    # max_keys_per_channel = 4: another connection may add one more distinct key, not two
    b = await subscribed(poll_server, channel, user="43")
    two_new = await b.call("sub_refresh", track(channel, ["k4", "k5"], signed(channel, ["k4", "k5"], user="43")))
    assert two_new["error"]["code"] == 106
    one_new = await b.call("sub_refresh", track(channel, ["k1", "k4"], signed(channel, ["k1", "k4"], user="43")))
    assert "error" not in one_new and sorted(state.keys()) == ["k1", "k2", "k3", "k4"]
    # a track without batches or keys, an untrack without keys: 107
    assert (await a.call("sub_refresh", {"channel": channel, "type": 1}))["error"]["code"] == 107
    empty = {"channel": channel, "type": 1, "track": [{"signature": signed(channel, []), "items": []}]}
    assert (await a.call("sub_refresh", empty))["error"]["code"] == 107
    # a key with a NUL hashes like two keys (["k1\0k2"] like ["k1", "k2"]): refused, not tracked
    joined = track(channel, ["k1\x00k2"], signed(channel, ["k1", "k2"]))
    assert (await a.call("sub_refresh", joined))["error"]["code"] == 107
    assert (await a.call("sub_refresh", {"channel": channel, "type": 2}))["error"]["code"] == 107
    # tracking in a channel the connection did not subscribe to: 103
    assert (await a.call("sub_refresh", track("votes:else", ["k"])))["error"]["code"] == 103
    await a.close()
    await b.close()


async def test_subscription_type_must_match_the_namespace(poll_server: Running) -> None:
    c = await WsClient.connect(poll_server)
    stream = await c.call("subscribe", {"channel": "votes:x"})
    assert stream["error"]["code"] == 107
    poll = await c.call("subscribe", {"channel": "plain", "type": 4})
    assert poll["error"]["code"] == 107
    ok = await c.call("subscribe", {"channel": "votes:x", "type": 4})
    assert ok["subscribe"]["epoch"]  # the synthetic versions' epoch of this channel state
    again = await c.call("subscribe", {"channel": "votes:x", "type": 4})
    assert again["error"]["code"] == 105
    await c.close()


async def test_only_tracked_keys_are_polled_and_untrack_stops_polling(poll_server: Running, backend: Backend) -> None:
    channel = "votes:untracked"
    for key in ("a", "b", "c"):
        backend.set(channel, key, {"v": key})
    c = await subscribed(poll_server, channel)
    assert "error" not in await c.call("sub_refresh", track(channel, ["a", "b"]))
    await eventually(lambda: len(c.updates(channel)) == 2)
    assert backend.asked(channel) == ["a", "b"]  # "c" exists at the backend but nobody tracks it
    assert "error" not in await c.call("sub_refresh", {"channel": channel, "type": 2, "untrack": ["b"]})
    backend.reset()
    await asyncio.sleep(2.5 * INTERVAL)
    assert backend.calls(channel) >= 2 and backend.asked(channel) == ["a"]
    # unsubscribing untracks the rest: the channel is not polled any more
    await c.call("unsubscribe", {"channel": channel})
    await asyncio.sleep(INTERVAL)
    backend.reset()
    await asyncio.sleep(2.5 * INTERVAL)
    assert backend.calls(channel) == 0
    await c.close()


async def test_disconnect_untracks(poll_server: Running, backend: Backend) -> None:
    channel = "votes:gone"
    backend.set(channel, "a", 1)
    c = await subscribed(poll_server, channel)
    await c.call("sub_refresh", track(channel, ["a"]))
    await eventually(lambda: c.updates(channel))
    await c.close()
    poll = poll_server.server.node.shared_poll
    await eventually(lambda: poll.channel(channel) is None, timeout=3)  # after channel_shutdown_delay (1 s)
    backend.reset()
    await asyncio.sleep(2 * INTERVAL)
    assert backend.calls(channel) == 0


async def test_removed_items_are_delivered_and_no_longer_polled(poll_server: Running, backend: Backend) -> None:
    channel = "votes:rm"
    backend.set(channel, "a", {"n": 1})
    backend.set(channel, "b", {"n": 2})
    c = await subscribed(poll_server, channel)
    await c.call("sub_refresh", track(channel, ["a", "b"]))
    await eventually(lambda: len(c.updates(channel)) == 2)
    backend.set(channel, "a", None, removed=True)
    removal = (await eventually(lambda: [u for u in c.updates(channel, "a") if u.get("removed")]))[0]
    assert removal == {"key": "a", "removed": True}
    backend.reset()
    await asyncio.sleep(2.5 * INTERVAL)
    assert backend.asked(channel) == ["b"]
    await c.close()


async def test_the_track_reply_carries_what_the_node_holds(poll_server: Running, backend: Backend) -> None:
    channel = "votes:cached"
    backend.set(channel, "a", {"n": 5})
    first = await subscribed(poll_server, channel)
    await first.call("sub_refresh", track(channel, ["a"]))
    pushed = (await eventually(lambda: first.updates(channel, "a")))[0]
    second = await subscribed(poll_server, channel, user="43")
    reply = await second.call("sub_refresh", track(channel, ["a"], signed(channel, ["a"], user="43")))
    assert reply["sub_refresh"]["items"] == [pushed] == [{"data": {"n": 5}, "key": "a", "version": pushed["version"]}]
    # a client that already holds the version gets nothing
    third = await subscribed(poll_server, channel, user="44")
    held = track(channel, ["a"], signed(channel, ["a"], user="44"), a=pushed["version"])
    same = await third.call("sub_refresh", held)
    assert same["sub_refresh"] == {"expires": True, "ttl": same["sub_refresh"]["ttl"]}
    for c in (first, second, third):
        await c.close()


async def test_versioned_mode(poll_server: Running, backend: Backend) -> None:
    channel = "ver:prices"
    backend.set(channel, "x", {"p": 10}, version=3)
    c = await subscribed(poll_server, channel)
    await c.call("sub_refresh", track(channel, ["x"]))
    got = (await eventually(lambda: c.updates(channel, "x")))[0]
    assert got["version"] == 3 and got["data"] == {"p": 10}
    # the backend is told the version held; new data under the same version is not a change
    backend.set(channel, "x", {"p": 11}, version=3)
    await asyncio.sleep(2.5 * INTERVAL)
    assert len(c.updates(channel, "x")) == 1
    backend.set(channel, "x", {"p": 12}, version=4)
    newer = (await eventually(lambda: c.updates(channel, "x")[1:]))[0]
    assert newer == {"data": {"p": 12}, "key": "x", "version": 4}
    await c.close()


async def test_batches_of_refresh_batch_size(poll_server: Running, backend: Backend) -> None:
    channel = "batch:five"
    keys = [f"k{i}" for i in range(5)]
    c = await subscribed(poll_server, channel)
    await c.call("sub_refresh", track(channel, keys))
    await asyncio.sleep(INTERVAL)
    backend.reset()
    await asyncio.sleep(4 * INTERVAL)
    stats = backend.stats()
    calls, asked = stats["calls"]["/refresh"][channel], stats["keys"]["/refresh"][channel]
    # refresh_batch_size = 2: three calls a cycle (2 + 2 + 1 keys), spread over the interval
    assert asked / calls < 2.01 and 9 <= calls <= 15, (calls, asked)
    await c.close()


async def test_server_side_subscriptions_skip_shared_poll_channels(poll_server: Running) -> None:
    # a connection token's channels: the shared-poll one is left out (logged), the connect succeeds
    async with aiohttp.ClientSession() as http, http.ws_connect(poll_server.ws_url) as ws:
        connect = {"id": 1, "connect": {"token": token("42", channels=["votes:server", "plain"])}}
        await ws.send_str(json.dumps(connect))
        first = (await ws.receive_str(timeout=5)).splitlines()[0]
        reply = json.loads(first)["connect"]
        assert list(reply.get("subs", {})) == ["plain"]
    assert poll_server.server.node.shared_poll.channel("votes:server") is None
