"""centrifuge-js 5.8 (Node) against shared-poll channels polled through a real backend process."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import Running, eventually
from trunkline import errors as E

from .conftest import INTERVAL, Backend, Driver


async def test_tracked_keys_update_within_one_interval(poll_server: Running, backend: Backend, driver: Driver) -> None:
    channel = "votes:feed1"
    backend.set(channel, "post_1", {"votes": 1})
    backend.set(channel, "post_2", {"votes": 7})
    await driver.client("a", poll_server)
    await driver.subscribe("a", channel)
    await driver.send(op="track", id="a", channel=channel, keys=["post_1", "post_2"])
    # cold keys (version 0, new on the node) are polled at once, not an interval later
    first = await driver.wait(ev="update", id="a", key="post_1", timeout=INTERVAL)
    assert first["data"] == {"votes": 1} and first["version"] > 0 and not first["removed"]
    await driver.wait(ev="update", id="a", key="post_2")
    backend.set(channel, "post_1", {"votes": 2})
    changed = time.monotonic()
    update = await driver.wait(ev="update", id="a", key="post_1", data={"votes": 2}, timeout=3 * INTERVAL)
    assert time.monotonic() - changed <= INTERVAL + 0.3  # within one interval (and a round trip)
    assert update["version"] > first["version"]
    # unchanged content is not pushed again
    await asyncio.sleep(2 * INTERVAL)
    assert len(driver.found(ev="update", id="a", key="post_2")) == 1
    assert len(driver.found(ev="update", id="a", key="post_1")) == 2


async def test_protobuf_client_and_a_refused_signature(poll_server: Running, backend: Backend, driver: Driver) -> None:
    channel = "votes:pb"
    backend.set(channel, "a", {"n": 1})
    await driver.client("pb", poll_server, protobuf=True)
    await driver.subscribe("pb", channel)
    await driver.send(op="track", id="pb", channel=channel, keys=["a"])
    got = await driver.wait(ev="update", id="pb", key="a")
    assert got["data"] == {"n": 1} and got["version"] > 0
    backend.set(channel, "a", {"n": 2})
    await driver.wait(ev="update", id="pb", key="a", data={"n": 2}, timeout=3 * INTERVAL)
    # a JSON client whose backend signs with the wrong secret: 103, the SDK drops the keys (a removal)
    await driver.client("bad", poll_server)
    await driver.subscribe("bad", channel, secret="wrong-secret")
    await driver.send(op="track", id="bad", channel=channel, keys=["a"])
    refused = await driver.wait(ev="error", id="bad", type="track")
    assert refused["code"] == 103
    dropped = await driver.wait(ev="update", id="bad", key="a")
    assert dropped["removed"] is True and dropped["data"] is None
    state = poll_server.server.node.shared_poll.channel(channel)
    assert state is not None and len(state.by_conn) == 1  # only the Protobuf client tracks "a"


async def test_reconnect_replays_tracking_without_duplicates(
    poll_server: Running, backend: Backend, driver: Driver
) -> None:
    channel = "votes:reconnect"
    backend.set(channel, "a", {"n": 1})
    await driver.client("r", poll_server)
    await driver.subscribe("r", channel)
    await driver.send(op="track", id="r", channel=channel, keys=["a"])
    await driver.wait(ev="update", id="r", key="a")
    node = poll_server.server.node
    for session in node.hub.connections():  # the server drops the link; the SDK reconnects
        await session.close(E.FORCE_RECONNECT)
    await eventually(lambda: len(driver.found(ev="subscribed", id="r")) == 2)
    state = node.shared_poll.channel(channel)
    await eventually(lambda: state is not None and state.keys() == ["a"])  # the SDK tracked "a" again
    await asyncio.sleep(2 * INTERVAL)
    # it held the current version: nothing delivered twice
    assert len(driver.found(ev="update", id="r", key="a")) == 1
    backend.set(channel, "a", {"n": 2})
    await driver.wait(ev="update", id="r", key="a", data={"n": 2}, timeout=3 * INTERVAL)
    assert len(driver.found(ev="update", id="r", key="a")) == 2
