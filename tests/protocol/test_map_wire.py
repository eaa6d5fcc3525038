"""The wire fields of map subscriptions and shared poll, JSON and Protobuf (centrifuge-js 5.8).

The field numbers are checked against centrifuge-js's own Protobuf build (its encoders
name every field with its number and wire type); the JSON names are the proto names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Raw

from tests.protocol.test_protobuf import MAP_FIELDS, PACKAGE, POOL, pb, split_frame
from trunkline.protocol.codec import JSON_SHAPE, JsonCodec, ProtocolError
from trunkline.protocol.codec import publication as json_publication
from trunkline.protocol.messages import (
    PHASE_LIVE,
    PHASE_STATE,
    PHASE_STREAM,
    KeyedItem,
    PublishRequest,
    Reply,
    SubRefreshRequest,
    SubRefreshResult,
    SubscribeRequest,
    SubscribeResult,
    TrackBatch,
)
from trunkline.protocol.protobuf import PROTOBUF_SHAPE, ProtobufCodec, encode_publication
from trunkline.records import ClientInfo, Publication, Undeliverable

ROOT = Path(__file__).resolve().parents[2]
JS_PROTOBUF = ROOT / "node_modules" / "centrifuge" / "build" / "protobuf" / "index.js"
JSON = JsonCodec()
PROTOBUF = ProtobufCodec()

text = st.text(max_size=10)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u64 = st.integers(0, 2**64 - 1)


def _js_fields() -> dict[str, dict[str, int]]:
    """``{message: {field: number}}`` from the encoders of centrifuge-js's Protobuf build."""
    source = JS_PROTOBUF.read_text()
    out: dict[str, dict[str, int]] = {}
    for block in re.split(r"\n\s+protocol\.(?=[A-Z]\w* = \(function)", source)[1:]:
        name = block.split(" ", 1)[0]
        encoder = block.split(".encode = function", 1)[-1].split("return writer;", 1)[0]
        for line in encoder.splitlines():
            number = re.search(r"/\* id (\d+), wireType", line)
            field = re.search(r"message\.(\w+)", line)
            if number and field and "if (" not in line:
                out.setdefault(name, {})[field.group(1)] = int(number.group(1))
    return out


def test_map_field_numbers_are_centrifuge_js_ones() -> None:
    js = _js_fields()
    assert js["SubscribeRequest"]["phase"] == 16  # the parse itself works
    for message, fields in MAP_FIELDS.items():
        for field, number, *_ in fields:
            assert js[message][field] == number, (message, field)
            assert POOL.FindMessageTypeByName(f"{PACKAGE}.{message}").fields_by_name[field].number == number


# ---------------------------------------------------------------- JSON


def test_json_map_subscribe_request() -> None:
    (cmd,) = JSON.decode_commands(
        b'{"id":2,"subscribe":{"channel":"m","type":1,"phase":2,"cursor":"c1","limit":50,"asc":true,"flag":1}}'
    )
    assert cmd.subscribe == SubscribeRequest(
        channel="m", type=1, phase=PHASE_STATE, cursor="c1", limit=50, asc=True, flag=1
    )


def test_json_map_publish_and_track_requests() -> None:
    (publish, refresh) = JSON.decode_commands(
        b'{"id":3,"publish":{"channel":"m","type":1,"key":"k","removed":true}}\n'
        b'{"id":4,"sub_refresh":{"channel":"p","type":1,"track":[{"signature":"s","items":[{"key":"a","version":3}]}],'
        b'"untrack":["b"]}}'
    )
    assert publish.publish == PublishRequest(channel="m", type=1, key="k", removed=True)
    assert refresh.sub_refresh == SubRefreshRequest(
        channel="p", type=1, track=[TrackBatch(signature="s", items=[KeyedItem(key="a", version=3)])], untrack=["b"]
    )


@pytest.mark.parametrize(
    "line",
    [
        b'{"subscribe":{"channel":"m","phase":"x"}}',
        b'{"subscribe":{"channel":"m","limit":4294967296}}',
        b'{"sub_refresh":{"channel":"p","track":["a"]}}',
        b'{"sub_refresh":{"channel":"p","untrack":[1]}}',
        b'{"publish":{"channel":"m","removed":"yes"}}',
        b'{"sub_refresh":{"channel":"p","track":[{"items":[{"key":"a","version":-1}]}]}}',
    ],
)
def test_json_malformed_map_fields_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        JSON.decode_commands(line)


def test_json_state_reply_and_live_reply() -> None:
    entry = Publication(data=b'{"v":1}', key="a", offset=3, score=-2)
    state = SubscribeResult(
        type=1, phase=PHASE_STATE, epoch="e", offset=7, cursor="next", state=[JSON.publication(entry)]
    )
    assert msgspec.json.decode(JSON.encode_reply(Reply(id=1, subscribe=state))) == {
        "id": 1,
        "subscribe": {
            "epoch": "e",
            "offset": 7,
            "type": 1,
            "phase": 2,
            "cursor": "next",
            "state": [{"data": {"v": 1}, "offset": 3, "key": "a", "score": -2}],
        },
    }
    live = SubscribeResult(type=1, phase=PHASE_LIVE, epoch="e", offset=7, recoverable=True)
    # phase 0 (live) is omitted: centrifuge-js reads a missing phase as live
    assert "phase" not in msgspec.json.decode(JSON.encode_reply(Reply(id=2, subscribe=live)))["subscribe"]
    assert PHASE_STREAM == 1


def test_json_removal_has_no_data() -> None:
    removal = Publication(data=b"", key="a", removed=True, offset=9)
    pushed = JSON_SHAPE.publication("m", removal)
    assert msgspec.json.decode(pushed) == {"push": {"channel": "m", "pub": {"offset": 9, "key": "a", "removed": True}}}
    # empty data on anything but a removal is still not JSON
    with pytest.raises(Undeliverable):
        json_publication(Publication(data=b"", key="a"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
records = st.builds(
    Publication,
    data=json_values.map(msgspec.json.encode),
    info=st.none() | st.builds(ClientInfo, user=text, client=text),
    tags=st.none() | st.dictionaries(text, text, max_size=2),
    offset=st.integers(0, 2**63),
    key=text,
    removed=st.booleans(),
    score=i64,
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_json_map_publications_carry_key_removed_score(record: Publication) -> None:
    pub = msgspec.json.decode(JSON_SHAPE.publication("m", record))["push"]["pub"]
    assert pub.get("key", "") == record.key
    assert pub.get("removed", False) == record.removed
    assert pub.get("score", 0) == record.score
    assert msgspec.json.decode(record.data) == pub["data"]


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        SubscribeRequest,
        channel=text,
        type=i32,
        phase=i32,
        cursor=text,
        limit=i32,
        asc=st.booleans(),
        offset=u64,
        epoch=text,
        recover=st.booleans(),
    )
)
def test_json_subscribe_requests_round_trip(req: SubscribeRequest) -> None:
    line = msgspec.json.encode({"id": 1, "subscribe": req})
    (cmd,) = JSON.decode_commands(line)
    assert cmd.subscribe == req


# ---------------------------------------------------------------- Protobuf


def _reference_publication(record: Publication) -> Any:
    message = pb("Publication")(data=record.data, offset=record.offset, key=record.key, removed=record.removed)
    message.score = record.score
    if record.info is not None:
        message.info.user = record.info.user
        message.info.client = record.info.client
    for k, v in (record.tags or {}).items():
        message.tags[k] = v
    return message


@settings(max_examples=300, deadline=None)
@given(records | st.builds(Publication, data=st.binary(max_size=8), key=text, removed=st.booleans(), score=i64))
def test_protobuf_map_publications_are_the_reference_bytes(record: Publication) -> None:
    assert bytes(encode_publication(record)) == _reference_publication(record).SerializeToString(deterministic=True)
    (body,) = split_frame(PROTOBUF_SHAPE.publication("m", record))
    reply = pb("Reply")()
    reply.ParseFromString(body)
    assert reply.push.pub.key == record.key
    assert reply.push.pub.removed == record.removed
    assert reply.push.pub.score == record.score


def test_protobuf_state_reply_and_track_result() -> None:
    entry = Publication(data=b"\x01", key="a", offset=3, score=-1)
    state = SubscribeResult(phase=PHASE_STATE, type=1, cursor="c", state=[encode_publication(entry)], offset=3)
    (body,) = split_frame(PROTOBUF.encode_reply(Reply(id=5, subscribe=state)))
    reply = pb("Reply")()
    reply.ParseFromString(body)
    assert (reply.subscribe.phase, reply.subscribe.type, reply.subscribe.cursor) == (2, 1, "c")
    assert [(p.key, p.score, p.offset) for p in reply.subscribe.state] == [("a", -1, 3)]
    items = SubRefreshResult(items=[Raw(b"")])
    (body,) = split_frame(PROTOBUF.encode_reply(Reply(id=6, sub_refresh=items)))
    reply = pb("Reply")()
    reply.ParseFromString(body)
    assert len(reply.sub_refresh.items) == 1
