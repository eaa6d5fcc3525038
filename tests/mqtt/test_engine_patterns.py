"""Pattern subscriptions in the engine (``Node.watch``): memory and Redis brokers, several nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.broker.conftest import prefix, redis_url  # noqa: F401  (fixtures)
from trunkline.broker.redis import RedisBroker
from trunkline.config import Settings
from trunkline.hub.patterns import Patterns
from trunkline.node import Node
from trunkline.records import Publication, Undeliverable


@dataclass(frozen=True)
class Starts:
    """A matcher: channels that start with ``text`` and do not end with ``!``."""

    text: str

    def __call__(self, channel: str) -> bool:
        return channel.startswith(self.text) and not channel.endswith("!")


class Shape:
    def __init__(self) -> None:
        self.encodes = 0

    def publication(self, channel: str, pub: Publication) -> bytes:
        self.encodes += 1
        if pub.data == b"binary":
            raise Undeliverable("no")
        return channel.encode() + b"=" + pub.data

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return b""


def test_patterns_encode_once_per_shape_and_replace_a_registration() -> None:
    patterns: Patterns[str] = Patterns()
    shape = Shape()
    got: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
    assert patterns.add("s:", Starts("s:"), "a", shape, got["a"].append) is True
    assert patterns.add("s:", Starts("s:"), "b", shape, got["b"].append) is False
    assert patterns.add("s:", Starts("s:x"), "c", shape, got["c"].append) is False
    assert patterns.add("s:", Starts("s:"), "a", shape, got["a"].append) is False  # replaces
    assert len(patterns) == 3
    assert patterns.broadcast("s:x1", Publication(data=b"1")) == 3
    assert shape.encodes == 1
    assert patterns.broadcast("s:y", Publication(data=b"2")) == 2
    assert patterns.broadcast("s:y!", Publication(data=b"3")) == 0
    assert patterns.broadcast("t:y", Publication(data=b"4")) == 0
    assert got == {"a": [b"s:x1=1", b"s:y=2"], "b": [b"s:x1=1", b"s:y=2"], "c": [b"s:x1=1"]}
    refused: list[list[str]] = []
    assert patterns.broadcast("s:x", Publication(data=b"binary"), refused.append) == 0
    assert sorted(refused[0]) == ["a", "b", "c"]
    assert patterns.remove("s:", Starts("s:"), "a") is False
    assert patterns.remove("s:", Starts("s:"), "b") is False
    assert patterns.remove("s:", Starts("s:x"), "c") is True
    assert not patterns and len(patterns) == 0


class Conn:
    """The smallest hashable subscriber the node's pattern index needs."""


class Collector(list[bytes]):
    """A list whose ``append`` wakes a waiter."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def append(self, item: bytes) -> None:  # type: ignore[override]
        super().append(item)
        self.changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_memory_node_feeds_watchers_and_exact_subscribers_separately() -> None:
    node = Node(Settings())
    await node.start()
    try:
        shape = Shape()
        got = Collector()
        conn = Conn()
        await node.watch(conn, "", Starts("s_"), shape, got.append)  # type: ignore[arg-type]
        await node.publish("s_1", b'"a"')
        await node.publish("t_1", b'"b"')
        assert got == [b's_1="a"']
        node.unwatch(conn, "", Starts("s_"))  # type: ignore[arg-type]
        await node.publish("s_1", b'"c"')
        assert got == [b's_1="a"']
        assert not node.patterns
    finally:
        await node.shutdown(0.1)


@pytest.fixture
async def two_nodes(redis_url: str, prefix: str) -> AsyncIterator[tuple[Node, Node]]:  # noqa: F811
    nodes = [Node(Settings(), broker=RedisBroker(redis_url, prefix=prefix)) for _ in range(2)]
    for node in nodes:
        await node.start()
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await node.shutdown(0.1)


@pytest.mark.redis
async def test_redis_pattern_subscription_reaches_another_node(two_nodes: tuple[Node, Node]) -> None:
    publisher, watcher = two_nodes
    shape = Shape()
    got = Collector()
    conn = Conn()
    # glob characters in the prefix are literal: "a*[" matches only channels starting with it
    await watcher.watch(conn, "a*[", Starts("a*["), shape, got.append)  # type: ignore[arg-type]
    await publisher.publish("ab", b'"no"')
    await publisher.publish("a*[x", b'"yes"')
    await publisher.publish("a*[x!", b'"filtered"')
    await publisher.publish("a*[y", b'"yes2"')
    await got.wait(2)
    await asyncio.sleep(0.05)
    assert got == [b'a*[x="yes"', b'a*[y="yes2"']


@pytest.mark.redis
async def test_redis_pattern_and_exact_subscription_on_one_node_are_fed_once_each(
    two_nodes: tuple[Node, Node],
) -> None:
    publisher, watcher = two_nodes
    pattern_got = Collector()
    conn = Conn()
    await watcher.watch(conn, "s_", Starts("s_"), Shape(), pattern_got.append)  # type: ignore[arg-type]
    exact_got: list[Publication] = []
    exact = asyncio.Event()

    def buffer(pub: Publication) -> None:
        exact_got.append(pub)
        exact.set()

    watcher.hub.add_pending("s_1", conn, buffer)  # type: ignore[arg-type]
    await watcher.attach_channel("s_1")
    await publisher.publish("s_1", b'"x"')
    await pattern_got.wait(1)
    async with asyncio.timeout(5):
        await exact.wait()
    await asyncio.sleep(0.05)
    assert pattern_got == [b's_1="x"']
    assert [p.data for p in exact_got] == [b'"x"']
    watcher.unwatch(conn, "s_", Starts("s_"))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # the PUNSUBSCRIBE is spawned
    await publisher.publish("s_2", b'"y"')
    await asyncio.sleep(0.1)
    assert pattern_got == [b's_1="x"']
