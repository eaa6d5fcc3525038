"""The proxy wire format: byte-level requests and answers, and hypothesis against the answer parsers."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.errors import ClientError, Disconnect
from trunkline.proxy import wire
from trunkline.proxy.wire import InvalidAnswer

CALLER = wire.Caller("c1", "websocket", "json", "u1", b'{"role":"x"}')
PARSERS: list[Callable[[bytes], Any]] = [
    wire.parse_connect,
    wire.parse_refresh,
    wire.parse_subscribe,
    wire.parse_publish,
    wire.parse_rpc,
    wire.parse_sub_refresh,
]


def test_requests_are_centrifugo_json() -> None:
    body = wire.subscribe_request(CALLER, binary=False, meta=True, channel="chat:a", token="", data=b'{"x":1}')
    assert json.loads(body) == {
        "client": "c1",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": "u1",
        "meta": {"role": "x"},
        "channel": "chat:a",
        "data": {"x": 1},
    }
    connect = json.loads(
        wire.connect_request(CALLER, binary=True, name="js", version="5", data=b"\x00\x01", channels=[])
    )
    assert connect == {
        "client": "c1",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "binary",
        "name": "js",
        "version": "5",
        "b64data": "AAE=",
    }
    # bytes that are not JSON go as b64data even without binary_encoding (never invalid JSON)
    rpc = json.loads(wire.rpc_request(CALLER, binary=False, meta=False, method="m", data=b"\xff"))
    assert rpc["b64data"] == "/w==" and "data" not in rpc and "meta" not in rpc


def test_answers() -> None:
    answer = wire.parse_connect(
        b'{"result":{"user":"7","expire_at":10,"info":{"a":1},"b64data":"AAE=","channels":["x"],'
        b'"subs":{"y":{"info":{"s":1},"override":{"presence":{"value":true}}}},"meta":{"m":1}}}'
    )
    assert answer is not None
    assert (answer.user, answer.expire_at, answer.info, answer.data) == ("7", 10, b'{"a":1}', b"\x00\x01")
    assert answer.channels == ("x",) and answer.meta == b'{"m":1}'
    assert answer.subs["y"].info == b'{"s":1}' and answer.subs["y"].override.presence is True
    assert wire.parse_connect(b"{}") is None
    assert wire.parse_refresh(b"{}").expired  # no result: expired, as Centrifugo
    assert wire.parse_refresh(b'{"result":{"expire_at":5}}') == wire.RefreshAnswer(False, 5)
    published = wire.parse_publish(b'{"result":{"data":{"t":1},"skip_history":true,"tags":{"k":"v"}}}')
    assert (published.data, published.skip_history, published.tags) == (b'{"t":1}', True, {"k": "v"})
    assert wire.parse_subscribe(b'{"result":{}}') == wire.SubscribeAnswer()
    assert wire.parse_rpc(b'{"result":{"data":null}}').data is None
    with pytest.raises(ClientError) as err:
        wire.parse_rpc(b'{"error":{"code":1000,"message":"no","temporary":true}}')
    assert (err.value.code, err.value.message, err.value.temporary) == (1000, "no", True)
    with pytest.raises(Disconnect) as disc:
        wire.parse_subscribe(b'{"disconnect":{"code":4501,"reason":"bye"},"result":{}}')
    assert (disc.value.code, disc.value.reason, disc.value.reconnect) == (4501, "bye", False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>",
        b"[]",
        b'{"result":[]}',
        b'{"result":{"user":5}}',
        b'{"result":{"expire_at":-1}}',
        b'{"result":{"b64info":"***"}}',
        b'{"result":{"meta":[1]}}',
        b'{"error":{"code":0}}',
        b'{"error":{"message":"no code"}}',
        b'{"disconnect":{"code":1000}}',
        b'{"disconnect":{"code":99999999999999999999999}}',
    ],
)
def test_garbage_is_invalid_answer(body: bytes) -> None:
    with pytest.raises(InvalidAnswer):
        wire.parse_connect(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "result",
        "error",
        "disconnect",
        "user",
        "code",
        "message",
        "reason",
        "data",
        "b64data",
        "info",
        "b64info",
        "expire_at",
        "expired",
        "channels",
        "subs",
        "override",
        "meta",
        "tags",
    ]
)
SHAPED = st.recursive(JSON, lambda children: st.dictionaries(KEYS, children, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), SHAPED.map(lambda v: json.dumps(v).encode())))
def test_any_answer_is_a_result_or_a_documented_refusal(body: bytes) -> None:
    """Whatever a backend sends, a parser returns, raises the answer's error/disconnect, or InvalidAnswer."""
    for parse in PARSERS:
        try:
            result = parse(body)
        except (InvalidAnswer, ClientError, Disconnect) as refusal:
            assert str(refusal)  # a message to log or send
        else:
            assert result is None or dataclasses.is_dataclass(result)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.booleans())
def test_request_payload_round_trips(data: bytes, binary: bool) -> None:
    body = json.loads(wire.publish_request(CALLER, binary=binary, meta=False, channel="c", data=data))
    if "b64data" in body:
        assert base64.b64decode(body["b64data"]) == data
        assert binary or not _is_json(data)
    else:
        assert msgspec.json.encode(body["data"]) == msgspec.json.encode(msgspec.json.decode(data))


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True
