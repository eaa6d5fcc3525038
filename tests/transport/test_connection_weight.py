"""What an idle WebSocket connection keeps once upgraded.

Uncompressed connections (the default): aiohttp's request handler, request and
response are let go after the handshake and a ``WebSocketConnection`` owns the socket.
Compressed connections keep aiohttp's reader, and its handler sheds its HTTP-only
state. Real servers and real aiohttp clients; each connection must still do
everything (commands, pings answered, a clean close with a code).
"""

from __future__ import annotations

import collections
import gc
import json
from typing import Any

import aiohttp

from tests.conftest import Running, eventually, token
from trunkline.transport.admission import open_connections
from trunkline.transport.websocket import _detached, _Pipeline
from trunkline.transport.ws_connection import WebSocketConnection


def _handlers(running: Running) -> list[Any]:
    handlers: list[Any] = []
    for runner in running.server._runners:
        manager = runner.server
        assert manager is not None
        handlers.extend(manager._connections)
    return handlers


def _upgraded(running: Running) -> list[Any]:
    return [h for h in _handlers(running) if getattr(h, "_upgraded", False)]


async def _talk(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
    reply = json.loads(await ws.receive_str(timeout=5))
    assert reply["id"] == 1 and reply["connect"]["client"]


async def test_an_uncompressed_connection_is_handed_to_its_own_protocol_and_still_works(server: Running) -> None:
    node = server.server.node
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url, protocols=["centrifuge-json"]) as ws:
        await _talk(ws)
        assert not _upgraded(server)  # aiohttp's server no longer holds a handler for it
        conns = list(_detached(node))
        assert len(conns) == 1 and isinstance(conns[0], WebSocketConnection)
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o).__name__ == "WebSocketResponse"]

        await ws.send_str(json.dumps({"id": 2, "presence_stats": {"channel": "nope"}}))
        answer = json.loads(await ws.receive_str(timeout=5))
        assert answer["id"] == 2  # a reply or an error reply: the connection reads and answers
        await ws.ping(b"are you there")
        assert open_connections(node) == 1
        await ws.close(code=1000, message=b"bye")
        assert ws.close_code == 1000
    await eventually(lambda: not _detached(node) and open_connections(node) == 0)


async def test_a_compressed_connection_keeps_aiohttps_reader_and_sheds_the_http_parser(start_server: Any) -> None:
    server: Running = await start_server({"websocket": {"compression": True}})
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.ws_url, protocols=["centrifuge-json"], compress=15) as ws,
    ):
        assert ws.compress == 15
        await _talk(ws)
        upgraded = _upgraded(server)
        assert len(upgraded) == 1
        handler = upgraded[0]
        assert handler._parser is None
        assert isinstance(handler._messages, _Pipeline) and not handler._messages
        assert not isinstance(handler._messages, collections.deque)
        assert not _detached.get(server.server.node)

        await ws.send_str(json.dumps({"id": 2, "presence_stats": {"channel": "nope"}}))
        answer = json.loads(await ws.receive_str(timeout=5))
        assert answer["id"] == 2
        await ws.close(code=1000, message=b"bye")
        assert ws.close_code == 1000
    await eventually(lambda: not _upgraded(server))
