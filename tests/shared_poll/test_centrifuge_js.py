"""centrifuge-js 5.8 (Node) against shared-poll channels polled through a real backend process."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import Running

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
