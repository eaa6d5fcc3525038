"""MQTT 3.1.1: an empty client id with clean session 0 is answered with CONNACK 2 (identifier
rejected) before the close (MQTT-3.1.3-8), over a real TCP socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.conftest import free_port


async def test_empty_client_id_without_clean_session_gets_connack_2(start_server: Callable[..., Any]) -> None:
    port = free_port()
    srv = await start_server(
        {"mqtt": {"tcp": {"enabled": True, "address": f"127.0.0.1:{port}"}, "allow_anonymous": True}}
    )
    assert srv.server.mqtt_listeners
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"\x00\x04MQTT\x04\x00\x00\x3c\x00\x00"  # level 4, flags 0 (clean session 0), keepalive 60, id ""
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(16), 5)
    assert answer == b"\x20\x02\x00\x02"  # CONNACK, session present 0, return code 2
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # then the server closes
    writer.close()
