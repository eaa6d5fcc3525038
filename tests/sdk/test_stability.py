"""Issue 3: heartbeats, slow consumers, graceful shutdown, restarts under load, expiry and refresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from cent import AsyncClient, PublishRequest

from tests.conftest import API_KEY, Process, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready


async def raw_connect(ws: aiohttp.ClientWebSocketResponse, user: str, **claims: object) -> dict[str, object]:
    await ws.send_str(json.dumps({"id": 1, "connect": {"token": token(user, **claims)}}))
    reply = json.loads((await ws.receive(timeout=5)).data)
    assert "connect" in reply, reply
    return dict(reply["connect"])


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_silent_peer_leaves_presence_within_interval_plus_timeout(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}})  # type: ignore[misc]
    watcher = new_client(srv.ws_url, token=token("watcher"))
    rec = Recorder()
    await watcher.connect()
    wsub = await subscribe_ready(watcher.new_subscription("hb", rec))
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url, autoping=False) as ws:
        connect = await raw_connect(ws, "silent")
        assert connect["ping"] == 1 and connect["pong"] is True
        await ws.send_str('{"id":2,"subscribe":{"channel":"hb"}}')
        await ws.receive(timeout=5)
        await eventually(lambda: any(j.info.user == "silent" for j in rec.joins))
        started = time.monotonic()
        received: list[aiohttp.WSMessage] = []

        async def read_without_answering() -> None:
            # the peer reads but never answers the server's {} pings
            while True:
                msg = await ws.receive(timeout=5)
                received.append(msg)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    return

        reader = asyncio.create_task(read_without_answering())
        await eventually(lambda: any(leave.info.user == "silent" for leave in rec.leaves), timeout=4)
        elapsed = time.monotonic() - started
        assert elapsed <= 1.0 + 0.5 + 0.5, f"gone after {elapsed:.2f}s"
        stats = await wsub.presence_stats()
        assert stats.num_clients == 1
        await asyncio.wait_for(reader, 5)
        assert received[-1].type is aiohttp.WSMsgType.CLOSE
        assert (received[-1].data, received[-1].extra) == (3012, "no pong")
    await watcher.disconnect()


async def test_answering_peer_stays_connected(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}})  # type: ignore[misc]
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, token=token("alive"))
    await client.connect()
    await asyncio.sleep(3.2)  # three ping rounds answered by the SDK
    assert len(events.connected) == 1 and not events.connecting[1:]
    assert srv.server.node.hub.num_clients == 1
    await client.disconnect()


async def _delivery_seconds(srv: Running, readers: int, count: int, size: int) -> float:
    """Time for ``readers`` healthy raw clients to receive ``count`` publications of ``size`` bytes."""
    payload = json.dumps({"p": "x" * size})
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(srv.ws_url) for _ in range(readers)]
        for i, ws in enumerate(sockets):
            await raw_connect(ws, f"healthy{i}")
            await ws.send_str('{"id":2,"subscribe":{"channel":"flood"}}')
            await ws.receive(timeout=5)

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            seen = 0
            while seen < count:
                msg = await ws.receive(timeout=10)
                seen += msg.data.count('"pub"')

        readers_done = asyncio.gather(*(drain(ws) for ws in sockets))
        started = time.monotonic()
        node = srv.server.node
        for _ in range(count):
            await node.publish("flood", payload.encode())
            await asyncio.sleep(0)
        await readers_done
        elapsed = time.monotonic() - started
        for ws in sockets:
            await ws.close()
        return elapsed


async def test_slow_consumer_is_cut_and_others_get_everything(start_server: Callable[..., object]) -> None:
    """A reader that stalls is cut off (its buffer is bounded); the healthy readers get every publication.

    How fast the healthy readers are served next to a stalled one is a performance figure, measured
    in bench/, not asserted here: on a shared 2-core machine a timing ratio is noise.
    """
    srv: Running = await start_server({"client": {"queue_max_size": 262144}})  # type: ignore[misc]
    count, size = 400, 16000

    def small_window(addr_info: tuple) -> socket.socket:  # type: ignore[type-arg]
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader on a thin, stalled link
        return sock

    await _delivery_seconds(srv, 5, 20, size)  # warm up: the first publications allocate caches
    before = rss_kib()
    connector = aiohttp.TCPConnector(socket_factory=small_window)
    async with aiohttp.ClientSession(connector=connector) as http:
        slow = await http.ws_connect(srv.ws_url)
        await raw_connect(slow, "slow")
        await slow.send_str('{"id":2,"subscribe":{"channel":"flood"}}')
        await slow.receive(timeout=5)
        # the slow client never reads again: aiohttp stops reading the socket once its queue is full.
        # _delivery_seconds returns only once each of the 5 healthy readers has counted all 400.
        for _ in range(3):
            await _delivery_seconds(srv, 5, count, size)
        node = srv.server.node
        await eventually(lambda: node.metrics.slow._value.get() >= 1, timeout=10)
        assert all(s.user != "slow" for s in node.hub.connections())
        await slow.close()
    growth_mib = (rss_kib() - before) / 1024
    assert growth_mib < 64, f"server memory grew by {growth_mib:.0f} MiB"


async def test_graceful_shutdown_sends_3001_and_exits(server_process: Callable[..., Process]) -> None:
    proc = server_process({"shutdown": {"timeout": "3s"}})
    events = ClientRecorder()
    client = new_client(proc.ws_url, events, token=token("42"), min_reconnect_delay=5, max_reconnect_delay=5)
    await client.connect()
    await client.ready()
    started = time.monotonic()
    assert await asyncio.to_thread(proc.stop) == 0
    assert time.monotonic() - started < 3 + 2
    await eventually(lambda: any(c.code == 3001 for c in events.connecting))
    output = proc.output()
    assert "Traceback" not in output
    await client.disconnect()


async def test_restart_under_load_every_client_reconnects(server_process: Callable[..., Process]) -> None:
    proc = server_process()
    clients = []
    recorders = []
    for i in range(20):
        events = ClientRecorder()
        client = new_client(proc.ws_url, events, token=token(f"u{i}"), max_reconnect_delay=1)
        await client.connect()
        rec = Recorder()
        await subscribe_ready(client.new_subscription("load", rec))
        clients.append((client, events))
        recorders.append(rec)
    async with AsyncClient(proc.http_url + "/api", API_KEY) as api:
        stop = asyncio.Event()

        async def publisher() -> None:
            i = 0
            while not stop.is_set() and i < 2000:
                with contextlib.suppress(Exception):
                    await api.publish(PublishRequest(channel="load", data={"i": i}))
                i += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(proc.stop) == 0
        await asyncio.to_thread(proc.start)
        await eventually(lambda: all(len(e.connected) >= 2 for _, e in clients), timeout=15)
        await eventually(lambda: all(len(r.subscribed) >= 2 for r in recorders), timeout=15)
        marker = {"after": "restart"}
        await api.publish(PublishRequest(channel="load", data=marker))
        await eventually(lambda: all(any(d == marker for _, d in r.publications) for r in recorders), timeout=10)
        stop.set()
        await task
    await asyncio.gather(*(c.disconnect() for c, _ in clients))
    # centrifuge-python's disconnect() closes the WebSocket in a task it does not wait for: let those
    # close handshakes finish here, or a loaded machine ends the test with the sockets still open
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.wait(others, timeout=5)


async def test_connection_expires_with_3005_without_refresh(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server({"client": {"expired_close_delay": "500ms"}})  # type: ignore[misc]
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
        # exp is whole seconds (int(now + ttl)): ttl=2 leaves at least one second to connect in
        connect = await raw_connect(ws, "exp", ttl=2)
        assert connect["expires"] is True and 0 <= int(connect.get("ttl", 0)) <= 2  # type: ignore[call-overload]
        started = time.monotonic()
        msg = await ws.receive(timeout=6)
        while msg.type is aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=6)
        assert ws.close_code == 3005
        assert time.monotonic() - started < 4


async def test_connection_refresh_keeps_it_open(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server({"client": {"expired_close_delay": "500ms"}})  # type: ignore[misc]
    refreshed: list[float] = []

    async def get_token() -> str:
        refreshed.append(time.monotonic())
        return token("42", ttl=30)

    events = ClientRecorder()
    client = new_client(srv.ws_url, events, token=token("42", ttl=2), get_token=get_token)
    await client.connect()
    await client.ready()
    await eventually(lambda: refreshed, timeout=6)
    await asyncio.sleep(2.5)  # past the original exp + close delay
    assert len(events.connected) == 1, "refresh kept the same connection"
    assert srv.server.node.hub.num_clients == 1
    await client.disconnect()


async def test_subscription_token_refresh(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server(  # type: ignore[misc]
        {"client": {"expired_sub_close_delay": "500ms"}, "channel": {"namespaces": [{"name": "priv"}]}}
    )
    calls: list[str] = []

    async def sub_token(channel: str) -> str:
        calls.append(channel)
        return token("42", ttl=30, channel=channel)

    client = new_client(srv.ws_url, token=token("42"))
    await client.connect()
    rec = Recorder()
    sub = client.new_subscription("priv:room", rec, token=token("42", ttl=2, channel="priv:room"), get_token=sub_token)
    await subscribe_ready(sub)
    await eventually(lambda: calls, timeout=6)
    await asyncio.sleep(2)
    assert not rec.unsubscribed and len(rec.subscribed) == 1
    await client.disconnect()


async def test_server_side_subscriptions_and_runtime_push(start_server: Callable[..., object]) -> None:
    srv: Running = await start_server(  # type: ignore[misc]
        {"client": {"subscribe_to_user_personal_channel": {"enabled": True}}}
    )
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, token=token("42", channels=["news"]))
    await client.connect()
    await eventually(lambda: {s.channel for s in events.server_subscribed} >= {"news", "#42"})
    async with AsyncClient(srv.api_url, API_KEY) as api:
        await api.publish(PublishRequest(channel="#42", data={"personal": True}))
        await eventually(lambda: any(p.pub.data == {"personal": True} for p in events.server_publications))
        from cent import SubscribeRequest, UnsubscribeRequest

        await api.subscribe(SubscribeRequest(user="42", channel="extra"))
        await eventually(lambda: any(s.channel == "extra" for s in events.server_subscribed))
        await api.publish(PublishRequest(channel="extra", data={"x": 1}))
        await eventually(lambda: any(p.channel == "extra" for p in events.server_publications))
        await api.unsubscribe(UnsubscribeRequest(user="42", channel="extra"))
        await eventually(lambda: any(u.channel == "extra" for u in events.server_unsubscribed))
    await client.disconnect()


async def test_api_disconnect_is_terminal(server: Running) -> None:
    from cent import DisconnectRequest

    events = ClientRecorder()
    client = new_client(server.ws_url, events, token=token("bye"))
    await client.connect()
    await client.ready()
    async with AsyncClient(server.api_url, API_KEY) as api:
        await api.disconnect(DisconnectRequest(user="bye"))
    await eventually(lambda: events.disconnected)
    assert events.disconnected[-1].code == 3503
