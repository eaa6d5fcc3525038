"""Resource limits: oversized frames, command floods, channel/user/total connection limits,
slow handshakes, idle sockets and slow readers. Each refusal names its reason; each test
is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.conftest import Running, eventually
from tests.security.conftest import Closed, RawClient, Tls, conn_token, connected, handshake, sdk_client
from trunkline.config import Settings
from trunkline.events import DisconnectEvent
from trunkline.transport.websocket import open_websockets

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]


# ----------------------------------------------------------------------------------- defaults


def test_defaults_are_bounded() -> None:
    """Out of the box every per-connection resource has a finite limit."""
    s = Settings()
    assert 0 < s.websocket.message_size_limit <= 1 << 20
    assert 0 < s.client.queue_max_size <= 16 << 20
    assert 0 < s.client.channel_limit <= 1024
    assert 0 < s.client.command_rate_limit <= 1000 and s.client.command_rate_burst >= s.client.channel_limit + 10
    assert 0 < s.client.connection_limit <= 1_000_000
    assert 0 < s.client.stale_close_delay <= 30
    assert 0 < s.websocket.handshake_timeout <= 30
    assert 0 < s.websocket.write_timeout <= 30
    assert 0 < s.http_api.max_body_size <= 16 << 20
    assert 0 < s.client.history_max_publication_limit <= 1000
    assert 0 < s.channel.max_length <= 1024
    assert s.client.allowed_origins == ()  # same origin only
    assert not s.client.insecure and not s.http_api.insecure
    assert not s.client.allow_anonymous_connect_without_token
    assert s.http_server.address == "127.0.0.1"
    assert not s.demo.enabled


# ----------------------------------------------------------------------------------- frames


async def test_oversized_message_is_closed_1009(serve: Serve, raw: Raw) -> None:
    running = await serve({"websocket": {"message_size_limit": 4096}})
    client = await connected(raw, running, conn_token("42"))
    reply = await client.call("publish", {"channel": "chat", "data": {"t": "x" * 3000}})
    assert "error" in reply and reply["error"]["code"] == 103  # under the limit: handled (and refused on rights)
    await client.ws.send_str('{"id":99,"publish":{"channel":"chat","data":"' + "x" * 5000 + '"}}')
    assert await client.closed() == Closed(1009, "message too big")


async def test_oversized_message_before_connect_is_closed_1009(serve: Serve, raw: Raw) -> None:
    running = await serve({"websocket": {"message_size_limit": 4096}})
    client = await raw(running.ws_url)
    await client.ws.send_bytes(b"{" * 100_000)
    assert await client.closed() == Closed(1009, "message too big")


async def test_compressed_bomb_is_closed_1009(serve: Serve, raw: Raw) -> None:
    """With permessage-deflate on, the limit applies to the inflated size (1 MB of zeros is ~1 KB)."""
    running = await serve({"websocket": {"message_size_limit": 65536, "compression": True}})
    client = await raw(running.ws_url, compress=15)
    assert client.ws.compress == 15
    await client.ws.send_str("0" * 1_000_000)
    assert await client.closed() == Closed(1009, "message too big")


async def test_sdk_sees_message_size_limit(serve: Serve) -> None:
    """centrifuge-python reports the 1009 close as its 'message size limit' code (3)."""
    running = await serve({"websocket": {"message_size_limit": 4096}, "channel": {"without_namespace": {}}})
    async with sdk_client(running.ws_url, conn_token("42")) as (client, events):
        await client.connect()
        await client.ready(timeout=5)
        with contextlib.suppress(Exception):
            await client.publish("chat", {"t": "x" * 10_000}, timeout=2)
        await eventually(lambda: [c for c in events.connecting + events.disconnected if c.code == 3], timeout=5)


# ----------------------------------------------------------------------------------- floods


async def test_command_flood_gets_111_then_3013(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"command_rate_limit": 10, "command_rate_burst": 10}})
    client = await connected(raw, running, conn_token("42"))
    ids = await client.send(*[{"ping": {}} for _ in range(40)])
    outcomes = [await client.outcome(i) for i in ids]
    closed = [o for o in outcomes if isinstance(o, Closed)]
    replies = [o for o in outcomes if not isinstance(o, Closed)]
    assert closed and closed[0] == Closed(3013, "too many requests")
    limited = [r for r in replies if "error" in r]
    assert limited, "no 111 before the disconnect"
    assert all(
        (r["error"]["code"], r["error"]["message"], r["error"]["temporary"]) == (111, "too many requests", True)
        for r in limited
    )
    assert any("ping" in r for r in replies)


async def test_commands_under_the_rate_are_not_limited(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"command_rate_limit": 20, "command_rate_burst": 20}})
    client = await connected(raw, running, conn_token("42"))
    for _ in range(10):
        assert "ping" in await client.call("ping")
        await asyncio.sleep(0.06)


# ----------------------------------------------------------------------------------- per connection / user


async def test_channel_limit_is_3505(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"channel_limit": 3}})
    client = await connected(raw, running, conn_token("42"))
    for i in range(3):
        assert "subscribe" in await client.call("subscribe", {"channel": f"room{i}"})
    assert await client.attempt("subscribe", {"channel": "room3"}) == Closed(3505, "channel limit")


async def test_user_connection_limit_is_3504(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"user_connection_limit": 2}})
    await connected(raw, running, conn_token("42"))
    await connected(raw, running, conn_token("42"))
    async with sdk_client(running.ws_url, conn_token("42")) as (client, events):
        await client.connect()
        await eventually(lambda: events.disconnected, timeout=5)
        assert events.disconnected[0].code == 3504
        assert events.disconnected[0].reason == "connection limit: too many connections for this user"
    await connected(raw, running, conn_token("43"))  # other users are not affected


async def test_total_connection_limit_and_idle_sockets(serve: Serve, raw: Raw) -> None:
    """Sockets that never send ``connect`` count against ``client.connection_limit`` and are
    closed with 3502 after ``client.stale_close_delay``, freeing their slots."""
    running = await serve({"client": {"connection_limit": 20, "stale_close_delay": "0.5s"}})
    idle = [await raw(running.ws_url) for _ in range(20)]
    assert open_websockets(running.server.node) == 20
    assert await handshake(running.ws_url) == (503, {"error": "connection limit reached"})
    for client in idle:
        assert await client.closed(timeout=3) == Closed(3502, "stale")
    await eventually(lambda: open_websockets(running.server.node) == 0, timeout=3)
    await connected(raw, running, conn_token("42"))


async def test_connect_when_full_is_3504(serve: Serve, raw: Raw) -> None:
    """The node-wide limit also holds at ``connect`` time."""
    running = await serve({"client": {"connection_limit": 1}})
    await connected(raw, running, conn_token("42"))
    assert await handshake(running.ws_url) == (503, {"error": "connection limit reached"})


# ----------------------------------------------------------------------------------- slow handshakes


async def _dropped_within(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the socket; fails if it takes longer than ``limit``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return loop.time() - started


async def test_slow_http_handshake_is_dropped(serve: Serve, raw: Raw) -> None:
    """Slowloris: silent sockets and partial request heads (one header every 0.2 s) are dropped
    after ``websocket.handshake_timeout``, and meanwhile a real client still gets in."""
    running = await serve({"websocket": {"handshake_timeout": "1s"}})
    silent = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(20)]
    partial = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(20)]
    for _, writer in partial:
        writer.write(b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")

    async def dribble() -> None:
        for i in range(100):
            for _, writer in partial:
                if not writer.is_closing():
                    writer.write(b"X-Slow-%d: 1\r\n" % i)
            await asyncio.sleep(0.2)

    dribbler = asyncio.create_task(dribble())
    try:
        await connected(raw, running, conn_token("42"))
        times = await asyncio.gather(*(_dropped_within(r, 2.5) for r, _ in silent + partial))
        assert max(times) < 2.5
    finally:
        dribbler.cancel()
        for _, writer in silent + partial:
            writer.close()


async def test_slow_tls_handshake_is_dropped(serve: Serve, tls: Tls) -> None:
    """A TCP connection to the TLS port that never finishes the TLS handshake is dropped too."""
    running = await serve({**tls.config(), "websocket": {"handshake_timeout": "1s"}})
    silent = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(10)]
    partial = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(10)]
    for _, writer in partial:
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    try:
        times = await asyncio.gather(*(_dropped_within(r, 2.5) for r, _ in silent + partial))
        assert max(times) < 2.5
    finally:
        for _, writer in silent + partial:
            writer.close()


# ----------------------------------------------------------------------------------- slow readers


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_slow_reader_is_closed_3008(serve: Serve, raw: Raw) -> None:
    """A client that stops reading gets disconnected with 3008 once ``client.queue_max_size``
    bytes wait for it; the other subscribers of the channel keep receiving everything."""
    running = await serve(
        {
            "client": {"queue_max_size": 512 * 1024},
            "websocket": {"write_timeout": "0.5s"},
            "channel": {"without_namespace": {}},
        }
    )
    node = running.server.node
    gone: list[DisconnectEvent] = []

    @node.on_disconnect
    async def record(event: DisconnectEvent) -> None:
        gone.append(event)

    fast = await connected(raw, running, conn_token("1"))
    await fast.call("subscribe", {"channel": "firehose"})
    reader = asyncio.create_task(fast.pump(30))

    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as session:
        slow = RawClient(session, await session.ws_connect(running.ws_url, max_msg_size=0))
        await slow.connect(conn_token("2"))
        await slow.call("subscribe", {"channel": "firehose"})
        payload = b'"' + b"x" * (32 * 1024) + b'"'
        count = 0
        while not gone:  # a few MiB on loopback; bounded below
            await node.publish("firehose", payload)
            count += 1
            await asyncio.sleep(0.001)
            assert count < 1000, "the slow reader was never disconnected"
        assert [(e.client.user, e.code, e.reason) for e in gone] == [("2", 3008, "slow")]
        await eventually(lambda: node.hub.num_clients == 1, timeout=5)
        await slow.aclose()
    await eventually(lambda: sum(1 for p in fast.pushes if "pub" in p) == count, timeout=5)
    reader.cancel()
    assert fast.close is None
