"""The engine's join and stream-position checks, in process: a Node on a memory broker, fake subscribers.

No sockets. The broker's feed to the node goes through :class:`Feed`, which can
hold or drop publications, as a pub/sub link that is slow or lost would; the
memory broker runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from trunkline import errors as E
from trunkline.broker.base import HistoryQuery, StreamPosition
from trunkline.broker.memory import MemoryBroker
from trunkline.config import settings_from_mapping
from trunkline.node import Node
from trunkline.protocol.codec import JSON_SHAPE
from trunkline.records import Publication

CHANNEL = "hist:room"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedBroker(MemoryBroker):
    """A memory broker whose next history read can be held open, so publications arrive during a join."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock, sweep_interval=3600.0)
        self.gate: asyncio.Event | None = None
        self.read_before_gate = True
        self.entered = asyncio.Event()

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        gate, self.gate = self.gate, None
        if gate is None:
            return self.history_now(channel, query)
        if self.read_before_gate:
            result = self.history_now(channel, query)
            self.entered.set()
            await gate.wait()
            return result
        self.entered.set()
        await gate.wait()
        return self.history_now(channel, query)


class Feed:
    """The broker's feed to the node: passes events on, or holds / drops publications."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.mode = "pass"
        self.held: list[tuple[str, Publication]] = []
        self.dropped = 0

    def handle_publication(self, channel: str, pub: Publication) -> None:
        if self.mode == "pass":
            self.node.handle_publication(channel, pub)
        elif self.mode == "hold":
            self.held.append((channel, pub))
        else:
            self.dropped += 1

    def release(self) -> None:
        """Deliver what was held, in order, and pass from now on."""
        self.mode = "pass"
        held, self.held = self.held, []
        for channel, pub in held:
            self.node.handle_publication(channel, pub)

    def handle_join(self, channel: str, info: bytes) -> None:
        self.node.handle_join(channel, info)

    def handle_leave(self, channel: str, info: bytes) -> None:
        self.node.handle_leave(channel, info)

    def handle_control(self, data: bytes) -> None:
        self.node.handle_control(data)

    def handle_resync(self) -> None:
        self.node.handle_resync()


class Outbound:
    """A subscriber's outbound buffer, as the node's metrics see it."""

    buffered = 0

    def sample(self, started: float) -> None:
        pass


@dataclass(eq=False)
class Sub:
    """What the node needs from a subscriber (``trunkline.contracts.Connection``'s channel part)."""

    node: Node
    name: str
    closed: bool = False
    pushed: list[bytes] = field(default_factory=list)
    resubscribed: list[str] = field(default_factory=list)
    told: asyncio.Event = field(default_factory=asyncio.Event)
    writer: Outbound = field(default_factory=Outbound)

    @property
    def shape(self) -> object:
        return JSON_SHAPE

    def push(self, data: bytes) -> None:
        self.pushed.append(data)

    def resubscribe(self, channel: str) -> None:
        """As a session does: drop the subscription here, tell the client (2500)."""
        self.resubscribed.append(channel)
        self.told.set()
        if self.node.hub.remove(channel, self):
            self.node.detach_channel(channel)

    def sample_write(self, started: float) -> None:
        pass

    @property
    def offsets(self) -> list[int]:
        return [json.loads(data)["push"]["pub"].get("offset", 0) for data in self.pushed]

    @property
    def data(self) -> list[object]:
        return [json.loads(data)["push"]["pub"]["data"] for data in self.pushed]


@dataclass
class Env:
    node: Node
    broker: GatedBroker
    feed: Feed
    clock: FakeClock

    def sub(self, name: str) -> Sub:
        return Sub(self.node, name)

    async def publish(self, n: int, channel: str = CHANNEL) -> StreamPosition:
        position = await self.node.publish(channel, b'{"n":%d}' % n)
        assert position is not None
        return position

    async def joined(self, sub: Sub, channel: str = CHANNEL, *, positioned: bool = True) -> StreamPosition:
        result, finish = await self.node.join(sub, channel, positioned=positioned)
        finish()
        return StreamPosition(result.offset, result.epoch)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    settings = settings_from_mapping(
        {"channel": {"namespaces": [{"name": "hist", "history_size": 100, "history_ttl": "300s"}]}}, "<test>"
    )
    clock = FakeClock()
    broker = GatedBroker(clock)
    node = Node(settings, broker=broker)
    node.position_grace = 0.01
    feed = Feed(node)
    await broker.start(feed)
    yield Env(node, broker, feed, clock)
    await node.shutdown(timeout=0.1)


def gaps(node: Node) -> float:
    value = node.metrics.registry.get_sample_value("trunkline_stream_gaps_total", {"namespace": "hist"})
    return value or 0.0


# ---------------------------------------------------------------- join


async def test_a_positioned_join_starts_at_the_stream_top_and_goes_live(env: Env) -> None:
    top = (await env.publish(1), await env.publish(2), await env.publish(3))[-1]
    sub = env.sub("a")
    result, finish = await env.node.join(sub, CHANNEL, positioned=True)
    assert (result.positioned, result.offset, result.epoch) == (True, 3, top.epoch)
    assert (result.was_recovering, result.recovered, result.publications) == (False, False, [])
    await env.publish(4)  # between the reply and finish: buffered
    assert sub.pushed == []
    finish()
    assert sub.offsets == [4]
    await env.publish(5)
    assert sub.offsets == [4, 5]
    assert sub.data == [{"n": 4}, {"n": 5}]
    assert env.node.hub.position(CHANNEL) == (5, top.epoch)
    assert sub.resubscribed == []


async def test_a_join_without_position_gets_everything_and_no_position(env: Env) -> None:
    await env.publish(1)
    sub = env.sub("live")
    result, finish = await env.node.join(sub, CHANNEL)
    assert (result.positioned, result.offset, result.epoch) == (False, 0, "")
    finish()
    await env.publish(2)
    assert sub.offsets == [2]
    assert env.node.hub.position(CHANNEL) is None, "no positioned subscriber: no position to keep"


async def test_a_join_of_a_channel_without_publications_fixes_an_epoch(env: Env) -> None:
    sub = env.sub("a")
    position = await env.joined(sub)
    assert position.offset == 0
    assert position.epoch
    assert await env.publish(1) == StreamPosition(1, position.epoch), "the first publication keeps that epoch"
    assert sub.offsets == [1]


@pytest.mark.parametrize("read_before_gate", [True, False], ids=["read-then-publish", "publish-then-read"])
async def test_publications_during_a_join_are_neither_lost_nor_doubled(env: Env, read_before_gate: bool) -> None:
    top = (await env.publish(1), await env.publish(2), await env.publish(3))[-1]
    sub = env.sub("a")
    env.broker.gate = gate = asyncio.Event()
    env.broker.read_before_gate = read_before_gate
    joining = asyncio.ensure_future(
        env.node.join(sub, CHANNEL, positioned=True, recoverable=True, since=StreamPosition(1, top.epoch))
    )
    await asyncio.wait_for(env.broker.entered.wait(), 5)
    await env.publish(4)  # while the stream read is in progress
    await env.publish(5)
    gate.set()
    result, finish = await asyncio.wait_for(joining, 5)
    assert result.was_recovering
    assert result.recovered
    recovered = [p.offset for p in result.publications]
    assert recovered == ([2, 3] if read_before_gate else [2, 3, 4, 5])
    await env.publish(6)  # after the reply, before finish
    finish()
    await env.publish(7)
    assert recovered + sub.offsets == [2, 3, 4, 5, 6, 7], "each publication exactly once, in order"
    assert sub.resubscribed == []


async def test_a_recovery_from_any_uint64_offset_gets_an_answer(env: Env) -> None:
    top = (await env.publish(1), await env.publish(2))[-1]
    for offset in (2**63 - 1, 2**63, 2**64 - 1):
        sub = env.sub(str(offset))
        since = StreamPosition(offset, top.epoch)
        result, finish = await env.node.join(sub, CHANNEL, positioned=True, recoverable=True, since=since)
        assert (result.was_recovering, result.recovered, result.offset, result.epoch) == (True, False, 2, top.epoch)
        finish()
        with pytest.raises(E.ClientError) as raised:
            await env.node.join(
                env.sub("strict"), CHANNEL, positioned=True, recoverable=True, since=since, reject_unrecovered=True
            )
        assert raised.value == E.UNRECOVERABLE_POSITION
    await env.publish(3)
    assert all(sub.resubscribed == [] for sub in env.node.hub.subscribers(CHANNEL))
    assert len(env.node.hub.subscribers(CHANNEL)) == 3


async def test_a_joiner_ahead_of_the_feed_waits_for_publications_in_flight(env: Env) -> None:
    first = env.sub("first")
    await env.joined(first)
    await env.publish(1)
    env.feed.mode = "hold"  # 2 is stored, its delivery to this node is slow
    await env.publish(2)
    late = env.sub("late")
    position = await env.joined(late)  # the stream says 2; the node has seen 1
    assert position.offset == 2
    assert env.node.hub.is_pending(CHANNEL, late), "it waits for the node to reach 2"
    env.feed.release()
    assert first.offsets == [1, 2]
    assert late.pushed == [], "2 came before its position: not pushed twice"
    assert not env.node.hub.is_pending(CHANNEL, late)
    await env.publish(3)
    assert first.offsets == [1, 2, 3]
    assert late.offsets == [3]
    assert first.resubscribed == late.resubscribed == []


async def test_a_joiner_ahead_of_a_lost_publication_goes_live_and_the_others_resubscribe(env: Env) -> None:
    first = env.sub("first")
    await env.joined(first)
    await env.publish(1)
    env.feed.mode = "drop"
    await env.publish(2)  # lost on the way to this node
    env.feed.mode = "pass"
    late = env.sub("late")
    assert (await env.joined(late)).offset == 2
    await env.publish(3)
    assert first.resubscribed == [CHANNEL], "it missed 2"
    assert first.offsets == [1], "and never got 3"
    assert late.offsets == [3], "positioned at 2 by its read, 3 continues it"
    assert late.resubscribed == []
    assert gaps(env.node) == 1


# ---------------------------------------------------------------- a gap in the feed


async def test_a_publication_after_a_gap_never_reaches_positioned_subscribers(env: Env) -> None:
    """Issue 9 item 1: the node sees offset 5 after 3; positioned subscribers must not record 5."""
    positioned = [env.sub(f"p{i}") for i in range(3)]
    live = env.sub("live")
    top = await env.publish(1)
    for sub in positioned:
        await env.joined(sub)
    await env.joined(live, positioned=False)
    await env.publish(2)
    await env.publish(3)
    env.node.handle_publication(CHANNEL, Publication(data=b'{"n":5}', offset=5, epoch=top.epoch))
    for sub in positioned:
        assert sub.resubscribed == [CHANNEL]
        assert sub.offsets == [2, 3], "the post-gap publication was not pushed"
    assert live.offsets == [2, 3, 5], "subscribers without position still get it"
    assert gaps(env.node) == 3
    await env.publish(4)
    assert all(sub.offsets == [2, 3] for sub in positioned), "dropped: nothing more"
    assert env.node.hub.subscribers(CHANNEL) == [live]
    assert env.node.hub.position(CHANNEL) is None


async def test_a_new_epoch_on_the_feed_resubscribes_positioned_subscribers(env: Env) -> None:
    sub, live = env.sub("p"), env.sub("live")
    await env.publish(1)
    await env.joined(sub)
    await env.joined(live, positioned=False)
    env.node.handle_publication(CHANNEL, Publication(data=b"{}", offset=2, epoch="another"))
    assert sub.resubscribed == [CHANNEL]
    assert sub.pushed == []
    assert live.offsets == [2]


async def test_a_late_duplicate_is_not_pushed_again(env: Env) -> None:
    sub = env.sub("p")
    first = await env.publish(1)
    await env.joined(sub)
    await env.publish(2)
    env.node.handle_publication(CHANNEL, Publication(data=b"{}", offset=2, epoch=first.epoch))
    env.node.handle_publication(CHANNEL, Publication(data=b"{}", offset=1, epoch=first.epoch))
    assert sub.offsets == [2]
    assert sub.resubscribed == []


# ---------------------------------------------------------------- position checks


async def test_check_positions_finds_publications_lost_on_the_feed(env: Env) -> None:
    sub, live = env.sub("p"), env.sub("live")
    await env.publish(1)
    await env.joined(sub)
    await env.joined(live, positioned=False)
    other = env.sub("other")
    await env.joined(other, "hist:quiet")
    env.feed.mode = "drop"
    await env.publish(2)  # the link was down: no later publication will reveal the gap
    env.feed.mode = "pass"
    await env.node.check_positions()
    assert sub.resubscribed == [CHANNEL]
    assert live.resubscribed == []
    assert other.resubscribed == [], "a channel at its stream top is left alone"
    assert gaps(env.node) == 1


async def test_check_positions_after_a_resync_on_a_channel_without_publications(env: Env) -> None:
    """Issue 9 item 2: subscribed to a channel with no publication, the feed drops, 1 is published meanwhile."""
    sub = env.sub("p")
    assert (await env.joined(sub)).offset == 0
    env.feed.mode = "drop"
    await env.publish(1)
    env.feed.mode = "pass"
    env.feed.handle_resync()  # as the Redis broker does once its pub/sub link is back
    await asyncio.wait_for(sub.told.wait(), 5)
    assert sub.resubscribed == [CHANNEL]
    assert sub.pushed == []


async def test_check_positions_leaves_publications_in_flight_alone(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = env.sub("p")
    await env.publish(1)
    await env.joined(sub)
    env.feed.mode = "hold"
    await env.publish(2)  # stored, on its way
    hub = env.node.hub
    real = hub.position
    calls: list[str] = []

    def position(channel: str) -> tuple[int, str] | None:
        calls.append(channel)
        if len(calls) == 1:  # the first look saw the top ahead: deliver during the grace
            asyncio.get_running_loop().call_soon(env.feed.release)
        return real(channel)

    monkeypatch.setattr(hub, "position", position)
    await env.node.check_positions()
    assert len(calls) == 2, "looked again after the grace"
    assert sub.resubscribed == []
    assert sub.offsets == [2]


async def test_check_positions_declares_a_new_epoch_at_once(env: Env) -> None:
    sub = env.sub("p")
    await env.publish(1)
    await env.joined(sub)
    env.clock.now += env.node.settings.channel.history_meta_ttl + 1  # the stream's metadata expired
    env.broker.sweep()
    assert env.broker.num_streams == 0
    env.node.position_grace = 3600.0  # an epoch change needs no grace
    await asyncio.wait_for(env.node.check_positions(), 5)
    assert sub.resubscribed == [CHANNEL]


async def test_check_positions_keeps_idle_placeholder_streams_alive(env: Env) -> None:
    sub = env.sub("p")
    first = await env.joined(sub)
    ttl = env.node.placeholder_ttl
    for _ in range(5):
        env.clock.now += ttl * 0.6
        env.broker.sweep()
        await env.node.check_positions()  # the periodic check reads the stream, renewing the placeholder
    assert sub.resubscribed == []
    assert env.broker.num_streams == 1
    assert await env.publish(1) == StreamPosition(1, first.epoch)
    assert sub.offsets == [1]
