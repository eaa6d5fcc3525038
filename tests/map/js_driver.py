"""Node processes running centrifuge-js 5.8 (JSON lines), and its map subscriptions (tests/map/map_driver.js)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import token

DRIVER = Path(__file__).with_name("map_driver.js")
ROOT = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


class NodeDriver:
    """A Node process of centrifuge-js clients: JSON commands in, JSON events out; :meth:`wait`
    looks for an event with a deadline (``timeout`` seconds unless told)."""

    timeout = 10.0

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            self._changed.set()

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def wait(self, pred: Callable[[Event], bool], timeout: float | None = None, since: int = 0) -> Event:
        """The first event from index ``since`` (seen or arriving within ``timeout``) passing ``pred``."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    return event
            seen = max(seen, len(self.events))
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout}s; last events: {self.events[-20:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def mark(self) -> int:
        """An index for :meth:`wait`'s ``since``: only events after now."""
        return len(self.events)

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


D = TypeVar("D", bound=NodeDriver)


@contextlib.asynccontextmanager
async def run_node(cls: type[D], script: Path) -> AsyncIterator[D]:
    """``node <script>`` (from the repository root) driven by a ``cls``; closed after."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    drv = cls(proc)
    try:
        yield drv
    finally:
        await drv.close()


class Driver(NodeDriver):
    """centrifuge-js map subscriptions (tests/map/map_driver.js)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self._req = 0

    async def connect(self, name: str, url: str, user: str, *, protobuf: bool = False) -> str:
        self.send(op="connect", id=name, url=url, token=token(user), protobuf=protobuf)
        event = await self.wait(lambda e: e["ev"] == "connected" and e["id"] == name)
        client: str = event["client"]
        return client

    async def subscribe(self, name: str, channel: str, page_size: int = 0) -> list[Event]:
        """A map subscription; the entries of its sync."""
        since = self.mark()
        self.send(op="map", id=name, channel=channel, pageSize=page_size)
        event = await self.wait(
            lambda e: e["ev"] == "sync" and e["id"] == name and e["channel"] == channel, since=since
        )
        entries: list[Event] = event["entries"]
        return entries

    async def write(self, name: str, channel: str, key: str, data: Any = None, *, remove: bool = False) -> Event:
        """mapPublish / mapRemove; the reply event (``ok``, ``code``)."""
        self._req += 1
        req = self._req
        if remove:
            self.send(op="remove", id=name, channel=channel, key=key, req=req)
        else:
            self.send(op="publish", id=name, channel=channel, key=key, data=data, req=req)
        return await self.wait(lambda e: e["ev"] == "reply" and e["req"] == req)


def run_driver() -> contextlib.AbstractAsyncContextManager[Driver]:
    return run_node(Driver, DRIVER)


def update_of(name: str, channel: str, key: str, *, removed: bool = False) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        return (
            e["ev"] == "update"
            and e["id"] == name
            and e["channel"] == channel
            and e["key"] == key
            and bool(e.get("removed")) is removed
        )

    return pred
