"""The JSON codec, byte for byte: frames in, typed commands out; replies and pushes out.

Frames are written as byte literals the way centrifuge-js / centrifuge-python put them
on the wire (reference §1.3–§1.7). Reply shapes the SDKs index directly are compared
byte-exactly.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkline.protocol.codec import (
    PING_FRAME,
    JsonCodec,
    ProtocolError,
    compact_raw,
    encode_publication_push,
)
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
    Leave,
    Message,
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
    Unsubscribe,
    UnsubscribeRequest,
    UnsubscribeResult,
)

codec = JsonCodec()
Raw = msgspec.Raw


def decode(frame: bytes) -> list[Command]:
    return codec.decode_commands(frame)


def one(frame: bytes) -> Command:
    commands = decode(frame)
    assert len(commands) == 1
    return commands[0]


# ---------------------------------------------------------------- framing


def test_single_command() -> None:
    cmd = one(b'{"id":1,"connect":{"token":"t","name":"js"}}')
    assert cmd.id == 1
    assert cmd.method == "connect"
    assert cmd.connect == ConnectRequest(token="t", name="js")


def test_two_commands_in_one_frame_keep_order() -> None:
    frame = b'{"id":1,"connect":{"token":"<jwt>","name":"js"}}\n{"id":2,"subscribe":{"channel":"news","flag":1}}'
    first, second = decode(frame)
    assert (first.id, first.method) == (1, "connect")
    assert (second.id, second.method) == (2, "subscribe")
    assert second.subscribe is not None
    assert second.subscribe.channel == "news"


def test_trailing_newline_is_ignored() -> None:
    commands = decode(b'{"id":1,"ping":{}}\n{"id":2,"ping":{}}\n')
    assert [c.id for c in commands] == [1, 2]


def test_leading_and_blank_lines_are_ignored() -> None:
    commands = decode(b'\n\n{"id":1,"ping":{}}\n   \n\t\n{"id":2,"ping":{}}\n\n')
    assert [c.id for c in commands] == [1, 2]


def test_crlf_separated_commands() -> None:
    commands = decode(b'{"id":1,"connect":{}}\r\n{"id":2,"ping":{}}\r\n')
    assert [(c.id, c.method) for c in commands] == [(1, "connect"), (2, "ping")]


def test_whitespace_inside_and_around_a_command() -> None:
    cmd = one(b'  { "id" : 7 , "publish" : { "channel" : "c" , "data" : { "a" : [1, 2] } } }  ')
    assert cmd.id == 7
    assert cmd.publish is not None
    assert json.loads(bytes(cmd.publish.data)) == {"a": [1, 2]}


@pytest.mark.parametrize("frame", [b"", b" ", b"\n", b"\r\n", b"\n\n\n", b" \t\r\n \n\t ", b"\r"])
def test_empty_or_whitespace_frame_is_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b"{",
        b"}",
        b"null",
        b"1",
        b'"connect"',
        b"[]",
        b'[{"id":1,"ping":{}}]',
        b'{"id":1,"ping":{}} junk',
        b'{"id":1,"ping":{}}{"id":2,"ping":{}}',
        b'{"id":1,"ping":{}}\x00',
        b"\x00",
        b"\xff\xfe",
        b'\xef\xbb\xbf{"id":1,"ping":{}}',  # a BOM is not JSON whitespace
        b"{'id':1}",
        b'{"id":1,"publish":{"channel":"a","data":NaN}}',
        b'{"id":1,"publish":{"channel":"a","data":undefined}}',
        b'{"id":1,"publish":{"channel":"a","data":{"a":1}\n}}',  # one object split over two lines
        b'{"id":1,"ping":{}}\n{"id":2,',  # the second command is truncated
        b'{"id":1,"ping":{}}\nnot json',
        b'{"id":1,"publish":{"channel":"\xff","data":1}}',  # invalid UTF-8 in a string field
    ],
)
def test_malformed_frame_is_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":"1","ping":{}}',
        b'{"id":1.0,"ping":{}}',
        b'{"id":1.5,"ping":{}}',
        b'{"id":true,"ping":{}}',
        b'{"id":null,"ping":{}}',
        b'{"id":1,"connect":[]}',
        b'{"id":1,"connect":"x"}',
        b'{"id":1,"connect":{"token":1}}',
        b'{"id":1,"connect":{"subs":[]}}',
        b'{"id":1,"connect":{"subs":{"a":1}}}',
        b'{"id":1,"subscribe":{"channel":5}}',
        b'{"id":1,"subscribe":{"channel":"a","recover":"yes"}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":-1}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":"5"}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":18446744073709551616}}',
        b'{"id":1,"history":{"channel":"a","since":{"offset":18446744073709551616}}}',
        b'{"id":1,"connect":{"subs":{"a":{"offset":18446744073709551616}}}}',
        b'{"id":1,"history":{"channel":"a","limit":2147483648}}',
        b'{"id":1,"history":{"channel":"a","limit":-2147483649}}',
        b'{"id":1,"history":{"channel":"a","since":{"offset":-1}}}',
        b'{"id":1,"history":{"channel":"a","since":[]}}',
        b'{"id":1,"history":{"channel":"a","reverse":1}}',
        b'{"id":1,"publish":{"channel":null,"data":1}}',
        b'{"id":1,"rpc":{"method":1}}',
        b'{"id":1,"refresh":{"token":{}}}',
    ],
)
def test_wrong_field_types_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(
    ("frame", "cid"),
    [
        (b'{"id":0,"ping":{}}', 0),
        (b'{"id":1,"ping":{}}', 1),
        (b'{"id":4294967295,"ping":{}}', 2**32 - 1),
    ],
)
def test_id_within_uint32_is_accepted(frame: bytes, cid: int) -> None:
    assert one(frame).id == cid


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":-1,"ping":{}}',
        b'{"id":-4294967295,"ping":{}}',
        b'{"id":4294967296,"ping":{}}',
        b'{"id":9223372036854775808,"ping":{}}',
        b'{"id":99999999999999999999999999999999,"ping":{}}',
        b'{"id":1e3,"ping":{}}',
    ],
)
def test_id_outside_uint32_is_rejected(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


def test_a_bad_command_rejects_the_whole_frame() -> None:
    with pytest.raises(ProtocolError):
        decode(b'{"id":1,"ping":{}}\n{"id":-2,"ping":{}}\n{"id":3,"ping":{}}')


def test_commands_per_frame_limit() -> None:
    small = JsonCodec(max_commands_per_frame=3)
    assert len(small.decode_commands(b'{"id":1,"ping":{}}\n' * 3)) == 3
    with pytest.raises(ProtocolError):
        small.decode_commands(b'{"id":1,"ping":{}}\n' * 4)


def test_default_commands_per_frame_limit_is_1000() -> None:
    line = b'{"id":1,"ping":{}}'
    assert len(decode(b"\n".join([line] * 1000))) == 1000
    with pytest.raises(ProtocolError):
        decode(b"\n".join([line] * 1001))


def test_blank_lines_do_not_count_against_the_limit() -> None:
    small = JsonCodec(max_commands_per_frame=2)
    assert len(small.decode_commands(b'\n\n\n{"id":1,"ping":{}}\n\n\n\n{"id":2,"ping":{}}\n\n')) == 2


@pytest.mark.parametrize("depth", [1_000, 5_000, 30_000])
def test_deeply_nested_payload_is_a_protocol_error(depth: int) -> None:
    # 2 KB of brackets is enough: msgspec gives up at Python's recursion limit. Such a
    # frame fits well inside the 64 KiB WebSocket message limit.
    frame = b'{"id":2,"publish":{"channel":"a","data":' + b"[" * depth + b"]" * depth + b"}}"
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":2,"publish":{"channel":"a","data":"\xff\xfe"}}',
        b'{"id":2,"publish":{"channel":"a","data":{"k":"\xc3"}}}',
        b'{"id":2,"publish":{"channel":"a","data":"\xed\xa0\x80"}}',  # an encoded lone surrogate
        b'{"id":2,"rpc":{"method":"m","data":"\x80"}}',
        b'{"id":1,"connect":{"data":"\xff"}}',
    ],
)
def test_invalid_utf8_anywhere_is_a_protocol_error(frame: bytes) -> None:
    # Text frames are UTF-8-checked by aiohttp, binary frames are not; either way a
    # JSON message must be valid UTF-8 or it poisons every subscriber's text frame.
    with pytest.raises(ProtocolError):
        decode(frame)


# ---------------------------------------------------------------- every command type


def test_connect() -> None:
    cmd = one(
        b'{"id":1,"connect":{"token":"jwt","data":{"a":1},"name":"python","version":"0.7.0",'
        b'"subs":{"news":{"recover":true,"offset":6,"epoch":"ab12"}}}}'
    )
    req = cmd.connect
    assert req is not None
    assert (req.token, req.name, req.version) == ("jwt", "python", "0.7.0")
    assert bytes(req.data) == b'{"a":1}'
    assert req.subs == {"news": SubscribeRequest(recover=True, offset=6, epoch="ab12")}


def test_connect_defaults() -> None:
    req = one(b'{"id":1,"connect":{}}').connect
    assert req == ConnectRequest()
    assert req is not None
    assert not req.data
    assert req.subs == {}


def test_subscribe_with_every_field() -> None:
    cmd = one(
        b'{"id":2,"subscribe":{"channel":"chat","token":"st","recover":true,"epoch":"ab12","offset":6,'
        b'"data":[1],"positioned":true,"recoverable":true,"join_leave":true,"delta":"fossil","flag":3}}'
    )
    assert cmd.subscribe == SubscribeRequest(
        channel="chat",
        token="st",
        recover=True,
        epoch="ab12",
        offset=6,
        data=Raw(b"[1]"),
        positioned=True,
        recoverable=True,
        join_leave=True,
        delta="fossil",
        flag=3,
    )


def test_unsubscribe() -> None:
    assert one(b'{"id":4,"unsubscribe":{"channel":"x"}}').unsubscribe == UnsubscribeRequest("x")


def test_publish_keeps_data_bytes_untouched() -> None:
    cmd = one(b'{"id":3,"publish":{"channel":"chat","data":{"t":"yo","n":[1, 2.50, "\\u00e9\\n"]}}}')
    assert cmd.publish is not None
    assert cmd.publish.channel == "chat"
    assert bytes(cmd.publish.data) == b'{"t":"yo","n":[1, 2.50, "\\u00e9\\n"]}'


@pytest.mark.parametrize("data", [b"null", b"0", b'""', b"[]", b"{}", b"true", b'"\\n"', b"-1.5e-7"])
def test_publish_data_can_be_any_json_value(data: bytes) -> None:
    cmd = one(b'{"id":3,"publish":{"channel":"c","data":' + data + b"}}")
    assert cmd.publish is not None
    assert bytes(cmd.publish.data) == data


def test_presence_and_presence_stats() -> None:
    assert one(b'{"id":5,"presence":{"channel":"c"}}').presence == PresenceRequest("c")
    assert one(b'{"id":6,"presence_stats":{"channel":"c"}}').presence_stats == PresenceStatsRequest("c")


def test_history() -> None:
    cmd = one(b'{"id":7,"history":{"channel":"c","limit":-1,"since":{"offset":3,"epoch":"e"},"reverse":true}}')
    assert cmd.history == HistoryRequest("c", -1, StreamPosition(3, "e"), True)
    assert one(b'{"id":7,"history":{"channel":"c"}}').history == HistoryRequest("c", 0, None, False)


def test_ping_send_rpc_refresh_sub_refresh() -> None:
    assert one(b'{"id":8,"ping":{}}').ping is not None
    send = one(b'{"send":{"data":{"m":1}}}')
    assert send.id == 0
    assert send.method == "send"
    assert send.send == SendRequest(Raw(b'{"m":1}'))
    assert one(b'{"id":9,"rpc":{"method":"sum","data":[1,2]}}').rpc == RPCRequest("sum", Raw(b"[1,2]"))
    assert one(b'{"id":10,"refresh":{"token":"t2"}}').refresh == RefreshRequest("t2")
    assert one(b'{"id":11,"sub_refresh":{"channel":"c","token":"t3"}}').sub_refresh == SubRefreshRequest("c", "t3")


@pytest.mark.parametrize(
    ("frame", "method"),
    [
        (b'{"id":1,"connect":{}}', "connect"),
        (b'{"id":1,"subscribe":{"channel":"c"}}', "subscribe"),
        (b'{"id":1,"unsubscribe":{"channel":"c"}}', "unsubscribe"),
        (b'{"id":1,"publish":{"channel":"c","data":1}}', "publish"),
        (b'{"id":1,"presence":{"channel":"c"}}', "presence"),
        (b'{"id":1,"presence_stats":{"channel":"c"}}', "presence_stats"),
        (b'{"id":1,"history":{"channel":"c"}}', "history"),
        (b'{"id":1,"ping":{}}', "ping"),
        (b'{"send":{"data":1}}', "send"),
        (b'{"id":1,"rpc":{"method":"m"}}', "rpc"),
        (b'{"id":1,"refresh":{"token":"t"}}', "refresh"),
        (b'{"id":1,"sub_refresh":{"channel":"c","token":"t"}}', "sub_refresh"),
        (b"{}", ""),
        (b'{"id":5}', ""),
        (b'{"id":1,"ping":null}', ""),
    ],
)
def test_method_names(frame: bytes, method: str) -> None:
    assert one(frame).method == method


def test_the_pong_is_an_empty_command() -> None:
    cmd = one(b"{}")
    assert cmd == Command()
    assert (cmd.id, cmd.method) == (0, "")


def test_first_request_field_wins_when_several_are_set() -> None:
    assert one(b'{"id":1,"publish":{"channel":"c","data":1},"connect":{}}').method == "connect"


# ---------------------------------------------------------------- unknown fields (newer SDKs)


@pytest.mark.parametrize(
    "frame",
    [
        # ConnectRequest: headers, flag, dict, profile (§3.1, §12)
        b'{"id":1,"connect":{"token":"t","headers":{"a":"b"},"flag":3,"dict":{"id":1},"profile":"p"}}',
        # SubscribeRequest: tf, flag, delta, type, phase, cursor, limit, asc (§4.1, §12)
        b'{"id":2,"subscribe":{"channel":"news","flag":1,"delta":"fossil","tf":{"op":1,"nodes":[{"key":"k"}]},'
        b'"phase":1,"cursor":"c","limit":5,"asc":true}}',
        # publish type/key/removed, sub_refresh type/track/untrack (known since map subscriptions), with extras
        b'{"id":3,"publish":{"channel":"c","data":{},"type":1,"key":"k","removed":true}}',
        b'{"id":4,"sub_refresh":{"channel":"c","token":"t","type":2,"track":[{"signature":"s","items":[{"key":"a"}]}],'
        b'"untrack":["b"],"future":1}}',
        # unknown top-level fields, including the reserved v1 method/params
        b'{"id":5,"method":1,"params":{"x":1},"ping":{},"future":{"deep":[1,{"x":null}]}}',
        b'{"id":6,"history":{"channel":"c","since":{"offset":1,"epoch":"e","extra":true},"extra":1}}',
    ],
)
def test_unknown_fields_are_ignored(frame: bytes) -> None:
    cmd = one(frame)
    assert cmd.method != ""


def test_unknown_fields_do_not_change_known_ones() -> None:
    cmd = one(b'{"id":2,"subscribe":{"channel":"news","flag":1,"tf":{"x":1},"delta":"fossil","type":0,"phase":3}}')
    assert cmd.subscribe == SubscribeRequest(channel="news", flag=1, delta="fossil", phase=3)


def test_subscribe_type_is_kept_so_the_handler_can_reject_it() -> None:
    cmd = one(b'{"id":2,"subscribe":{"channel":"news","type":2}}')
    assert cmd.subscribe is not None
    assert cmd.subscribe.type == 2


# ---------------------------------------------------------------- replies (byte-exact)


def reply(r: Reply) -> bytes:
    return codec.encode_reply(r)


def test_publish_reply_keeps_its_empty_result() -> None:
    assert reply(Reply(id=3, publish=PublishResult())) == b'{"id":3,"publish":{}}'


def test_empty_results_are_present() -> None:
    assert reply(Reply(id=4, unsubscribe=UnsubscribeResult())) == b'{"id":4,"unsubscribe":{}}'
    assert reply(Reply(id=2, subscribe=SubscribeResult())) == b'{"id":2,"subscribe":{}}'
    assert reply(Reply(id=8, ping=PingResult())) == b'{"id":8,"ping":{}}'
    assert reply(Reply(id=9, rpc=RPCResult())) == b'{"id":9,"rpc":{}}'
    assert reply(Reply(id=11, sub_refresh=SubRefreshResult())) == b'{"id":11,"sub_refresh":{}}'


def test_connect_reply() -> None:
    r = Reply(id=1, connect=ConnectResult(client="c1", version="0.1.0", ping=25, pong=True))
    assert reply(r) == b'{"id":1,"connect":{"client":"c1","version":"0.1.0","ping":25,"pong":true}}'


def test_connect_reply_always_has_client_and_version() -> None:
    assert reply(Reply(id=1, connect=ConnectResult(client="", version=""))) == (
        b'{"id":1,"connect":{"client":"","version":""}}'
    )


def test_connect_reply_with_expiry_data_and_subs() -> None:
    r = Reply(
        id=1,
        connect=ConnectResult(
            client="c1",
            version="0.1.0",
            expires=True,
            ttl=60,
            data=Raw(b'{"x":1}'),
            subs={"#42": SubscribeResult(recoverable=True, epoch="e", offset=3, positioned=True)},
            ping=25,
            pong=True,
        ),
    )
    assert reply(r) == (
        b'{"id":1,"connect":{"client":"c1","version":"0.1.0","expires":true,"ttl":60,"data":{"x":1},'
        b'"subs":{"#42":{"recoverable":true,"epoch":"e","offset":3,"positioned":true}},"ping":25,"pong":true}}'
    )


def test_refresh_reply() -> None:
    r = Reply(id=10, refresh=RefreshResult(client="c1", version="0.1.0", expires=True, ttl=30))
    assert reply(r) == b'{"id":10,"refresh":{"client":"c1","version":"0.1.0","expires":true,"ttl":30}}'


def test_error_reply_is_exactly_code_and_message() -> None:
    assert reply(Reply(id=2, error=Error(103, "permission denied"))) == (
        b'{"id":2,"error":{"code":103,"message":"permission denied"}}'
    )


def test_error_reply_has_code_and_message() -> None:
    decoded = json.loads(reply(Reply(id=2, error=Error(103, "permission denied"))))
    assert decoded["id"] == 2
    assert decoded["error"]["code"] == 103
    assert decoded["error"]["message"] == "permission denied"
    assert not decoded["error"].get("temporary", False)
    assert set(decoded) == {"id", "error"}


def test_temporary_error_reply() -> None:
    assert reply(Reply(id=2, error=Error(100, "internal server error", True))) == (
        b'{"id":2,"error":{"code":100,"message":"internal server error","temporary":true}}'
    )


def test_presence_stats_with_zeros_present() -> None:
    assert reply(Reply(id=5, presence_stats=PresenceStatsResult(0, 0))) == (
        b'{"id":5,"presence_stats":{"num_clients":0,"num_users":0}}'
    )


def test_presence_reply_always_has_the_map() -> None:
    assert reply(Reply(id=5, presence=PresenceResult({}))) == b'{"id":5,"presence":{"presence":{}}}'
    info = b'{"user":"42","client":"c1"}'
    assert reply(Reply(id=5, presence=PresenceResult({"c1": Raw(info)}))) == (
        b'{"id":5,"presence":{"presence":{"c1":{"user":"42","client":"c1"}}}}'
    )


def test_history_with_empty_publications_list_present() -> None:
    assert reply(Reply(id=6, history=HistoryResult([], "", 0))) == (
        b'{"id":6,"history":{"publications":[],"epoch":"","offset":0}}'
    )


def test_history_with_publications() -> None:
    pubs = [Raw(b'{"data":{"n":1},"offset":1}'), Raw(b'{"data":{"n":2},"offset":2}')]
    assert reply(Reply(id=6, history=HistoryResult(pubs, "ab12", 2))) == (
        b'{"id":6,"history":{"publications":[{"data":{"n":1},"offset":1},{"data":{"n":2},"offset":2}],'
        b'"epoch":"ab12","offset":2}}'
    )


def test_subscribe_reply_with_position() -> None:
    r = Reply(id=2, subscribe=SubscribeResult(recoverable=True, epoch="ab12", offset=4, positioned=True))
    assert json.loads(reply(r)) == {
        "id": 2,
        "subscribe": {"recoverable": True, "positioned": True, "epoch": "ab12", "offset": 4},
    }


def test_recovered_subscribe_reply() -> None:
    pubs = [Raw(b'{"data":{"t":1},"offset":7}'), Raw(b'{"data":{"t":2},"offset":8}')]
    r = Reply(
        id=2,
        subscribe=SubscribeResult(
            recoverable=True,
            epoch="ab12",
            publications=pubs,
            recovered=True,
            offset=6,
            positioned=True,
            was_recovering=True,
        ),
    )
    assert json.loads(reply(r)) == {
        "id": 2,
        "subscribe": {
            "recoverable": True,
            "positioned": True,
            "epoch": "ab12",
            "offset": 6,
            "recovered": True,
            "was_recovering": True,
            "publications": [{"data": {"t": 1}, "offset": 7}, {"data": {"t": 2}, "offset": 8}],
        },
    }


def test_replies_without_id_are_pings() -> None:
    assert reply(Reply()) == b"{}" == PING_FRAME


# ---------------------------------------------------------------- pushes


def test_encode_publication_push() -> None:
    pub = Publication(data=Raw(b'{"text":"hi"}'), offset=5)
    assert (
        encode_publication_push("news", pub) == b'{"push":{"channel":"news","pub":{"data":{"text":"hi"},"offset":5}}}'
    )


def test_publication_push_without_offset_and_with_info_and_tags() -> None:
    pub = Publication(
        data=Raw(b'{"t":"yo"}'),
        info=ClientInfo(user="42", client="c1", conn_info=Raw(b'{"n":"a"}')),
        tags={"k": "v"},
    )
    assert encode_publication_push("chat", pub) == (
        b'{"push":{"channel":"chat","pub":{"data":{"t":"yo"},"info":{"user":"42","client":"c1",'
        b'"conn_info":{"n":"a"}},"tags":{"k":"v"}}}}'
    )


def test_publication_push_escapes_the_channel_name() -> None:
    out = encode_publication_push('a"b\n\\c', Publication(data=Raw(b"1")))
    assert b"\n" not in out
    assert json.loads(out) == {"push": {"channel": 'a"b\n\\c', "pub": {"data": 1}}}


def test_encode_push_shapes() -> None:
    info = ClientInfo(user="", client="c1")
    assert codec.encode_push(Push(channel="c", join=Join(info))) == (
        b'{"push":{"channel":"c","join":{"info":{"user":"","client":"c1"}}}}'
    )
    assert codec.encode_push(Push(channel="c", leave=Leave(info))) == (
        b'{"push":{"channel":"c","leave":{"info":{"user":"","client":"c1"}}}}'
    )
    assert codec.encode_push(Push(channel="c", unsubscribe=Unsubscribe(2000, "server unsubscribe"))) == (
        b'{"push":{"channel":"c","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}'
    )
    assert codec.encode_push(Push(message=Message(Raw(b'{"m":1}')))) == b'{"push":{"message":{"data":{"m":1}}}}'
    assert codec.encode_push(Push(channel="c", subscribe=Subscribe(recoverable=True, epoch="e", offset=3))) == (
        b'{"push":{"channel":"c","subscribe":{"recoverable":true,"epoch":"e","offset":3}}}'
    )
    assert codec.encode_push(Push(disconnect=DisconnectPush(3501, "bad request", False))) == (
        b'{"push":{"disconnect":{"code":3501,"reason":"bad request","reconnect":false}}}'
    )


def test_join_keeps_both_infos() -> None:
    info = ClientInfo(user="42", client="c1", conn_info=Raw(b"[1]"), chan_info=Raw(b'"x"'))
    assert codec.encode_push(Push(channel="c", join=Join(info))) == (
        b'{"push":{"channel":"c","join":{"info":{"user":"42","client":"c1","conn_info":[1],"chan_info":"x"}}}}'
    )


def test_join() -> None:
    assert codec.join([b"a", b"b", b"c"]) == b"a\nb\nc"
    assert codec.join([b"a"]) == b"a"


# ---------------------------------------------------------------- compact_raw


def test_compact_raw_removes_raw_newlines_between_tokens() -> None:
    raw = b'{\n  "a": 1,\r\n  "b": [\n    2\n  ]\n}'
    out = bytes(compact_raw(raw))
    assert b"\n" not in out
    assert b"\r" not in out
    assert json.loads(out) == {"a": 1, "b": [2]}


def test_compact_raw_keeps_escaped_newlines_inside_strings() -> None:
    raw = b'{"text":"line1\\nline2\\r\\n","k\\n":"\\\\n"}'
    out = bytes(compact_raw(raw))
    assert out == raw
    assert json.loads(out) == {"text": "line1\nline2\r\n", "k\n": "\\n"}


def test_compact_raw_without_newlines_is_unchanged() -> None:
    raw = b'{"a": [1, 2], "b": "c d"}'
    assert bytes(compact_raw(raw)) == raw


# ---------------------------------------------------------------- properties

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
KEYS = [
    "id",
    *METHODS,
    "channel",
    "data",
    "token",
    "offset",
    "epoch",
    "since",
    "limit",
    "subs",
    "recover",
    "flag",
]
# Objects built from the protocol's own keys reach deeper into the decoder than random keys.
protocolish = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=20,
)


def assert_decodes_or_protocol_error(frame: bytes) -> None:
    try:
        commands = decode(frame)
    except ProtocolError:
        return
    assert commands
    assert all(isinstance(c, Command) for c in commands)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(frame: bytes) -> None:
    assert_decodes_or_protocol_error(frame)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_random_json_values_decode_or_raise_protocol_error(value: Any, indent: bool) -> None:
    text = json.dumps(value, indent=2 if indent else None)
    assert_decodes_or_protocol_error(text.encode())


@settings(max_examples=250, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), protocolish, max_size=4), min_size=1, max_size=3))
def test_random_protocolish_objects_decode_or_raise_protocol_error(objects: list[dict[str, Any]]) -> None:
    frame = "\n".join(json.dumps(o, separators=(",", ":")) for o in objects).encode()
    assert_decodes_or_protocol_error(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b'{"id":1,"ping":{}}', b"{}", b"", b"  ", b"\r", b"x", b"{", b"\xff"]), max_size=8))
def test_random_line_mixtures(lines: list[bytes]) -> None:
    assert_decodes_or_protocol_error(b"\n".join(lines))


# Generated valid commands: encode -> decode gives the same struct back.

raw_json = json_values.map(lambda v: Raw(json.dumps(v, separators=(",", ":")).encode()))
uint32 = st.integers(0, 2**32 - 1)
uint63 = st.integers(0, 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
names = st.text(max_size=20)

subscribe_requests = st.builds(
    SubscribeRequest,
    channel=names,
    token=names,
    recover=st.booleans(),
    epoch=names,
    offset=uint63,
    data=raw_json,
    positioned=st.booleans(),
    recoverable=st.booleans(),
    join_leave=st.booleans(),
    delta=st.sampled_from(["", "fossil"]),
    flag=st.integers(0, 2**31),
    type=st.integers(0, 3),
)
requests = st.one_of(
    st.builds(
        ConnectRequest,
        token=names,
        data=raw_json,
        subs=st.dictionaries(names, subscribe_requests, max_size=3),
        name=names,
        version=names,
    ).map(lambda r: {"connect": r}),
    subscribe_requests.map(lambda r: {"subscribe": r}),
    st.builds(UnsubscribeRequest, names).map(lambda r: {"unsubscribe": r}),
    st.builds(PublishRequest, names, raw_json).map(lambda r: {"publish": r}),
    st.builds(PresenceRequest, names).map(lambda r: {"presence": r}),
    st.builds(PresenceStatsRequest, names).map(lambda r: {"presence_stats": r}),
    st.builds(HistoryRequest, names, int32, st.none() | st.builds(StreamPosition, uint63, names), st.booleans()).map(
        lambda r: {"history": r}
    ),
    st.builds(PingRequest).map(lambda r: {"ping": r}),
    st.builds(SendRequest, raw_json).map(lambda r: {"send": r}),
    st.builds(RPCRequest, names, raw_json).map(lambda r: {"rpc": r}),
    st.builds(RefreshRequest, names).map(lambda r: {"refresh": r}),
    st.builds(SubRefreshRequest, names, names).map(lambda r: {"sub_refresh": r}),
)


def _command(cid: int, request: dict[str, Any]) -> Command:
    return Command(id=cid, **request)


commands_strategy = st.builds(_command, uint32, requests)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands_strategy, min_size=1, max_size=5))
def test_round_trip_of_generated_valid_commands(commands: list[Command]) -> None:
    lines = [msgspec.json.encode(c) for c in commands]
    assert not any(b"\n" in line for line in lines)
    frame = codec.join(lines)
    decoded = decode(frame)
    assert decoded == commands
    assert [c.method for c in decoded] == [c.method for c in commands]


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_compact_raw_of_pretty_json_is_one_line_and_equal(value: Any) -> None:
    pretty = json.dumps(value, indent=2, ensure_ascii=False).encode()
    out = bytes(compact_raw(pretty))
    assert b"\n" not in out
    assert b"\r" not in out
    assert json.loads(out) == json.loads(pretty)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_compact_raw_of_compact_json_is_identity(value: Any) -> None:
    compact = json.dumps(value, separators=(",", ":")).encode()
    assert bytes(compact_raw(compact)) == compact


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20), json_values, st.integers(0, 2**53))
def test_publication_push_is_one_valid_json_line(channel: str, value: Any, offset: int) -> None:
    data = json.dumps(value).encode()
    out = encode_publication_push(channel, Publication(data=Raw(data), offset=offset))
    assert b"\n" not in out
    decoded = json.loads(out)
    assert decoded["push"]["channel"] == channel
    assert decoded["push"]["pub"]["data"] == json.loads(data)
    assert decoded["push"]["pub"].get("offset", 0) == offset


@pytest.mark.parametrize("offset", [2**63 - 1, 2**63, 2**64 - 1])
def test_offsets_are_uint64(offset: int) -> None:
    """Offsets are uint64 in the protocol: all of them decode (the broker answers not recovered)."""
    frame = b'{"id":1,"subscribe":{"channel":"a","recover":true,"offset":%d}}' % offset
    (cmd,) = JsonCodec().decode_commands(frame)
    assert cmd.subscribe is not None and cmd.subscribe.offset == offset
