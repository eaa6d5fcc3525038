"""Issue 3: nothing is lost across dropped links, resubscribes and restarts (centrifuge-python)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cent import AsyncClient, PublishRequest
from centrifuge import ReplyError

from tests.conftest import API_KEY, Process, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, TcpProxy, new_client, subscribe_ready

RECOVERY = {"client": {"recovery_max_publication_limit": 2000}}


def offsets(rec: Recorder) -> list[int]:
    return [offset for offset, _ in rec.publications]


async def test_dropped_link_recovers_1000_publications_in_order(start_server: object) -> None:
    srv: Running = await start_server(RECOVERY)  # type: ignore[operator]
    proxy = await TcpProxy(srv.port).start()
    events = ClientRecorder()
    client = new_client(proxy.ws_url, events, token=token("42"))
    rec = Recorder()
    sub = client.new_subscription("stream", rec)
    try:
        await client.connect()
        await sub.subscribe()
        await sub.ready()
        async with AsyncClient(srv.api_url, API_KEY) as api:
            for i in range(10):
                await api.publish(PublishRequest(channel="stream", data={"i": i}))
            await eventually(lambda: len(rec.publications) == 10)

            proxy.accepting = False
            proxy.cut()  # the network drops: no close frame, no FIN from the client's point of view
            await eventually(lambda: events.disconnected or len(events.connected) >= 1)
            for i in range(10, 1010):
                await api.publish(PublishRequest(channel="stream", data={"i": i}))
            proxy.accepting = True

            await eventually(lambda: len(rec.publications) >= 1010, timeout=20)
        assert [d["i"] for _, d in rec.publications] == list(range(1010))
        assert offsets(rec) == list(range(1, 1011)), "in order, without duplicates or gaps"
        last = rec.subscribed[-1]
        assert last.was_recovering and last.recovered
        assert len(events.connected) >= 2, "the SDK reconnected on its own"
    finally:
        await client.disconnect()
        await proxy.close()


async def test_unsubscribe_resubscribe_recovers(server: Running) -> None:
    client = new_client(server.ws_url, token=token("42"))
    rec = Recorder()
    sub = client.new_subscription("resub", rec)
    await client.connect()
    await sub.subscribe()
    await sub.ready()
    async with AsyncClient(server.api_url, API_KEY) as api:
        await api.publish(PublishRequest(channel="resub", data={"i": 0}))
        await eventually(lambda: rec.publications)
        await sub.unsubscribe()
        for i in range(1, 51):
            await api.publish(PublishRequest(channel="resub", data={"i": i}))
        await sub.subscribe()
        await sub.ready()
        await eventually(lambda: len(rec.publications) == 51)
    assert [d["i"] for _, d in rec.publications] == list(range(51))
    assert rec.subscribed[-1].recovered and rec.subscribed[-1].was_recovering
    await client.disconnect()


async def test_too_small_history_reports_not_recovered(server: Running) -> None:
    client = new_client(server.ws_url, token=token("42"))
    rec = Recorder()
    sub = client.new_subscription("smallhistory:x", rec)
    await client.connect()
    await sub.subscribe()
    await sub.ready()
    async with AsyncClient(server.api_url, API_KEY) as api:
        await api.publish(PublishRequest(channel="smallhistory:x", data={"i": 0}))
        await eventually(lambda: rec.publications)
        await sub.unsubscribe()
        for i in range(1, 6):
            await api.publish(PublishRequest(channel="smallhistory:x", data={"i": i}))
        await sub.subscribe()
        await sub.ready()
        await eventually(lambda: len(rec.subscribed) == 2)
    last = rec.subscribed[-1]
    assert last.was_recovering and not last.recovered
    assert len(rec.publications) == 1, "no partial replay after a gap"
    await client.disconnect()


async def test_restart_changes_epoch_and_client_reconnects(server_process: Callable[..., Process]) -> None:
    """A restart of the in-memory broker changes the epoch: reported as not recovered, never as a gap."""
    proc = server_process()
    events = ClientRecorder()
    client = new_client(proc.ws_url, events, token=token("42"))
    rec = Recorder()
    await client.connect()
    await subscribe_ready(client.new_subscription("ep", rec))
    async with AsyncClient(proc.http_url + "/api", API_KEY) as api:
        await api.publish(PublishRequest(channel="ep", data={"i": 0}))
        await eventually(lambda: rec.publications)
        epoch = rec.subscribed[0].stream_position.epoch

        assert await asyncio.to_thread(proc.stop) == 0
        await eventually(lambda: events.disconnected or len(rec.subscribed) == 1)
        await asyncio.to_thread(proc.start)
        await eventually(lambda: len(rec.subscribed) == 2, timeout=15)
        again = rec.subscribed[-1]
        assert again.was_recovering and not again.recovered
        assert again.stream_position.epoch != epoch
        await api.publish(PublishRequest(channel="ep", data={"i": 1}))
        await eventually(lambda: len(rec.publications) == 2)
    assert rec.publications[-1] == (1, {"i": 1})
    assert "Traceback" not in proc.output()
    await client.disconnect()


async def test_reject_unrecovered_flag_gives_112(server: Running) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(f'{{"id":1,"connect":{{"token":"{token("42")}"}}}}')
        assert '"connect"' in (await ws.receive()).data
        await ws.send_str(
            '{"id":2,"subscribe":{"channel":"smallhistory:g","recover":true,"offset":5,"epoch":"zz","flag":2}}'
        )
        reply = (await ws.receive()).data
        assert '"code":112' in reply


async def test_join_leave_and_presence_seen_by_second_client(server: Running) -> None:
    a = new_client(server.ws_url, token=token("alice"))
    b = new_client(server.ws_url, token=token("bob"))
    rec_a = Recorder()
    sub_a = a.new_subscription("lobby", rec_a)
    await a.connect()
    await sub_a.subscribe()
    await sub_a.ready()
    await b.connect()
    sub_b = b.new_subscription("lobby", Recorder())
    await sub_b.subscribe()
    await sub_b.ready()
    await eventually(lambda: any(j.info.user == "bob" for j in rec_a.joins))
    presence = await sub_a.presence()
    assert {c.user for c in presence.clients.values()} == {"alice", "bob"}
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)
    await b.disconnect()
    await eventually(lambda: any(leave.info.user == "bob" for leave in rec_a.leaves))
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)
    await a.disconnect()


async def test_abrupt_disconnect_removes_presence_and_sends_leave(start_server: object) -> None:
    srv: Running = await start_server()  # type: ignore[operator]
    proxy = await TcpProxy(srv.port).start()
    watcher = new_client(srv.ws_url, token=token("watch"))
    rec = Recorder()
    wsub = watcher.new_subscription("room", rec)
    await watcher.connect()
    await wsub.subscribe()
    await wsub.ready()
    victim = new_client(proxy.ws_url, token=token("victim"), max_reconnect_delay=30, min_reconnect_delay=30)
    await victim.connect()
    await subscribe_ready(victim.new_subscription("room"))
    await eventually(lambda: any(j.info.user == "victim" for j in rec.joins))
    proxy.accepting = False
    proxy.cut()
    await eventually(lambda: any(leave.info.user == "victim" for leave in rec.leaves), timeout=5)
    stats = await wsub.presence_stats()
    assert stats.num_clients == 1
    await victim.disconnect()
    await watcher.disconnect()
    await proxy.close()


async def test_history_pagination(server: Running) -> None:
    client = new_client(server.ws_url, token=token("42"))
    sub = client.new_subscription("pages", Recorder())
    await client.connect()
    await sub.subscribe()
    await sub.ready()
    async with AsyncClient(server.api_url, API_KEY) as api:
        for i in range(10):
            await api.publish(PublishRequest(channel="pages", data={"i": i}))
    first = await sub.history(limit=3)
    assert [p.data["i"] for p in first.publications] == [0, 1, 2]
    nxt = await sub.history(limit=3, since=first.publications[-1].offset and _pos(first))
    assert [p.data["i"] for p in nxt.publications] == [3, 4, 5]
    back = await sub.history(limit=2, reverse=True)
    assert [p.data["i"] for p in back.publications] == [9, 8]
    top = await sub.history(limit=0)
    assert top.offset == 10 and not top.publications
    with __import__("pytest").raises(ReplyError) as err:
        from centrifuge import StreamPosition

        await sub.history(limit=1, since=StreamPosition(offset=1, epoch="wrong"))
    assert err.value.code == 112
    await client.disconnect()


def _pos(result: object) -> object:
    from centrifuge import StreamPosition

    pubs = result.publications  # type: ignore[attr-defined]
    return StreamPosition(offset=pubs[-1].offset, epoch=result.epoch)  # type: ignore[attr-defined]


async def test_many_concurrent_publishers_deliver_everything(server: Running) -> None:
    reader = new_client(server.ws_url, token=token("r"))
    rec = Recorder()
    await reader.connect()
    await subscribe_ready(reader.new_subscription("busy", rec))
    async with AsyncClient(server.api_url, API_KEY) as api:
        await asyncio.gather(*(api.publish(PublishRequest(channel="busy", data={"i": i})) for i in range(200)))
    await eventually(lambda: len(rec.publications) == 200)
    assert offsets(rec) == list(range(1, 201))
    await reader.disconnect()


async def test_server_side_subscription_recovers_through_connect_subs(start_server: object) -> None:
    srv: Running = await start_server()  # type: ignore[operator]
    proxy = await TcpProxy(srv.port).start()
    events = ClientRecorder()
    client = new_client(proxy.ws_url, events, token=token("42", channels=["srv"]))
    try:
        await client.connect()
        await eventually(lambda: any(s.channel == "srv" for s in events.server_subscribed))
        assert events.server_subscribed[0].recoverable
        async with AsyncClient(srv.api_url, API_KEY) as api:
            for i in range(5):
                await api.publish(PublishRequest(channel="srv", data={"i": i}))
            await eventually(lambda: len(events.server_publications) == 5)
            proxy.accepting = False
            proxy.cut()
            for i in range(5, 25):
                await api.publish(PublishRequest(channel="srv", data={"i": i}))
            proxy.accepting = True
            await eventually(lambda: len(events.server_publications) >= 25, timeout=15)
        assert [p.pub.data["i"] for p in events.server_publications] == list(range(25))
        assert len(events.connected) >= 2
        last = events.server_subscribed[-1]
        assert last.channel == "srv" and last.was_recovering and last.recovered
    finally:
        await client.disconnect()
        await proxy.close()
