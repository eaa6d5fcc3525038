"""The pieces under emulation and the unidirectional wire: encodings, and the order of /emulation requests.

- ``ConnectResult.session``/``node`` in Protobuf are byte-identical to centrifuge-python's
  ``client_pb2`` (fields 9 and 10), and absent on a WebSocket connection;
- the unidirectional wire shape encodes the same bytes as the unidirectional codec's pushes;
- requests of one connection run one after another (a slow command holds the next), and
  more than ``MAX_WAITING`` waiting get 429.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import pytest
from centrifuge.protocol import client_pb2
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Running, make_settings, token
from tests.transport.streams import Stream, uvarint
from trunkline.events import RPCEvent
from trunkline.node import Node
from trunkline.protocol.codec import UNI_JSON_SHAPE, UniJsonCodec
from trunkline.protocol.messages import ClientInfo, ConnectResult, Publication, Push, Reply
from trunkline.protocol.protobuf import ProtobufCodec
from trunkline.records import ClientInfo as RecordInfo
from trunkline.records import Publication as Record
from trunkline.transport import emulation

text = st.text(max_size=40)


@given(text, text, text, text, st.integers(0, 2**32 - 1), st.booleans())
def test_protobuf_connect_result_with_session_and_node(  # noqa: PLR0917
    client: str, version: str, session: str, node: str, ping: int, pong: bool
) -> None:
    ours = ProtobufCodec().encode_reply(
        Reply(
            id=1,
            connect=ConnectResult(client=client, version=version, ping=ping, pong=pong, session=session, node=node),
        )
    )
    ref = client_pb2.Reply(
        id=1,
        connect=client_pb2.ConnectResult(
            client=client, version=version, ping=ping, pong=pong, session=session, node=node
        ),
    ).SerializeToString(deterministic=True)
    assert ours == uvarint(len(ref)) + ref


def test_json_connect_result_omits_session_and_node_unless_set() -> None:
    plain = json.loads(msgspec.json.encode(ConnectResult(client="c", version="v")))
    assert "session" not in plain and "node" not in plain
    emulated = json.loads(msgspec.json.encode(ConnectResult(client="c", version="v", session="s", node="n")))
    assert (emulated["session"], emulated["node"]) == ("s", "n")


@given(
    st.text(min_size=1, max_size=30),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(0, 2**40),
)
def test_uni_shape_matches_the_codec(channel: str, data: dict[str, int], offset: int) -> None:
    raw = json.dumps(data).encode()
    record = Record(data=raw, info=RecordInfo(user="u", client="c"), offset=offset)
    shaped = UNI_JSON_SHAPE.publication(channel, record)
    pub = Publication(data=msgspec.Raw(raw), info=ClientInfo(user="u", client="c"), offset=offset)
    assert json.loads(shaped) == json.loads(UniJsonCodec().encode_push(Push(channel=channel, pub=pub)))
    assert "push" not in json.loads(shaped)  # bare, no Reply wrapper
    join = UNI_JSON_SHAPE.join_leave(channel, "join", b'{"user":"u","client":"c"}')
    assert json.loads(join) == {"channel": channel, "join": {"info": {"user": "u", "client": "c"}}}


def test_uni_codec_connect_is_a_push() -> None:
    codec = UniJsonCodec()
    assert json.loads(codec.encode_reply(Reply(id=1, connect=ConnectResult(client="c", version="v")))) == {
        "connect": {"client": "c", "version": "v"}
    }
    with pytest.raises(ValueError):
        codec.encode_reply(Reply(id=2))
    assert codec.ping == b"{}"


async def test_requests_of_one_connection_run_in_order_and_are_bounded(
    start_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {"http_stream": {"enabled": True}}
    node = Node(make_settings(extra))
    release = asyncio.Event()
    started: list[str] = []

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:
        started.append(event.method)
        if event.method == "slow":
            await asyncio.wait_for(release.wait(), 5)
        return b"{}"

    srv: Running = await start_server(extra, node=node)
    monkeypatch.setattr(emulation, "MAX_WAITING", 2)
    async with aiohttp.ClientSession() as http:
        stream = await Stream.open(http, srv.http_url, body=json.dumps({"id": 1, "connect": {"token": token("o")}}))
        try:
            await stream.connect_result()
            slow = asyncio.ensure_future(stream.send({"id": 2, "rpc": {"method": "slow"}}))
            for _ in range(100):  # bounded wait for the slow command to start
                if started:
                    break
                await asyncio.sleep(0.01)
            fast = asyncio.ensure_future(stream.send({"id": 3, "rpc": {"method": "fast"}}))
            third = asyncio.ensure_future(stream.send({"id": 4, "rpc": {"method": "third"}}))
            await asyncio.sleep(0.2)
            assert started == ["slow"]  # the next requests wait for the one running
            assert await stream.send({"id": 5, "rpc": {"method": "extra"}}) == 429
            release.set()
            assert await asyncio.gather(slow, fast, third) == [204, 204, 204]
            assert started[0] == "slow" and sorted(started[1:]) == ["fast", "third"]
            ids = [(await stream.next(lambda m: "rpc" in m))["id"] for _ in range(3)]
            assert ids[0] == 2
        finally:
            stream.close()
