"""The load clients, one coroutine per simulated client and delivery mode, over real HTTP.

- ``short-poll``: ``GET /connection/poll`` every ``interval`` from the last offset (each
  client starts at a random phase of the interval, as independent clients would);
- ``long-poll``: the same with ``wait=``, asked again as soon as an answer arrives;
- ``sse``: one ``GET /connection/uni_sse?cf_connect=…`` stream per client, the channel
  from the token's ``channels`` claim; ``data:`` events carry bare pushes;
- ``websocket``: ``/connection/websocket`` with the Centrifugo JSON protocol by hand:
  ``connect`` and ``subscribe`` commands, pushes read line by line, pings answered.

Every publication carries ``{"seq": n, "ts": <publisher's monotonic clock>}``; a
client's :class:`Tally` row keeps which ``seq`` it has seen, so losses and duplicates
are counted exactly, and the latency is the receive time minus ``ts`` (the publisher
runs in the same process: one clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from .wire import WireCount

MODES: Final = ("short-poll", "long-poll", "sse", "websocket")
_RETRY: Final = 0.2  # seconds before a failed poll is repeated


class Tally:
    """What the clients of one mode received: a seen-bitmap per client, latencies, errors."""

    def __init__(self, clients: int, planned: int) -> None:
        self.planned = planned
        self.seen = [bytearray(planned) for _ in range(clients)]
        self.latencies = array("d")
        self.duplicates = 0
        self.unexpected = 0
        self.missed_data = 0  # answers with recovered: false
        self.errors: Counter[str] = Counter()
        self._remaining = clients * planned
        self.done = asyncio.Event()

    def record(self, client: int, data: Any, now: float) -> None:
        seq = data.get("seq") if isinstance(data, dict) else None
        ts = data.get("ts") if isinstance(data, dict) else None
        if not isinstance(seq, int) or not isinstance(ts, float) or not 0 <= seq < self.planned:
            self.unexpected += 1
            return
        row = self.seen[client]
        if row[seq]:
            self.duplicates += 1
            return
        row[seq] = 1
        self.latencies.append(now - ts)
        self._remaining -= 1
        if self._remaining <= 0:
            self.done.set()

    def not_published(self, count: int) -> None:
        """``count`` planned publications failed: nobody can receive them."""
        self._remaining -= count * len(self.seen)
        if self._remaining <= 0:
            self.done.set()

    def delivered(self) -> int:
        return len(self.latencies)

    def error(self, what: str) -> None:
        self.errors[what[:80]] += 1


class Gate:
    """Counts clients that are in position; ``all_ready`` is set when every one is."""

    def __init__(self, clients: int) -> None:
        self._clients = clients
        self._ready: set[int] = set()
        self.all_ready = asyncio.Event()
        if clients <= 0:
            self.all_ready.set()

    def ready(self, client: int) -> None:
        """Client ``client`` is in position (or gave up: it then counts its losses)."""
        self._ready.add(client)
        if len(self._ready) >= self._clients:
            self.all_ready.set()


@dataclass(frozen=True, slots=True)
class Target:
    base: str  # http://host:port
    channel: str
    tokens: tuple[str, ...]
    interval: float  # short polling period, seconds
    wait: float  # long poll wait, seconds
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Context:
    """What the clients of one mode share: their session (and its byte count), tally, gate and stop."""

    session: aiohttp.ClientSession
    tally: Tally
    gate: Gate
    stop: asyncio.Event
    count: WireCount


Client = Callable[[Context, Target, int], Awaitable[None]]


async def _get_json(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], headers: dict[str, str], count: WireCount
) -> Any:
    count.requests += 1
    async with session.get(url, params=params, headers=headers) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:60]!r}")
        return json.loads(body)


def _take(body: Any, client: int, tally: Tally) -> tuple[int, str]:
    now = time.monotonic()
    for pub in body["publications"]:
        tally.record(client, pub.get("data"), now)
    if body.get("recovered") is False:
        tally.missed_data += 1
    return int(body["offset"]), str(body["epoch"])


async def _until(stop: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds unless ``stop`` is set first; True if it was."""
    if delay <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()


async def short_poll(ctx: Context, target: Target, i: int) -> None:
    session, tally, gate, stop, count = ctx.session, ctx.tally, ctx.gate, ctx.stop, ctx.count
    url = target.base + "/connection/poll"
    headers = {"Authorization": f"Bearer {target.tokens[i]}"}
    body = await _get_json(session, url, {"channel": target.channel}, headers, count)
    since, epoch = _take(body, i, tally)
    gate.ready(i)
    loop = asyncio.get_running_loop()
    next_at = loop.time() + random.uniform(0, target.interval)
    while not await _until(stop, next_at - loop.time()):
        params = {"channel": target.channel, "since": str(since), "epoch": epoch, "limit": str(target.limit)}
        try:
            body = await _get_json(session, url, params, headers, count)
        except (aiohttp.ClientError, RuntimeError, ValueError) as exc:
            tally.error(f"short-poll: {exc}")
            next_at = loop.time() + _RETRY
            continue
        since, epoch = _take(body, i, tally)
        # the next tick of this client's own clock; at once when the limit cut the answer
        next_at = loop.time() if body.get("more") else max(next_at + target.interval, loop.time())


async def long_poll(ctx: Context, target: Target, i: int) -> None:
    session, tally, gate, stop, count = ctx.session, ctx.tally, ctx.gate, ctx.stop, ctx.count
    url = target.base + "/connection/poll"
    headers = {"Authorization": f"Bearer {target.tokens[i]}"}
    body = await _get_json(session, url, {"channel": target.channel}, headers, count)
    since, epoch = _take(body, i, tally)
    gate.ready(i)
    wait = str(target.wait)
    while not stop.is_set():
        params = {"channel": target.channel, "since": str(since), "epoch": epoch, "limit": str(target.limit)}
        params["wait"] = wait
        try:
            body = await _get_json(session, url, params, headers, count)
        except (aiohttp.ClientError, RuntimeError, ValueError) as exc:
            tally.error(f"long-poll: {exc}")
            await _until(stop, _RETRY)
            continue
        since, epoch = _take(body, i, tally)


async def sse(ctx: Context, target: Target, i: int) -> None:
    session, tally, gate, stop, count = ctx.session, ctx.tally, ctx.gate, ctx.stop, ctx.count
    connect = json.dumps({"token": target.tokens[i]}, separators=(",", ":"))
    count.requests += 1
    async with session.get(target.base + "/connection/uni_sse", params={"cf_connect": connect}) as resp:
        if resp.status != 200:
            tally.error(f"sse: HTTP {resp.status}")
            gate.ready(i)
            return
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            push = json.loads(line[6:])
            if "connect" in push:
                if target.channel not in (push["connect"].get("subs") or {}):
                    tally.error("sse: channel not subscribed")
                gate.ready(i)
            elif "pub" in push and push.get("channel") == target.channel:
                tally.record(i, push["pub"].get("data"), time.monotonic())
            elif "disconnect" in push:
                tally.error(f"sse: disconnect {push['disconnect'].get('code')}")
                return
    if not stop.is_set():
        tally.error("sse: stream ended")


async def websocket(ctx: Context, target: Target, i: int) -> None:
    session, tally, gate, stop, count = ctx.session, ctx.tally, ctx.gate, ctx.stop, ctx.count
    count.requests += 1
    async with session.ws_connect(target.base + "/connection/websocket", autoping=True) as ws:
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": target.tokens[i]}}))
        await ws.send_str(json.dumps({"id": 2, "subscribe": {"channel": target.channel}}))
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.monotonic()
            for line in msg.data.split("\n"):
                if line == "{}":
                    await ws.send_str("{}")  # the protocol's pong
                    continue
                if not line:
                    continue
                reply = json.loads(line)
                push = reply.get("push")
                if push is not None and "pub" in push:
                    tally.record(i, push["pub"].get("data"), now)
                elif reply.get("id") == 2:
                    if "error" in reply:
                        tally.error(f"websocket: subscribe {reply['error']}")
                    gate.ready(i)
                elif "error" in reply:
                    tally.error(f"websocket: {reply['error']}")
    if not stop.is_set():
        tally.error(f"websocket: closed {ws.close_code}")


CLIENTS: Final[dict[str, Client]] = {
    "short-poll": short_poll,
    "long-poll": long_poll,
    "sse": sse,
    "websocket": websocket,
}
