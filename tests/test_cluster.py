"""Many nodes, one real redis-server: publications, presence, history and server API across nodes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from cent import AsyncClient, DisconnectRequest, InfoRequest, PublishRequest

from tests.conftest import API_KEY, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, TcpProxy, new_client, subscribe_ready


def redis_config(redis_url: str, prefix: str) -> dict[str, object]:
    return {"engine": {"type": "redis", "redis": {"address": redis_url, "prefix": prefix}}}


async def test_two_nodes_share_channels_presence_history_and_api(
    start_server: Callable[..., object], redis_url: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a: Running = await start_server(redis_config(redis_url, prefix))  # type: ignore[misc]
    b: Running = await start_server(redis_config(redis_url, prefix))  # type: ignore[misc]

    on_a = new_client(a.ws_url, token=token("alice"))
    events_b = ClientRecorder()
    on_b = new_client(b.ws_url, events_b, token=token("bob"))
    rec_a, rec_b = Recorder(), Recorder()
    await on_a.connect()
    await on_b.connect()
    sub_a = await subscribe_ready(on_a.new_subscription("shared", rec_a))
    await subscribe_ready(on_b.new_subscription("shared", rec_b))

    async with AsyncClient(a.api_url, API_KEY) as api_a, AsyncClient(b.api_url, API_KEY) as api_b:
        for i in range(20):
            api = api_a if i % 2 else api_b
            await api.publish(PublishRequest(channel="shared", data={"i": i}))
        await eventually(lambda: len(rec_a.publications) == 20 and len(rec_b.publications) == 20)
        assert [o for o, _ in rec_a.publications] == list(range(1, 21)) == [o for o, _ in rec_b.publications]

        stats = await sub_a.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        assert any(j.info.user == "bob" for j in rec_a.joins)
        history = await sub_a.history(limit=-1)
        assert len(history.publications) == 20

        async def both_nodes_listed() -> bool:
            info = await api_a.info(InfoRequest())
            return {n.uid for n in info.nodes} == {a.server.node.uid, b.server.node.uid}

        await eventually(both_nodes_listed, timeout=8)

        await api_a.disconnect(DisconnectRequest(user="bob"))  # bob is connected to node b
        await eventually(lambda: events_b.disconnected)
        assert events_b.disconnected[-1].code == 3503
        await eventually(lambda: any(leave.info.user == "bob" for leave in rec_a.leaves))
    await on_a.disconnect()


async def test_recovery_across_nodes_after_a_dropped_link(start_server: Callable[..., object], redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a: Running = await start_server(redis_config(redis_url, prefix))  # type: ignore[misc]
    b: Running = await start_server(redis_config(redis_url, prefix))  # type: ignore[misc]
    proxy = await TcpProxy(a.port).start()
    client = new_client(proxy.ws_url, token=token("42"))
    rec = Recorder()
    try:
        await client.connect()
        await subscribe_ready(client.new_subscription("multi", rec))
        async with AsyncClient(b.api_url, API_KEY) as api:
            await api.publish(PublishRequest(channel="multi", data={"i": 0}))
            await eventually(lambda: rec.publications)
            proxy.accepting = False
            proxy.cut()
            for i in range(1, 101):
                await api.publish(PublishRequest(channel="multi", data={"i": i}))
            proxy.accepting = True
            await eventually(lambda: len(rec.publications) >= 101, timeout=15)
        assert [d["i"] for _, d in rec.publications] == list(range(101))
        assert rec.subscribed[-1].recovered
    finally:
        await client.disconnect()
        await proxy.close()


async def test_presence_entries_are_refreshed_while_connected(
    start_server: Callable[..., object], redis_url: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = {**redis_config(redis_url, prefix), "client": {"presence_update_interval": "300ms"}}
    srv: Running = await start_server(config)  # type: ignore[misc]
    client = new_client(srv.ws_url, token=token("stay"))
    await client.connect()
    sub = await subscribe_ready(client.new_subscription("kept", Recorder()))
    await asyncio.sleep(2.0)  # entries live 0.9 s: only the refresh keeps this one
    stats = await sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)
    await client.disconnect()
    await eventually(lambda: _stats_empty(srv))


async def _stats_empty(srv: Running) -> bool:
    clients, _ = await srv.server.node.presence_manager.presence_stats("kept")
    return clients == 0
