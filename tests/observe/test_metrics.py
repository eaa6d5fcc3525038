"""/metrics after scripted traffic: real centrifuge-python clients and the cent API client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from cent import AsyncClient, CentApiResponseError, Disconnect, DisconnectRequest, InfoRequest, PublishRequest
from centrifuge import Client, ClientState, SubscriptionState

from tests.conftest import API_KEY, Running, eventually, make_settings, token
from trunkline.broker.base import PublishOptions, StreamPosition
from trunkline.broker.memory import MemoryBroker
from trunkline.node import Node
from trunkline.observe.metrics import Metrics, Outbound, quantile

from . import connect, scrape, subscribe, total, value

# distinctive, so a leak into a label value cannot go unnoticed
USERS = ("user-alpha-7731", "user-bravo-7732", "user-charlie-7733")
CHANNELS = ("news", "smallhistory:room-9981", "nohistory:room-9982")
NEWS, SMALL, NOHIST = CHANNELS


async def _connections(running: Running) -> list[Client]:
    return [await connect(running.ws_url, token(user)) for user in USERS]


async def test_metrics_match_scripted_traffic(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    node = running.server.node
    metrics_url = f"{running.http_url}/metrics"

    before = await scrape(metrics_url)
    assert value(before, "trunkline_connections", transport="websocket") == 0
    assert value(before, "trunkline_build_info", version=node.version) == 1

    # 3 connections; 5 subscriptions on 3 channels
    c1, c2, c3 = clients = await _connections(running)
    try:
        _, r1_news = await subscribe(c1, NEWS)
        _, r1_small = await subscribe(c1, SMALL)
        _, r2_news = await subscribe(c2, NEWS)
        _, r2_nohist = await subscribe(c2, NOHIST)
        _, r3_news = await subscribe(c3, NEWS)
        # one refused subscription: unknown namespace (102), not retried by the SDK
        bad = c3.new_subscription("unknownns:x")
        await bad.subscribe()
        await eventually(lambda: bad.state == SubscriptionState.UNSUBSCRIBED)

        # 3 publications through the server API (cent), 2 from clients, 1 refused (103)
        async with AsyncClient(running.api_url, API_KEY) as cent:
            await cent.publish(PublishRequest(channel=NEWS, data={"n": 1}))
            await cent.publish(PublishRequest(channel=NEWS, data={"n": 2}))
            await cent.publish(PublishRequest(channel=SMALL, data={"n": 3}))
        await c1.publish(NEWS, {"n": 4})
        await c2.publish(NOHIST, {"n": 5})
        with pytest.raises(Exception, match=r"103|permission denied"):
            await c3.publish(SMALL, {"n": 6})  # c3 is not subscribed: allow_publish_for_subscriber only

        for received, count in ((r1_news, 3), (r2_news, 3), (r3_news, 3), (r1_small, 1), (r2_nohist, 1)):
            await received.wait_for(count)

        s = await scrape(metrics_url)
        assert value(s, "trunkline_connections", transport="websocket") == 3
        assert value(s, "trunkline_connects_total", transport="websocket") == 3
        assert value(s, "trunkline_users") == 3
        assert value(s, "trunkline_subscriptions") == 5
        assert value(s, "trunkline_channels") == 3

        assert value(s, "trunkline_commands_total", method="connect", code="0") == 3
        assert value(s, "trunkline_commands_total", method="subscribe", code="0") == 5
        assert value(s, "trunkline_commands_total", method="subscribe", code="102") == 1
        assert value(s, "trunkline_commands_total", method="publish", code="0") == 2
        assert value(s, "trunkline_commands_total", method="publish", code="103") == 1
        assert value(s, "trunkline_command_duration_seconds_count", method="subscribe") == 6
        assert value(s, "trunkline_command_duration_seconds_count", method="publish") == 3

        assert value(s, "trunkline_publications_total", namespace="_") == 3
        assert value(s, "trunkline_publications_total", namespace="smallhistory") == 1
        assert value(s, "trunkline_publications_total", namespace="nohistory") == 1
        assert value(s, "trunkline_deliveries_total", namespace="_") == 9  # 3 publications x 3 subscribers
        assert value(s, "trunkline_deliveries_total", namespace="smallhistory") == 1
        assert value(s, "trunkline_deliveries_total", namespace="nohistory") == 1
        assert value(s, "trunkline_fanout_duration_seconds_count", namespace="_") == 3
        assert value(s, "trunkline_broker_duration_seconds_count", op="publish") == 5
        assert total(s, "trunkline_broker_errors_total") == 0

        assert value(s, "trunkline_frames_received_total") >= 3 + 6 + 3  # batched commands share frames
        assert value(s, "trunkline_bytes_received_total") > 0
        assert value(s, "trunkline_outbound_buffered_bytes") >= 0
        assert value(s, "trunkline_slow_consumers_total") == 0
        assert value(s, "process_resident_memory_bytes") > 0

        sessions = node.hub.connections()
        # every byte and frame the writers wrote, and nothing else
        assert value(s, "trunkline_bytes_sent_total") == sum(x.writer.bytes_sent for x in sessions)
        assert value(s, "trunkline_frames_sent_total") == sum(x.writer.frames_sent for x in sessions)
        # at least: 3 connect + 6 subscribe + 3 publish replies, 11 publications
        assert value(s, "trunkline_messages_sent_total") >= 3 + 6 + 3 + 11
        assert value(s, "trunkline_messages_sent_total") >= value(s, "trunkline_frames_sent_total")
        assert 1 <= value(s, "trunkline_publish_to_write_seconds_count") <= 11
        _assert_bounded_labels(s)
    finally:
        for client in clients:
            await client.disconnect()

    # closes: 3 client-initiated (3000) now; then a server API disconnect with a chosen code
    await eventually(lambda: node.hub.num_clients == 0)
    c4 = await connect(running.ws_url, token(USERS[0]))
    try:
        async with AsyncClient(running.api_url, API_KEY) as cent:
            await cent.disconnect(DisconnectRequest(user=USERS[0], disconnect=Disconnect(code=4501, reason="test")))
        await eventually(lambda: c4.state == ClientState.DISCONNECTED)
    finally:
        await c4.disconnect()

    async def closed() -> bool:
        s = await scrape(metrics_url)
        return value(s, "trunkline_connections", transport="websocket") == 0

    await eventually(closed)
    s = await scrape(metrics_url)
    assert value(s, "trunkline_connects_total", transport="websocket") == 4
    assert value(s, "trunkline_disconnects_total", code="3000") == 3
    assert value(s, "trunkline_disconnects_total", code="4501") == 1
    assert value(s, "trunkline_subscriptions") == 0
    assert value(s, "trunkline_channels") == 0
    _assert_bounded_labels(s)


def _assert_bounded_labels(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    for name, labels in samples:
        for label, text in labels:
            assert label not in ("channel", "user", "client"), (name, label)
            for secret in (*CHANNELS, *USERS, API_KEY):
                assert secret not in text, (name, label, text)


async def test_info_api_reports_node_figures(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    clients = [await connect(running.ws_url, token(user)) for user in USERS[:2]]
    try:
        await subscribe(clients[0], NEWS)
        await subscribe(clients[1], NEWS)
        await subscribe(clients[1], NOHIST)
        async with AsyncClient(running.api_url, API_KEY) as cent:
            result = await cent.info(InfoRequest())
        (info,) = result.nodes
        assert info.num_clients == 2
        assert info.num_users == 2
        assert info.num_subs == 3
        assert info.num_channels == 2
        assert info.version == running.server.node.version
        assert info.uptime >= 0
        assert info.name == running.server.node.name
    finally:
        for client in clients:
            await client.disconnect()


async def test_api_errors_do_not_count_as_publications(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    async with AsyncClient(running.api_url, API_KEY) as cent:
        with pytest.raises(CentApiResponseError):
            await cent.publish(PublishRequest(channel="unknownns:x", data={}))
    s = await scrape(f"{running.http_url}/metrics")
    assert total(s, "trunkline_publications_total") == 0
    assert total(s, "trunkline_broker_duration_seconds_count") == 0


async def test_metrics_disabled(start_server: Callable[..., Any]) -> None:
    import aiohttp

    running: Running = await start_server({"prometheus": {"enabled": False}})
    async with aiohttp.ClientSession() as http, http.get(f"{running.http_url}/metrics") as resp:
        assert resp.status == 404


async def test_metrics_on_internal_port_only(start_server: Callable[..., Any]) -> None:
    import aiohttp

    from tests.conftest import free_port

    running: Running = await start_server({"http_server": {"internal_port": free_port()}})
    internal = running.server.internal_port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.http_url}/metrics") as resp:
            assert resp.status == 404
        async with http.get(f"http://127.0.0.1:{internal}/metrics") as resp:
            assert resp.status == 200


# ---------------------------------------------------------------------------- pure parts


def test_quantile_interpolates_like_histogram_quantile() -> None:
    inf = float("inf")
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0, inf: 0}) is None
    # 10 samples in (0, 0.1], 10 in (0.1, 0.2]
    buckets = {0.1: 10, 0.2: 20, inf: 20}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.25, buckets) == pytest.approx(0.05)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    # beyond the last finite bucket: its bound
    assert quantile(0.99, {0.1: 1, inf: 10}) == pytest.approx(0.1)


def test_snapshot_sums_label_sets() -> None:
    m = Metrics()
    m.command("publish", 0, 0.0002)
    m.command("subscribe", 0, 0.003)
    m.command("subscribe", 102, 0.003)
    m.published("chat")
    m.published("")
    m.fanout("chat", 5, 0.0001)
    m.received(100)
    m.outbound.messages += 7
    m.outbound.bytes += 700
    snap = m.snapshot()
    assert snap.commands == 3
    assert snap.publications == {"chat": 1, "_": 1}
    assert snap.deliveries == {"chat": 5}
    assert snap.bytes_in == 100
    assert snap.frames_in == 1
    assert (snap.messages_out, snap.bytes_out) == (7, 700)
    assert snap.command_buckets[float("inf")] == 3
    assert snap.command_buckets[0.00025] == 1


def test_outbound_counters_are_exported() -> None:
    m = Metrics()
    m.outbound.messages += 3
    m.outbound.frames += 2
    m.outbound.bytes += 120
    m.outbound.observe_write(0.0004)
    text = m.exposition().decode()
    assert "trunkline_messages_sent_total 3.0" in text
    assert "trunkline_frames_sent_total 2.0" in text
    assert "trunkline_bytes_sent_total 120.0" in text
    assert "trunkline_publish_to_write_seconds_count 1.0" in text
    Outbound().observe_write(1.0)  # without a histogram: a no-op


def test_write_sampling_is_time_bounded() -> None:
    m = Metrics()
    assert m.sample_write(100.0)
    assert not m.sample_write(100.001)
    assert m.sample_write(100.02)


def test_scrape_time_gauges_read_the_hub() -> None:
    class W:
        buffered = 10

    class C:
        writer = W()

    class H:
        num_subscriptions = 4
        num_channels = 2
        num_users = 1

        def connections(self) -> list[C]:
            return [C(), C()]

    m = Metrics()
    text = m.exposition().decode()
    assert "trunkline_subscriptions 0.0" in text
    m.track_hub(H())
    text = m.exposition().decode()
    assert "trunkline_subscriptions 4.0" in text
    assert "trunkline_channels 2.0" in text
    assert "trunkline_users 1.0" in text
    assert "trunkline_outbound_buffered_bytes 20.0" in text
    assert "trunkline_outbound_buffered_max_bytes 10.0" in text


async def test_two_nodes_in_one_process_do_not_share_metrics(start_server: Callable[..., Any]) -> None:
    a: Running = await start_server()
    b: Running = await start_server()
    client = await connect(a.ws_url, token("u"))
    try:
        await asyncio.sleep(0.05)
        sa = await scrape(f"{a.http_url}/metrics")
        sb = await scrape(f"{b.http_url}/metrics")
        assert value(sa, "trunkline_connections", transport="websocket") == 1
        assert value(sb, "trunkline_connections", transport="websocket") == 0
    finally:
        await client.disconnect()


def test_histogram_vec_exposition_matches_prometheus_client() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from trunkline.observe.metrics import LATENCY_BUCKETS, CounterVec, HistogramVec

    reference = CollectorRegistry()
    hist = Histogram("x_seconds", "doc", ["m"], buckets=LATENCY_BUCKETS, registry=reference)
    vec = HistogramVec("x_seconds", "doc", ["m"])
    counter = CounterVec("x_ops", "doc", ["m", "code"])
    for seconds in (0.0, 0.0001, 0.00011, 0.001, 0.5, 2.5, 3.0):  # on, between and beyond bounds
        hist.labels("a").observe(seconds)
        vec.observe(("a",), seconds)
    counter.inc(("a", 0))
    counter.inc(("a", 0), 2)

    class Vec:
        def collect(self) -> Any:
            yield vec.family()
            yield counter.family()

    mine = CollectorRegistry()
    mine.register(Vec())
    expected = [line for line in generate_latest(reference).decode().splitlines() if "_created" not in line]
    lines = generate_latest(mine).decode().splitlines()
    assert lines[: len(expected)] == expected
    assert 'x_ops_total{code="0",m="a"} 3.0' in lines
    assert vec.count("a") == 7
    assert vec.cumulative()[0.0001] == 2  # le: 0.0 and 0.0001


async def test_broker_timer_counts_errors_not_cancellations() -> None:
    m = Metrics()
    with m.broker_timer("history"):
        pass
    with pytest.raises(ConnectionError), m.broker_timer("history"):
        raise ConnectionError("down")
    with pytest.raises(asyncio.CancelledError), m.broker_timer("history"):
        raise asyncio.CancelledError
    assert m.broker_seconds.count("history") == 2
    assert m.broker_errors.get("history") == 1


class FailingPublishBroker(MemoryBroker):
    """A memory broker whose publish fails, as a broker that lost its connection would."""

    async def publish(self, channel: str, data: bytes, options: PublishOptions) -> StreamPosition | None:
        raise ConnectionError("broker down")


async def test_broker_errors_are_counted(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(node=Node(make_settings(), broker=FailingPublishBroker()))
    async with AsyncClient(running.api_url, API_KEY) as cent:
        with pytest.raises(CentApiResponseError):
            await cent.publish(PublishRequest(channel=NEWS, data={"n": 1}))
    s = await scrape(f"{running.http_url}/metrics")
    assert value(s, "trunkline_broker_errors_total", op="publish") == 1
    assert value(s, "trunkline_broker_duration_seconds_count", op="publish") == 1
    assert total(s, "trunkline_publications_total") == 0


async def test_broker_operations_are_timed(start_server: Callable[..., Any]) -> None:
    from cent import PresenceRequest

    running: Running = await start_server()
    client = await connect(running.ws_url, token(USERS[0]))
    try:
        await subscribe(client, NEWS)
        await client.history(NEWS, limit=10)
        async with AsyncClient(running.api_url, API_KEY) as cent:
            await cent.presence(PresenceRequest(channel=NEWS))
            await cent.disconnect(DisconnectRequest(user="nobody"))
    finally:
        await client.disconnect()
    s = await scrape(f"{running.http_url}/metrics")
    assert value(s, "trunkline_broker_duration_seconds_count", op="presence") == 1
    assert value(s, "trunkline_broker_duration_seconds_count", op="history") >= 1  # + the subscribe's own read
    assert value(s, "trunkline_broker_duration_seconds_count", op="control") == 1
    assert total(s, "trunkline_broker_errors_total") == 0
