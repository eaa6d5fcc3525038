"""Every ``*.handler_prefix`` moves its endpoint: a server with custom prefixes answers at them, 404 at the defaults.

Real HTTP over aiohttp and a real WebSocket (``websockets``) against one server whose
http_stream, emulation, uni_websocket, uni_sse, uni_http_stream and http_api all live
under ``/custom/...``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import websockets

from tests.conftest import API_KEY, Running, token
from tests.transport.streams import Stream

PREFIXES: dict[str, Any] = {
    "http_stream": {"enabled": True, "handler_prefix": "/custom/http_stream"},
    "emulation": {"handler_prefix": "/custom/emulation"},
    "uni_websocket": {"enabled": True, "handler_prefix": "/custom/uni_websocket"},
    "uni_sse": {"enabled": True, "handler_prefix": "/custom/uni_sse"},
    "uni_http_stream": {"enabled": True, "handler_prefix": "/custom/uni_http_stream"},
    "http_api": {"handler_prefix": "/custom/api"},
}
DEFAULTS = {
    "http_stream": "/connection/http_stream",
    "emulation": "/emulation",
    "uni_websocket": "/connection/uni_websocket",
    "uni_sse": "/connection/uni_sse",
    "uni_http_stream": "/connection/uni_http_stream",
    "http_api": "/api",
}


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    running: Running = await start_server(PREFIXES)
    return running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def uni_body(user: str) -> str:
    return json.dumps({"token": token(user)})


async def test_http_stream_and_emulation_served_at_their_prefixes(srv: Running, http: aiohttp.ClientSession) -> None:
    body = json.dumps({"id": 1, "connect": {"token": token("p1")}}).encode()
    stream = await Stream.open(http, srv.http_url, PREFIXES["http_stream"]["handler_prefix"], body=body)
    try:
        assert stream.response.status == 200
        result = await stream.connect_result()
        assert result["client"]
        # a command through the custom emulation endpoint reaches the stream's session
        data = json.dumps({"id": 2, "subscribe": {"channel": "room"}})
        envelope = json.dumps({"session": stream.session, "node": stream.node, "data": data})
        async with http.post(
            srv.http_url + PREFIXES["emulation"]["handler_prefix"],
            data=envelope,
            headers={"Content-Type": "application/json"},
        ) as r:
            assert r.status == 204
        reply = await stream.next(lambda m: m.get("id") == 2)
        assert "subscribe" in reply
        async with http.post(
            srv.http_url + DEFAULTS["emulation"], data=envelope, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 404
    finally:
        stream.close()
    async with http.post(srv.http_url + DEFAULTS["http_stream"], data=body) as r:
        assert r.status == 404


async def test_uni_sse_and_uni_http_stream_served_at_their_prefixes(srv: Running, http: aiohttp.ClientSession) -> None:
    sse = await Stream.open(
        http,
        srv.http_url,
        PREFIXES["uni_sse"]["handler_prefix"],
        method="GET",
        params={"cf_connect": uni_body("s1")},
        kind="sse",
    )
    try:
        assert sse.response.status == 200
        assert (await sse.next())["connect"]["client"]
    finally:
        sse.close()
    stream = await Stream.open(http, srv.http_url, PREFIXES["uni_http_stream"]["handler_prefix"], body=uni_body("h1"))
    try:
        assert stream.response.status == 200
        assert (await stream.next())["connect"]["client"]
    finally:
        stream.close()
    async with http.get(srv.http_url + DEFAULTS["uni_sse"], params={"cf_connect": uni_body("s1")}) as r:
        assert r.status == 404
    async with http.post(srv.http_url + DEFAULTS["uni_http_stream"], data=uni_body("h1")) as r:
        assert r.status == 404


async def test_uni_websocket_served_at_its_prefix(srv: Running) -> None:
    base = f"ws://127.0.0.1:{srv.port}"
    async with websockets.connect(base + PREFIXES["uni_websocket"]["handler_prefix"]) as ws:
        await ws.send(uni_body("w1"))
        connect = json.loads(await asyncio.wait_for(ws.recv(), 5))["connect"]
        assert connect["client"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(base + DEFAULTS["uni_websocket"]):
            pass
    assert refused.value.response.status_code == 404


async def test_http_api_served_at_its_prefix(srv: Running, http: aiohttp.ClientSession) -> None:
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    async with http.post(
        srv.http_url + PREFIXES["http_api"]["handler_prefix"] + "/info", data=b"{}", headers=headers
    ) as r:
        assert r.status == 200
        assert "nodes" in (await r.json())["result"]
    async with http.post(srv.http_url + DEFAULTS["http_api"] + "/info", data=b"{}", headers=headers) as r:
        assert r.status == 404
