"""What an idle WebSocket connection keeps: aiohttp's HTTP-only state is dropped after the upgrade.

A real server and a real aiohttp client: after the upgrade the request handler holds no
HTTP parser and no 64-slot pipelining deque, and the connection still does everything
(commands, server pings answered, a clean close with a code).
"""

from __future__ import annotations

import collections
import json

import aiohttp

from tests.conftest import Running, eventually, token
from trunkline.transport.websocket import _Pipeline


def _handlers(running: Running) -> list[object]:
    handlers: list[object] = []
    for runner in running.server._runners:
        manager = runner.server
        assert manager is not None
        handlers.extend(manager._connections)
    return handlers


async def test_an_upgraded_connection_sheds_the_http_parser_and_still_works(server: Running) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url, protocols=["centrifuge-json"]) as ws:
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
        reply = json.loads(await ws.receive_str(timeout=5))
        assert reply["id"] == 1 and reply["connect"]["client"]

        upgraded = [h for h in _handlers(server) if getattr(h, "_upgraded", False)]
        assert len(upgraded) == 1
        handler = upgraded[0]
        assert handler._parser is None  # type: ignore[attr-defined]
        assert isinstance(handler._messages, _Pipeline) and not handler._messages  # type: ignore[attr-defined]
        assert not isinstance(handler._messages, collections.deque)  # type: ignore[attr-defined]

        await ws.send_str(json.dumps({"id": 2, "presence_stats": {"channel": "nope"}}))
        answer = json.loads(await ws.receive_str(timeout=5))
        assert answer["id"] == 2  # a reply or an error reply: the connection reads and answers
        await ws.close(code=1000, message=b"bye")
        assert ws.close_code == 1000
    await eventually(lambda: not [h for h in _handlers(server) if getattr(h, "_upgraded", False)])
