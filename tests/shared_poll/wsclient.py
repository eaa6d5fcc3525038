"""A bare Centrifugo JSON-protocol WebSocket client for the shared-poll protocol tests (no SDK)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.conftest import Running, token


class WsClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession | None) -> None:
        self.ws = ws
        self._session = session  # closed with the client when it is the client's own
        self._next = 0
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, server: Running, user: str = "42", shared: aiohttp.ClientSession | None = None) -> WsClient:
        session = shared or aiohttp.ClientSession()
        ws = await session.ws_connect(server.ws_url)
        client = cls(ws, None if shared else session)
        reply = await client.call("connect", {"token": token(user)})
        assert "connect" in reply, reply
        return client

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            for line in msg.data.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("id"):
                    self.replies[item["id"]] = item
                elif "push" in item:
                    self.pushes.append(item["push"])
                else:  # a ping
                    await self.ws.send_str("{}")
        self.closed = (self.ws.close_code or 0, "")

    async def send(self, method: str, params: dict[str, Any]) -> int:
        self._next += 1
        await self.ws.send_str(json.dumps({"id": self._next, method: params}))
        return self._next

    async def call(self, method: str, params: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        cid = await self.send(method, params)
        deadline = time.monotonic() + timeout
        while cid not in self.replies:
            if time.monotonic() > deadline or self._reader.done():
                raise AssertionError(f"no reply to {method} within {timeout}s (closed: {self.ws.close_code})")
            await asyncio.sleep(0.01)
        return self.replies.pop(cid)

    def updates(self, channel: str, key: str | None = None) -> list[dict[str, Any]]:
        return [
            p["pub"]
            for p in self.pushes
            if p.get("channel") == channel and "pub" in p and (key is None or p["pub"].get("key") == key)
        ]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader
        if self._session is not None:
            await self._session.close()
