"""A presence reply too big for the caller's outbound queue is error 106, not a 3008 disconnect.

3008 makes the SDKs reconnect and ask again, forever; 106 "limit exceeded" is an answer.
Members are added through the node's presence manager (what other nodes' clients look
like through a shared broker); the caller is a real WebSocket client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from tests.conftest import Running
from tests.security.conftest import RawClient, conn_token, connected
from trunkline.config import Settings

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]


async def _add_members(running: Running, channel: str, count: int, info_size: int) -> int:
    """``count`` presence entries of about ``info_size`` bytes of conn_info each; returns their encoded size."""
    node = running.server.node
    pad = json.dumps({"pad": "p" * info_size}).encode()
    total = 0
    for i in range(count):
        client_id = f"member-{i:05d}"
        info = node.client_info(f"user-{i}", client_id, pad, None)
        total += len(info)
        await node.presence_manager.add_presence(channel, client_id, f"user-{i}", info, 60.0)
    return total


def test_default_limit_fits_the_queue() -> None:
    client = Settings().client
    assert client.presence_max_size == 0  # derived: half of queue_max_size


async def test_presence_over_the_queue_is_106_and_the_connection_stays(serve: Serve, raw: Raw) -> None:
    """The issue's case: 3000 members x 400 B of info against the default 1 MiB queue."""
    running = await serve()
    size = await _add_members(running, "big", 3000, 400)
    assert size > running.settings.client.queue_max_size
    client = await connected(raw, running, conn_token("42"))
    assert "subscribe" in await client.call("subscribe", {"channel": "big"})

    reply = await client.call("presence", {"channel": "big"})
    assert reply.get("error", {}).get("code") == 106, reply
    assert reply["error"]["message"] == "limit exceeded"
    # still connected: other commands are answered, and the channel's size is still known
    stats = await client.call("presence_stats", {"channel": "big"})
    assert stats["presence_stats"]["num_clients"] == 3001
    assert "ping" in await client.call("ping")
    assert client.close is None


async def test_presence_max_size_setting(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"presence_max_size": 8192}})
    client = await connected(raw, running, conn_token("42"))
    await client.call("subscribe", {"channel": "room"})
    small = await client.call("presence", {"channel": "room"})
    assert list(small["presence"]["presence"]) == [client_id := next(iter(small["presence"]["presence"]))]
    assert small["presence"]["presence"][client_id]["user"] == "42"

    await _add_members(running, "room", 20, 300)  # about 7 KB with the caller: still under 8192
    fits = await client.call("presence", {"channel": "room"})
    assert len(fits["presence"]["presence"]) == 21
    assert len(json.dumps(fits)) <= 8192

    await _add_members(running, "room", 25, 300)  # 26 members of ~340 B: over
    assert (await client.call("presence", {"channel": "room"}))["error"]["code"] == 106
    assert client.close is None


async def test_presence_limit_never_exceeds_the_queue(serve: Serve, raw: Raw) -> None:
    """A presence_max_size above queue_max_size is capped by the queue: 106, not 3008."""
    running = await serve({"client": {"queue_max_size": 65536, "presence_max_size": 10 << 20}})
    await _add_members(running, "capped", 300, 300)  # ~100 KB
    client = await connected(raw, running, conn_token("42"))
    await client.call("subscribe", {"channel": "capped"})
    assert (await client.call("presence", {"channel": "capped"}))["error"]["code"] == 106
    assert "ping" in await client.call("ping")
