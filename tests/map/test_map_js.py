"""Map subscriptions with centrifuge-js 5.8 in Node (``newMapSubscription``, ``mapPublish``, ``mapRemove``).

Real sockets, the real SDK over JSON and Protobuf: the first sync equals the server's state
(``Node.map_read_state``), updates and removals (also by TTL) arrive as ``update`` events,
a client whose link was cut catches up on the updates it missed, one too far behind the
stream re-syncs from a snapshot, and client writes follow the namespace's permissions.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from tests.conftest import Running, eventually
from tests.map.js_driver import Driver, Event, run_driver, update_of

from trunkline.broker.map_base import MapStateQuery, MapWrite
from trunkline.node import Node

MAP = {"allow_subscribe_for_client": True, "subscription_type": "map"}
WRITABLE = {"allow_publish_for_client": True, "allow_remove_for_client": True}
PAGES = {"default_page_size": 3, "min_page_size": 2, "max_page_size": 4}

CONFIG: dict[str, Any] = {
    "map_broker": {"cleanup_interval": "50ms"},
    "channel": {
        "namespaces": [
            {"name": "mm", **MAP, "map": {"mode": "durable", "key_ttl": "60s", **WRITABLE, **PAGES}},
            {"name": "small", **MAP, "map": {"mode": "durable", "key_ttl": "60s", "stream_size": 3, **PAGES}},
            # key_ttl: long enough for the keys put before a subscribe to outlive a JS client's connect
            # on a loaded machine (600 ms did not, once, with the suite in two workers)
            {"name": "eph", **MAP, "map": {"mode": "ephemeral", "key_ttl": "3s", **WRITABLE, **PAGES}},
            {"name": "ephlong", **MAP, "map": {"mode": "ephemeral", "key_ttl": "60s", **PAGES}},
            {"name": "ro", **MAP, "map": {"mode": "durable", "key_ttl": "60s", "allow_publish_for_subscriber": True}},
            {
                "name": "own",
                **MAP,
                "map": {
                    "mode": "durable",
                    "key_ttl": "60s",
                    "allow_publish_for_subscriber": True,
                    "client_key": "client_id",
                    "remove_client_on_unsubscribe": True,
                },
            },
            {"name": "chat", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
        ]
    },
}

Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def running(start_server: Start) -> Running:
    return await start_server(CONFIG)


@pytest.fixture(params=["memory", "redis"])
async def any_broker(request: pytest.FixtureRequest, start_server: Start) -> Running:
    """The server on the memory map broker, then on Redis (``map_broker.type = "redis"``)."""
    config = copy.deepcopy(CONFIG)
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix = f"mapjs-{uuid.uuid4().hex[:8]}"  # the redis-server is shared by the whole run
        config["map_broker"].update({"type": "redis", "redis": {"address": url, "prefix": prefix}})
    return await start_server(config)


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    async with run_driver() as drv:
        yield drv


async def put(node: Node, channel: str, key: str, value: Any) -> None:
    await node.map_publish(channel, MapWrite(key=key, data=msgspec.json.encode({"v": value})))


async def state_of(node: Node, channel: str) -> dict[str, Any]:
    """The whole state, read page by page: key -> data."""
    out: dict[str, Any] = {}
    cursor = ""
    for _ in range(1000):
        page = await node.map_read_state(channel, MapStateQuery(cursor=cursor, limit=100))
        out.update({e.key: msgspec.json.decode(e.data) for e in page.entries})
        cursor = page.cursor
        if not cursor:
            return out
    raise AssertionError("state pages without end")


def as_state(entries: list[Event]) -> dict[str, Any]:
    return {e["key"]: e["data"] for e in entries}


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_sync_then_updates_and_removals(running: Running, driver: Driver, protobuf: bool) -> None:
    node = running.server.node
    for i in range(10):  # several state pages (page size 4 at most)
        await put(node, "mm:a", f"k{i}", i)
    await driver.connect("a", running.ws_url, "alice", protobuf=protobuf)
    entries = await driver.subscribe("a", "mm:a", page_size=4)
    assert as_state(entries) == await state_of(node, "mm:a")
    assert len(entries) == 10

    mark = driver.mark()
    await put(node, "mm:a", "k3", "changed")
    update = await driver.wait(update_of("a", "mm:a", "k3"), since=mark)
    assert update["data"] == {"v": "changed"}
    await node.map_remove("mm:a", "k4")
    removal = await driver.wait(update_of("a", "mm:a", "k4", removed=True), since=mark)
    assert removal["data"] is None


async def test_client_writes_reach_every_subscriber(running: Running, driver: Driver) -> None:
    url = running.ws_url
    await driver.connect("a", url, "alice")
    await driver.connect("b", url, "bob", protobuf=True)
    assert await driver.subscribe("a", "mm:w") == []
    assert await driver.subscribe("b", "mm:w") == []
    mark = driver.mark()
    assert (await driver.write("b", "mm:w", "cursor", {"x": 1}))["ok"]
    got = await driver.wait(update_of("a", "mm:w", "cursor"), since=mark)
    assert got["data"] == {"x": 1}
    assert (await driver.write("a", "mm:w", "cursor", remove=True))["ok"]
    await driver.wait(update_of("b", "mm:w", "cursor", removed=True), since=mark)
    assert await state_of(running.server.node, "mm:w") == {}


async def test_client_writes_follow_permissions(running: Running, driver: Driver) -> None:
    url = running.ws_url
    await driver.connect("a", url, "alice")
    # ro: publish only for subscribers, never remove
    refused = await driver.write("a", "ro:1", "k", {"v": 1})
    assert (refused["ok"], refused["code"]) == (False, 103)
    await driver.subscribe("a", "ro:1")
    assert (await driver.write("a", "ro:1", "k", {"v": 1}))["ok"]
    refused = await driver.write("a", "ro:1", "k", remove=True)
    assert (refused["ok"], refused["code"]) == (False, 103)
    # a map write into a stream channel, a stream channel is not a map
    wrong = await driver.write("a", "chat:1", "k", {"v": 1})
    assert (wrong["ok"], wrong["code"]) == (False, 107)
    assert await state_of(running.server.node, "ro:1") == {"k": {"v": 1}}


async def test_client_key_and_remove_on_unsubscribe(running: Running, driver: Driver) -> None:
    url = running.ws_url
    node = running.server.node
    await driver.connect("w", url, "watcher")
    await driver.subscribe("w", "own:1")
    client = await driver.connect("a", url, "alice")
    await driver.subscribe("a", "own:1")
    mark = driver.mark()
    assert (await driver.write("a", "own:1", "whatever", {"here": True}))["ok"]
    await driver.wait(update_of("w", "own:1", client), since=mark)  # keyed by the client id, not the asked key
    assert await state_of(node, "own:1") == {client: {"here": True}}
    driver.send(op="unsubscribe", id="a", channel="own:1")
    await driver.wait(update_of("w", "own:1", client, removed=True), since=mark)
    # and on disconnect
    other = await driver.connect("b", url, "bob")
    await driver.subscribe("b", "own:1")
    assert (await driver.write("b", "own:1", "", {"here": 2}))["ok"]
    await driver.wait(update_of("w", "own:1", other), since=mark)
    driver.send(op="disconnect", id="b")
    await driver.wait(update_of("w", "own:1", other, removed=True), since=mark)
    assert await state_of(node, "own:1") == {}


async def test_ephemeral_map_and_ttl_removal(running: Running, driver: Driver) -> None:
    node = running.server.node
    for i in range(7):
        await put(node, "eph:1", f"k{i}", i)
    await driver.connect("a", running.ws_url, "alice")
    entries = await driver.subscribe("a", "eph:1", page_size=2)
    assert as_state(entries) == {f"k{i}": {"v": i} for i in range(7)}
    mark = driver.mark()
    assert (await driver.write("a", "eph:1", "fresh", {"v": "new"}))["ok"]
    await driver.wait(update_of("a", "eph:1", "fresh"), since=mark)
    # key_ttl 3 s: every key goes, each delivered as a removal
    for key in [*(f"k{i}" for i in range(7)), "fresh"]:
        await driver.wait(update_of("a", "eph:1", key, removed=True), since=mark, timeout=10)
    assert await state_of(node, "eph:1") == {}


async def test_updates_during_the_state_pages_are_not_lost(any_broker: Running, driver: Driver) -> None:
    """Writes race the paging; the client's state converges to the server's."""
    running = any_broker
    node = running.server.node
    for channel in ("mm:race", "ephlong:race"):
        for i in range(40):
            await put(node, channel, f"k{i}", i)

    def synced(channel: str, mark: int) -> bool:
        return any(e["ev"] == "sync" and e["channel"] == channel for e in driver.events[mark:])

    async def writer(channel: str, mark: int) -> int:
        """Write until the client has synced (20 pages of 2 entries take a while): writes race the pages."""
        round_ = 0
        while not synced(channel, mark) and round_ < 5000:
            await put(node, channel, f"k{round_ % 40}", f"w{round_}")
            if round_ % 7 == 0:
                await node.map_remove(channel, f"k{(round_ * 3) % 40}")
            round_ += 1
            await asyncio.sleep(0.001)
        return round_

    await driver.connect("a", running.ws_url, "alice")
    for channel in ("mm:race", "ephlong:race"):
        mark = driver.mark()
        task = asyncio.ensure_future(writer(channel, mark))
        driver.send(op="map", id="a", channel=channel, pageSize=2)
        sync = await driver.wait(lambda e, c=channel: e["ev"] == "sync" and e["channel"] == c, since=mark)
        assert await task > 3, "the writes raced the state pages"
        for i in range(20):  # and some after the sync
            await put(node, channel, f"k{i}", f"after{i}")
        client_state = as_state(sync["entries"])

        def settled(c: str = channel, m: int = mark, base: dict[str, Any] = client_state) -> dict[str, Any]:
            state = dict(base)
            for e in driver.events[m:]:
                if e["ev"] == "update" and e["channel"] == c:
                    if e.get("removed"):
                        state.pop(e["key"], None)
                    else:
                        state[e["key"]] = e["data"]
            return state

        expected = await state_of(node, channel)
        await eventually(lambda s=settled, x=expected: s() == x or None, timeout=5)
        if channel.startswith("mm:"):  # a stream: live updates follow each other, none twice, none skipped
            offsets = [e["offset"] for e in driver.events[mark:] if e["ev"] == "update" and e["channel"] == channel]
            assert len(offsets) >= 20 and offsets == list(range(offsets[0], offsets[0] + len(offsets)))


def cut(node: Node, client: str) -> None:
    """Drop a client's connection server-side, without a close frame (a lost link)."""
    session = node.hub.connection(client)
    assert session is not None
    session.transport.abort()


async def test_catch_up_after_a_dropped_link(any_broker: Running, driver: Driver) -> None:
    running = any_broker
    node = running.server.node
    for i in range(5):
        await put(node, "mm:cut", f"k{i}", i)
    client = await driver.connect("a", running.ws_url, "alice")
    entries = await driver.subscribe("a", "mm:cut")
    assert len(entries) == 5
    mark = driver.mark()
    cut(node, client)
    await driver.wait(lambda e: e["ev"] == "disconnected" or e["ev"] == "connecting", since=mark)
    # updates while the client is away: the stream (100 entries) still covers its position
    await put(node, "mm:cut", "k1", "during")
    await node.map_remove("mm:cut", "k2")
    await put(node, "mm:cut", "k9", "new")
    resubscribed = await driver.wait(lambda e: e["ev"] == "subscribed" and e["channel"] == "mm:cut", since=mark)
    assert resubscribed["recovered"] is True
    await driver.wait(update_of("a", "mm:cut", "k9"), since=mark)
    got = [e for e in driver.events[mark:] if e["ev"] == "update"]
    assert [(e["key"], e.get("removed", False)) for e in got] == [("k1", False), ("k2", True), ("k9", False)]
    assert not [e for e in driver.events[mark:] if e["ev"] == "sync"], "a recovery is updates, not a new sync"
    client_state = as_state(entries)
    for e in got:
        if e.get("removed"):
            client_state.pop(e["key"])
        else:
            client_state[e["key"]] = e["data"]
    assert client_state == await state_of(node, "mm:cut")


async def test_too_far_behind_the_stream_resyncs_from_a_snapshot(any_broker: Running, driver: Driver) -> None:
    running = any_broker
    node = running.server.node
    await put(node, "small:1", "a", 0)
    client = await driver.connect("a", running.ws_url, "alice")
    assert as_state(await driver.subscribe("a", "small:1")) == {"a": {"v": 0}}
    mark = driver.mark()
    cut(node, client)
    await driver.wait(lambda e: e["ev"] in {"disconnected", "connecting"}, since=mark)
    for i in range(10):  # stream_size 3: the client's position falls out of the stream
        await put(node, "small:1", f"n{i}", i)
    sync = await driver.wait(lambda e: e["ev"] == "sync" and e["channel"] == "small:1", since=mark)
    assert as_state(sync["entries"]) == await state_of(node, "small:1")
    assert len(sync["entries"]) == 11


async def test_two_nodes_share_a_map_through_redis(start_server: Start, redis_url: str, driver: Driver) -> None:
    config = copy.deepcopy(CONFIG)
    prefix = f"mapjs2-{uuid.uuid4().hex[:8]}"
    config["map_broker"].update({"type": "redis", "redis": {"address": redis_url, "prefix": prefix}})
    one, two = await start_server(config), await start_server(config)
    await put(one.server.node, "mm:shared", "from-one", 1)
    await driver.connect("a", one.ws_url, "alice")
    await driver.connect("b", two.ws_url, "bob", protobuf=True)
    assert as_state(await driver.subscribe("a", "mm:shared")) == {"from-one": {"v": 1}}
    assert as_state(await driver.subscribe("b", "mm:shared")) == {"from-one": {"v": 1}}
    mark = driver.mark()
    assert (await driver.write("b", "mm:shared", "from-two", {"v": 2}))["ok"]
    got = await driver.wait(update_of("a", "mm:shared", "from-two"), since=mark)
    assert got["data"] == {"v": 2}
    await driver.wait(update_of("b", "mm:shared", "from-two"), since=mark)
    assert await state_of(one.server.node, "mm:shared") == await state_of(two.server.node, "mm:shared")
