"""Channel permissions (``channel.without_namespace``) for clients not subscribed, over a real WebSocket.

``allow_publish_for_client`` / ``allow_presence_for_client`` / ``allow_history_for_client`` let an
authenticated connection publish to, or read presence or history of, a channel it is not
subscribed to; ``allow_publish_for_anonymous`` / ``allow_presence_for_anonymous`` /
``allow_history_for_anonymous`` extend that to anonymous connections (no token, with
``client.allow_anonymous_connect_without_token``). Refusals are error 103.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from tests.conftest import Running, token

Start = Callable[..., Any]
COMMANDS: dict[str, dict[str, Any]] = {
    "publish": {"publish": {"channel": "plain", "data": {"n": 1}}},
    "presence": {"presence": {"channel": "plain"}},
    "history": {"history": {"channel": "plain", "limit": 0}},
}


def settings(flags: dict[str, bool]) -> dict[str, Any]:
    """The channels without namespace (presence and history on in the test base) with ``flags``."""
    return {"client": {"allow_anonymous_connect_without_token": True}, "channel": {"without_namespace": flags}}


async def ask(srv: Running, user: str | None, command: dict[str, Any]) -> dict[str, Any]:
    """Connect (anonymously when ``user`` is None), send ``command``, return its reply."""
    connect: dict[str, Any] = {} if user is None else {"token": token(user)}
    async with websockets.connect(srv.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": connect}) + "\n" + json.dumps({"id": 2, **command}))
        for _ in range(20):
            for line in (await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                reply: dict[str, Any] = json.loads(line)
                assert reply.get("id") != 1 or "connect" in reply, reply
                if reply.get("id") == 2:
                    return reply
    raise AssertionError("no reply to the command")


def outcome(reply: dict[str, Any]) -> int:
    """0 for success, else the error code."""
    return int(reply["error"]["code"]) if "error" in reply else 0


@pytest.mark.parametrize("kind", list(COMMANDS))
async def test_allow_for_client_not_subscribed(start_server: Start, kind: str) -> None:
    srv = await start_server(settings({f"allow_{kind}_for_client": True}))
    assert outcome(await ask(srv, "u1", COMMANDS[kind])) == 0
    assert outcome(await ask(srv, None, COMMANDS[kind])) == 103  # anonymous needs its own option


@pytest.mark.parametrize("kind", list(COMMANDS))
async def test_without_allow_for_client_refused(start_server: Start, kind: str) -> None:
    srv = await start_server(settings({}))
    assert outcome(await ask(srv, "u1", COMMANDS[kind])) == 103


@pytest.mark.parametrize("kind", list(COMMANDS))
async def test_allow_for_anonymous(start_server: Start, kind: str) -> None:
    srv = await start_server(settings({f"allow_{kind}_for_client": True, f"allow_{kind}_for_anonymous": True}))
    assert outcome(await ask(srv, None, COMMANDS[kind])) == 0
    assert outcome(await ask(srv, "u1", COMMANDS[kind])) == 0
