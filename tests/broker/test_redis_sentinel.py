"""Issue 19 item 2: Trunkline on Redis Sentinel (one master, one replica, three sentinels).

``engine.redis.sentinel_address`` / ``sentinel_master_name`` / ``sentinel_user`` /
``sentinel_password``: the master is found through the sentinels (which require a
password here); killing it with SIGKILL makes the sentinels promote the replica
(down-after-milliseconds 1000, failover-timeout 3000) and Trunkline follows it; no
acknowledged publication is lost without the subscriber being told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cent import AsyncClient, CentApiResponseError, CentTransportError, HistoryRequest, PublishRequest

from tests.conftest import API_KEY, Running, eventually, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client
from trunkline.broker.redis import RedisBroker, RedisUnavailable
from trunkline.broker.redis_topology import make_redis_engine
from trunkline.config import RedisSettings

from .conftest import Recorder as BrokerRecorder
from .redis_procs import SentinelDeployment, command

pytestmark = pytest.mark.redis

PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(Path(tmp_path_factory.mktemp("sentinel")), sentinel_password=PASSWORD)
    try:
        yield deployment
    finally:
        deployment.stop()


def engine(sentinel: SentinelDeployment, prefix: str, **extra: Any) -> dict[str, Any]:
    redis = {
        "sentinel_address": [",".join(sentinel.addresses)],  # one entry: one master's sentinels
        "sentinel_master_name": sentinel.MASTER,
        "sentinel_user": "default",
        "sentinel_password": PASSWORD,
        "prefix": prefix,
        **extra,
    }
    return {"engine": {"type": "redis", "redis": redis}}


@pytest.mark.parametrize(
    ("user", "password"), [pytest.param("default", "wrong", id="wrong-password"), pytest.param("nobody", PASSWORD)]
)
async def test_sentinel_user_and_sentinel_password_are_what_the_sentinels_check(
    sentinel: SentinelDeployment, prefix: str, user: str, password: str
) -> None:
    good = RedisSettings(
        sentinel_address=(",".join(sentinel.addresses),),
        sentinel_master_name=sentinel.MASTER,
        sentinel_user="default",
        sentinel_password=PASSWORD,
        prefix=prefix,
        connect_timeout=0.5,
        io_timeout=0.5,
    )
    broker, _ = make_redis_engine(good)
    assert isinstance(broker, RedisBroker)
    await broker.start(BrokerRecorder())
    await broker.ping()
    await broker.close()

    bad = RedisSettings(
        sentinel_address=good.sentinel_address,
        sentinel_master_name=sentinel.MASTER,
        sentinel_user=user,
        sentinel_password=password,
        prefix=prefix,
        connect_timeout=0.5,
        io_timeout=0.5,
    )
    broker, _ = make_redis_engine(bad)
    with pytest.raises(RedisUnavailable):
        await broker.start(BrokerRecorder())
    await broker.close()


async def test_trunkline_follows_the_master_through_a_failover_and_loses_nothing_silently(
    sentinel: SentinelDeployment, prefix: str, start_server: Any
) -> None:
    old_master = sentinel.master_port()
    replica = next(s.port for s in sentinel.servers if s.port != old_master)
    server: Running = await start_server(engine(sentinel, prefix))
    events = ClientRecorder()
    client = new_client(server.ws_url, events, token=token("42"))
    rec = Recorder()
    sub = client.new_subscription("sentinel-stream", rec)
    acked: list[int] = []
    try:
        await client.connect()
        await sub.subscribe()
        await sub.ready()
        async with AsyncClient(server.api_url, API_KEY, timeout=5.0) as api:
            for i in range(20):
                await api.publish(PublishRequest(channel="sentinel-stream", data={"i": i}))
                acked.append(i)
            await eventually(lambda: len(rec.publications) == 20)
            assert command(old_master, "WAIT", "1", "2000") == "1", "the replica has every write so far"

            killed_at = time.monotonic()
            sentinel.proc(old_master).kill()
            i, refused = 20, 0
            while i < 40:
                assert time.monotonic() - killed_at < 20, "Trunkline never published again after the failover"
                try:
                    await api.publish(PublishRequest(channel="sentinel-stream", data={"i": i}))
                except (CentApiResponseError, CentTransportError):
                    refused += 1  # refused while there is no master: the caller knows, nothing is acked
                    await asyncio.sleep(0.1)
                    continue
                if i == 20:
                    back_after = time.monotonic() - killed_at
                acked.append(i)
                i += 1
            await eventually(lambda: _told_or_complete(rec, acked), timeout=20)
        assert sentinel.master_port() == replica, "the sentinels promoted the replica"
        assert refused > 0, "publishing was refused while the master was down, not silently dropped"
        # sentinel: down-after 1 s + election; Trunkline asks the sentinels on its next connection
        assert back_after < 10, f"Trunkline followed the new master after {back_after:.1f}s"
        data = [d["i"] for _, d in rec.publications]
        assert data == sorted(set(data)), "never a duplicate or a reordering"
        async with AsyncClient(server.api_url, API_KEY) as api:
            history = await api.history(HistoryRequest(channel="sentinel-stream", limit=100))
        assert [p.data["i"] for p in history.publications] == acked, "the new master has every acked one"
    finally:
        await client.disconnect()


def _told_or_complete(rec: Recorder, acked: list[int]) -> bool:
    received = {d["i"] for _, d in rec.publications}
    if set(acked) <= received:
        return True
    return any(ctx.was_recovering and not ctx.recovered for ctx in rec.subscribed[1:])
