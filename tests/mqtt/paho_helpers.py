"""paho-mqtt 2.x clients driven from async tests (paho runs its network loop in its own thread)."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import make_settings  # noqa: F401  (re-exported for tests)

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any = None


@dataclass
class Paho:
    """One paho client with its events turned into thread-safe queues."""

    version: int
    transport: str = "websockets"
    client_id: str = ""
    client: mqtt.Client = field(init=False)
    messages: queue.Queue[Received] = field(default_factory=queue.Queue)
    connack: queue.Queue[tuple[Any, Any]] = field(default_factory=queue.Queue)
    acks: queue.Queue[tuple[str, int, Any]] = field(default_factory=queue.Queue)
    disconnected: queue.Queue[Any] = field(default_factory=queue.Queue)
    published: queue.Queue[int] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.version,
            transport=self.transport,  # type: ignore[arg-type]
            clean_session=True if self.version == V311 else None,
        )
        if self.transport == "websockets":
            c.ws_set_options(path="/mqtt")
        c.on_connect = lambda cl, ud, flags, rc, props: self.connack.put((rc, props))
        c.on_message = lambda cl, ud, m: self.messages.put(
            Received(m.topic, m.payload, m.qos, bool(m.retain), getattr(m, "properties", None))
        )
        c.on_subscribe = lambda cl, ud, mid, rcs, props: self.acks.put(("sub", mid, rcs))
        c.on_unsubscribe = lambda cl, ud, mid, rcs, props: self.acks.put(("unsub", mid, rcs))
        c.on_publish = lambda cl, ud, mid, rc, props: self.published.put(mid)
        c.on_disconnect = lambda cl, ud, flags, rc, props: self.disconnected.put(rc)
        self.client = c

    async def connect(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        properties: Properties | None = None,
    ) -> Any:
        """Connect and return the CONNACK reason code (paho's ReasonCode)."""
        if username is not None or password is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(*will)
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.version == V5:
            kwargs["clean_start"] = True
            if properties is not None:
                kwargs["properties"] = properties
        await asyncio.to_thread(self.client.connect, "127.0.0.1", port, **kwargs)
        self.client.loop_start()
        rc, _ = await get(self.connack)
        if rc != 0:
            # refused: stop paho's automatic reconnects (a retry against a stopped server leaks its socket)
            self.client.disconnect()
            await asyncio.to_thread(self.client.loop_stop)
        return rc

    async def subscribe(self, topic: str, qos: int = 0) -> Any:
        self.client.subscribe(topic, qos)
        kind, _, rcs = await get(self.acks)
        assert kind == "sub"
        return rcs

    async def next(self, timeout: float = 5.0) -> Received:
        return await get(self.messages, timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


async def get(q: queue.Queue[Any], timeout: float = 5.0) -> Any:
    """The next item of a thread-fed queue, waiting at most ``timeout`` seconds."""
    return await asyncio.to_thread(q.get, True, timeout)


def nothing_in(q: queue.Queue[Any], seconds: float = 0.3) -> bool:
    """True when nothing arrives in ``q`` for ``seconds`` (for "was not delivered" checks)."""
    try:
        q.get(True, seconds)
    except queue.Empty:
        return True
    return False


def props(**values: Any) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    for name, value in values.items():
        setattr(p, name, value)
    return p


_ = threading
