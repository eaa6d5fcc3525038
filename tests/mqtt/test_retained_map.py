"""MQTT retained messages readable as a map (``mqtt.retained.map_channel_prefix``).

paho-mqtt devices retain values on ``sensors/...`` topics; centrifuge-js (in Node) reads the map
channel ``retained:sensors``: a late watcher's first sync holds one entry per retained topic (key
= the topic), a new retained value is an update, MQTT's delete (an empty retained payload) is a
removal, a publish without retain changes nothing, and a user-limited channel is never copied. The
server API's ``map_read_state`` reads the same map.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running, make_settings, token
from tests.map.js_driver import run_driver, update_of
from tests.map.servers import start_on_map_broker
from tests.mqtt.paho_helpers import V5, Paho, get
from trunkline.config import ConfigError
from trunkline.mqtt.retained import RetainedMessage
from trunkline.mqtt.session.retained_map import entry_data

MAP = "retained:sensors"
CONFIG: dict[str, Any] = {
    "mqtt": {"websocket": {"enabled": True}, "retained": {"map_channel_prefix": "retained:"}},
    "channel": {
        "namespaces": [
            {"name": "sensors", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
            {
                "name": "retained",
                "subscription_type": "map",
                "map": {"mode": "persistent"},
                "allow_subscribe_for_client": True,
            },
        ]
    },
}


async def read_state(srv: Running) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{srv.api_url}/map_read_state",
            data=json.dumps({"channel": MAP, "limit": 1000}),
            headers={"X-API-Key": API_KEY},
        ) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
    return body["result"]


async def retain(device: Paho, topic: str, payload: bytes, *, flag: bool = True) -> None:
    info = device.client.publish(topic, payload, qos=1, retain=flag)
    assert await get(device.published) == info.mid  # PUBACK: stored (and copied) before it is sent


@pytest.fixture(params=["memory", "redis"])
async def srv(request: pytest.FixtureRequest, start_server: Any) -> Running:
    """Memory engine and map broker; or both on Redis (the retained store is then RedisRetained)."""
    return await start_on_map_broker(request, start_server, CONFIG, "retmap", on_engine=True)


async def test_retained_topics_are_keys_of_the_namespaces_map(srv: Running) -> None:
    device = Paho(V5, client_id="meter-1")
    assert (await device.connect(srv.port, username="meter", password=token("meter"))) == 0
    owner = Paho(V5, client_id="owner-42")
    assert (await owner.connect(srv.port, username="42", password=token("42"))) == 0
    try:
        await retain(device, "sensors/d1/temp", b'{"c": 21.5}')
        await retain(device, "sensors/d2/state", "déjà vu".encode())
        await retain(device, "sensors/d3/raw", b"\xff\x00\x01")
        await retain(owner, "sensors/private%2342", b'{"secret": 1}')  # user-limited channel sensors:private#42
        await owner.subscribe("sensors/private%2342", 1)
        assert (await owner.next()).payload == b'{"secret": 1}'  # retained, as MQTT sees it

        async with run_driver() as js:
            await js.connect("w", srv.ws_url, "watcher")
            entries = {e["key"]: e for e in await js.subscribe("w", MAP)}
            assert set(entries) == {"sensors/d1/temp", "sensors/d2/state", "sensors/d3/raw"}  # not the # channel
            d1 = entries["sensors/d1/temp"]["data"]
            assert d1["json"] == {"c": 21.5} and d1["topic"] == "sensors/d1/temp" and d1["qos"] == 1
            assert d1["time"] > 0
            assert entries["sensors/d2/state"]["data"]["text"] == "déjà vu"
            assert base64.b64decode(entries["sensors/d3/raw"]["data"]["b64"]) == b"\xff\x00\x01"

            # a new retained value is an update; a publish without retain is not a retained message
            since = js.mark()
            await retain(device, "sensors/d1/temp", b'{"c": 99}', flag=False)
            await retain(device, "sensors/d1/temp", b'{"c": 22.0}')
            update = await js.wait(update_of("w", MAP, "sensors/d1/temp"), since=since)
            assert update["data"]["json"] == {"c": 22.0}
            assert [e for e in js.events[since:] if e["ev"] == "update"] == [update]

            # MQTT's delete (an empty retained payload) removes the key
            since = js.mark()
            await retain(device, "sensors/d2/state", b"")
            await js.wait(update_of("w", MAP, "sensors/d2/state", removed=True), since=since)

        state = await read_state(srv)
        assert sorted(e["key"] for e in state["entries"]) == ["sensors/d1/temp", "sensors/d3/raw"]
        by_key = {e["key"]: e for e in state["entries"]}
        assert by_key["sensors/d1/temp"]["data"]["json"] == {"c": 22.0}
        assert by_key["sensors/d1/temp"]["info"]["user"] == "meter"
    finally:
        device.stop()
        owner.stop()


def test_the_prefix_names_a_map_namespace() -> None:
    assert make_settings(CONFIG).mqtt.retained.map_channel_prefix == "retained:"
    for prefix in ("retained", "sensors:", "nowhere:", ":x"):
        bad = json.loads(json.dumps(CONFIG))
        bad["mqtt"]["retained"]["map_channel_prefix"] = prefix
        with pytest.raises(ConfigError, match=r"mqtt\.retained\.map_channel_prefix"):
            make_settings(bad)


@given(st.binary(max_size=64), st.integers(0, 2))
def test_entry_data_is_a_json_object_that_gives_the_payload_back(payload: bytes, qos: int) -> None:
    data = json.loads(entry_data("a/b", RetainedMessage(payload, qos, time=5)))
    assert {k: data[k] for k in ("topic", "qos", "time")} == {"topic": "a/b", "qos": qos, "time": 5}
    (kind,) = set(data) - {"topic", "qos", "time"}
    if kind == "b64":
        assert base64.b64decode(data["b64"]) == payload
    elif kind == "text":
        assert data["text"].encode() == payload
    else:
        assert kind == "json" and json.loads(payload) == data["json"]
