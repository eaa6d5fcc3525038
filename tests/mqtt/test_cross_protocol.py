"""One channel, two protocols: paho-mqtt and centrifuge-python on the same Trunkline channel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cent import AsyncClient, HistoryRequest, PresenceRequest, PublishRequest

from tests.conftest import API_KEY, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client

from .paho_helpers import V5, V311, Paho

MQTT = {"mqtt": {"websocket": {"enabled": True}}}


async def test_mqtt_and_centrifugo_share_a_channel(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    client = new_client(running.ws_url, ClientRecorder(), token=token("web"))
    rec = Recorder()
    sub = client.new_subscription("news", rec)
    await client.connect()
    await sub.subscribe()
    await sub.ready()
    device = Paho(V5, client_id="sensor-1")
    assert (await device.connect(running.port, username="dev", password=token("dev"))) == 0
    old = Paho(V311, client_id="sensor-2")
    assert (await old.connect(running.port, username="dev2", password=token("dev2"))) == 0
    try:
        await device.subscribe("news", 1)  # a subscriber may publish here (allow_publish_for_subscriber)
        await old.subscribe("news", 0)
        # MQTT -> Centrifugo (and the other MQTT client)
        info = device.client.publish("news", b'{"temp": 21.5}', qos=1)
        await eventually(lambda: rec.publications)
        assert rec.publications[0][1] == {"temp": 21.5}
        assert (await old.next()).payload == b'{"temp": 21.5}'
        assert (await device.next()).payload == b'{"temp": 21.5}'  # MQTT delivers to the publisher too
        assert info.rc == 0
        # Centrifugo -> MQTT
        await sub.publish({"cmd": "on"})
        assert json.loads((await device.next()).payload) == {"cmd": "on"}
        assert json.loads((await old.next()).payload) == {"cmd": "on"}
        # server API -> both
        async with AsyncClient(running.api_url, API_KEY) as api:
            await api.publish(PublishRequest(channel="news", data={"from": "api"}))
            got = await device.next()
            assert (got.topic, json.loads(got.payload), got.qos) == ("news", {"from": "api"}, 1)
            assert json.loads((await old.next()).payload) == {"from": "api"}
            await eventually(lambda: len(rec.publications) >= 3)
            # MQTT clients are in presence, under their MQTT client ids
            presence = await api.presence(PresenceRequest(channel="news"))
            users = {c.client: c.user for c in presence.presence.values()}
            assert users.get("sensor-1") == "dev" and users.get("sensor-2") == "dev2"
            # history covers the MQTT publication, first in the stream
            history = await api.history(HistoryRequest(channel="news", limit=10))
            assert history.publications[0].data == {"temp": 21.5}
            assert len(history.publications) == 3
        # a Centrifugo subscriber recovers an MQTT publication it missed
        await sub.unsubscribe()
        device.client.publish("news", b'{"missed": true}', qos=1)
        assert (await old.next()).payload == b'{"missed": true}'
        await sub.subscribe()
        await sub.ready()
        await eventually(lambda: any(data == {"missed": True} for _, data in rec.publications))
    finally:
        device.stop()
        old.stop()
        await client.disconnect()
