"""Issue 9 proof: no silent loss under broker faults (two real nodes, one real redis-server).

Subscribers with recovery (centrifuge-python, a ``force_recovery`` namespace) are on
node A; a publisher sends through node B's server API (``cent``) at a steady rate and
records, for every publication the API acknowledged, its payload id and the offset
and epoch of the reply. Each fault is injected in turn, for a few rounds:

- ``CLIENT KILL TYPE pubsub`` (the pub/sub links drop; Redis keeps its data);
- ``kill -9`` of redis-server and a restart, empty, on the same port;
- ``SIGSTOP`` of redis-server for 3 s and for 12 s, then ``SIGCONT``;
- a channel with no publication since its subscribers came: the pub/sub link is
  killed, 5 publications are acknowledged while node A cannot reconnect (its Redis
  connections pass through a gate that refuses new ones), then 1 more — or none.

After each round the publisher stops and the test waits (bounded, woken by the
subscribers' events) until every subscriber's position reaches the last
acknowledged publication. Then :func:`tests.faults.checker.replay` must find, for
every subscriber, each acknowledged publication received exactly once and in
order, or covered by a ``subscribed`` event that said ``recovered: false`` or
moved to a new epoch.

``TRUNKLINE_TEST_FAULT_ROUNDS`` overrides the number of rounds of every fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from cent import AsyncClient, CentError, PublishRequest
from centrifuge import (
    Client,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from redis.asyncio import Redis

from tests.conftest import API_KEY, token
from tests.faults.checker import Ack, Event, Received, Subscribed, caught_up, replay
from tests.faults.conftest import NAMESPACE, Cluster, RedisProcess
from tests.sdk.helpers import new_client

SUBSCRIBERS = 3
RATE = 50.0  # publications per second
WARMUP = 25  # acknowledged publications before each fault
AFTER = 50  # acknowledged publications after each fault
SETTLE = 15.0  # seconds for every subscriber to reach the last acknowledged publication
API_TIMEOUT = 15.0  # longer than a node's Redis deadline (connect_timeout + io_timeout)
MAX_PUBLISHES = 100_000


def rounds(default: int) -> int:
    return int(os.environ.get("TRUNKLINE_TEST_FAULT_ROUNDS", default))


@dataclass(eq=False)
class Subscriber(SubscriptionEventHandler):
    """One subscription's events, as the checker wants them."""

    changed: asyncio.Event
    events: list[Event] = field(default_factory=list)
    unsubscribed: list[UnsubscribedContext] = field(default_factory=list)

    async def on_publication(self, ctx: PublicationContext) -> None:
        data = ctx.pub.data
        pid = data.get("id", -1) if isinstance(data, dict) else -1
        self.events.append(Received(int(pid), int(ctx.pub.offset), time.monotonic()))
        self.changed.set()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        pos = ctx.stream_position
        epoch, offset = (pos.epoch, int(pos.offset)) if pos is not None else ("<not positioned>", 0)
        self.events.append(Subscribed(epoch, offset, ctx.was_recovering, ctx.recovered, time.monotonic()))
        self.changed.set()

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)
        self.changed.set()


class Audience:
    """``SUBSCRIBERS`` separate connections to node A."""

    def __init__(self, ws_url: str) -> None:
        self.changed = asyncio.Event()
        self.clients: list[Client] = [new_client(ws_url, token=token(f"sub{i}")) for i in range(SUBSCRIBERS)]

    async def connect(self) -> None:
        await asyncio.gather(*(c.connect() for c in self.clients))

    async def subscribe(self, channel: str) -> list[Subscriber]:
        subs = [Subscriber(self.changed) for _ in self.clients]
        subscriptions = [
            c.new_subscription(channel, s, min_resubscribe_delay=0.05, max_resubscribe_delay=1.0)
            for c, s in zip(self.clients, subs, strict=True)
        ]
        for sub in subscriptions:
            await sub.subscribe()
        await asyncio.gather(*(sub.ready(10.0) for sub in subscriptions))
        return subs

    async def settle(self, subs: Sequence[Subscriber], acks: Sequence[Ack], timeout: float = SETTLE) -> bool:
        """Until every subscriber's position reaches the last acknowledged publication (bounded)."""
        deadline = time.monotonic() + timeout
        while not all(caught_up(acks, s.events) for s in subs):
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
        return True

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.disconnect()


class Publisher:
    """Publishes ``{"id": n}`` through the server API and keeps what the API acknowledged."""

    def __init__(self, api: AsyncClient) -> None:
        self.api = api
        self.acks: dict[str, list[Ack]] = {}
        self.attempted: set[int] = set()
        self.failures: list[str] = []
        self._next = 0
        self._changed = asyncio.Event()

    async def publish(self, channel: str) -> Ack | None:
        pid = self._next
        self._next += 1
        self.attempted.add(pid)
        try:
            res = await self.api.publish(PublishRequest(channel=channel, data={"id": pid}), timeout=API_TIMEOUT)
        except CentError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self._changed.set()
            return None
        ack = Ack(pid, res.epoch, int(res.offset), time.monotonic())
        self.acks.setdefault(channel, []).append(ack)
        self._changed.set()
        return ack

    async def run(self, channel: str, stop: asyncio.Event) -> None:
        """One publish after another at ``RATE`` per second (a slow reply delays the next) until ``stop``."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for _ in range(MAX_PUBLISHES):
            if stop.is_set():
                return
            await self.publish(channel)
            next_at = max(next_at + 1 / RATE, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_at - loop.time()):
                    await stop.wait()

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"publisher: {what} not within {timeout}s "
                f"({sum(map(len, self.acks.values()))} acks, last failures {self.failures[-3:]})"
            ) from None


async def kill_pubsub(redis: RedisProcess) -> int:
    client = Redis.from_url(redis.url)
    try:
        return int(await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
    finally:
        await client.aclose()


def verdict(label: str, subs: Sequence[Subscriber], acks: Sequence[Ack], publisher: Publisher) -> list[str]:
    """Every subscriber's problems, one line each (empty: the guarantee held)."""
    lines = []
    for i, sub in enumerate(subs):
        out = replay(acks, sub.events, publisher.attempted)
        if not out.ok:
            shown = "; ".join(out.problems[:4]) + ("; ..." if len(out.problems) > 4 else "")
            lines.append(
                f"{label} subscriber {i}: {len(out.received)} received, {len(out.told)} told "
                f"({out.unrecovered} unrecovered subscribes), {len(out.missing)} missing: {shown}"
            )
    return lines


def stats(label: str, subs: Sequence[Subscriber], acks: Sequence[Ack], publisher: Publisher) -> str:
    """One line per round (shown with ``-s`` or on failure): what the fault did to the subscribers."""
    outs = [replay(acks, s.events, publisher.attempted) for s in subs]
    told = [len(o.told) for o in outs]
    unrecovered = [o.unrecovered for o in outs]
    resubscribes = [sum(isinstance(e, Subscribed) for e in s.events) - 1 for s in subs]
    epochs = len({a.epoch for a in acks})
    return (
        f"{label}: {len(acks)} acks, {len(publisher.failures)} failed publishes, {epochs} epochs; "
        f"per subscriber resubscribes {resubscribes}, unrecovered {unrecovered}, told {told}"
    )


def summary(cluster: Cluster, publisher: Publisher, acks: Sequence[Ack]) -> str:
    epochs = sorted({a.epoch for a in acks})
    log = cluster.a.output()
    return (
        f"\n{len(acks)} acknowledged (epochs {epochs}), {len(publisher.failures)} publishes failed"
        f"\nnode A log (tail):\n{log[-1500:]}"
    )


async def round_trip(
    cluster: Cluster, channel: str, inject: Callable[[Publisher], Awaitable[None]], n_rounds: int, label: str
) -> None:
    audience = Audience(cluster.a.ws_url)
    try:
        await audience.connect()
        subs = await audience.subscribe(channel)
        async with AsyncClient(cluster.b.api_url, API_KEY, timeout=API_TIMEOUT) as api:
            publisher = Publisher(api)
            for r in range(n_rounds):
                stop = asyncio.Event()
                task = asyncio.create_task(publisher.run(channel, stop))
                try:
                    base = len(publisher.acks.get(channel, []))
                    await publisher.wait_for(
                        lambda b=base: len(publisher.acks.get(channel, [])) >= b + WARMUP, 10, "warm-up"
                    )
                    await inject(publisher)
                    base = len(publisher.acks.get(channel, []))
                    await publisher.wait_for(
                        lambda b=base: len(publisher.acks.get(channel, [])) >= b + AFTER, 45, "acks after the fault"
                    )
                finally:
                    stop.set()
                    await task
                acks = publisher.acks[channel]
                settled = await audience.settle(subs, acks)
                name = f"{label} round {r + 1}/{n_rounds}"
                print(stats(name, subs, acks, publisher))
                problems = verdict(name, subs, acks, publisher)
                assert not problems, "\n".join([*problems, f"(settled: {settled})", summary(cluster, publisher, acks)])
    finally:
        await audience.close()


FAULTS = {  # fault -> rounds
    "client-kill-pubsub": 5,
    "kill9-restart-empty": 4,
    "sigstop-3s": 3,
    "sigstop-12s": 1,  # one long outage (12 s of the suite each); the short one repeats
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_acknowledged_publications_survive_broker_faults(cluster: Cluster, fault: str) -> None:
    async def inject(publisher: Publisher) -> None:
        if fault == "client-kill-pubsub":
            assert await kill_pubsub(cluster.redis) >= 1
        elif fault == "kill9-restart-empty":
            failed = len(publisher.failures)
            cluster.redis.kill9()
            await publisher.wait_for(lambda: len(publisher.failures) > failed, 15, "a publish failing on the outage")
            await cluster.redis.start()
        else:
            seconds = {"sigstop-3s": 3.0, "sigstop-12s": 12.0}[fault]
            cluster.redis.pause()
            try:
                await asyncio.sleep(seconds)  # the length of the outage is the fault itself
            finally:
                cluster.redis.resume()

    channel = f"{NAMESPACE}:{fault}-{uuid.uuid4().hex[:6]}"
    await round_trip(cluster, channel, inject, rounds(FAULTS[fault]), fault)


async def wait_subscribed(cluster: Cluster, channel: str, timeout: float = 10.0) -> None:
    """Until node A's pub/sub link is subscribed to ``channel`` again (polled in Redis, bounded)."""
    name = f"{cluster.prefix}.client.{channel}"
    client = Redis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                reply = await client.execute_command("PUBSUB", "NUMSUB", name)
                if int(reply[1]) >= 1:
                    return
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


@pytest.mark.parametrize("after", [1, 0], ids=["then-one-more", "then-nothing"])
async def test_quiet_channel_after_a_pubsub_drop(cluster: Cluster, after: int) -> None:
    """Issue 9 item 2: nothing was published since subscribe; 5 are published while node A's link is down."""
    audience = Audience(cluster.a.ws_url)
    try:
        await audience.connect()
        async with AsyncClient(cluster.b.api_url, API_KEY, timeout=API_TIMEOUT) as api:
            publisher = Publisher(api)
            n_rounds = rounds(3)
            for r in range(n_rounds):
                channel = f"{NAMESPACE}:quiet-{uuid.uuid4().hex[:8]}"
                subs = await audience.subscribe(channel)
                await wait_subscribed(cluster, channel)
                cluster.gate.accepting = False  # node A cannot reconnect until the 5 are acknowledged
                refused = cluster.gate.refused
                try:
                    assert await kill_pubsub(cluster.redis) >= 1
                    await cluster.gate.wait_refused(refused + 1, timeout=10)
                    for _ in range(5):
                        assert await publisher.publish(channel) is not None, publisher.failures[-1:]
                finally:
                    cluster.gate.accepting = True
                if after:
                    await wait_subscribed(cluster, channel)
                    assert await publisher.publish(channel) is not None, publisher.failures[-1:]
                acks = publisher.acks[channel]
                settled = await audience.settle(subs, acks)
                name = f"quiet channel, {after} after, round {r + 1}/{n_rounds}"
                print(stats(name, subs, acks, publisher))
                problems = verdict(name, subs, acks, publisher)
                assert not problems, "\n".join([*problems, f"(settled: {settled})", summary(cluster, publisher, acks)])
    finally:
        await audience.close()
