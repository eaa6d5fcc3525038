"""MQTT limits, each set by its test, against paho-mqtt over WebSocket (MQTT 3.1.1 and 5).

- ``mqtt.max_subscriptions``: the filter past the limit is refused in SUBACK (0x80 / 0x97
  quota exceeded), the ones within it are granted;
- ``mqtt.retained.enabled``: off, CONNACK says retain is not available and a retained message
  reaches no later subscriber; on (the default), it does;
- ``mqtt.retained.max_messages``: a retained message for a new topic past the count is
  delivered but not kept (PUBACK 0x97 quota exceeded); a later subscriber gets the kept ones;
- ``mqtt.max_queued_messages``: QoS 1 messages past the client's in-flight window (Receive
  Maximum 1, the first unacknowledged) wait up to that many; the rest are dropped (counted);
- ``mqtt.session_expiry_max``: a longer requested session expiry is lowered, and CONNACK says so.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Running, eventually, token
from tests.mqtt.paho_helpers import V5, V311, Paho, get, nothing_in, props

Start = Callable[..., Any]


def mqtt(**extra: Any) -> dict[str, Any]:
    return {"mqtt": {"websocket": {"enabled": True}, **extra}}


class Client(Paho):
    """A paho client that also keeps its CONNACK's properties."""

    connack_props: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        queued = self.client.on_connect

        def on_connect(*args: Any) -> None:
            self.connack_props = args[-1]
            queued(*args)

        self.client.on_connect = on_connect
        self.puback_codes: queue.Queue[int] = queue.Queue()
        published = self.client.on_publish

        def on_publish(cl: Any, ud: Any, mid: int, rc: Any, props: Any) -> None:
            self.puback_codes.put(int(getattr(rc, "value", rc)))
            published(cl, ud, mid, rc, props)

        self.client.on_publish = on_publish
        self.mids: list[int] = []  # of the messages received, in order
        received = self.client.on_message

        def on_message(cl: Any, ud: Any, m: Any) -> None:
            self.mids.append(m.mid)
            received(cl, ud, m)

        self.client.on_message = on_message


async def client(srv: Running, version: int, user: str, **kwargs: Any) -> Client:
    c = Client(version)
    rc = await c.connect(srv.port, username=user, password=token(user), **kwargs)
    assert rc == 0, rc
    return c


def codes(granted: Any) -> list[int]:
    return [int(getattr(g, "value", g)) for g in granted]


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
async def test_max_subscriptions(start_server: Start, version: int) -> None:
    srv = await start_server(mqtt(max_subscriptions=2))
    c = await client(srv, version, "ms")
    try:
        assert codes(await c.subscribe("nohistory/a", 1)) == [1]
        assert codes(await c.subscribe("nohistory/b", 1)) == [1]
        assert codes(await c.subscribe("nohistory/c", 1)) == [0x97 if version == V5 else 0x80]
        assert codes(await c.subscribe("nohistory/a", 0)) == [0]  # replacing an existing filter is no new one
    finally:
        c.stop()


async def test_default_max_subscriptions_allows_more(start_server: Start) -> None:
    srv = await start_server(mqtt())
    c = await client(srv, V5, "ms")
    try:
        for name in "abc":
            assert codes(await c.subscribe(f"nohistory/{name}", 1)) == [1]
    finally:
        c.stop()


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
async def test_retained_enabled(start_server: Start, enabled: bool) -> None:
    srv = await start_server(mqtt(retained={"enabled": enabled}))
    v5 = await client(srv, V5, "r5")
    v5.stop()
    connack_props = v5.connack_props
    assert getattr(connack_props, "RetainAvailable", 1) == (1 if enabled else 0)
    pub = await client(srv, V311, "rp")
    try:
        info = pub.client.publish("nohistory/kept", b"last", qos=1, retain=True)
        await get(pub.published)
        assert info.mid
    finally:
        pub.stop()
    sub = await client(srv, V311, "rs")
    try:
        assert codes(await sub.subscribe("nohistory/kept", 1)) == [1]
        if enabled:
            got = await sub.next()
            assert (got.topic, got.payload, got.retain) == ("nohistory/kept", b"last", True)
        else:
            assert nothing_in(sub.messages, 0.5)
    finally:
        sub.stop()


@pytest.mark.parametrize(("cap", "expected"), [(60, 60), (None, None)], ids=["capped", "default"])
async def test_session_expiry_max(start_server: Start, cap: int | None, expected: int | None) -> None:
    srv = await start_server(mqtt(**({} if cap is None else {"session_expiry_max": f"{cap}s"})))
    c = await client(srv, V5, "se", properties=props(SessionExpiryInterval=3600))
    c.stop()
    # the server tells the interval it uses only when it differs from the one asked for
    assert getattr(c.connack_props, "SessionExpiryInterval", None) == expected


async def test_retained_max_messages(start_server: Start) -> None:
    srv = await start_server(mqtt(retained={"max_messages": 2}))
    pub = await client(srv, V5, "rm")
    try:
        for name in ("r1", "r2", "r3"):
            pub.client.publish(f"nohistory/{name}", name.encode(), qos=1, retain=True)
            assert await get(pub.puback_codes) == (0x97 if name == "r3" else 0), name
        pub.client.publish("nohistory/r1", b"again", qos=1, retain=True)  # replacing a kept topic still fits
        assert await get(pub.puback_codes) == 0
    finally:
        pub.stop()
    sub = await client(srv, V311, "rn")
    try:
        assert codes(await sub.subscribe("nohistory/+", 1)) == [1]
        got = {(m.topic, m.payload) for m in [await sub.next(), await sub.next()]}
        assert got == {("nohistory/r1", b"again"), ("nohistory/r2", b"r2")}
        assert nothing_in(sub.messages, 0.5)
    finally:
        sub.stop()


@pytest.mark.parametrize(("limit", "kept"), [(2, 2), (None, 5)], ids=["limited", "default"])
async def test_max_queued_messages(start_server: Start, limit: int | None, kept: int) -> None:
    srv = await start_server(mqtt(**({} if limit is None else {"max_queued_messages": limit})))
    sub = Client(V5)
    sub.client.manual_ack_set(True)  # the first message stays in flight: the rest wait in the queue
    assert await sub.connect(srv.port, username="qs", password=token("qs"), properties=props(ReceiveMaximum=1)) == 0
    pub = await client(srv, V311, "qp")
    try:
        assert codes(await sub.subscribe("nohistory/q", 1)) == [1]
        for n in range(6):
            pub.client.publish("nohistory/q", str(n).encode(), qos=1)
            await get(pub.published)
        first = await sub.next()
        assert first.payload == b"0"
        drops = srv.server.node.metrics.protocol_dropped.values
        await eventually(lambda: drops.get(("mqtt5", "queue_full"), 0) == 5 - kept, timeout=5)
        got = [first]
        for _ in range(kept):
            sub.client.ack(sub.mids[len(got) - 1], 1)
            got.append(await sub.next())
        sub.client.ack(sub.mids[-1], 1)
        assert [m.payload for m in got] == [str(n).encode() for n in range(kept + 1)]
        assert nothing_in(sub.messages, 0.5)
    finally:
        pub.stop()
        sub.stop()
