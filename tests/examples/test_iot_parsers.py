"""Hypothesis against the two parsers of this work: the simulated devices' command handler
(examples/iot/devices.py) and the MQTT byte-stream walker of bench/mqtt_vs_mosquitto.py's load generator.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from trunkline.mqtt.codec import encode
from trunkline.mqtt.packets import MQTT_311, ConnAck, PingResp, PubAck, Publish, SubAck


def load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


devices = load("iot_devices", "examples/iot/devices.py")
sys.path.insert(0, str(ROOT / "bench"))  # the bench modules import each other by name
bench = load("mqtt_vs_mosquitto", "bench/mqtt_vs_mosquitto.py")
sys.path.remove(str(ROOT / "bench"))

ARGS = argparse.Namespace(interval=1.0, ws_port=0, mqtt_port=1883, host="127.0.0.1")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
COMMANDS = st.fixed_dictionaries(
    {"cmd": st.sampled_from(["toggle_led", "led", "set_interval", "reboot", ""]) | st.text(max_size=8)},
    optional={"value": JSON, "id": st.text(max_size=10)},
)


class Sent:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload.encode()))


class Msg:
    def __init__(self, payload: bytes) -> None:
        self.topic = "devices/greenhouse/commands"
        self.payload = payload


@settings(max_examples=300, deadline=None)
@given(st.one_of(COMMANDS, JSON).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=60))
def test_device_answers_every_command_with_one_ack(payload: bytes) -> None:
    device = devices.Device("greenhouse", 0, ARGS, "k" * 32)
    sent = Sent()
    device.on_message(sent, None, Msg(payload))
    assert len(sent.published) == 1
    topic, body = sent.published[0]
    ack = json.loads(body)
    assert topic == "devices/greenhouse/acks"
    assert ack["device"] == "greenhouse" and isinstance(ack["ok"], bool)
    assert ack["ok"] or ack["error"]
    assert isinstance(device.led, bool)
    assert devices.MIN_INTERVAL <= device.interval <= devices.MAX_INTERVAL
    assert ack["state"] == {"led": device.led, "interval": device.interval}


def test_device_obeys_the_documented_commands() -> None:
    device = devices.Device("cellar", 1, ARGS, "k" * 32)
    sent = Sent()
    for cmd in ({"cmd": "toggle_led"}, {"cmd": "set_interval", "value": 2}, {"cmd": "led", "value": False}):
        device.on_message(sent, None, Msg(json.dumps({"id": "x", **cmd}).encode()))
    acks = [json.loads(b) for _, b in sent.published]
    assert [a["ok"] for a in acks] == [True, True, True]
    assert acks[0]["state"]["led"] is True and acks[1]["state"]["interval"] == 2.0
    assert acks[2]["state"] == {"led": False, "interval": 2.0}


# ------------------------------------------------------------------------ the load generator's walker

PACKETS = st.one_of(
    st.builds(
        lambda n, extra: Publish(topic="bench", payload=b'{"seq":%d,"ts":%d,"pad":"%s"}' % (n, n, b"x" * extra)),
        st.integers(0, 10**6),
        st.integers(0, 300),  # up to multi-byte remaining lengths
    ),
    st.builds(lambda pid: PubAck(packet_id=pid), st.integers(1, 65535)),
    st.just(PingResp()),
)


def new_client(**kw: Any) -> Any:
    gen = bench.Gen(argparse.Namespace())
    client = bench.Client(gen, "c", **kw)
    client.send = lambda data: None
    client.ready = True
    return client


@settings(max_examples=300, deadline=None)
@given(st.lists(PACKETS, max_size=30), st.lists(st.integers(0, 4000), max_size=12))
def test_walker_counts_every_publish_once_however_the_stream_is_cut(packets: list[Any], cuts: list[int]) -> None:
    stream = b"".join(encode(p, MQTT_311) for p in packets)
    client = new_client()
    pos = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        client.feed(stream[pos:cut])  # empty pieces too
        pos = cut
    publishes = sum(1 for p in packets if isinstance(p, Publish))
    assert client.n == publishes
    assert client.marks == publishes
    assert client.buf == b""
    assert not client.gen.errors


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_walker_survives_garbage(data: bytes, step: int) -> None:
    client = new_client(sub_topic=b"bench")
    client.ready = False
    for i in range(0, len(data), step):
        client.feed(data[i : i + step])
    assert len(client.buf) <= len(data)
    assert client.n >= 0


def test_walker_handshake_connack_then_suback() -> None:
    client = new_client(sub_topic=b"bench")
    client.ready = False
    sent: list[bytes] = []
    client.send = sent.append
    client.feed(encode(ConnAck(False, 0), MQTT_311))
    assert sent == [bench.subscribe_packet(1, b"bench", 0)] and not client.ready
    client.feed(encode(SubAck(packet_id=1, reason_codes=(0,)), MQTT_311)[:3])
    assert not client.ready
    client.feed(encode(SubAck(packet_id=1, reason_codes=(0,)), MQTT_311)[3:])
    assert client.ready
    refused = new_client()
    refused.ready = False
    refused.feed(encode(ConnAck(False, 5), MQTT_311))
    assert not refused.ready and "CONNACK" in refused.error
