"""A persistent MQTT session positioned on a channel while its node loses the Redis feed.

Node A (the subscriber's) reaches Redis through a relay that the test cuts; node
B publishes meanwhile. When A's feed comes back it finds the channel's stream
ahead of what it delivered (``Node.check_positions``): the MQTT session's
positioned subscription is rejoined from its own position and the gap filled from
history, so paho gets every publication in order, once, without reconnecting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from tests.conftest import Running, deep_merge, token
from tests.faults.proxy import SegmentingProxy

from .paho_helpers import V5, Paho, nothing_in
from .test_persistent_sessions import CONFIG, Device, published

GAP_CONFIG = deep_merge(CONFIG, {"channel": {"position_check_interval": "1s"}})


def engine(url: str, prefix: str) -> dict[str, Any]:
    return {"engine": {"type": "redis", "redis": {"address": url, "prefix": prefix, "io_timeout": "1s"}}}


async def test_feed_gap_is_filled_from_history(start_server: Callable[..., Any], redis_url: str) -> None:
    parsed = urlparse(redis_url)
    prefix = f"gap-{uuid.uuid4().hex[:8]}"
    async with SegmentingProxy(parsed.port or 6379) as gate:
        gated = f"redis://127.0.0.1:{gate.port}{parsed.path or '/0'}"
        a: Running = await start_server(deep_merge(GAP_CONFIG, engine(gated, prefix)))
        b: Running = await start_server(deep_merge(GAP_CONFIG, engine(redis_url, prefix)))
        device = Device(V5, "gap-device")
        publisher = Paho(V5, "tcp")
        try:
            await device.connect(a.server.mqtt_listeners[0].port, "dev")
            await device.subscribe("sensors/gap")
            assert (await publisher.connect(b.server.mqtt_listeners[0].port, username="p", password=token("p"))) == 0
            await published(publisher, "sensors/gap", b"0")
            assert [m.payload for m in await device.take(1)] == [b"0"]

            gate.accepting = False
            gate.cut()  # node A's Redis links drop: its pub/sub feed misses what follows
            for i in range(1, 6):
                await published(publisher, "sensors/gap", str(i).encode())
            gate.accepting = True
            got = [m.payload for m in await device.take(5, timeout=15)]
            assert got == [b"1", b"2", b"3", b"4", b"5"]
            await published(publisher, "sensors/gap", b"6")
            assert [m.payload for m in await device.take(1)] == [b"6"]
            assert nothing_in(device.messages)
            registry = a.server.node.metrics.registry
            assert (registry.get_sample_value("trunkline_stream_gaps_total", {"namespace": "sensors"}) or 0) >= 1
            dropped = a.server.node.metrics.protocol_dropped.values
            assert not any(reason in ("history_gap", "stream_reset") for _, reason in dropped)
        finally:
            device.stop()
            publisher.stop()
