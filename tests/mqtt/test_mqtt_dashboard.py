"""MQTT connections in the dashboard's connection view, and the dashboard's disconnect action on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Running, deep_merge, eventually, token
from tests.observe.test_admin_http import logged_in, post
from tests.observe.test_dashboard import ADMIN, http_session

from .paho_helpers import V5, V311, Paho, get

CONFIG = deep_merge(
    ADMIN, {"mqtt": {"websocket": {"enabled": True}, "tcp": {"enabled": True, "address": "127.0.0.1:0"}}}
)


async def test_mqtt_connections_are_listed_and_can_be_disconnected(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(CONFIG)
    base = running.http_url
    over_ws = Paho(V5, client_id="sensor-ws")
    over_tcp = Paho(V311, "tcp", client_id="sensor-tcp")
    assert (await over_ws.connect(running.port, username="plant", password=token("plant"))) == 0
    tcp_port = running.server.mqtt_listeners[0].port
    assert (await over_tcp.connect(tcp_port, username="plant", password=token("plant"))) == 0
    try:
        await over_ws.subscribe("nohistory/+/temp", 1)
        await over_tcp.subscribe("room", 0)
        async with http_session() as http:
            csrf = await logged_in(http, base)
            async with http.get(f"{base}/dashboard/connections") as resp:
                assert (await resp.json())["users"] == [{"user": "plant", "connections": 2}]
            async with http.get(f"{base}/dashboard/connections?user=plant") as resp:
                conns = {c["client"]: c for c in (await resp.json())["connections"]}
            assert set(conns) == {"sensor-ws", "sensor-tcp"}
            ws, tcp = conns["sensor-ws"], conns["sensor-tcp"]
            assert (ws["transport"], ws["protocol"], ws["subscriptions"]) == (
                "mqtt_websocket",
                "mqtt",
                ["nohistory/+/temp"],
            )
            assert (tcp["transport"], tcp["subscriptions"], tcp["remote"]) == ("mqtt_tcp", ["room"], "127.0.0.1")
            assert ws["expires_in"] is not None and ws["expires_in"] > 3000  # the token's exp

            status, body = await post(http, base, "disconnect", {"user": "plant", "client": "sensor-ws"}, csrf)
            assert (status, body) == (200, {"result": {}})
            assert int(getattr(await get(over_ws.disconnected), "value", 0)) == 0x98  # administrative action
            await eventually(lambda: running.server.node.hub.connection("sensor-ws") is None)
            async with http.get(f"{base}/dashboard/connections?user=plant") as resp:
                assert [c["client"] for c in (await resp.json())["connections"]] == ["sensor-tcp"]
    finally:
        over_ws.client.loop_stop()
        over_tcp.stop()
