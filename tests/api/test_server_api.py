"""The server HTTP API through the real ``cent`` client: every method of issues 2 and 3."""

from __future__ import annotations

import time

from cent import (
    AsyncClient,
    BatchRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
)
from cent.dto import StreamPosition

from tests.conftest import API_KEY, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready


async def test_presence_history_and_history_remove(server: Running) -> None:
    client = new_client(server.ws_url, token=token("ann", info={"name": "Ann"}))
    await client.connect()
    await subscribe_ready(client.new_subscription("room", Recorder()))
    async with AsyncClient(server.api_url, API_KEY) as api:
        presence = await api.presence(PresenceRequest(channel="room"))
        (entry,) = presence.presence.values()
        assert entry.user == "ann" and entry.conn_info == {"name": "Ann"}
        stats = await api.presence_stats(PresenceStatsRequest(channel="room"))
        assert (stats.num_clients, stats.num_users) == (1, 1)

        for i in range(5):
            await api.publish(PublishRequest(channel="room", data={"i": i}))
        history = await api.history(HistoryRequest(channel="room", limit=-1))
        assert [p.data["i"] for p in history.publications] == [0, 1, 2, 3, 4]
        assert history.offset == 5 and history.epoch
        since = StreamPosition(offset=3, epoch=history.epoch)
        newer = await api.history(HistoryRequest(channel="room", limit=10, since=since))
        assert [p.offset for p in newer.publications] == [4, 5]

        await api.history_remove(HistoryRemoveRequest(channel="room"))
        emptied = await api.history(HistoryRequest(channel="room", limit=-1))
        assert emptied.publications == [] and emptied.offset == 5, "the stream position survives a history_remove"
    await client.disconnect()


async def test_batch_runs_commands_in_order(server: Running) -> None:
    reader = new_client(server.ws_url, token=token("r"))
    rec = Recorder()
    await reader.connect()
    await subscribe_ready(reader.new_subscription("batched", rec))
    async with AsyncClient(server.api_url, API_KEY) as api:
        result = await api.batch(
            BatchRequest(requests=[PublishRequest(channel="batched", data={"n": n}) for n in range(3)])
        )
        assert len(result.replies) == 3
    await eventually(lambda: len(rec.publications) == 3)
    assert [d["n"] for _, d in rec.publications] == [0, 1, 2]
    await reader.disconnect()


async def test_refresh_extends_and_expired_disconnects(start_server: object) -> None:
    srv: Running = await start_server({"client": {"expired_close_delay": "300ms"}})  # type: ignore[operator]
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, token=token("exp", ttl=2), min_reconnect_delay=30, max_reconnect_delay=30)
    await client.connect()
    await client.ready()
    async with AsyncClient(srv.api_url, API_KEY) as api:
        await api.refresh(RefreshRequest(user="exp", expire_at=int(time.time()) + 60))
        await eventually(
            lambda: (
                srv.server.node.hub.user_connections("exp")[0].expire_at is not None
                and srv.server.node.hub.user_connections("exp")[0].expire_at > time.time() + 30
            )
        )
        await api.refresh(RefreshRequest(user="exp", expired=True))
    await eventually(lambda: any(c.code == 3005 for c in events.connecting))
    await client.disconnect()
