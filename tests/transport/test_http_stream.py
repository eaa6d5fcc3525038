"""``POST /connection/http_stream`` + ``POST /emulation`` over real sockets, commands by hand (aiohttp).

Everything a WebSocket client can do, in JSON and in Protobuf (messages built with
centrifuge-python's generated ``client_pb2``): connect with session and node, subscribe,
publish, presence, history, RPC, refresh, server pings answered through /emulation,
server-side subscriptions, disconnect pushes with their code before the stream ends,
recovery after the stream is cut; and the refusals, each with a JSON body.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from cent import AsyncClient, DisconnectRequest, PublishRequest
from centrifuge.protocol import client_pb2

from tests.conftest import API_KEY, Running, eventually, make_settings, token
from tests.transport.streams import Stream, delimited
from trunkline.events import RPCEvent
from trunkline.node import Node

EXTRA: dict[str, Any] = {"http_stream": {"enabled": True}, "sse": {"enabled": True}}


def users(srv: Running) -> dict[str, str]:
    return {c.user: c.transport.info.name for c in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    node = Node(make_settings(EXTRA))

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:
        return json.dumps({"echo": json.loads(event.data or b"null"), "user": event.client.user}).encode()

    running: Running = await start_server(EXTRA, node=node)
    return running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(srv: Running) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(srv.api_url, API_KEY, timeout=5)
    yield client
    await client.close()


def connect(user: str = "u1", **claims: Any) -> bytes:
    return json.dumps({"id": 1, "connect": {"token": token(user, **claims)}}).encode()


async def test_connect_headers_and_session(srv: Running, http: aiohttp.ClientSession) -> None:
    stream = await Stream.open(http, srv.http_url, body=connect())
    try:
        r = stream.response
        assert r.status == 200
        assert r.headers["X-Accel-Buffering"] == "no"
        assert r.headers["Cache-Control"] == "private, no-cache, no-store, must-revalidate, max-age=0"
        assert r.headers["Pragma"] == "no-cache" and r.headers["Expire"] == "0"
        result = await stream.connect_result()
        assert result["client"] and result["ping"] == 25 and result["pong"] is True
        assert stream.node == srv.server.node.uid
        assert stream.session and stream.session != result["client"]  # secret, not the public client id
        assert users(srv) == {"u1": "http_stream"}
    finally:
        stream.close()
    await eventually(lambda: users(srv) == {}, timeout=3)  # a client that goes away is noticed at once


async def test_everything_a_websocket_client_does_json(
    srv: Running, http: aiohttp.ClientSession, api: AsyncClient
) -> None:
    stream = await Stream.open(http, srv.http_url, body=connect("u1", channels=["srv"]))
    try:
        result = await stream.connect_result()
        assert "srv" in result["subs"]  # a server-side subscription from the token

        assert await stream.send({"id": 2, "subscribe": {"channel": "room"}}) == 204
        sub = await stream.next(lambda m: m.get("id") == 2)
        assert sub["subscribe"]["recoverable"] is True
        assert await stream.send({"id": 3, "publish": {"channel": "room", "data": {"n": 1}}}) == 204
        pub = await stream.next(lambda m: "pub" in m.get("push", {}))
        assert pub["push"] == {
            "channel": "room",
            "pub": {"data": {"n": 1}, "offset": 1, "info": pub["push"]["pub"]["info"]},
        }
        assert (await stream.next(lambda m: m.get("id") == 3))["publish"] == {}

        await stream.send(
            {"id": 4, "presence": {"channel": "room"}},
            {"id": 5, "history": {"channel": "room", "limit": 10}},
            {"id": 6, "rpc": {"method": "echo", "data": {"x": [1, "two"]}}},
            {"id": 7, "refresh": {"token": token("u1")}},
            {"id": 8, "presence_stats": {"channel": "room"}},
        )
        replies = {m["id"]: m for m in [await stream.next(lambda m: m.get("id", 0) >= 4) for _ in range(5)]}
        assert [c["user"] for c in replies[4]["presence"]["presence"].values()] == ["u1"]
        assert [p["data"] for p in replies[5]["history"]["publications"]] == [{"n": 1}]
        assert replies[6]["rpc"]["data"] == {"echo": {"x": [1, "two"]}, "user": "u1"}
        assert replies[7]["refresh"]["expires"] is True
        assert replies[8]["presence_stats"] == {"num_clients": 1, "num_users": 1}

        await api.publish(PublishRequest(channel="srv", data={"server": "side"}))
        push = await stream.next(lambda m: m.get("push", {}).get("channel") == "srv" and "pub" in m["push"])
        assert push["push"]["pub"]["data"] == {"server": "side"}

        await api.disconnect(DisconnectRequest(user="u1", disconnect={"code": 4001, "reason": "go away"}))
        last = await stream.next(lambda m: "disconnect" in m.get("push", {}))
        assert last["push"]["disconnect"] == {"code": 4001, "reason": "go away", "reconnect": True}
        assert await stream.rest() == b""  # the stream ends right after the push
    finally:
        stream.close()
    assert users(srv) == {}


async def test_server_pings_are_answered_through_emulation(start_server: Callable[..., Any]) -> None:
    extra = {**EXTRA, "client": {"ping_interval": "1s", "pong_timeout": "0.5s"}}
    srv: Running = await start_server(extra)
    async with aiohttp.ClientSession() as http:
        stream = await Stream.open(http, srv.http_url, body=connect())
        try:
            assert (await stream.connect_result())["ping"] == 1
            for _ in range(3):  # three pings answered: the connection stays
                assert await stream.message() == {}
                assert await stream.send({}) == 204
            assert users(srv) == {"u1": "http_stream"}
            assert await stream.message() == {}  # not answered: closed with 3012 "no pong"
            push = await stream.next(lambda m: "disconnect" in m.get("push", {}))
            assert push["push"]["disconnect"]["code"] == 3012
        finally:
            stream.close()


async def test_protobuf_session(srv: Running, http: aiohttp.ClientSession) -> None:
    cmd = client_pb2.Command(id=1, connect=client_pb2.ConnectRequest(token=token("pb")))
    stream = await Stream.open(http, srv.http_url, body=delimited(cmd), kind="protobuf")
    try:
        assert stream.response.headers["Content-Type"] == "application/octet-stream"
        result = await stream.connect_result()
        assert result.client and result.session and result.node == srv.server.node.uid
        sub = client_pb2.Command(id=2, subscribe=client_pb2.SubscribeRequest(channel="room"))
        pub = client_pb2.Command(id=3, publish=client_pb2.PublishRequest(channel="room", data=b"\x00\xffbinary"))
        assert await stream.send(sub, pub) == 204
        replies = [await stream.next() for _ in range(4)]  # two replies, the join push and the publication
        pushed = [r.push.pub.data for r in replies if r.HasField("push") and r.push.HasField("pub")]
        assert pushed == [b"\x00\xffbinary"]
        assert [r.id for r in replies if r.id] == [2, 3]
        # a JSON body for a Protobuf session is refused, the session stays
        async with http.post(
            srv.http_url + "/emulation", json={"session": stream.session, "node": stream.node, "data": "{}"}
        ) as r:
            assert r.status == 400 and "protobuf" in (await r.json())["error"]
    finally:
        stream.close()


async def test_recovery_after_the_stream_is_cut(srv: Running, http: aiohttp.ClientSession, api: AsyncClient) -> None:
    stream = await Stream.open(http, srv.http_url, body=connect())
    await stream.connect_result()
    await stream.send({"id": 2, "subscribe": {"channel": "feed", "recover": True}})
    sub = (await stream.next(lambda m: m.get("id") == 2))["subscribe"]
    await api.publish(PublishRequest(channel="feed", data={"n": 1}))
    first = await stream.next(lambda m: "pub" in m.get("push", {}))
    offset, epoch = first["push"]["pub"]["offset"], sub["epoch"]
    stream.close()  # the stream drops mid-way
    await eventually(lambda: users(srv) == {}, timeout=3)
    for n in (2, 3, 4):  # published while the client is away
        await api.publish(PublishRequest(channel="feed", data={"n": n}))

    again = await Stream.open(http, srv.http_url, body=connect())
    try:
        await again.connect_result()
        await again.send({"id": 2, "subscribe": {"channel": "feed", "recover": True, "offset": offset, "epoch": epoch}})
        result = (await again.next(lambda m: m.get("id") == 2))["subscribe"]
        assert result["recovered"] is True
        assert [p["data"] for p in result["publications"]] == [{"n": 2}, {"n": 3}, {"n": 4}]
        await api.publish(PublishRequest(channel="feed", data={"n": 5}))
        live = await again.next(lambda m: "pub" in m.get("push", {}))
        assert (live["push"]["pub"]["data"], live["push"]["pub"]["offset"]) == ({"n": 5}, 5)  # once, in order
    finally:
        again.close()


async def test_refusals_have_json_bodies(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv: Running = await start_server(
        {**EXTRA, "http_stream": {"enabled": True, "max_request_body_size": 300}, "client": {"connection_limit": 1}}
    )
    url = srv.http_url + "/connection/http_stream"
    async with http.post(url, data=b"x" * 301) as r:
        assert r.status == 413 and "over 300 bytes" in (await r.json())["error"]
    async with http.post(url, data=b"{not json") as r:
        assert r.status == 400 and (await r.json())["error"].startswith("bad request")
    async with http.get(url) as r:
        assert r.status == 405 and "POST" in (await r.json())["error"]
    async with http.options(url) as r:
        assert r.status == 204
    async with http.post(url, data=connect(), headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 403 and (await r.json()) == {"error": "origin not allowed"}
    first = await Stream.open(http, srv.http_url, body=connect())
    try:
        await first.connect_result()
        async with http.post(url, data=connect("u2")) as r:
            assert r.status == 503 and (await r.json()) == {"error": "connection limit reached"}
    finally:
        first.close()


async def test_disabled_by_default(server: Running, http: aiohttp.ClientSession) -> None:
    for path in ("/connection/http_stream", "/emulation", "/connection/sse", "/connection/uni_sse"):
        async with http.post(server.http_url + path, data=connect()) as r:
            assert r.status == 404, path


async def test_emulation_answers(srv: Running, http: aiohttp.ClientSession) -> None:
    stream = await Stream.open(http, srv.http_url, body=connect())
    try:
        await stream.connect_result()
        assert await stream.send({"id": 2, "ping": {}}) == 204
        assert await stream.send({"id": 3, "ping": {}}, node="another-node") == 404
        assert await stream.send({"id": 3, "ping": {}}, session="no-such-session") == 404
        async with http.post(
            srv.http_url + "/emulation", data=b'{"session": 5}', headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400 and "malformed emulation request" in (await r.json())["error"]
        async with http.post(
            srv.http_url + "/emulation", data=b"\xff\xff", headers={"Content-Type": "application/octet-stream"}
        ) as r:
            assert r.status == 400
        async with http.post(srv.http_url + "/emulation", data=b"x" * 70_000) as r:
            assert r.status == 413
        async with http.get(srv.http_url + "/emulation") as r:
            assert r.status == 405
        assert (await stream.next(lambda m: m.get("id") == 2))["ping"] == {}
        assert users(srv) == {"u1": "http_stream"}
    finally:
        stream.close()
    await eventually(lambda: users(srv) == {}, timeout=3)
    async with http.post(
        srv.http_url + "/emulation", json={"session": stream.session, "node": stream.node, "data": "{}"}
    ) as r:
        assert r.status == 404 and "unknown session" in (await r.json())["error"]


async def test_a_stalled_reader_is_cut_off(start_server: Callable[..., Any], api: Any) -> None:
    """A client that stops reading: its buffer stays bounded and the connection is closed (3008)."""
    srv: Running = await start_server({**EXTRA, "client": {"queue_max_size": 65536}})
    async with AsyncClient(srv.api_url, API_KEY, timeout=5) as client:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.connect(("127.0.0.1", srv.port))
            body = json.dumps({"id": 1, "connect": {"token": token("slow", channels=["big"])}}).encode()
            head = (
                f"POST /connection/http_stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)  # and never read
            await eventually(lambda: users(srv) == {"slow": "http_stream"}, timeout=3)
            payload = {"blob": "x" * 60_000}
            for _ in range(400):  # 24 MB at most; the cut-off comes after 64 KiB + the kernel's buffers (a few MB)
                await client.publish(PublishRequest(channel="big", data=payload))
                if "slow" not in users(srv):
                    break
            await eventually(lambda: users(srv) == {}, timeout=5)
            assert srv.server.node.metrics.slow._value.get() >= 1  # counted as a slow consumer


async def test_sse_emulation(srv: Running, http: aiohttp.ClientSession) -> None:
    cf_connect = json.dumps({"id": 1, "connect": {"token": token("sse")}})
    stream = await Stream.open(
        http, srv.http_url, "/connection/sse", method="GET", params={"cf_connect": cf_connect}, kind="sse"
    )
    try:
        assert stream.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        assert await stream.response.content.readexactly(2) == b"\r\n"  # flushed first
        result = await stream.connect_result()
        assert result["session"] and result["node"]
        assert (
            await stream.send(
                {"id": 2, "subscribe": {"channel": "room"}}, {"id": 3, "publish": {"channel": "room", "data": 7}}
            )
            == 204
        )
        got = [await stream.next() for _ in range(4)]  # two replies, the join push, the publication: one event each
        assert [m.get("id") for m in got if "id" in m] == [2, 3]
        assert [m["push"]["pub"]["data"] for m in got if "pub" in m.get("push", {})] == [7]
        assert users(srv) == {"sse": "sse"}
    finally:
        stream.close()
    async with http.get(srv.http_url + "/connection/sse") as r:
        assert r.status == 400 and "cf_connect" in (await r.json())["error"]
    post = await Stream.open(http, srv.http_url, "/connection/sse", body=cf_connect, kind="sse")
    try:
        assert (await post.connect_result())["client"]
    finally:
        post.close()


async def test_joined_messages_become_separate_sse_events() -> None:
    from trunkline.transport.sse import sse_events

    assert sse_events(b'{"a":1}\n{}\n{"b":2}') == b'data: {"a":1}\n\ndata: {}\n\ndata: {"b":2}\n\n'
    await asyncio.sleep(0)


async def test_requests_are_counted_by_transport(srv: Running, http: aiohttp.ClientSession) -> None:
    stream = await Stream.open(http, srv.http_url, body=connect())
    await stream.connect_result()
    assert await stream.send({"id": 2, "ping": {}}) == 204
    assert await stream.send({"id": 3, "ping": {}}, session="nope") == 404
    stream.close()
    await eventually(lambda: users(srv) == {}, timeout=3)
    metrics = srv.server.node.metrics
    await eventually(lambda: metrics.transport_requests.labels("http_stream", "200")._value.get() == 1, timeout=3)
    assert metrics.transport_requests.labels("emulation", "204")._value.get() == 1
    assert metrics.transport_requests.labels("emulation", "404")._value.get() == 1
    assert metrics.connects.labels("http_stream")._value.get() == 1  # connections split by transport too


async def test_a_trickled_body_gets_408(start_server: Callable[..., Any]) -> None:
    srv: Running = await start_server({**EXTRA, "websocket": {"handshake_timeout": "0.5s"}})
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(
            b"POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )  # and the rest never comes
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 408"), status
        head_and_body = await asyncio.wait_for(reader.read(4096), 5)
        assert b'"request body not received in time"' in head_and_body
    finally:
        writer.close()


async def test_shutdown_is_a_3001_push_on_every_stream(start_server: Callable[..., Any]) -> None:
    srv: Running = await start_server({**EXTRA, "uni_http_stream": {"enabled": True}})
    async with aiohttp.ClientSession() as http:
        bidi = await Stream.open(http, srv.http_url, body=connect("a"))
        uni = await Stream.open(
            http, srv.http_url, "/connection/uni_http_stream", body=json.dumps({"token": token("b")})
        )
        await bidi.connect_result()
        assert "connect" in await uni.next()
        stopping = asyncio.ensure_future(srv.server.stop(timeout=2))
        pushed = await bidi.next(lambda m: "disconnect" in m.get("push", {}))
        assert pushed["push"]["disconnect"]["code"] == 3001
        assert (await uni.next(lambda m: "disconnect" in m))["disconnect"]["code"] == 3001
        await asyncio.wait_for(stopping, 10)
        bidi.close()
        uni.close()
