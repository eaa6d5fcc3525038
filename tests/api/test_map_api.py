"""The server API of map subscriptions (issue 14): map_publish, map_remove, map_read_state,
map_read_stream, map_stats and map_clear over plain HTTP, alone and inside ``batch``.

The ``cent`` SDK (5.2.0, the newest on PyPI) has no map methods, so these requests are
plain HTTP with the API key, as ``curl`` in Centrifugo's docs. Hypothesis throws random
bodies at every map method: each gets a JSON answer with a result or a known error code.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running
from tests.map.servers import start_on_map_broker
from trunkline.broker.map_base import MapWrite

HEADERS = {"X-API-Key": API_KEY}

MAP_NAMESPACES: list[dict[str, Any]] = [
    {
        "name": "scores",
        "subscription_type": "map",
        "map": {"mode": "persistent", "ordered": True, "min_page_size": 1, "default_page_size": 2, "max_page_size": 3},
    },
    {"name": "feed", "subscription_type": "map", "map": {"mode": "durable", "key_ttl": "60s", "stream_size": 5}},
    {"name": "cursors", "subscription_type": "map", "map": {"mode": "ephemeral", "key_ttl": "60s", "max_keys": 2}},
    {"name": "plain", "allow_subscribe_for_client": True},
]
CONFIG: dict[str, Any] = {"channel": {"namespaces": MAP_NAMESPACES}}
METHODS = ("map_publish", "map_remove", "map_read_state", "map_read_stream", "map_stats", "map_clear")


@pytest.fixture(params=["memory", "redis"])
async def running(request: pytest.FixtureRequest, start_server: Any) -> Running:
    return await start_on_map_broker(request, start_server, CONFIG, "mapapi")


async def call(srv: Running, method: str, params: Any) -> dict[str, Any]:
    """POST /api/<method>; the parsed JSON answer (status 200 asserted)."""
    body = params if isinstance(params, bytes) else json.dumps(params).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{srv.api_url}/{method}", data=body, headers=HEADERS) as resp,
    ):
        assert resp.status == 200, (resp.status, await resp.text())
        answer: dict[str, Any] = await resp.json()
        return answer


async def ok(srv: Running, method: str, params: Any) -> dict[str, Any]:
    answer = await call(srv, method, params)
    assert "error" not in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


async def error(srv: Running, method: str, params: Any) -> tuple[int, str]:
    answer = await call(srv, method, params)
    assert "error" in answer, answer
    return answer["error"]["code"], answer["error"]["message"]


async def test_publish_read_stats_remove_clear(running: Running) -> None:
    srv = running
    first = await ok(srv, "map_publish", {"channel": "feed:a", "key": "k1", "data": {"v": 1}})
    assert first["offset"] == 1 and first["epoch"] and "suppressed" not in first
    second = await ok(srv, "map_publish", {"channel": "feed:a", "key": "k2", "data": {"v": 2}, "tags": {"t": "x"}})
    assert second == {"offset": 2, "epoch": first["epoch"]}
    await ok(srv, "map_publish", {"channel": "feed:a", "key": "k1", "data": {"v": 11}})

    state = await ok(srv, "map_read_state", {"channel": "feed:a", "limit": 100})
    by_key = {e["key"]: e for e in state["entries"]}
    assert {k: e["data"] for k, e in by_key.items()} == {"k1": {"v": 11}, "k2": {"v": 2}}
    assert by_key["k1"]["offset"] == 3 and by_key["k2"]["tags"] == {"t": "x"}
    assert (state["offset"], state["epoch"], state["cursor"]) == (3, first["epoch"], "")
    assert (await ok(srv, "map_stats", {"channel": "feed:a"})) == {"num_keys": 2}

    one = await ok(srv, "map_read_state", {"channel": "feed:a", "key": "k2", "limit": 10})
    assert [e["key"] for e in one["entries"]] == ["k2"]

    removed = await ok(srv, "map_remove", {"channel": "feed:a", "key": "k2"})
    assert removed == {"offset": 4, "epoch": first["epoch"]}
    missing = await ok(srv, "map_remove", {"channel": "feed:a", "key": "k2"})
    assert missing["suppressed"] is True and missing["suppress_reason"] == "key_not_found"
    assert (await ok(srv, "map_stats", {"channel": "feed:a"})) == {"num_keys": 1}

    assert (await ok(srv, "map_clear", {"channel": "feed:a"})) == {}
    assert (await ok(srv, "map_stats", {"channel": "feed:a"})) == {"num_keys": 0}
    assert (await ok(srv, "map_read_state", {"channel": "feed:a", "limit": 10}))["entries"] == []


async def test_key_modes_and_idempotency_are_suppressed_with_a_reason(running: Running) -> None:
    srv = running
    ch = "feed:modes"
    absent = await ok(srv, "map_publish", {"channel": ch, "key": "k", "data": {"v": 0}, "key_mode": "if_exists"})
    assert absent["suppressed"] is True and absent["suppress_reason"] == "key_not_found"
    created = await ok(srv, "map_publish", {"channel": ch, "key": "k", "data": {"v": 1}, "key_mode": "if_new"})
    assert "suppressed" not in created
    again = await ok(srv, "map_publish", {"channel": ch, "key": "k", "data": {"v": 2}, "key_mode": "if_new"})
    assert again["suppress_reason"] == "key_exists" and again["offset"] == created["offset"]
    updated = await ok(srv, "map_publish", {"channel": ch, "key": "k", "data": {"v": 3}, "key_mode": "if_exists"})
    assert "suppressed" not in updated and updated["offset"] == created["offset"] + 1

    params = {"channel": ch, "key": "j", "data": {"n": 1}, "idempotency_key": "once"}
    first = await ok(srv, "map_publish", params)
    repeat = await ok(srv, "map_publish", {**params, "data": {"n": 2}})
    assert repeat["suppressed"] is True and repeat["suppress_reason"] == "idempotency"
    assert repeat["offset"] == first["offset"]
    state = await ok(srv, "map_read_state", {"channel": ch, "key": "j", "limit": 1})
    assert state["entries"][0]["data"] == {"n": 1}, "the repeat wrote nothing"


async def test_ordered_state_pages_by_score_with_a_cursor(running: Running) -> None:
    srv = running
    ch = "scores:board"
    for i, score in enumerate([50, 10, 40, 30, 20]):
        await ok(srv, "map_publish", {"channel": ch, "key": f"p{i}", "data": {"i": i}, "score": score})

    async def walk(asc: bool, limit: int) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        cursor = ""
        for _ in range(10):  # bounded: 5 keys in pages of at least 1
            page = await ok(srv, "map_read_state", {"channel": ch, "limit": limit, "cursor": cursor, "asc": asc})
            assert len(page["entries"]) <= 3, "max_page_size caps a page"
            seen += [(e["key"], e["score"]) for e in page["entries"]]
            cursor = page["cursor"]
            if not cursor:
                return seen
        raise AssertionError("pagination did not end")

    desc = await walk(asc=False, limit=2)
    assert [s for _, s in desc] == [50, 40, 30, 20, 10]
    assert [k for k, _ in desc] == ["p0", "p2", "p3", "p4", "p1"]
    assert [s for _, s in await walk(asc=True, limit=100)] == [10, 20, 30, 40, 50]
    assert [s for _, s in await walk(asc=False, limit=-1)] == [50, 40, 30, 20, 10]

    position = await ok(srv, "map_read_state", {"channel": ch})
    assert position["entries"] == [] and position["offset"] == 5 and position["epoch"], "limit 0: only the position"


async def test_read_stream_since_reverse_and_position_only(running: Running) -> None:
    srv = running
    ch = "feed:stream"
    for i in range(4):
        await ok(srv, "map_publish", {"channel": ch, "key": f"k{i % 2}", "data": {"i": i}})
    await ok(srv, "map_remove", {"channel": ch, "key": "k0"})

    top = await ok(srv, "map_read_stream", {"channel": ch, "limit": 0})
    assert top["entries"] == [] and top["offset"] == 5 and top["epoch"]
    epoch = top["epoch"]

    everything = await ok(srv, "map_read_stream", {"channel": ch, "limit": -1})
    assert [e["offset"] for e in everything["entries"]] == [1, 2, 3, 4, 5]
    assert everything["entries"][-1] == {"key": "k0", "removed": True, "offset": 5, **_time(everything)}
    assert [e["data"]["i"] for e in everything["entries"][:4]] == [0, 1, 2, 3]

    since = await ok(srv, "map_read_stream", {"channel": ch, "limit": 10, "since": {"offset": 3, "epoch": epoch}})
    assert [e["offset"] for e in since["entries"]] == [4, 5]
    flat = await ok(srv, "map_read_stream", {"channel": ch, "limit": 10, "since_offset": 3, "since_epoch": epoch})
    assert flat["entries"] == since["entries"], "Centrifugo's flat since_offset/since_epoch read the same"
    backwards = await ok(srv, "map_read_stream", {"channel": ch, "limit": 2, "reverse": True})
    assert [e["offset"] for e in backwards["entries"]] == [5, 4]

    code, _ = await error(srv, "map_read_stream", {"channel": ch, "limit": 10, "since": {"offset": 1, "epoch": "x"}})
    assert code == 112


def _time(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``time`` field of the last entry, when the broker keeps one (it is not compared)."""
    last = reply["entries"][-1]
    return {"time": last["time"]} if "time" in last else {}


async def test_b64data_in_and_binary_data_out(running: Running) -> None:
    """``b64data`` is decoded as ``publish`` does; data that is not JSON is read back as ``b64data``."""
    srv = running
    raw = bytes(range(256))
    await ok(srv, "map_publish", {"channel": "feed:bin", "key": "b", "b64data": base64.b64encode(raw).decode()})
    await srv.server.node.map_publish("feed:bin", MapWrite(key="p", data=raw))  # as a Protobuf client writes it
    state = await ok(srv, "map_read_state", {"channel": "feed:bin", "limit": 10})
    by_key = {e["key"]: e for e in state["entries"]}
    assert by_key["b"]["data"] == raw.decode("latin-1")
    assert "data" not in by_key["p"] and base64.b64decode(by_key["p"]["b64data"]) == raw


async def test_errors_name_the_problem(running: Running) -> None:
    srv = running
    assert (await error(srv, "map_publish", {"channel": "nowhere:x", "key": "k", "data": {}}))[0] == 102
    code, message = await error(srv, "map_publish", {"channel": "plain:x", "key": "k", "data": {}})
    assert code == 107 and "not a map channel" in message and "'stream'" in message
    for method in METHODS:
        assert (await error(srv, method, {"channel": "plain:x", "key": "k", "data": {}}))[0] == 107, method
        assert (await error(srv, method, {"key": "k", "data": {}}))[0] == 107, method
    assert (await error(srv, "map_publish", {"channel": "feed:x", "data": {}}))[1] == "bad request: key required"
    assert (await error(srv, "map_remove", {"channel": "feed:x"}))[1] == "bad request: key required"
    assert (await error(srv, "map_publish", {"channel": "feed:x", "key": "k"}))[1] == "bad request: data required"
    code, message = await error(srv, "map_publish", {"channel": "feed:x", "key": "k", "data": {}, "key_mode": "upsert"})
    assert code == 107 and "key_mode" in message
    code, message = await error(srv, "map_publish", {"channel": "feed:x", "key": "k", "data": {}, "version": 3})
    assert code == 107 and "not supported" in message
    code, message = await error(srv, "map_publish", {"channel": "feed:x", "key": "k", "data": {}, "delta": True})
    assert code == 107 and "delta" in message
    code, message = await error(srv, "map_read_state", {"channel": "feed:x", "revision_offset": 3})
    assert code == 107 and "not supported" in message
    assert (await error(srv, "map_publish", {"channel": "feed:x", "key": "k", "b64data": "!!"}))[0] == 107
    assert (await error(srv, "map_publish", {"channel": "feed:x", "key": 5, "data": {}}))[0] == 107

    await ok(srv, "map_publish", {"channel": "cursors:r", "key": "a", "data": {}})
    await ok(srv, "map_publish", {"channel": "cursors:r", "key": "b", "data": {}})
    code, message = await error(srv, "map_publish", {"channel": "cursors:r", "key": "c", "data": {}})
    assert code == 106 and "max_keys" in message
    assert "suppressed" not in await ok(srv, "map_publish", {"channel": "cursors:r", "key": "a", "data": {"x": 1}})

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{srv.api_url}/map_publish", data=b"{not json", headers=HEADERS) as resp,
    ):
        assert resp.status == 400 and "error" in await resp.json()


async def test_batch_runs_map_methods(running: Running) -> None:
    srv = running
    result = await call(
        srv,
        "batch",
        {
            "commands": [
                {"map_publish": {"channel": "feed:batch", "key": "a", "data": {"n": 1}}},
                {"map_publish": {"channel": "feed:batch", "key": "b", "data": {"n": 2}}},
                {"map_stats": {"channel": "feed:batch"}},
                {"map_remove": {"channel": "plain:x", "key": "a"}},
            ]
        },
    )
    replies = result["replies"]  # Centrifugo answers batch with replies at the top level
    assert replies[0]["map_publish"]["offset"] == 1 and replies[1]["map_publish"]["offset"] == 2
    assert replies[2] == {"map_stats": {"num_keys": 2}}
    assert replies[3]["error"]["code"] == 107


# ---------------------------------------------------------------- hypothesis over request bodies

FEW = settings(
    max_examples=60,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
_json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
_json = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
_field_values = {
    "channel": st.sampled_from(["feed:h", "scores:h", "cursors:h", "plain:h", "nowhere:h", ""]) | st.text(max_size=5),
    "key": st.text(max_size=6),
    "data": _json,
    "b64data": st.sampled_from(["", "eyJ4IjoxfQ==", "!!"]),
    "key_mode": st.sampled_from(["", "if_new", "if_exists", "x"]),
    "score": st.integers(-(2**65), 2**65),
    "limit": st.integers(-5, 2000),
    "cursor": st.text(max_size=6),
    "asc": st.booleans(),
    "reverse": st.booleans(),
    "since": st.fixed_dictionaries({"offset": st.integers(-2, 2**65), "epoch": st.text(max_size=4)}) | _json,
    "tags": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2) | _json,
    "idempotency_key": st.text(max_size=4),
    "stream_data": _json,
    "delta": st.booleans(),
}
_bodies = st.fixed_dictionaries({}, optional=_field_values) | _json
KNOWN_CODES = {102, 106, 107, 112}


async def test_random_bodies_get_a_json_answer(running: Running) -> None:
    """Every map method answers every body with a result or a known error; the server keeps serving."""
    srv = running
    loop = asyncio.get_running_loop()

    async def one(method: str, body: Any) -> None:
        answer = await call(srv, method, body)
        if "error" in answer:
            assert answer["error"]["code"] in KNOWN_CODES, (method, body, answer)
        else:
            assert isinstance(answer["result"], dict), answer

    @FEW
    @given(method=st.sampled_from(METHODS), body=_bodies)
    def fuzz(method: str, body: Any) -> None:
        asyncio.run_coroutine_threadsafe(one(method, body), loop).result(timeout=30)

    await asyncio.to_thread(fuzz)
    assert (await ok(srv, "map_publish", {"channel": "feed:after", "key": "k", "data": {}}))["offset"] == 1
