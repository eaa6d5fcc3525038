"""Map presence (issue 14 item 2) with centrifuge-js 5.8 in Node.

Subscribers of ``game:*`` (a stream namespace with both presence prefixes) are keys of
``clients:game:*`` (one per connection, ClientInfo as data and info) and ``users:game:*``
(one per user). Watchers use ``newMapClientsSubscription`` / ``newMapUsersSubscription``:
joins arrive at once, a client's leave at once, a user's leave when its key's TTL runs out
after the last of its connections left (and not while one stays). Run on the memory map
broker and on Redis (``map_broker.type = "redis"``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.conftest import API_KEY, Running, token
from tests.map.js_driver import NodeDriver, run_node, update_of
from tests.map.servers import start_on_map_broker
from tests.mqtt.paho_helpers import V5, Paho

DRIVER = Path(__file__).with_name("test_presence_driver.js")
USER_TTL = 1.0  # the users namespace's key_ttl: short, so a user's leave shows within the test

PRESENCE_CONFIG: dict[str, Any] = {
    "mqtt": {"websocket": {"enabled": True}},
    "client": {"presence_update_interval": "5s"},
    "map_broker": {"cleanup_interval": "100ms"},
    "channel": {
        "namespaces": [
            {
                "name": "game",
                "allow_subscribe_for_client": True,
                "map_clients_presence_channel_prefix": "clients:",
                "map_users_presence_channel_prefix": "users:",
            },
            {
                "name": "board",
                "subscription_type": "map",
                "map": {"mode": "ephemeral", "key_ttl": "60s"},
                "allow_subscribe_for_client": True,
                "map_clients_presence_channel_prefix": "clients:",
            },
            {
                "name": "clients",
                "subscription_type": "map_clients",
                "map": {"mode": "durable", "key_ttl": "60s"},
                "allow_subscribe_for_client": True,
            },
            {
                "name": "users",
                "subscription_type": "map_users",
                "map": {"mode": "durable", "key_ttl": f"{USER_TTL}s"},
                "allow_subscribe_for_client": True,
            },
        ]
    },
}


class Driver(NodeDriver):
    """centrifuge-js clients and map presence watchers (tests/map/test_presence_driver.js)."""

    timeout = 5.0

    def updates(self, watcher: str, channel: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "update" and e["id"] == watcher and e["channel"] == channel]

    async def connect(self, name: str, url: str, user: str) -> str:
        self.send(op="connect", id=name, url=url, token=token(user, info={"name": user}))
        event = await self.wait(lambda e: e["ev"] == "connected" and e["id"] == name)
        client: str = event["client"]
        return client

    async def subscribe(self, name: str, channel: str, *, map_type: bool = False) -> None:
        self.send(op="subscribe", id=name, channel=channel, map=map_type)
        await self.wait(lambda e: e["ev"] == "subscribed" and e["id"] == name and e["channel"] == channel)

    async def watch(self, name: str, channel: str, kind: str) -> list[dict[str, Any]]:
        """Subscribe a map presence watcher; the entries of its first sync."""
        self.send(op="watch", id=name, channel=channel, kind=kind)
        event = await self.wait(lambda e: e["ev"] == "sync" and e["id"] == name and e["channel"] == channel)
        entries: list[dict[str, Any]] = event["entries"]
        return entries


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    async with run_node(Driver, DRIVER) as drv:
        yield drv


Start = Callable[..., Awaitable[Running]]


@pytest.fixture(params=["memory", "redis"])
async def running(request: pytest.FixtureRequest, start_server: Start) -> Running:
    return await start_on_map_broker(request, start_server, PRESENCE_CONFIG, "mappres")


async def test_clients_presence_joins_and_leaves_at_once(running: Running, driver: Driver) -> None:
    url = running.ws_url
    await driver.connect("w", url, "watcher")
    assert await driver.watch("w", "clients:game:1", "clients") == []

    alice = await driver.connect("a", url, "alice")
    await driver.subscribe("a", "game:1")
    joined = await driver.wait(update_of("w", "clients:game:1", alice))
    assert joined["info"]["user"] == "alice" and joined["info"]["client"] == alice
    assert joined["info"]["connInfo"] == {"name": "alice"}
    assert joined["data"]["user"] == "alice" and joined["data"]["client"] == alice

    bob = await driver.connect("b", url, "bob")
    await driver.subscribe("b", "game:1")
    await driver.wait(update_of("w", "clients:game:1", bob))

    # the server API reads the same keys, with their ClientInfo
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{running.api_url}/map_read_state",
            json={"channel": "clients:game:1", "limit": 10},
            headers={"X-API-Key": API_KEY},
        ) as resp,
    ):
        state = (await resp.json())["result"]
    infos = {e["key"]: e["info"] for e in state["entries"]}
    assert infos[alice] == {"user": "alice", "client": alice, "conn_info": {"name": "alice"}}
    assert infos[bob]["user"] == "bob"

    # a second watcher syncs both keys from the state
    await driver.connect("w2", url, "watcher2")
    entries = await driver.watch("w2", "clients:game:1", "clients")
    assert sorted(e["key"] for e in entries) == sorted([alice, bob])

    driver.send(op="unsubscribe", id="a", channel="game:1")
    await driver.wait(update_of("w", "clients:game:1", alice, removed=True))
    started = time.monotonic()
    driver.send(op="disconnect", id="b")
    await driver.wait(update_of("w", "clients:game:1", bob, removed=True))
    assert time.monotonic() - started < 2.0, "a disconnect removes the client key at once, not by TTL"
    assert running.server.node.map_presence is not None and len(running.server.node.map_presence) == 0


async def test_users_presence_is_one_key_per_user_and_leaves_by_ttl(running: Running, driver: Driver) -> None:
    url = running.ws_url
    await driver.connect("w", url, "watcher")
    assert await driver.watch("w", "users:game:2", "users") == []

    await driver.connect("a1", url, "alice")
    await driver.subscribe("a1", "game:2")
    await driver.wait(update_of("w", "users:game:2", "alice"))
    await driver.connect("a2", url, "alice")
    await driver.subscribe("a2", "game:2")

    # the first connection leaves; the second keeps the key alive past two TTLs
    driver.send(op="unsubscribe", id="a1", channel="game:2")
    await asyncio.sleep(2 * USER_TTL)  # a span to prove nothing happens, not a synchronisation
    assert [e["key"] for e in driver.updates("w", "users:game:2")] == ["alice"], "one key for two connections"

    left = time.monotonic()
    driver.send(op="disconnect", id="a2")
    await driver.wait(update_of("w", "users:game:2", "alice", removed=True), timeout=USER_TTL + 4)
    waited = time.monotonic() - left
    assert waited >= USER_TTL * 0.5, f"removed after {waited:.2f}s: by TTL, not at the leave"


async def test_a_map_subscription_keeps_presence_too(running: Running, driver: Driver) -> None:
    """The prefixes work for any subscription type: here a map channel's subscribers."""
    await driver.connect("w", running.ws_url, "watcher")
    assert await driver.watch("w", "clients:board:1", "clients") == []
    carol = await driver.connect("c", running.ws_url, "carol")
    await driver.subscribe("c", "board:1", map_type=True)
    joined = await driver.wait(update_of("w", "clients:board:1", carol))
    assert joined["info"]["user"] == "carol"
    driver.send(op="unsubscribe", id="c", channel="board:1")
    await driver.wait(update_of("w", "clients:board:1", carol, removed=True))


async def test_keys_of_a_node_that_dies_go_by_ttl(
    redis_url: str, start_server: Start, server_process: Callable[..., Any], driver: Driver
) -> None:
    """Two nodes on one Redis: a subscriber's node is killed (no leave runs); its client key
    disappears by the key_ttl of the clients namespace, delivered to a watcher on the other node."""
    ttl = 1.5
    config = json.loads(json.dumps(PRESENCE_CONFIG))
    prefix = f"mapdeath-{uuid.uuid4().hex[:8]}"
    config["map_broker"].update({"type": "redis", "redis": {"address": redis_url, "prefix": prefix}})
    for ns in config["channel"]["namespaces"]:
        if ns["name"] == "clients":
            ns["map"]["key_ttl"] = f"{ttl}s"
    survivor = await start_server(config)
    doomed = server_process(config)

    await driver.connect("w", survivor.ws_url, "watcher")
    assert await driver.watch("w", "clients:game:9", "clients") == []
    dan = await driver.connect("d", doomed.ws_url, "dan")
    await driver.subscribe("d", "game:9")
    await driver.wait(update_of("w", "clients:game:9", dan))
    await asyncio.sleep(2 * ttl)  # a span to prove the dying node's refresh kept the key, not a synchronisation
    assert not driver.updates("w", "clients:game:9")[1:], "kept alive while its node lives"

    killed = time.monotonic()
    doomed.stop(signal.SIGKILL)
    await driver.wait(update_of("w", "clients:game:9", dan, removed=True), timeout=ttl + 4)
    waited = time.monotonic() - killed
    assert waited <= ttl + 1.5, f"removed {waited:.2f}s after the node died"


async def test_mqtt_subscribers_keep_presence_too(running: Running, driver: Driver) -> None:
    """An MQTT client's subscription to ``game/5`` (channel ``game:5``) is a key of ``clients:game:5``."""
    await driver.connect("w", running.ws_url, "watcher")
    assert await driver.watch("w", "clients:game:5", "clients") == []
    device = Paho(V5, client_id="meter-1")
    assert (await device.connect(running.port, username="meter", password=token("meter"))) == 0
    try:
        await device.subscribe("game/5", 1)
        joined = await driver.wait(update_of("w", "clients:game:5", "meter-1"))
        assert joined["info"]["user"] == "meter"
    finally:
        device.stop()
    await driver.wait(update_of("w", "clients:game:5", "meter-1", removed=True))
