"""Unidirectional transports over real sockets: uni_http_stream and uni_sse (aiohttp), uni_websocket (websockets).

Bare pushes (no Reply wrapper), ``{"connect": …}`` first; channels from the token, the
personal channel and the connecting hook; ``{}`` pings need no answer (the connection
outlives ``pong_timeout`` many times); a refused connect is a disconnect push with its
code, then the end; malformed requests get 400 with a JSON body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import websockets
from cent import AsyncClient, Disconnect, DisconnectRequest, PublishRequest

from tests.conftest import API_KEY, Running, eventually, make_settings, token
from tests.transport.streams import Stream
from trunkline.events import ConnectEvent, ConnectReply
from trunkline.node import Node

UNI: dict[str, Any] = {
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "uni_websocket": {"enabled": True},
    "client": {"subscribe_to_user_personal_channel": {"enabled": True}},
}


def users(srv: Running) -> dict[str, str]:
    return {c.user: c.transport.info.name for c in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    node = Node(make_settings(UNI))

    @node.on_connecting
    async def connecting(event: ConnectEvent) -> ConnectReply | None:
        if event.credentials is not None and event.credentials.user == "hooked":
            return ConnectReply(channels=("from_hook",))  # the token's credentials stay
        return None

    running: Running = await start_server(UNI, node=node)
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


def request(user: str, **claims: Any) -> str:
    return json.dumps({"token": token(user, **claims)})


async def open_uni(http: aiohttp.ClientSession, srv: Running, kind: str, body: str) -> Stream:
    if kind == "uni_sse":
        return await Stream.open(
            http, srv.http_url, "/connection/uni_sse", method="GET", params={"cf_connect": body}, kind="sse"
        )
    return await Stream.open(http, srv.http_url, "/connection/uni_http_stream", body=body)


@pytest.mark.parametrize("kind", ["uni_sse", "uni_http_stream"])
async def test_bare_pushes_from_every_channel_source(
    srv: Running, http: aiohttp.ClientSession, api: AsyncClient, kind: str
) -> None:
    stream = await open_uni(http, srv, kind, request("hooked", channels=["news"], subs={"extra": {}}))
    try:
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        connect = (await stream.next())["connect"]
        assert set(connect["subs"]) == {"news", "extra", "from_hook", "#hooked"}  # token, subs, hook, personal
        assert connect["session"] and "node" not in connect and "pong" not in connect
        assert users(srv) == {"hooked": kind}
        for channel in ("news", "extra", "from_hook", "#hooked"):
            await api.publish(PublishRequest(channel=channel, data={"to": channel}))
        got = [await stream.next(lambda m: "pub" in m) for _ in range(4)]
        assert [(m["channel"], m["pub"]["data"]) for m in got] == [
            (c, {"to": c}) for c in ("news", "extra", "from_hook", "#hooked")
        ]
        assert all(set(m) == {"channel", "pub"} for m in got)  # no Reply wrapper
    finally:
        stream.close()
    await eventually(lambda: users(srv) == {}, timeout=3)


async def test_pings_need_no_answer(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv: Running = await start_server({**UNI, "client": {"ping_interval": "0.4s", "pong_timeout": "0.2s"}})
    stream = await open_uni(http, srv, "uni_http_stream", request("u"))
    try:
        assert (await stream.message())["connect"]["ping"] == 1
        for _ in range(4):  # four pings, never answered: the connection stays
            assert await stream.message() == {}
        assert users(srv) == {"u": "uni_http_stream"}
    finally:
        stream.close()


@pytest.mark.parametrize("kind", ["uni_sse", "uni_http_stream"])
async def test_a_bad_token_is_a_disconnect_push_then_the_end(
    srv: Running, http: aiohttp.ClientSession, kind: str
) -> None:
    stream = await open_uni(http, srv, kind, json.dumps({"token": "not-a-jwt"}))
    try:
        push = await stream.next()
        assert push["disconnect"]["code"] == 3500 and push["disconnect"]["reconnect"] is False
        assert await stream.rest() == b""
    finally:
        stream.close()
    assert users(srv) == {}


async def test_malformed_and_other_refusals(srv: Running, http: aiohttp.ClientSession) -> None:
    base = srv.http_url
    async with http.post(base + "/connection/uni_http_stream", data="[1, 2") as r:
        assert r.status == 400 and "malformed connect request" in (await r.json())["error"]
    async with http.get(base + "/connection/uni_sse", params={"cf_connect": '{"token": 5}'}) as r:
        assert r.status == 400 and "bad request" in (await r.json())["error"]
    async with http.get(base + "/connection/uni_http_stream") as r:
        assert r.status == 405
    async with http.post(base + "/connection/uni_sse", data="x" * 70_000) as r:
        assert r.status == 413
    async with http.get(base + "/connection/uni_sse", headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403 and (await r.json()) == {"error": "origin not allowed"}


async def test_uni_sse_post_and_anonymous_get(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv: Running = await start_server({**UNI, "client": {"allow_anonymous_connect_without_token": True}})
    post = await Stream.open(http, srv.http_url, "/connection/uni_sse", body=request("p"), kind="sse")
    anon = await Stream.open(http, srv.http_url, "/connection/uni_sse", method="GET", kind="sse")
    try:
        assert (await post.next())["connect"]["client"]
        assert (await anon.next())["connect"]["client"]  # no cf_connect: an empty connect request
        await eventually(lambda: sorted(users(srv)) == ["", "p"], timeout=3)
    finally:
        post.close()
        anon.close()


@pytest.mark.parametrize("how", ["first-message", "query"])
async def test_uni_websocket(srv: Running, api: AsyncClient, how: str) -> None:
    url = f"ws://127.0.0.1:{srv.port}/connection/uni_websocket"
    body = request("w", channels=["news"])
    if how == "query":
        url += "?cf_connect=" + aiohttp.helpers.quote(body, safe="")  # type: ignore[attr-defined]
    async with websockets.connect(url) as ws:
        if how == "first-message":
            await ws.send(body)
        connect = json.loads(await asyncio.wait_for(ws.recv(), 5))["connect"]
        assert "news" in connect["subs"]
        await ws.send("ignored: nothing after the connect is read as a command")
        for n in (1, 2, 3):
            await api.publish(PublishRequest(channel="news", data={"n": n}))
        frames = []
        for _ in range(10):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))  # one push per frame
            if "pub" in frame:
                frames.append(frame["pub"]["data"]["n"])
            if len(frames) == 3:
                break
        assert frames == [1, 2, 3]
        await api.disconnect(DisconnectRequest(user="w", disconnect=Disconnect(code=4002, reason="bye")))
        push = None
        for _ in range(10):
            push = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if "disconnect" in push:
                break
        assert push is not None and push["disconnect"]["code"] == 4002
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
