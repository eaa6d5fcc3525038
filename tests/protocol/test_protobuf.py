"""The Protobuf codec against the reference: centrifuge-python's generated ``client_pb2`` (upb).

Schema: Centrifugo's ``client.proto`` (reference §1.5–§1.7, ``transports.md``). The
reference classes are centrifuge-python 0.7.0's, in a private descriptor pool with the
one newer field our structs carry added (``SubscribeRequest.type = 15``, int32, as in
centrifuge-js 5.8's protobuf build). Replies and pushes must be byte-identical to
``SerializeToString(deterministic=True)``; commands must decode to what upb decodes.

Run as a script to print the decode timings quoted in ``trunkline.protocol.protobuf``.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from centrifuge.protocol import client_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Raw

from trunkline.protocol.codec import ProtocolError
from trunkline.protocol.messages import (
    METHODS,
    ClientInfo,
    Command,
    ConnectRequest,
    ConnectResult,
    DisconnectPush,
    Error,
    HistoryRequest,
    HistoryResult,
    Join,
    KeyedItem,
    Leave,
    PingRequest,
    PingResult,
    PresenceRequest,
    PresenceResult,
    PresenceStatsRequest,
    PresenceStatsResult,
    Publication,
    PublishRequest,
    PublishResult,
    Push,
    RefreshRequest,
    RefreshResult,
    Reply,
    RPCRequest,
    RPCResult,
    SendRequest,
    StreamPosition,
    SubRefreshRequest,
    SubRefreshResult,
    Subscribe,
    SubscribeRequest,
    SubscribeResult,
    TrackBatch,
    Unsubscribe,
    UnsubscribeRequest,
    UnsubscribeResult,
)
from trunkline.protocol.messages import (
    Message as MessagePush,
)
from trunkline.protocol.protobuf import (
    PING_FRAME,
    PROTOBUF_SHAPE,
    ProtobufCodec,
    encode_client_info,
    encode_join_leave_push,
    encode_publication,
    encode_publication_push,
    publication,
    uvarint,
)
from trunkline.records import ClientInfo as RecordInfo
from trunkline.records import Publication as Record

CODEC = ProtobufCodec()
PACKAGE = "centrifugal.centrifuge.protocol"


# ---------------------------------------------------------------- the reference classes


STRUCTS: dict[str, type[msgspec.Struct]] = {
    cls.__name__: cls
    for cls in (
        Command,
        ConnectRequest,
        SubscribeRequest,
        UnsubscribeRequest,
        PublishRequest,
        PresenceRequest,
        PresenceStatsRequest,
        HistoryRequest,
        StreamPosition,
        PingRequest,
        SendRequest,
        RPCRequest,
        RefreshRequest,
        SubRefreshRequest,
        TrackBatch,
        KeyedItem,
    )
}


_F = descriptor_pb2.FieldDescriptorProto
#: the fields centrifuge-js 5.8's client.proto has and centrifuge-python's client_pb2 lacks
#: (map subscriptions and shared poll): message -> (name, number, type, repeated, message type)
MAP_FIELDS: dict[str, list[tuple[str, int, int, bool, str]]] = {
    "SubscribeRequest": [
        ("type", 15, _F.TYPE_INT32, False, ""),
        ("phase", 16, _F.TYPE_INT32, False, ""),
        ("cursor", 17, _F.TYPE_STRING, False, ""),
        ("limit", 18, _F.TYPE_INT32, False, ""),
        ("asc", 19, _F.TYPE_BOOL, False, ""),
    ],
    "SubscribeResult": [
        ("type", 15, _F.TYPE_INT32, False, ""),
        ("phase", 16, _F.TYPE_INT32, False, ""),
        ("cursor", 17, _F.TYPE_STRING, False, ""),
        ("state", 18, _F.TYPE_MESSAGE, True, "Publication"),
        ("publish_debounce", 19, _F.TYPE_UINT32, False, ""),
    ],
    "Publication": [
        ("key", 11, _F.TYPE_STRING, False, ""),
        ("removed", 12, _F.TYPE_BOOL, False, ""),
        ("score", 13, _F.TYPE_SINT64, False, ""),
        ("epoch", 14, _F.TYPE_STRING, False, ""),
        ("prev_data", 15, _F.TYPE_BYTES, False, ""),
        ("version", 16, _F.TYPE_UINT64, False, ""),
    ],
    "PublishRequest": [
        ("type", 3, _F.TYPE_INT32, False, ""),
        ("key", 4, _F.TYPE_STRING, False, ""),
        ("removed", 5, _F.TYPE_BOOL, False, ""),
    ],
    "SubRefreshRequest": [
        ("type", 3, _F.TYPE_INT32, False, ""),
        ("track", 4, _F.TYPE_MESSAGE, True, "TrackBatch"),
        ("untrack", 5, _F.TYPE_STRING, True, ""),
    ],
    "SubRefreshResult": [("items", 3, _F.TYPE_MESSAGE, True, "Publication")],
    "TrackBatch": [("signature", 1, _F.TYPE_STRING, False, ""), ("items", 2, _F.TYPE_MESSAGE, True, "KeyedItem")],
    "KeyedItem": [("key", 1, _F.TYPE_STRING, False, ""), ("version", 2, _F.TYPE_UINT64, False, "")],
}


def _add_map_fields(file: descriptor_pb2.FileDescriptorProto, modelled_only: bool) -> None:
    for name in ("TrackBatch", "KeyedItem"):
        file.message_type.add(name=name)
    messages = {m.name: m for m in file.message_type}
    for name, fields in MAP_FIELDS.items():
        message = messages[name]
        struct = STRUCTS.get(name)
        for field, number, kind, repeated, type_name in fields:
            assert number not in {f.number for f in message.field}
            if modelled_only and struct is not None and field not in struct.__struct_fields__:
                continue
            added = message.field.add(
                name=field,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                json_name=field,
            )
            if type_name:
                added.type_name = f".{PACKAGE}.{type_name}"


def _reference_pool(modelled_only: bool = False) -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto.FromString(client_pb2.DESCRIPTOR.serialized_pb)
    file.name = "trunkline_test_client.proto"
    if modelled_only:  # the command fields our structs do not have become unknown fields
        for message in file.message_type:
            struct = STRUCTS.get(message.name)
            if struct is not None:
                kept = [f for f in message.field if f.name in struct.__struct_fields__]
                del message.field[:]
                message.field.extend(kept)
    _add_map_fields(file, modelled_only)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool


POOL = _reference_pool()
#: the same, without the command fields the structs do not model (tf, headers, connect flag)
MODELLED_POOL = _reference_pool(modelled_only=True)


def pb(name: str, pool: descriptor_pool.DescriptorPool = POOL) -> Any:
    """A reference message class by its proto name."""
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def delimited(message: Message) -> bytes:
    body = message.SerializeToString(deterministic=True)
    return uvarint(len(body)) + body


def reference_frame(*messages: Message) -> bytes:
    return b"".join(delimited(m) for m in messages)


def to_struct(message: Message) -> Any:
    """What upb decoded, as our structs (the fields the structs do not model are dropped)."""
    cls = STRUCTS[message.DESCRIPTOR.name]
    out = cls()
    for field, value in message.ListFields():
        if field.name not in cls.__struct_fields__:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            converted = {key: to_struct(sub) for key, sub in value.items()}
        elif field.is_repeated:
            converted = [to_struct(sub) if field.message_type is not None else sub for sub in value]
        elif field.message_type is not None:
            converted = to_struct(value)
        elif field.type == field.TYPE_BYTES:
            converted = Raw(value)
        else:
            converted = value
        setattr(out, field.name, converted)
    return out


def split_frame(frame: bytes) -> list[bytes]:
    """Split a varint-delimited frame the simple way (test oracle for the framing)."""
    out = []
    pos = 0
    while pos < len(frame):
        size = shift = 0
        while True:
            if pos >= len(frame) or shift > 63:
                raise DecodeError("bad length prefix")
            byte = frame[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if pos + size > len(frame):
            raise DecodeError("length beyond the frame")
        out.append(frame[pos : pos + size])
        pos += size
    return out


def upb_decode(frame: bytes, pool: descriptor_pool.DescriptorPool = POOL) -> list[Any]:
    commands = []
    for body in split_frame(frame):
        message = pb("Command", pool)()
        message.ParseFromString(body)
        commands.append(to_struct(message))
    return commands


def to_pb(value: Any, message: Message) -> None:
    """Fill a reference message from one of our reply/push structs (Raw nested messages are Protobuf bytes)."""
    for name in value.__struct_fields__:
        item = getattr(value, name)
        if item is None:
            continue
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is None:
            setattr(message, name, bytes(item) if isinstance(item, Raw) else item)
        elif field.message_type.GetOptions().map_entry:
            target = getattr(message, name)
            for key, sub in item.items():
                if isinstance(sub, str):
                    target[key] = sub
                elif isinstance(sub, Raw):
                    target[key].ParseFromString(bytes(sub))
                else:
                    to_pb(sub, target[key])
        elif field.is_repeated:
            for sub in item:
                getattr(message, name).add().ParseFromString(bytes(sub))
        else:
            sub_message = getattr(message, name)
            sub_message.SetInParent()
            to_pb(item, sub_message)


def reference_reply(reply: Reply) -> bytes:
    message = pb("Reply")()
    to_pb(reply, message)
    return delimited(message)


def reference_push(push: Push) -> bytes:
    message = pb("Reply")()
    message.push.SetInParent()
    to_pb(push, message.push)
    return delimited(message)


# ---------------------------------------------------------------- the schema itself


def test_reference_schema_numbers() -> None:
    """The field numbers the codec is written against (reference §1.5–§1.7, transports.md)."""

    def numbers(name: str) -> dict[str, int]:
        return {f.name: f.number for f in POOL.FindMessageTypeByName(f"{PACKAGE}.{name}").fields}

    assert numbers("Command") == {"id": 1} | {m: i for i, m in enumerate(METHODS, start=4)}
    reply = numbers("Reply")
    assert (reply["id"], reply["error"], reply["push"], reply["connect"], reply["sub_refresh"]) == (1, 2, 4, 5, 15)
    assert numbers("Push") == {
        "id": 1,
        "channel": 2,
        "pub": 4,
        "join": 5,
        "leave": 6,
        "unsubscribe": 7,
        "message": 8,
        "subscribe": 9,
        "connect": 10,
        "disconnect": 11,
        "refresh": 12,
    }
    assert numbers("Publication") == {
        "data": 4,
        "info": 5,
        "offset": 6,
        "tags": 7,
        "delta": 8,
        "time": 9,
        "channel": 10,
        "key": 11,
        "removed": 12,
        "score": 13,
        "epoch": 14,
        "prev_data": 15,
        "version": 16,
    }
    assert numbers("HistoryRequest") == {"channel": 1, "limit": 7, "since": 8, "reverse": 9}
    assert numbers("SubscribeRequest")["delta"] == 12 and numbers("SubscribeRequest")["type"] == 15
    assert numbers("SubscribeResult")["was_recovering"] == 12
    assert numbers("Unsubscribe") == {"code": 2, "reason": 3}


# ---------------------------------------------------------------- byte literals


def test_ping_is_the_empty_reply_and_pong_the_empty_command() -> None:
    assert PING_FRAME == b"\x00" == CODEC.ping == CODEC.encode_reply(Reply()) == delimited(pb("Reply")())
    assert CODEC.decode_commands(b"\x00") == [Command()]
    assert CODEC.decode_commands(b"\x00")[0].method == ""
    assert CODEC.name == "protobuf" and CODEC.separator == b""


def test_publish_command_literal() -> None:
    # Command{id=2 (08 02), publish=7 (3a){channel=1 "news", data=2 b"\x00\xff"}}
    frame = b"\x0e\x08\x02\x3a\x0a\x0a\x04news\x12\x02\x00\xff"
    assert frame == reference_frame(pb("Command")(id=2, publish=pb("PublishRequest")(channel="news", data=b"\x00\xff")))
    (command,) = CODEC.decode_commands(frame)
    assert command == Command(id=2, publish=PublishRequest(channel="news", data=Raw(b"\x00\xff")))
    assert command.method == "publish"
    assert isinstance(command.publish and command.publish.data, Raw)


def test_subscribe_with_recovery_literal() -> None:
    # SubscribeRequest{channel=1, recover=3, epoch=6, offset=7 (uint64 max), recoverable=10, flag=14, type=15}
    body = (
        b"\x0a\x01c"
        + b"\x18\x01"
        + b"\x32\x02ep"
        + b"\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
        + b"\x50\x01"
        + b"\x70\x01"
        + b"\x78\x02"
    )
    frame = delimited_bytes(b"\x08\x05\x2a" + bytes([len(body)]) + body)
    (command,) = CODEC.decode_commands(frame)
    assert command == Command(
        id=5,
        subscribe=SubscribeRequest(
            channel="c", recover=True, epoch="ep", offset=2**64 - 1, recoverable=True, flag=1, type=2
        ),
    )
    assert upb_decode(frame) == [command]


def delimited_bytes(body: bytes) -> bytes:
    return uvarint(len(body)) + body


def test_several_commands_in_one_frame() -> None:
    frame = reference_frame(
        pb("Command")(id=1, connect=pb("ConnectRequest")(token="t", name="python")),
        pb("Command")(id=2, subscribe=pb("SubscribeRequest")(channel="a")),
        pb("Command")(),
        pb("Command")(send=pb("SendRequest")(data=b"x")),
    )
    assert [c.method for c in CODEC.decode_commands(frame)] == ["connect", "subscribe", "", "send"]
    assert CODEC.decode_commands(frame) == upb_decode(frame)


def test_negative_and_truncated_integers_follow_protobuf() -> None:
    # limit=-1 travels as a 10-byte varint; id keeps the low 32 bits; flag is int64 two's complement
    history = pb("HistoryRequest")(channel="h", limit=-1, since=pb("StreamPosition")(offset=7, epoch="e"))
    frame = reference_frame(pb("Command")(id=9, history=history))
    (command,) = CODEC.decode_commands(frame)
    assert command.history == HistoryRequest(channel="h", limit=-1, since=StreamPosition(offset=7, epoch="e"))
    big_id = b"\x08" + uvarint(2**40 + 3)
    assert CODEC.decode_commands(delimited_bytes(big_id))[0].id == 3 == upb_decode(delimited_bytes(big_id))[0].id
    flag = b"\x2a\x0b\x70" + uvarint(2**64 - 2)
    assert CODEC.decode_commands(delimited_bytes(flag))[0].subscribe == SubscribeRequest(flag=-2)
    assert upb_decode(delimited_bytes(flag))[0].subscribe == SubscribeRequest(flag=-2)


def test_publication_push_literal() -> None:
    pub = Publication(data=Raw(b'{"a":1}'), info=ClientInfo(user="u", client="c"), offset=300, tags={"k": "v"})
    # Reply{push=4 (22){channel=2 (12) "ch",
    #   pub=4 (22){data=4 (22), info=5 (2a){user=1, client=2}, offset=6 (30), tags=7 (3a)}}}
    publication_body = (
        b'\x22\x07{"a":1}' + b"\x2a\x06\x0a\x01u\x12\x01c" + b"\x30\xac\x02" + b"\x3a\x06\x0a\x01k\x12\x01v"
    )
    push_body = b"\x12\x02ch" + b"\x22" + bytes([len(publication_body)]) + publication_body
    expected = delimited_bytes(b"\x22" + bytes([len(push_body)]) + push_body)
    assert encode_publication_push("ch", pub) == expected
    assert CODEC.encode_push(Push(channel="ch", pub=pub)) == expected
    assert reference_push(Push(channel="ch", pub=pub)) == expected


def test_reply_literals() -> None:
    # Reply{id=3, publish=8 {}}: an empty result is still written
    assert CODEC.encode_reply(Reply(id=3, publish=PublishResult())) == b"\x04\x08\x03\x42\x00"
    # Reply{id=4, error=2{code=1 103, message=2 "permission denied"}}
    error = CODEC.encode_reply(Reply(id=4, error=Error(code=103, message="permission denied")))
    assert error == b"\x19\x08\x04\x12\x15\x08\x67\x12\x11permission denied"
    # Reply{id=1, connect=5{client=1 "c1", version=2 "1", ping=7 25, pong=8 true}}
    connect = CODEC.encode_reply(Reply(id=1, connect=ConnectResult(client="c1", version="1", ping=25, pong=True)))
    assert connect == b"\x0f\x08\x01\x2a\x0b\x0a\x02c1\x12\x011\x38\x19\x40\x01"


def test_join_leave_unsubscribe_and_disconnect_pushes() -> None:
    info = ClientInfo(user="42", client="abc", conn_info=Raw(b'{"n":1}'))
    assert CODEC.encode_push(Push(channel="c", join=Join(info))) == reference_push(Push(channel="c", join=Join(info)))
    assert encode_join_leave_push("c", "join", info) == CODEC.encode_push(Push(channel="c", join=Join(info)))
    assert encode_join_leave_push("c", "leave", info) == CODEC.encode_push(Push(channel="c", leave=Leave(info)))
    with pytest.raises(ValueError):
        encode_join_leave_push("c", "part", info)
    unsubscribe = Push(channel="c", unsubscribe=Unsubscribe(code=2000, reason="server unsubscribe"))
    assert CODEC.encode_push(unsubscribe) == reference_push(unsubscribe)
    disconnect = Push(disconnect=DisconnectPush(code=3001, reason="shutdown", reconnect=True))
    assert CODEC.encode_push(disconnect) == reference_push(disconnect)


def test_join_with_empty_info_still_writes_info() -> None:
    # Join{info=1 {}}: centrifuge clients read join.info
    assert CODEC.encode_push(Push(channel="c", join=Join(ClientInfo(user="", client="")))) == (
        b"\x09\x22\x07\x12\x01c\x2a\x02\x0a\x00"
    )


def test_map_entries_follow_upb_deterministic_order() -> None:
    tags = {k: "" for k in ["a", "ab", "b", "abc", "", "é", "z", "aa"]}
    pub = Publication(data=Raw(b"x"), tags=tags)
    assert encode_publication_push("c", pub) == reference_push(Push(channel="c", pub=pub))


def test_out_of_range_integers_are_refused() -> None:
    with pytest.raises(ValueError):
        CODEC.encode_reply(Reply(id=2**32))
    with pytest.raises(ValueError):
        CODEC.encode_reply(Reply(id=1, subscribe=SubscribeResult(offset=2**64)))
    with pytest.raises(ValueError):
        CODEC.encode_reply(Reply(id=1, subscribe=SubscribeResult(ttl=-1)))
    assert uvarint(2**64 - 1) == b"\xff" * 9 + b"\x01"


# ---------------------------------------------------------------- nested publications and presence


def record(data: bytes = b'{"x":1}', offset: int = 0, **kwargs: Any) -> Record:
    return Record(data=data, offset=offset, **kwargs)


def test_history_and_recovered_publications() -> None:
    info = RecordInfo(user="u", client="c", conn_info=b"\x01", chan_info=b"{}")
    records = [record(offset=1), record(b"\x00\x01", offset=2**64 - 1, info=info, tags={"t": "1"})]
    history = Reply(id=7, history=HistoryResult([encode_publication(r) for r in records], "epoch", 2**64 - 1))
    assert CODEC.encode_reply(history) == reference_reply(history)
    subscribe = Reply(
        id=8,
        subscribe=SubscribeResult(
            recoverable=True,
            epoch="e",
            publications=[encode_publication(r) for r in records],
            recovered=True,
            offset=2,
            positioned=True,
            was_recovering=True,
        ),
    )
    assert CODEC.encode_reply(subscribe) == reference_reply(subscribe)
    # structs and records are accepted in place of the pre-encoded messages
    as_structs: list[Any] = [publication(r) for r in records]
    structs = Reply(id=7, history=HistoryResult(as_structs, "epoch", 2**64 - 1))
    assert CODEC.encode_reply(structs) == CODEC.encode_reply(history)
    with pytest.raises(TypeError):
        CODEC.encode_reply(Reply(id=1, history=HistoryResult([object()], "", 0)))  # type: ignore[list-item]


def test_presence_reply() -> None:
    members = {
        "c2": encode_client_info(RecordInfo(user="u2", client="c2", chan_info=b"\x00")),
        "c1": encode_client_info(ClientInfo(user="u1", client="c1", conn_info=Raw(b'{"a":1}'))),
    }
    reply = Reply(id=3, presence=PresenceResult(members))
    assert CODEC.encode_reply(reply) == reference_reply(reply)
    empty = Reply(id=3, presence=PresenceResult({}))
    assert CODEC.encode_reply(empty) == b"\x04\x08\x03\x4a\x00" == reference_reply(empty)


def test_wire_shape() -> None:
    rec = record(b"\xff\x00", offset=5, info=RecordInfo(user="u", client="c", conn_info=b"{}"), tags={"a": "b"})
    assert PROTOBUF_SHAPE.publication("news", rec) == encode_publication_push("news", publication(rec))
    assert PROTOBUF_SHAPE.publication("news", rec) == reference_push(Push(channel="news", pub=publication(rec)))
    assert PROTOBUF_SHAPE.publication("", rec) == reference_push(Push(pub=publication(rec)))
    info = ClientInfo(user="u", client="c", conn_info=Raw(b'{"n":1}'))
    join = PROTOBUF_SHAPE.join_leave("news", "join", msgspec.json.encode(info))
    assert join == reference_push(Push(channel="news", join=Join(info)))
    with pytest.raises(ValueError):
        PROTOBUF_SHAPE.join_leave("news", "join", b"not json")


def test_join_concatenates() -> None:
    messages = [CODEC.encode_reply(Reply(id=1, ping=PingResult())), PING_FRAME]
    assert CODEC.join(messages) == b"\x04\x08\x01\x62\x00\x00"
    assert split_frame(CODEC.join(messages)) == [b"\x08\x01\x62\x00", b""]


# ---------------------------------------------------------------- malformed frames


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "empty frame"),
        (b"\x80", "truncated varint"),
        (b"\xff" * 11, "longer than 10 bytes"),
        (uvarint(2**60) + b"\x08\x01", "truncated frame"),
        (b"\x05\x08\x01", "truncated frame"),
        (b"\x02\x0a\x00", "wire type 2 for id"),  # id sent as length-delimited
        (b"\x02\x28\x01", "wire type 0 for subscribe"),
        (b"\x04\x3a\x02\x08\x01", "wire type 0 for channel"),  # PublishRequest.channel as a varint
        (b"\x03\x3a\x05\x0a", "truncated Command.publish"),
        (b"\x04\x3a\x02\x0a\x05", "truncated PublishRequest"),
        (b"\x04\x2a\x02\x0a\x80", "truncated varint"),
        (b"\x04\x3a\x02\x0a\xff", "truncated varint"),
        (b"\x02\x00\x01", "field number 0"),
        (b"\x01\x8e", "truncated varint"),
        (b"\x06\x80\x80\x80\x80\x80\x01", "tag out of range"),
        (b"\x02\xf6\x01", "invalid wire type 6"),
        (b"\x02\xa7\x01", "invalid wire type 7"),
        (b"\x01\x7f", "wire type 7 for sub_refresh"),
        (b"\x01\x7c", "wire type 4 for sub_refresh"),
        (b"\x02\xa4\x01", "end of group 20 without its start"),
        (b"\x02\xa3\x01", "unterminated group"),
        (b"\x04\xa3\x01\xac\x01", "does not match"),
        (b"\x03\xa1\x01\x00", "fixed-size field 20"),
        (b"\x03\xa5\x01\x00", "fixed-size field 20"),
        (b"\x04\xa2\x01\x05\x00", "field 20 of 5 bytes"),
        (b"\x05\x3a\x03\x0a\x01\xff", "not valid UTF-8"),
        (b"\x07\x3a\x05\x0a\x03\xed\xa0\x80", "not valid UTF-8"),  # a surrogate: upb refuses it too
        (b"\x07\x88\x80\x80\x80\x80\x00\x01", "tag out of range"),  # a tag takes at most 5 bytes
    ],
)
def test_malformed_frames(frame: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        CODEC.decode_commands(frame)


def test_groups_nested_too_deeply() -> None:
    # upb allows 100 levels of messages and groups; 97 groups fit even in connect.subs[…]
    body = b"\xa3\x01" * 98 + b"\xa4\x01" * 98
    with pytest.raises(ProtocolError, match="nested too deeply"):
        CODEC.decode_commands(delimited_bytes(body))
    body = b"\xa3\x01" * 97 + b"\xa4\x01" * 97
    assert CODEC.decode_commands(delimited_bytes(body)) == [Command()] == upb_decode(delimited_bytes(body))
    entry = b"\x12" + uvarint(len(body)) + body + b"\x0a\x01k"
    subs = b"\x1a" + uvarint(len(entry)) + entry
    frame = delimited_bytes(b"\x22" + uvarint(len(subs)) + subs)
    assert CODEC.decode_commands(frame) == upb_decode(frame)


def test_too_many_commands() -> None:
    assert len(CODEC.decode_commands(b"\x00" * 1000)) == 1000
    with pytest.raises(ProtocolError, match="too many commands in one frame"):
        CODEC.decode_commands(b"\x00" * 1001)
    with pytest.raises(ProtocolError, match="too many"):
        ProtobufCodec(max_commands_per_frame=2).decode_commands(b"\x00\x00\x00")


def test_oversize_length_does_not_allocate() -> None:
    frames = [
        uvarint(2**60) + b"\x00" * 16,
        b"\x0c\x3a" + uvarint(2**62) + b"\x00" * 8,
        b"\x0c\xa2\x01" + uvarint(2**31) + b"\x00" * 7,
        b"\x0e\x3a\x0c\x12" + uvarint(2**63 - 1) + b"\x00" * 2,
    ]
    tracemalloc.start()
    try:
        for frame in frames:
            with pytest.raises(ProtocolError):
                CODEC.decode_commands(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000


def test_memoryview_and_bytearray_frames() -> None:
    frame = reference_frame(pb("Command")(id=1, rpc=pb("RPCRequest")(method="m", data=b"d")))
    expected = [Command(id=1, rpc=RPCRequest(method="m", data=Raw(b"d")))]
    assert CODEC.decode_commands(frame) == expected
    assert CODEC.decode_commands(bytearray(frame)) == expected  # type: ignore[arg-type]
    assert CODEC.decode_commands(memoryview(frame)) == expected  # type: ignore[arg-type]


# ---------------------------------------------------------------- protobuf semantics


def test_unknown_fields_are_skipped_like_upb() -> None:
    # every wire type, at the top and inside requests; groups with nested groups
    unknown = (  # fields 39…43: above every known field (SubscribeRequest has 19)
        uvarint(39 << 3)
        + b"\x05"  # field 39 varint
        + uvarint(40 << 3 | 1)
        + b"\x00" * 8  # field 40 fixed64
        + uvarint(41 << 3 | 2)
        + b"\x02ab"  # field 41 length-delimited
        # field 42 group { 1: 1, group 43 { 1: "" } }
        + uvarint(42 << 3 | 3)
        + b"\x08\x01"
        + uvarint(43 << 3 | 3)
        + b"\x0a\x00"
        + uvarint(43 << 3 | 4)
        + uvarint(42 << 3 | 4)
        + uvarint(43 << 3 | 5)
        + b"\x00\x00\x00\x00"  # field 43 fixed32
    )
    publish = b"\x0a\x01c" + unknown + b"\x12\x01d" + b"\x18\x01\x22\x01k\x28\x01"  # + type/key/removed
    subscribe = b"\x0a\x01s" + b"\x6a\x04\x0a\x02op" + unknown  # tf=13 FilterNode
    connect = b"\x32\x06\x0a\x01h\x12\x01v" + b"\x38\x01" + b"\x1a\x05\x0a\x01x\x12\x00" + unknown[:3]  # headers, flag
    frame = b"".join(
        delimited_bytes(body)
        for body in (
            unknown + b"\x08\x01" + b"\x3a" + uvarint(len(publish)) + publish,
            b"\x08\x02\x2a" + uvarint(len(subscribe)) + subscribe + unknown,
            b"\x08\x03\x22" + uvarint(len(connect)) + connect,
        )
    )
    commands = CODEC.decode_commands(frame)
    assert commands == upb_decode(frame)
    assert commands[0].publish == PublishRequest(channel="c", data=Raw(b"d"), type=1, key="k", removed=True)
    assert commands[1].subscribe == SubscribeRequest(channel="s")
    assert commands[2].connect == ConnectRequest(subs={"x": SubscribeRequest()})


def test_repeated_fields_merge_like_upb() -> None:
    # Command.publish twice (merged), scalars twice (last wins), map keys twice (last entry wins)
    first = b"\x0a\x01a\x12\x01x"
    second = b"\x0a\x00"  # an explicit empty channel overrides
    subs = b"\x1a\x09\x0a\x01k\x12\x04\x0a\x02c1" + b"\x1a\x07\x0a\x01k\x12\x02\x18\x01" + b"\x1a\x02\x12\x00"
    body = (
        b"\x08\x01\x3a\x06"
        + first
        + b"\x08\x02\x3a\x02"
        + second
        + b"\x22"
        + uvarint(len(subs))
        + subs
        + b"\x52\x02\x42\x00"  # history.since twice
        + b"\x52\x04\x42\x02\x08\x05"
    )
    (command,) = CODEC.decode_commands(delimited_bytes(body))
    assert [command] == upb_decode(delimited_bytes(body))
    assert command.id == 2
    assert command.publish == PublishRequest(channel="", data=Raw(b"x"))
    assert command.connect == ConnectRequest(subs={"k": SubscribeRequest(recover=True), "": SubscribeRequest()})
    assert command.history == HistoryRequest(since=StreamPosition(offset=5))


# ---------------------------------------------------------------- hypothesis: commands

text = st.text(max_size=12)
small_bytes = st.binary(max_size=24)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


def subscribe_request() -> st.SearchStrategy[Any]:
    return st.builds(
        pb("SubscribeRequest"),
        channel=text,
        token=text,
        recover=st.booleans(),
        epoch=text,
        offset=u64,
        data=small_bytes,
        positioned=st.booleans(),
        recoverable=st.booleans(),
        join_leave=st.booleans(),
        delta=text,
        tf=st.none() | st.builds(pb("FilterNode"), op=text, vals=st.lists(text, max_size=2)),
        flag=i64,
        type=i32,
        phase=i32,
        cursor=text,
        limit=i32,
        asc=st.booleans(),
    )


def channel_request(name: str) -> st.SearchStrategy[Any]:
    return st.builds(pb(name), channel=text)


REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "connect": st.builds(
        pb("ConnectRequest"),
        token=text,
        data=small_bytes,
        subs=st.dictionaries(text, subscribe_request(), max_size=3),
        name=text,
        version=text,
        headers=st.dictionaries(text, text, max_size=2),
        flag=i64,
    ),
    "subscribe": subscribe_request(),
    "unsubscribe": channel_request("UnsubscribeRequest"),
    "publish": st.builds(
        pb("PublishRequest"), channel=text, data=small_bytes, type=i32, key=text, removed=st.booleans()
    ),
    "presence": channel_request("PresenceRequest"),
    "presence_stats": channel_request("PresenceStatsRequest"),
    "history": st.builds(
        pb("HistoryRequest"),
        channel=text,
        limit=i32,
        since=st.none() | st.builds(pb("StreamPosition"), offset=u64, epoch=text),
        reverse=st.booleans(),
    ),
    "ping": st.builds(pb("PingRequest")),
    "send": st.builds(pb("SendRequest"), data=small_bytes),
    "rpc": st.builds(pb("RPCRequest"), method=text, data=small_bytes),
    "refresh": st.builds(pb("RefreshRequest"), token=text),
    "sub_refresh": st.builds(
        pb("SubRefreshRequest"),
        channel=text,
        token=text,
        type=i32,
        track=st.lists(
            st.builds(
                pb("TrackBatch"),
                signature=text,
                items=st.lists(st.builds(pb("KeyedItem"), key=text, version=u64), max_size=3),
            ),
            max_size=2,
        ),
        untrack=st.lists(text, max_size=3),
    ),
}


@st.composite
def commands(draw: st.DrawFn) -> Any:
    message = pb("Command")(id=draw(u32))
    for name in draw(st.lists(st.sampled_from(METHODS), max_size=2, unique=True)):
        getattr(message, name).SetInParent()
        getattr(message, name).CopyFrom(draw(REQUESTS[name]))
    return message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands(), min_size=1, max_size=4))
def test_commands_decode_as_upb_decodes(messages: list[Any]) -> None:
    frame = reference_frame(*messages)
    assert CODEC.decode_commands(frame) == upb_decode(frame)


# Structured garbage: tags of known and unknown fields with any wire type, nested.
FIELD_NUMBERS = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 19, 2**29 - 1])


@st.composite
def wire_fields(draw: st.DrawFn, depth: int = 0) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        number = draw(FIELD_NUMBERS)
        wire = draw(st.sampled_from([0, 0, 2, 2, 2, 1, 5, 3, 4, 6]))
        out += uvarint(number << 3 | wire)
        if wire == 0:
            out += uvarint(draw(st.integers(0, 2**64 - 1) | st.integers(0, 300)))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wire == 2:
            inner = draw(wire_fields(depth + 1)) if depth < 3 and draw(st.booleans()) else draw(small_bytes)
            out += uvarint(len(inner)) + inner
        elif wire == 3 and depth < 3:
            out += draw(wire_fields(depth + 1)) + uvarint(number << 3 | 4)
    if draw(st.integers(0, 9)) == 0:  # sometimes cut short
        out = out[: draw(st.integers(0, len(out)))]
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_fields(), min_size=1, max_size=3))
def test_garbage_is_decoded_exactly_as_upb_or_refused(bodies: list[bytes]) -> None:
    frame = b"".join(delimited_bytes(body) for body in bodies)
    try:
        reference: list[Any] | None = upb_decode(frame, MODELLED_POOL)
    except DecodeError:
        reference = None
    try:
        mine = CODEC.decode_commands(frame)
    except ProtocolError as exc:
        # stricter than upb in one way only: a known field with the wrong wire type (as Go's vtproto)
        assert reference is None or "wire type" in str(exc), str(exc)
    else:
        assert mine == reference


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        CODEC.decode_commands(frame)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands(), min_size=1, max_size=3), st.data())
def test_corrupted_commands_raise_only_protocol_error(messages: list[Any], data: st.DataObject) -> None:
    frame = bytearray(reference_frame(*messages))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(frame)))
    with contextlib.suppress(ProtocolError):
        CODEC.decode_commands(bytes(frame[:cut]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_fields(), min_size=1, max_size=8))
def test_memory_is_bounded_by_the_frame_size(bodies: list[bytes]) -> None:
    frame = b"".join(delimited_bytes(body) for body in bodies)
    tracemalloc.start()
    try:
        with contextlib.suppress(ProtocolError):
            CODEC.decode_commands(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 256 * len(frame) + 16_384


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(
            b"\x00" * 999 + delimited_bytes(b"\xaa\x01" + uvarint(250_000) + b"x" * 250_000), id="big-unknown"
        ),
        pytest.param(delimited_bytes((b"\xa3\x01" * 100 + b"\xa4\x01" * 100) * 640), id="deep-groups"),
        pytest.param(delimited_bytes(b"\x3a\x00" * 128_000), id="repeated-request-merged"),
        pytest.param(delimited_bytes(b"\x22\x02\x1a\x00" * 64_000), id="repeated-connect-with-subs"),
        pytest.param(delimited_bytes(b"\x98\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" * 20_000), id="varints"),
    ],
)
def test_big_adversarial_frames_are_linear(frame: bytes) -> None:
    started = time.perf_counter()
    with contextlib.suppress(ProtocolError):
        CODEC.decode_commands(frame)
    # ~256 KB: well under a second on a slow runner (quadratic would take minutes)
    assert time.perf_counter() - started < 3.0


# ---------------------------------------------------------------- hypothesis: replies and pushes

raw = small_bytes.map(Raw)
optional_raw = st.none() | raw
tags = st.none() | st.dictionaries(text, text, max_size=4)
client_info = st.builds(ClientInfo, user=text, client=text, conn_info=optional_raw, chan_info=optional_raw)
publications = st.builds(
    Publication,
    data=raw,
    info=st.none() | client_info,
    offset=u64 | st.integers(0, 1000),
    tags=tags,
    key=text,
    removed=st.booleans(),
    score=i64 | st.integers(-300, 300),
    epoch=text,
    version=u64 | st.integers(0, 300),
)
encoded_publications = publications.map(encode_publication)
subscribe_result = st.builds(
    SubscribeResult,
    expires=st.booleans(),
    ttl=u32,
    recoverable=st.booleans(),
    epoch=text,
    publications=st.none() | st.lists(encoded_publications, max_size=3),
    recovered=st.booleans(),
    offset=u64,
    positioned=st.booleans(),
    data=optional_raw,
    was_recovering=st.booleans(),
    type=i32,
    phase=i32,
    cursor=text,
    state=st.none() | st.lists(encoded_publications, max_size=3),
    publish_debounce=u32,
)
error = st.builds(Error, code=u32, message=text, temporary=st.booleans())


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    results: dict[str, st.SearchStrategy[Any]] = {
        "error": error,
        "connect": st.builds(
            ConnectResult,
            client=text,
            version=text,
            expires=st.booleans(),
            ttl=u32,
            data=optional_raw,
            subs=st.none() | st.dictionaries(text, subscribe_result, max_size=3),
            ping=u32,
            pong=st.booleans(),
        ),
        "subscribe": subscribe_result,
        "unsubscribe": st.builds(UnsubscribeResult),
        "publish": st.builds(PublishResult),
        "presence": st.builds(PresenceResult, st.dictionaries(text, client_info.map(encode_client_info), max_size=4)),
        "presence_stats": st.builds(PresenceStatsResult, num_clients=u32, num_users=u32),
        "history": st.builds(HistoryResult, st.lists(encoded_publications, max_size=4), text, u64),
        "ping": st.builds(PingResult),
        "rpc": st.builds(RPCResult, data=optional_raw),
        "refresh": st.builds(RefreshResult, client=text, version=text, expires=st.booleans(), ttl=u32),
        "sub_refresh": st.builds(
            SubRefreshResult,
            expires=st.booleans(),
            ttl=u32,
            items=st.none() | st.lists(encoded_publications, max_size=3),
        ),
    }
    names = draw(st.lists(st.sampled_from(sorted(results)), max_size=2, unique=True))
    return Reply(id=draw(u32), **{name: draw(results[name]) for name in names})


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "pub": publications,
        "join": st.builds(Join, client_info),
        "leave": st.builds(Leave, client_info),
        "unsubscribe": st.builds(Unsubscribe, code=u32, reason=text),
        "message": st.builds(MessagePush, raw),
        "subscribe": st.builds(
            Subscribe,
            recoverable=st.booleans(),
            epoch=text,
            offset=u64,
            positioned=st.booleans(),
            data=optional_raw,
        ),
        "disconnect": st.builds(DisconnectPush, code=u32, reason=text, reconnect=st.booleans()),
    }
    names = draw(st.lists(st.sampled_from(sorted(kinds)), min_size=1, max_size=2, unique=True))
    return Push(channel=draw(text), **{name: draw(kinds[name]) for name in names})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_replies_are_byte_identical_to_the_reference(reply: Reply) -> None:
    assert CODEC.encode_reply(reply) == reference_reply(reply)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pushes())
def test_pushes_are_byte_identical_to_the_reference(push: Push) -> None:
    assert CODEC.encode_push(push) == reference_push(push)


@settings(max_examples=300, deadline=None)
@given(text, publications)
def test_publication_push_fast_path(channel: str, pub: Publication) -> None:
    encoded = encode_publication_push(channel, pub)
    assert (
        encoded == CODEC.encode_push(Push(channel=channel, pub=pub)) == reference_push(Push(channel=channel, pub=pub))
    )
    (body,) = split_frame(encoded)
    parsed = pb("Reply")()
    parsed.ParseFromString(body)
    assert parsed.push.pub.data == bytes(pub.data) and parsed.push.pub.offset == pub.offset


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(replies().map(CODEC.encode_reply), pushes().map(CODEC.encode_push)), max_size=5))
def test_joined_frames_split_back(messages: list[bytes]) -> None:
    frame = CODEC.join(messages)
    for body, message in zip(split_frame(frame), messages, strict=True):
        assert delimited_bytes(body) == message
        pb("Reply")().ParseFromString(body)


# ---------------------------------------------------------------- timings (python tests/protocol/test_protobuf.py)


def _best(*fns: Callable[[], object], rounds: int = 400, number: int = 1000) -> list[float]:
    """Best time per call of each function in µs, measured in alternating rounds (fair on a noisy machine)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (time.perf_counter() - started) / number)
    return [b * 1e6 for b in best]


def _upb_command(frame: bytes) -> Command:
    """The alternative measured: upb parses, then the fields are read back into structs."""
    size, pos = (frame[0], 1) if frame[0] < 0x80 else ((frame[0] & 0x7F) | frame[1] << 7, 2)
    message = client_pb2.Command()
    message.ParseFromString(frame[pos : pos + size])
    command = Command(id=message.id)
    for field, v in message.ListFields():
        if field.name == "publish":
            command.publish = PublishRequest(v.channel, Raw(v.data))
        elif field.name == "subscribe":
            command.subscribe = SubscribeRequest(
                channel=v.channel,
                token=v.token,
                recover=v.recover,
                epoch=v.epoch,
                offset=v.offset,
                data=Raw(v.data),
                positioned=v.positioned,
                recoverable=v.recoverable,
                join_leave=v.join_leave,
                delta=v.delta,
                flag=v.flag,
            )
    return command


def main() -> None:
    publish = reference_frame(
        pb("Command")(
            id=17, publish=pb("PublishRequest")(channel="chat:room-42", data=b'{"text":"' + b"x" * 88 + b'"}')
        )
    )
    subscribe = reference_frame(
        pb("Command")(
            id=18,
            subscribe=pb("SubscribeRequest")(
                channel="chat:room-42", recover=True, epoch="AbCdEfGh", offset=12345, recoverable=True, flag=1
            ),
        )
    )
    for name, frame in (("publish, 100-byte data", publish), ("subscribe with recovery", subscribe)):
        assert CODEC.decode_commands(frame) == [_upb_command(frame)]
        hand, upb = _best(lambda f=frame: CODEC.decode_commands(f), lambda f=frame: _upb_command(f))  # type: ignore[misc]
        print(f"{name:28} hand-written {hand:.2f} µs   upb + convert {upb:.2f} µs")
    rec = record(b'{"text":"' + b"x" * 88 + b'"}', offset=12345)

    def generated() -> bytes:
        message = client_pb2.Reply(
            push=client_pb2.Push(channel="chat:room-42", pub=client_pb2.Publication(data=rec.data, offset=rec.offset))
        )
        return delimited(message)

    assert generated() == PROTOBUF_SHAPE.publication("chat:room-42", rec)
    hand, upb = _best(lambda: PROTOBUF_SHAPE.publication("chat:room-42", rec), generated)
    print(f"{'publication push encode':28} hand-written {hand:.2f} µs   generated classes {upb:.2f} µs")


if __name__ == "__main__":
    main()
