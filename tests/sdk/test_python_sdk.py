"""Issue 2 proof with the real SDKs: centrifuge-python talks to Trunkline, cent drives the server API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import jwt
import pytest
from cent import (
    AsyncClient,
    BroadcastRequest,
    CentApiResponseError,
    CentUnauthorizedError,
    ChannelsRequest,
    InfoRequest,
    PublishRequest,
)
from centrifuge import PublicationContext, ReplyError

from tests.conftest import API_KEY, SECRET, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready


def gentoken(user: str, config_path: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "trunkline", "gentoken", "--user", user, "--ttl", "600", "--config", config_path],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


async def test_connect_subscribe_receive_api_publication_and_publish(server: Running, tmp_path: object) -> None:
    config = tmp_path / "c.toml"  # type: ignore[operator]
    config.write_text(f'[client.token]\nhmac_secret_key = "{SECRET}"\n')
    tok = gentoken("42", str(config))
    assert jwt.decode(tok, SECRET, algorithms=["HS256"])["sub"] == "42"

    events = ClientRecorder()
    client = new_client(server.ws_url, events, token=tok)
    rec = Recorder()
    sub = client.new_subscription("news", rec)
    await client.connect()
    await sub.subscribe()
    await sub.ready()
    await eventually(lambda: rec.subscribed)
    assert events.connected[0].client and events.connected[0].version

    async with AsyncClient(server.api_url, API_KEY) as api:
        result = await api.publish(PublishRequest(channel="news", data={"text": "from api"}))
        assert result.offset == 1 and result.epoch
        await eventually(lambda: rec.publications)
        assert rec.publications[0] == (1, {"text": "from api"})

        await sub.publish({"text": "from client"})
        await eventually(lambda: len(rec.publications) == 2)
        assert rec.publications[1] == (2, {"text": "from client"})

        channels = await api.channels(ChannelsRequest())
        assert channels.channels["news"].num_clients == 1
        info = await api.info(InfoRequest())
        assert info.nodes[0].num_clients == 1 and info.nodes[0].version
    await client.disconnect()


class InfoRecorder(Recorder):
    """Also keeps each publication's ClientInfo."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[Any] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.infos.append(ctx.pub.info)
        await super().on_publication(ctx)


async def test_client_publication_carries_info(server: Running) -> None:
    publisher = new_client(server.ws_url, token=token("7", info={"name": "Ann"}))
    reader = new_client(server.ws_url, token=token("8"))
    rec = InfoRecorder()
    await reader.connect()
    await subscribe_ready(reader.new_subscription("room", rec))
    await publisher.connect()
    psub = publisher.new_subscription("room")
    await psub.subscribe()
    await psub.ready()
    await psub.publish({"t": 1})
    await eventually(lambda: rec.infos)
    info = rec.infos[0]
    assert info.user == "7" and info.conn_info == {"name": "Ann"} and info.client
    assert rec.publications[0][1] == {"t": 1}
    await publisher.disconnect()
    await reader.disconnect()


async def test_bad_token_disconnects_with_3500(server: Running) -> None:
    events = ClientRecorder()
    client = new_client(server.ws_url, events, token=token("42", secret="not-the-secret"))
    await client.connect()
    await eventually(lambda: events.disconnected)
    assert events.disconnected[-1].code == 3500
    await client.disconnect()


async def test_expired_token_gives_109_and_client_refreshes(server: Running) -> None:
    calls: list[str] = []

    async def get_token() -> str:
        calls.append("x")
        return token("42")

    events = ClientRecorder()
    client = new_client(server.ws_url, events, token=token("42", ttl=-60), get_token=get_token)
    await client.connect()
    await eventually(lambda: events.connected)
    assert calls, "109 must make the SDK fetch a fresh token"
    await client.disconnect()


async def test_unknown_channel_and_permission_errors(server: Running) -> None:
    client = new_client(server.ws_url, token=token("42"))
    await client.connect()
    rec = Recorder()
    sub = client.new_subscription("nosuchns:room", rec)
    await sub.subscribe()
    await eventually(lambda: rec.unsubscribed)
    assert rec.unsubscribed[0].code == 102

    private = Recorder()
    await client.new_subscription("$secret", private).subscribe()
    await eventually(lambda: private.unsubscribed)
    assert private.unsubscribed[0].code == 103

    nohistory = await subscribe_ready(client.new_subscription("nohistory:x"))
    with pytest.raises(ReplyError) as err:
        await nohistory.history(limit=10)
    assert err.value.code == 108
    await client.disconnect()


async def test_server_api_errors_and_auth(server: Running) -> None:
    async with AsyncClient(server.api_url, "wrong-key") as bad:
        with pytest.raises(CentUnauthorizedError):
            await bad.publish(PublishRequest(channel="news", data={}))
    async with AsyncClient(server.api_url, API_KEY) as api:
        with pytest.raises(CentApiResponseError) as err:
            await api.publish(PublishRequest(channel="nosuchns:x", data={}))
        assert err.value.code == 102
        result = await api.broadcast(BroadcastRequest(channels=["a", "nosuchns:b"], data={"x": 1}))
        assert result.responses[0].error is None and result.responses[1].error is not None
        assert result.responses[1].error.code == 102


async def test_malformed_api_body_is_400_json(server: Running) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{server.api_url}/publish", data=b"{not json", headers={"X-API-Key": API_KEY})
        assert r.status == 400
        assert (await r.json())["error"]["code"] == 107
        r = await http.post(f"{server.api_url}/nosuchmethod", json={}, headers={"X-API-Key": API_KEY})
        assert r.status == 404
        r = await http.post(
            server.api_url,
            data=b'{"method":"publish","params":{"channel":"news","data":{"x":1}}}',
            headers={"Authorization": f"apikey {API_KEY}"},
        )
        assert r.status == 200
        assert (await r.json())["result"]["offset"] >= 1


async def test_many_clients_fan_out(server: Running) -> None:
    clients = [new_client(server.ws_url, token=token(str(i))) for i in range(20)]
    recs = [Recorder() for _ in clients]
    for c, r in zip(clients, recs, strict=True):
        await c.connect()
        await subscribe_ready(c.new_subscription("fan", r))
    async with AsyncClient(server.api_url, API_KEY) as api:
        for i in range(50):
            await api.publish(PublishRequest(channel="fan", data={"i": i}))
    await eventually(lambda: all(len(r.publications) == 50 for r in recs))
    for r in recs:
        assert [d["i"] for _, d in r.publications] == list(range(50))
    await asyncio.gather(*(c.disconnect() for c in clients))
