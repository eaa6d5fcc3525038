"""A slow, a failing and a garbage-answering backend: documented codes, one log line each, others served."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from centrifuge import ReplyError

from tests.conftest import Running, eventually
from tests.proxy.conftest import Backend, proxy_config
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready

ALICE = {"Cookie": "sid=alice-sid"}


@pytest.fixture
async def proxied(start_server: Callable[..., Any], backend: Backend) -> Running:
    running: Running = await start_server(proxy_config(backend.url))
    return running


@pytest.mark.parametrize(("method", "proxy", "kind"), [("slow:x", "slow", "timeout"), ("fail:x", "fail", "status")])
async def test_rpc_to_a_bad_backend_is_error_100_temporary(
    proxied: Running, caplog: pytest.LogCaptureFixture, method: str, proxy: str, kind: str
) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    with caplog.at_level(logging.WARNING, logger="trunkline.proxy"), pytest.raises(ReplyError) as failed:
        await client.rpc(method, {})
    assert (failed.value.code, failed.value.message, failed.value.temporary) == (100, "internal server error", True)
    lines = [r.getMessage() for r in caplog.records if r.name == "trunkline.proxy"]
    assert len(lines) == 1 and f"'{proxy}'" in lines[0] and kind in lines[0], lines
    counted = proxied.server.node.metrics.proxy_requests.labels(proxy, "rpc", kind)._value.get()
    assert counted == 1
    assert (await client.rpc("sum", {"a": 1, "b": 2})).data == {"sum": 3}  # the connection is fine
    await client.disconnect()


async def test_publish_to_garbage_backend_is_error_100(proxied: Running) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("chat:g", rec))
    with pytest.raises(ReplyError) as failed:
        await client.publish("garbage:g", {"text": "x"})  # the publish proxy answers HTML
    assert (failed.value.code, failed.value.temporary) == (100, True)
    await sub.publish({"text": "still"})  # other namespaces keep working
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"text": "STILL", "by": "alice"}
    await client.disconnect()


async def test_subscribe_to_failing_backend_retries_and_never_subscribes(proxied: Running, backend: Backend) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    rec = Recorder()
    sub = client.new_subscription("fail:room", rec)
    await sub.subscribe()
    # error 100 is temporary: the SDK asks again (the backend sees more than one subscribe)
    await eventually(
        lambda: len([r for r in backend.requests("/fail") if r["body"].get("channel") == "fail:room"]) >= 2
    )
    assert not rec.subscribed and not rec.unsubscribed
    await sub.unsubscribe()
    await client.disconnect()


async def test_slow_backend_does_not_stall_other_clients(proxied: Running) -> None:
    """Clients stuck on the slow proxy (and over its bound of 4) do not keep the others from answers."""
    slow_clients = [new_client(proxied.ws_url, headers=ALICE) for _ in range(6)]
    fast = new_client(proxied.ws_url, headers=ALICE)
    for c in (*slow_clients, fast):
        await c.connect()
    stuck = [asyncio.ensure_future(c.rpc("slow:wait", {})) for c in slow_clients]
    await eventually(lambda: proxied.server.node.metrics.proxy_requests_in_flight.labels("slow")._value.get() == 4)
    answers = await asyncio.gather(*(fast.rpc("sum", {"a": i, "b": 1}) for i in range(1)))
    assert answers[0].data == {"sum": 1}
    results = await asyncio.gather(*stuck, return_exceptions=True)
    assert all(isinstance(r, ReplyError) and r.code == 100 for r in results), results
    overloaded = proxied.server.node.metrics.proxy_requests.labels("slow", "rpc", "overloaded")._value.get()
    assert overloaded == 2  # over max_concurrent_requests: refused at once, not queued
    for c in (*slow_clients, fast):
        await c.disconnect()


async def test_connect_to_an_unreachable_backend_is_100_and_sdk_retries(
    start_server: Callable[..., Any], backend: Backend
) -> None:
    config = proxy_config("http://127.0.0.1:9")  # nothing listens: connection refused
    running: Running = await start_server(config)
    events = ClientRecorder()
    client = new_client(running.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(
        lambda: running.server.node.metrics.proxy_requests.labels("default", "connect", "unavailable")._value.get() >= 2
    )
    assert not events.connected  # error 100 is temporary: the SDK reconnects with backoff
    await client.disconnect()
