"""Options that shape frames: ``client.write_delay`` and ``uni_websocket.join_push_messages``.

Real WebSockets (``websockets``) against a real server, publications from the HTTP API:

- with ``write_delay``, pushes published one after the other (each API call answered before
  the next) wait and leave together, newline-joined in one frame, no sooner than the delay;
- on uni_websocket, several pushes in one write are one frame each by default and one
  newline-joined frame with ``join_push_messages``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from cent import AsyncClient, PublishRequest

from tests.conftest import API_KEY, Running, token

DELAY = 1.0  # long enough for three API calls on a loaded machine
Start = Callable[..., Any]


@pytest.fixture
async def api_for() -> AsyncIterator[Callable[[Running], AsyncClient]]:
    clients: list[AsyncClient] = []

    def make(srv: Running) -> AsyncClient:
        clients.append(AsyncClient(srv.api_url, API_KEY, timeout=5))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def frames_until(ws: Any, count: int) -> list[list[dict[str, Any]]]:
    """Frames (each a list of its messages) until ``count`` publications arrived; pings skipped."""
    frames: list[list[dict[str, Any]]] = []
    seen = 0
    for _ in range(50):
        raw = await asyncio.wait_for(ws.recv(), 5)
        messages = [json.loads(line) for line in raw.split("\n") if line.strip()]
        messages = [m for m in messages if m]
        if not messages:
            continue
        frames.append(messages)
        seen += sum(1 for m in messages if "pub" in m.get("push", m))
        if seen >= count:
            return frames
    raise AssertionError(f"{count} publications not seen in 50 frames: {frames}")


async def publish_three(api: AsyncClient, channel: str) -> None:
    for n in (1, 2, 3):
        await api.publish(PublishRequest(channel=channel, data={"n": n}))


@pytest.mark.parametrize("delay", [DELAY, 0.0], ids=["delayed", "immediate"])
async def test_write_delay_joins_pushes_into_one_frame(
    start_server: Start, api_for: Callable[[Running], AsyncClient], delay: float
) -> None:
    srv = await start_server({"client": {"write_delay": f"{int(delay * 1000)}ms"}})
    async with websockets.connect(srv.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token("fd")}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "frames"}}))
        replies: set[int] = set()
        for _ in range(10):
            for line in (await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                replies.add(json.loads(line).get("id", 0))
            if {1, 2} <= replies:
                break
        assert {1, 2} <= replies
        started = time.monotonic()
        await publish_three(api_for(srv), "frames")
        frames = await frames_until(ws, 3)
        elapsed = time.monotonic() - started
    if delay:
        assert len(frames) == 1 and [m["push"]["pub"]["data"]["n"] for m in frames[0]] == [1, 2, 3]
        assert elapsed >= delay * 0.9
    else:
        assert len(frames) == 3  # each push left before the next publish was asked for


@pytest.mark.parametrize("join", [True, False], ids=["joined", "one-per-frame"])
async def test_uni_websocket_join_push_messages(
    start_server: Start, api_for: Callable[[Running], AsyncClient], join: bool
) -> None:
    srv = await start_server(
        {
            "uni_websocket": {"enabled": True, "join_push_messages": join},
            "client": {"write_delay": f"{int(DELAY * 1000)}ms"},
        }
    )
    url = f"ws://127.0.0.1:{srv.port}/connection/uni_websocket"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token("uj", channels=["joined"])}))
        first = [json.loads(line) for line in (await asyncio.wait_for(ws.recv(), 5)).split("\n")]
        assert "connect" in first[0]
        await publish_three(api_for(srv), "joined")  # within write_delay: one write of three pushes
        frames = [first, *await frames_until(ws, 3)]
    data = [m["pub"]["data"]["n"] for frame in frames for m in frame if "pub" in m]
    assert data == [1, 2, 3]
    if join:
        assert any(len([m for m in frame if "pub" in m]) == 3 for frame in frames), frames
    else:
        assert all(len(frame) == 1 for frame in frames), frames
