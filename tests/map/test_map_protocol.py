"""The map subscribe flow on the wire (bare JSON WebSocket, no SDK): phases, pages, errors.

What centrifuge-js relies on: state pages of the clamped size with a cursor and the frozen
position, phase 1 pages, a live reply without ``phase``, 112 where it must start over, and a
clear error code for every request that does not fit the namespace.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from tests.conftest import Running, eventually, make_settings
from tests.map.test_map_js import CONFIG, MAP, PAGES, WRITABLE, put
from tests.shared_poll.wsclient import WsClient

from trunkline.broker.base import HistoryQuery
from trunkline.broker.map_base import MapOptions, MapStateQuery, MapWrite
from trunkline.broker.map_memory import MemoryMapBroker
from trunkline.node import Node

PROTOCOL_CONFIG = copy.deepcopy(CONFIG)
PROTOCOL_CONFIG["channel"]["namespaces"] += [
    {
        "name": "slow",
        **MAP,
        "map": {"mode": "durable", "key_ttl": "60s", "subscribe_catch_up_timeout": "200ms", **PAGES},
    },
    {"name": "full", **MAP, "map": {"mode": "durable", "key_ttl": "60s", "max_keys": 2, **WRITABLE}},
    {
        "name": "obj",
        **MAP,
        "publication_data_format": "json_object",
        "map": {"mode": "durable", "key_ttl": "60s", **WRITABLE},
    },
]

Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def running(start_server: Start) -> Running:
    return await start_server(PROTOCOL_CONFIG)


@pytest.fixture
async def ws(running: Running) -> AsyncIterator[WsClient]:
    client = await WsClient.connect(running, "alice")
    yield client
    await client.close()


def sub(channel: str, **fields: Any) -> dict[str, Any]:
    return {"channel": channel, "type": 1, "flag": 1, **fields}


async def test_state_pages_then_stream_then_live(running: Running, ws: WsClient) -> None:
    node = running.server.node
    for i in range(10):
        await put(node, "mm:p", f"k{i:02}", i)
    first = (await ws.call("subscribe", sub("mm:p", phase=2, limit=1)))["subscribe"]
    assert first["phase"] == 2 and first["type"] == 1
    assert len(first["state"]) == 2, "limit 1 is raised to min_page_size 2"
    epoch, offset = first["epoch"], first["offset"]
    assert offset == 10 and epoch
    assert [e["key"] for e in first["state"]] == ["k00", "k01"] and first["state"][0]["data"] == {"v": 0}
    await put(node, "mm:p", "k00", "moved on")  # after the frozen position: the stream phase brings it
    seen = [e["key"] for e in first["state"]]
    cursor = first["cursor"]
    sizes = []
    for limit in (100, 0, 4):  # 100 -> max_page_size 4, none -> default_page_size 3
        page = (
            await ws.call("subscribe", sub("mm:p", phase=2, limit=limit, cursor=cursor, epoch=epoch, offset=offset))
        )["subscribe"]
        assert page["phase"] == 2 and page["epoch"] == epoch
        sizes.append(len(page["state"]))
        seen += [e["key"] for e in page["state"]]
        cursor = page.get("cursor", "")
        if not cursor:
            break
    assert sizes == [4, 3, 1] and seen == [f"k{i:02}" for i in range(10)]
    live = (await ws.call("subscribe", sub("mm:p", phase=1, epoch=epoch, offset=offset)))["subscribe"]
    assert "phase" not in live, "live is phase 0, left out"
    assert live["recoverable"] is True and live["epoch"] == epoch and live["offset"] == 11
    assert [(p["key"], p["data"], p["offset"]) for p in live["publications"]] == [("k00", {"v": "moved on"}, 11)]
    await node.map_remove("mm:p", "k05")
    removal = await eventually(lambda: ws.updates("mm:p", "k05"))
    assert removal == [{"offset": 12, "key": "k05", "removed": True}]
    again = await ws.call("subscribe", sub("mm:p", phase=2))
    assert again["error"]["code"] == 105


async def test_stream_pages_until_close_enough(running: Running, ws: WsClient) -> None:
    node = running.server.node
    await put(node, "mm:s", "a", 0)
    first = (await ws.call("subscribe", sub("mm:s", phase=2)))["subscribe"]
    assert "cursor" not in first and first["offset"] == 1
    for i in range(10):  # 10 behind, live_transition_max_publication_limit = max_page_size = 4
        await put(node, "mm:s", "a", i + 1)
    offset, pages = first["offset"], 0
    for _ in range(10):
        reply = (await ws.call("subscribe", sub("mm:s", phase=1, limit=2, epoch=first["epoch"], offset=offset)))[
            "subscribe"
        ]
        if "phase" not in reply:
            break
        pages += 1
        assert reply["phase"] == 1 and [p["offset"] for p in reply["publications"]] == [offset + 1, offset + 2]
        offset = reply["offset"]
    assert pages == 3 and offset == 7
    assert [p["offset"] for p in reply["publications"]] == [8, 9, 10, 11] and reply["offset"] == 11


async def test_ephemeral_last_state_page_is_live(running: Running, ws: WsClient) -> None:
    node = running.server.node
    for i in range(5):
        await put(node, "ephlong:e", f"k{i}", i)
    first = (await ws.call("subscribe", sub("ephlong:e", phase=2, limit=3)))["subscribe"]
    assert first["phase"] == 2 and first["cursor"] and "offset" not in first  # no stream: offsets stay 0
    await put(node, "ephlong:e", "k4", "between pages")  # buffered by the join of the first page
    last = (
        await ws.call("subscribe", sub("ephlong:e", phase=2, limit=3, cursor=first["cursor"], epoch=first["epoch"]))
    )["subscribe"]
    assert "phase" not in last and "recoverable" not in last
    assert [e["key"] for e in last["state"]] == ["k3", "k4"]
    pushed = await eventually(lambda: ws.updates("ephlong:e", "k4"))
    assert pushed[0]["data"] == {"v": "between pages"}


@pytest.mark.parametrize(
    ("channel", "fields", "code"),
    [
        ("mm:x", {"type": 7, "phase": 2}, 107),  # unknown type
        ("chat:x", {"type": 1, "phase": 2}, 103),  # a map subscribe of a stream channel
        ("mm:x", {"type": 0}, 103),  # a stream subscribe of a map channel
        ("mm:x", {"type": 2, "phase": 2}, 103),  # map_clients on a map namespace
        ("mm:x", {"type": 1, "phase": 0}, 107),
        ("mm:x", {"type": 1, "phase": 2, "limit": -1}, 107),
        ("mm:x", {"type": 1, "phase": 1, "offset": 0}, 107),  # stream phase without epoch
        ("mm:x", {"type": 1, "phase": 1, "epoch": "e", "cursor": "c"}, 107),
        ("mm:x", {"type": 1, "phase": 2, "cursor": "k5", "epoch": "e"}, 112),  # a page of no flow
        ("mm:x", {"type": 1, "phase": 1, "epoch": "nope", "recover": True}, 112),  # another epoch
        ("unknown:x", {"type": 1, "phase": 2}, 102),
    ],
)
async def test_bad_subscribes_get_an_error(ws: WsClient, channel: str, fields: dict[str, Any], code: int) -> None:
    reply = await ws.call("subscribe", {"channel": channel, **fields})
    assert reply["error"]["code"] == code, reply
    ok = await ws.call("subscribe", sub("mm:fine", phase=2))  # the connection stays usable
    assert "subscribe" in ok


async def test_a_flow_that_outlives_the_catch_up_timeout_starts_over(running: Running, ws: WsClient) -> None:
    node = running.server.node
    for i in range(6):
        await put(node, "slow:1", f"k{i}", i)
    first = (await ws.call("subscribe", sub("slow:1", phase=2, limit=2)))["subscribe"]
    (session,) = node.hub.connections()
    assert "slow:1" in session.pending
    await eventually(lambda: "slow:1" not in session.pending, timeout=3)  # subscribe_catch_up_timeout 200 ms
    late = await ws.call("subscribe", sub("slow:1", phase=2, limit=2, cursor=first["cursor"], epoch=first["epoch"]))
    assert late["error"]["code"] == 112
    again = (await ws.call("subscribe", sub("slow:1", phase=2, limit=4)))["subscribe"]
    assert again["phase"] == 2 and len(again["state"]) == 4


def _publish(channel: str, **fields: Any) -> dict[str, Any]:
    return {"channel": channel, "type": 1, **fields}


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (_publish("mm:w", data={"v": 1}), 107),  # no key
        (_publish("mm:w", key="k", removed=True, data={"v": 1}), 107),  # a removal with data
        (_publish("mm:w", key="k"), 107),  # no data
        ({"channel": "mm:w", "type": 2, "key": "k", "data": {}}, 107),  # unknown type
        ({"channel": "mm:w", "data": {"v": 1}}, 107),  # a stream publish into a map
        (_publish("chat:w", key="k", data={}), 107),  # a map write into a stream
        (_publish("mm:w", key="k" * 1025, data={}), 107),
        (_publish("obj:w", key="k", data=[1]), 107),  # publication_data_format json_object
        (_publish("ro:w", key="k", data={}), 103),  # allow_publish_for_subscriber, not subscribed
    ],
)
async def test_bad_map_writes_get_an_error(ws: WsClient, request_: dict[str, Any], code: int) -> None:
    reply = await ws.call("publish", request_)
    assert reply["error"]["code"] == code, reply


async def test_max_keys_refuses_a_new_key_with_106(running: Running, ws: WsClient) -> None:
    for key in ("a", "b"):
        assert "publish" in await ws.call("publish", _publish("full:1", key=key, data={"n": 1}))
    assert "publish" in await ws.call("publish", _publish("full:1", key="a", data={"n": 2}))  # not a new key
    refused = await ws.call("publish", _publish("full:1", key="c", data={"n": 1}))
    assert refused["error"]["code"] == 106
    assert await running.server.node.map_stats("full:1") == 2
    state = await running.server.node.map_read_state("full:1", MapStateQuery())
    assert {e.key: msgspec.json.decode(e.data) for e in state.entries} == {"a": {"n": 2}, "b": {"n": 1}}


async def test_a_flow_left_halfway_frees_its_join(running: Running) -> None:
    node = running.server.node
    for i in range(5):
        await put(node, "ephlong:left", f"k{i}", i)
    client = await WsClient.connect(running, "alice")
    first = (await client.call("subscribe", sub("ephlong:left", phase=2, limit=2)))["subscribe"]
    assert first["cursor"] and node.hub.has_subscribers("ephlong:left"), "the first page joined the channel"
    assert "unsubscribe" in await client.call("unsubscribe", {"channel": "ephlong:left"})
    assert not node.hub.has_subscribers("ephlong:left")
    (session,) = node.hub.connections()
    assert session.pending == {}
    await client.call("subscribe", sub("ephlong:left", phase=2, limit=2))
    assert node.hub.has_subscribers("ephlong:left")
    await client.close()  # a disconnect halfway
    await eventually(lambda: not node.hub.has_subscribers("ephlong:left") and not node.hub.connections())


class RacingBroker(MemoryMapBroker):
    """Writes a key just before a stream read with ``since`` returns: it lands in the join's buffer."""

    race: list[tuple[str, str]] = []

    async def read_stream(self, channel: str, query: HistoryQuery, options: MapOptions) -> Any:
        if query.since is not None and self.race:
            race_channel, key = self.race.pop()
            self.publish_now(race_channel, MapWrite(key=key, data=b'{"raced":true}'), options)
            before = await super().read_stream(channel, query, options)
            self.publish_now(race_channel, MapWrite(key=key + "-after", data=b'{"raced":2}'), options)
            return before
        return await super().read_stream(channel, query, options)


async def test_writes_during_the_live_transition_arrive_once(start_server: Start) -> None:
    settings = make_settings(PROTOCOL_CONFIG)
    broker = RacingBroker.from_settings(settings)
    node = Node(settings, map_broker=broker)
    running = await start_server(PROTOCOL_CONFIG, node=node)
    await put(node, "mm:t", "a", 0)
    client = await WsClient.connect(running, "alice")
    try:
        first = (await client.call("subscribe", sub("mm:t", phase=2)))["subscribe"]
        broker.race.append(("mm:t", "raced"))
        live = (await client.call("subscribe", sub("mm:t", phase=1, epoch=first["epoch"], offset=first["offset"])))[
            "subscribe"
        ]
        in_reply = [p["key"] for p in live.get("publications", [])]
        await eventually(lambda: client.updates("mm:t", "raced-after"))
        pushed = [p["key"] for p in client.updates("mm:t")]
        assert in_reply + pushed == ["raced", "raced-after"], (in_reply, pushed)
        offsets = [p["offset"] for p in live.get("publications", [])] + [p["offset"] for p in client.updates("mm:t")]
        assert offsets == [2, 3]
    finally:
        await client.close()
