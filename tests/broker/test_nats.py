"""The NATS broker on a real nats-server: two nodes, fan-out, 108 without a history store, Redis history beside it.

The broker contract suite (tests/broker/test_contract.py) runs here against NATS:
the fan-out checks with NATS alone, everything but the Redis key-layout checks
with a Redis history store. The rest drives two in-process Trunkline servers on
one nats-server with centrifuge-python clients and raw WebSocket frames.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cent import AsyncClient, HistoryRequest, PublishRequest
from centrifuge import ReplyError
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running, eventually, token
from tests.sdk.helpers import Recorder as SdkRecorder
from tests.sdk.helpers import new_client, subscribe_ready
from trunkline import errors as E
from trunkline.broker.base import HistoryQuery, Publication, PublishOptions
from trunkline.broker.nats import NatsBroker, NatsUnavailable, NoPresence, RedisHistoryStore, channel_subject
from trunkline.broker.redis import RedisPresence
from trunkline.config import settings_from_mapping
from trunkline.errors import ConfigError

from . import test_contract as contract
from .conftest import Recorder, delete_keys
from .procs import came_up, free_port, stop_process
from .test_contract import (  # noqa: F401 - collected here, run against NATS by the env fixture below
    Env,
    test_a_repeated_idempotency_key_publishes_once,
    test_an_idempotency_key_with_ttl_zero_is_not_remembered,
    test_an_offset_past_int64_gets_an_answer_never_an_error,
    test_channels_have_their_own_streams,
    test_every_field_of_a_record_survives_the_broker,
    test_history_is_trimmed_to_its_size,
    test_history_query,
    test_history_size_or_ttl_zero_means_no_history,
    test_idempotency_keys_do_not_collide_across_channels,
    test_idempotency_without_history,
    test_join_leave_and_control_are_delivered,
    test_offsets_grow_by_one_within_one_epoch,
    test_presence_add_again_replaces_the_entry,
    test_presence_add_remove_and_stats,
    test_presence_keeps_bytes_and_names_intact,
    test_publications_arrive_in_offset_order,
    test_publications_joins_and_leaves_of_a_channel_stay_in_order,
    test_publish_without_history_has_no_offset,
    test_subscribe_and_unsubscribe_are_idempotent_per_call,
    test_the_stream_position_is_set_on_the_delivered_and_stored_records,
    test_unicode_channel_names,
    test_unknown_channel_gets_a_stable_epoch,
)

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
)

# Contract tests that need neither history nor presence: they run with NATS alone too.
FAN_OUT_ONLY = {
    "test_join_leave_and_control_are_delivered",
    "test_subscribe_and_unsubscribe_are_idempotent_per_call",
}
HISTORY = PublishOptions(history_size=100, history_ttl=60.0)


class NatsServer:
    """One nats-server process on 127.0.0.1 (no JetStream), stopped by its PID."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert NATS_SERVER is not None and self.process is None
        self.process = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not came_up(self.process, self._answers):
            self.stop()
            raise RuntimeError(f"nats-server did not start on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                return sock.recv(5) == b"INFO "
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (make system-deps)")
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the broker contract, against NATS ----------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The contract tests run with NATS alone where they need no history or presence, all with Redis beside it."""
    if "env" not in metafunc.fixturenames:
        return
    kinds: list[Any] = [pytest.param("nats+redis", marks=pytest.mark.redis)]
    if metafunc.function.__name__ in FAN_OUT_ONLY:
        kinds.insert(0, "nats")
    metafunc.parametrize("env", kinds, indirect=True)


@pytest.fixture
async def env(request: pytest.FixtureRequest, nats_server: NatsServer, prefix: str) -> AsyncIterator[Env]:
    events = Recorder()
    if request.param == "nats":
        broker = NatsBroker(nats_server.url, prefix=prefix)
        await broker.start(events)
        try:
            yield Env("nats", broker, NoPresence(), events, prefix=prefix)
        finally:
            await broker.close()
        return
    store = RedisHistoryStore(request.getfixturevalue("redis_url"), prefix=prefix, io_timeout=2.0)
    broker = NatsBroker(nats_server.url, prefix=prefix, history=store)
    await broker.start(events)
    try:
        presence = RedisPresence.from_client(store.client, prefix=prefix)
        yield Env("nats+redis", broker, presence, events, prefix=prefix)
    finally:
        await delete_keys(store.client, prefix)
        await broker.close()


def test_the_contract_tests_imported_here_exist() -> None:
    """A renamed contract test must not silently drop out of the NATS run."""
    for name in FAN_OUT_ONLY:
        assert callable(getattr(contract, name))


# --- two nodes on one nats-server, broker level --------------------------------------------


async def _node(url: str, prefix: str, **kwargs: Any) -> tuple[NatsBroker, Recorder]:
    events = Recorder()
    broker = NatsBroker(url, prefix=prefix, **kwargs)
    await broker.start(events)
    return broker, events


async def test_publications_joins_leaves_and_control_cross_between_two_nodes(nats_server: NatsServer) -> None:
    a, a_events = await _node(nats_server.url, "t1")
    b, b_events = await _node(nats_server.url, "t1")
    try:
        await b.subscribe("news")
        await a.publish("news", Publication(data=b'{"n":1}'), PublishOptions())
        await a.publish_join("news", b"join-info")
        await a.publish_leave("news", b"leave-info")
        await a.publish_control(b"ctl")
        assert await b_events.wait(3, channel="news") == [
            ("pub", "news", Publication(data=b'{"n":1}')),
            ("join", "news", b"join-info"),
            ("leave", "news", b"leave-info"),
        ]
        await b_events.wait(1, "control")
        await a_events.wait(1, "control")  # control reaches every node, the sender included
        assert a_events.of("pub") == [], "a is not subscribed to news"
    finally:
        await a.close()
        await b.close()


async def test_another_prefix_is_another_installation(nats_server: NatsServer) -> None:
    a, _ = await _node(nats_server.url, "one")
    b, b_events = await _node(nats_server.url, "two")
    try:
        await b.subscribe("c")
        await a.publish("c", Publication(data=b"x"), PublishOptions())
        await b.publish("c", Publication(data=b"y"), PublishOptions())
        assert await b_events.wait_publications(1, "c") == [Publication(data=b"y")]
        await b.publish_control(b"barrier")
        await b_events.wait(1, "control")
        assert b_events.publications("c") == [Publication(data=b"y")]
    finally:
        await a.close()
        await b.close()


async def test_history_and_presence_answer_108_with_nats_alone(nats_server: NatsServer) -> None:
    broker, _ = await _node(nats_server.url, "t108")
    presence = NoPresence()
    try:
        for call in (
            broker.history("c", HistoryQuery()),
            broker.history("c", HistoryQuery(limit=0)),
            broker.remove_history("c"),
            presence.presence("c"),
            presence.presence_stats("c"),
        ):
            with pytest.raises(E.ClientError) as err:
                await call
            assert (err.value.code, err.value.message) == (108, "not available")
        # History options change nothing: the publication crosses without a position.
        await broker.subscribe("c")
        assert await broker.publish("c", Publication(data=b"1"), HISTORY) is None
        await presence.add_presence("c", "client", "user", b"info", 60.0)  # kept nowhere, refused on read
    finally:
        await broker.close()


@pytest.mark.parametrize(
    "channel", ["chat:комната#42", "with space", "a..b", "trailing.", ".leading", "wild*", "gt>", "tab\tx", "x" * 255]
)
async def test_channels_that_are_not_nats_subjects_still_cross(nats_server: NatsServer, channel: str) -> None:
    a, _ = await _node(nats_server.url, "odd")
    b, b_events = await _node(nats_server.url, "odd")
    try:
        await b.subscribe(channel)
        await b.subscribe("wild")  # "wild*" must not reach "wild", nor "gt>" anything else
        await a.publish(channel, Publication(data=b"1"), PublishOptions())
        assert await b_events.wait_publications(1, channel) == [Publication(data=b"1")]
        await a.publish_control(b"barrier")
        await b_events.wait(1, "control")
        assert b_events.publications("wild") == []
    finally:
        await a.close()
        await b.close()


@given(st.text(min_size=1, max_size=300))
def test_every_channel_name_maps_to_a_valid_subject_of_its_own(channel: str) -> None:
    subject = channel_subject("p", channel)
    tokens = subject.split(".")
    assert all(tokens), subject
    assert not any(c.isspace() for c in subject)
    assert "*" not in subject and ">" not in subject
    assert subject.startswith(("p.client.", "p.xclient."))
    other = channel + "x"
    assert channel_subject("p", other) != subject


async def test_pattern_subscriptions_get_every_channel_with_the_prefix(nats_server: NatsServer) -> None:
    a, _ = await _node(nats_server.url, "pat")
    b, b_events = await _node(nats_server.url, "pat")
    got: list[tuple[str, bytes]] = []
    b_events.handle_pattern_publication = lambda channel, pub: got.append((channel, pub.data))  # type: ignore[method-assign]
    try:
        await b.psubscribe("mqtt:")
        for channel in ("mqtt:a/b", "mqtt:x y", "other", "mqtt"):
            await a.publish(channel, Publication(data=channel.encode()), PublishOptions())
        await a.publish_join("mqtt:a/b", b"joins are not fed to patterns")
        await eventually(lambda: len(got) >= 2)
        await a.publish_control(b"barrier")
        await b_events.wait(1, "control")
        assert sorted(got) == [("mqtt:a/b", b"mqtt:a/b"), ("mqtt:x y", b"mqtt:x y")]
        await b.punsubscribe("mqtt:")
        await a.publish("mqtt:late", Publication(data=b"late"), PublishOptions())
        await a.publish_control(b"barrier")
        await b_events.wait(2, "control")
        assert ("mqtt:late", b"late") not in got
    finally:
        await a.close()
        await b.close()


async def test_undecodable_messages_on_a_channel_subject_are_dropped(nats_server: NatsServer) -> None:
    import nats

    b, b_events = await _node(nats_server.url, "junk")
    raw = await nats.connect(nats_server.url)
    try:
        await b.subscribe("c")
        await raw.publish("junk.client.c", b"\xffnot msgpack")
        await raw.publish("junk.client.c", b"\x93\xa1p\xa1c")  # an envelope of the wrong shape
        await raw.flush()
        await b.publish("c", Publication(data=b"ok"), PublishOptions())
        assert await b_events.wait_publications(1, "c") == [Publication(data=b"ok")]
        assert len(b_events.events) == 1
    finally:
        await raw.close()
        await b.close()


async def test_no_nats_server_fails_start_within_the_dial_timeout() -> None:
    broker = NatsBroker(f"nats://127.0.0.1:{free_port()}", dial_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(NatsUnavailable, match="cannot connect to NATS"):
        await broker.start(Recorder())
    assert time.monotonic() - started < 5
    await broker.close()


async def test_a_nats_restart_is_a_resync_and_publishing_meanwhile_fails_clearly(nats_server: NatsServer) -> None:
    a, a_events = await _node(nats_server.url, "restart")
    b, b_events = await _node(nats_server.url, "restart")
    try:
        await b.subscribe("c")
        nats_server.stop()
        await eventually(lambda: not a._connection().is_connected, timeout=5)
        with pytest.raises(NatsUnavailable, match="nothing was published"):
            await a.publish("c", Publication(data=b"lost"), PublishOptions())
        with pytest.raises(NatsUnavailable):
            await a.ping()
        nats_server.start()
        await b_events.wait(1, "resync", timeout=10)
        await a_events.wait(1, "resync", timeout=10)
        await a.ping()
        await a.publish("c", Publication(data=b"after"), PublishOptions())
        # The subscription came back with the connection.
        assert await b_events.wait_publications(1, "c", timeout=5) == [Publication(data=b"after")]
    finally:
        await a.close()
        await b.close()


# --- configuration -----------------------------------------------------------------------


def test_config_accepts_nats_and_rejects_bad_values() -> None:
    s = settings_from_mapping({"engine": {"type": "nats", "nats": {"url": "nats://10.0.0.1:4222", "history": "redis"}}})
    assert (s.engine.type, s.engine.nats.url, s.engine.nats.history, s.engine.nats.prefix) == (
        "nats",
        "nats://10.0.0.1:4222",
        "redis",
        "trunkline",
    )
    for bad, key in (
        ({"url": "http://x"}, "engine.nats.url"),
        ({"prefix": "a..b"}, "engine.nats.prefix"),
        ({"prefix": "a*"}, "engine.nats.prefix"),
        ({"history": "memory"}, "engine.nats.history"),
        ({"dial_timeout": "0s"}, "engine.nats.dial_timeout"),
    ):
        with pytest.raises(ConfigError) as err:
            settings_from_mapping({"engine": {"type": "nats", "nats": bad}})
        assert err.value.key == key, bad


# --- two Trunkline servers on one nats-server, real SDK clients -----------------------------


NAMESPACES = {
    "channel": {
        "namespaces": [
            {
                "name": "live",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "allow_history_for_subscriber": True,
                "join_leave": True,
                "force_push_join_leave": True,
                "presence": True,
            },
            {
                "name": "kept",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "presence": True,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": True,
            },
        ]
    }
}


def _engine(nats_url: str, prefix: str, redis_url: str | None = None) -> dict[str, Any]:
    nats_conf: dict[str, Any] = {"url": nats_url, "prefix": prefix}
    engine: dict[str, Any] = {"type": "nats", "nats": nats_conf}
    if redis_url is not None:
        nats_conf["history"] = "redis"
        engine["redis"] = {"address": redis_url, "prefix": prefix}
    return {"engine": engine, **NAMESPACES}


async def _raw_reply(ws_url: str, command: dict[str, Any]) -> dict[str, Any]:
    """Connect over a raw WebSocket, send ``command`` (id 2) and return its reply."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("raw")}}))
        assert "connect" in json.loads(await ws.receive_str(timeout=5))
        await ws.send_str(json.dumps({"id": 2, **command}))
        async with asyncio.timeout(5):
            while True:
                for line in (await ws.receive_str()).splitlines():
                    reply: dict[str, Any] = json.loads(line)
                    if reply.get("id") == 2:
                        return reply


async def test_two_nodes_on_nats_alone(nats_server: NatsServer, start_server: Callable[..., Any], prefix: str) -> None:
    one: Running = await start_server(_engine(nats_server.url, prefix))
    two: Running = await start_server(_engine(nats_server.url, prefix))
    alice = new_client(one.ws_url, token=token("alice"))
    bob = new_client(two.ws_url, token=token("bob"))
    rec_alice, rec_bob = SdkRecorder(), SdkRecorder()
    try:
        await alice.connect()
        await bob.connect()
        sub_alice = await subscribe_ready(alice.new_subscription("live:room", rec_alice))
        sub_bob = await subscribe_ready(bob.new_subscription("live:room", rec_bob))
        # Joins cross: alice (node one) sees bob (node two) join.
        await eventually(lambda: any(j.info.user == "bob" for j in rec_alice.joins))
        # Publications cross both ways, from a client and from the server API.
        await sub_alice.publish({"from": "alice"})
        await sub_bob.publish({"from": "bob"})
        async with AsyncClient(two.http_url + "/api", API_KEY) as api:
            result = await api.publish(PublishRequest(channel="live:room", data={"from": "api"}))
            assert result.offset in (None, 0), "no stream position without a history store"
            with pytest.raises(Exception, match=r"108|not available"):
                await api.history(HistoryRequest(channel="kept:x", limit=10))
        for rec in (rec_alice, rec_bob):
            await eventually(lambda rec=rec: len(rec.publications) >= 3)
            assert sorted(d["from"] for _, d in rec.publications) == ["alice", "api", "bob"]
            assert {offset for offset, _ in rec.publications} == {0}
        # History and presence: 108, honestly.
        for call in (sub_alice.history(limit=10), sub_alice.presence(), sub_alice.presence_stats()):
            with pytest.raises(ReplyError) as err:
                await call
            assert err.value.code == 108
        # A recoverable subscribe needs the stream's position: 108, as Centrifugo answers.
        reply = await _raw_reply(one.ws_url, {"subscribe": {"channel": "kept:x"}})
        assert reply["error"]["code"] == 108, reply
        await bob.disconnect()
        await eventually(lambda: any(leave.info.user == "bob" for leave in rec_alice.leaves))
        assert sub_bob is not None
    finally:
        await alice.disconnect()
        await bob.disconnect()


@pytest.mark.redis
async def test_two_nodes_on_nats_with_a_redis_history_store(
    nats_server: NatsServer, start_server: Callable[..., Any], redis_url: str
) -> None:
    prefix = f"tlnats-{uuid.uuid4().hex[:8]}"
    one: Running = await start_server(_engine(nats_server.url, prefix, redis_url))
    two: Running = await start_server(_engine(nats_server.url, prefix, redis_url))
    alice = new_client(one.ws_url, token=token("alice"))
    bob = new_client(two.ws_url, token=token("bob"))
    rec_alice, rec_bob = SdkRecorder(), SdkRecorder()
    try:
        await alice.connect()
        await bob.connect()
        sub_alice = await subscribe_ready(alice.new_subscription("kept:room", rec_alice))
        sub_bob = await subscribe_ready(bob.new_subscription("kept:room", rec_bob))
        assert sub_bob is not None
        async with AsyncClient(one.http_url + "/api", API_KEY) as api:
            for n in range(1, 6):
                result = await api.publish(PublishRequest(channel="kept:room", data={"n": n}))
                assert result.offset == n
        for rec in (rec_alice, rec_bob):
            await eventually(lambda rec=rec: len(rec.publications) >= 5)
            assert rec.publications == [(n, {"n": n}) for n in range(1, 6)]
        # History is Redis's, the same from either node.
        history = await sub_alice.history(limit=-1)
        assert [p.offset for p in history.publications] == [1, 2, 3, 4, 5]
        # Presence is Redis's too: both nodes' clients.
        await eventually(lambda: _users(sub_alice, {"alice", "bob"}))
        # Recovery: bob leaves, three publications go by, bob comes back and recovers them.
        await sub_bob.unsubscribe()
        async with AsyncClient(two.http_url + "/api", API_KEY) as api:
            for n in range(6, 9):
                await api.publish(PublishRequest(channel="kept:room", data={"n": n}))
        await subscribe_ready(sub_bob)
        assert rec_bob.subscribed[-1].recovered is True
        await eventually(lambda: len(rec_bob.publications) >= 8)
        assert [offset for offset, _ in rec_bob.publications] == list(range(1, 9))
    finally:
        await alice.disconnect()
        await bob.disconnect()
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        await delete_keys(client, prefix)
        await client.aclose()


async def _users(sub: Any, expected: set[str]) -> bool:
    presence = await sub.presence()
    return {c.user for c in presence.clients.values()} == expected


async def test_a_node_without_a_nats_server_refuses_to_start(start_server: Callable[..., Any]) -> None:
    from trunkline.errors import StartupError

    with pytest.raises(StartupError) as err:
        await start_server(_engine(f"nats://127.0.0.1:{free_port()}", "nostart"))
    assert err.value.setting == "engine.nats.url"


def test_centrifugos_broker_section_is_read_as_engine_nats() -> None:
    nats_conf = {"url": "nats://10.0.0.2:4222", "prefix": "cf", "dial_timeout": "2s", "write_timeout": "3s"}
    alone = settings_from_mapping({"broker": {"enabled": True, "type": "nats", "nats": nats_conf}})
    assert alone.engine.type == "nats"
    n = alone.engine.nats
    assert (n.url, n.prefix, n.dial_timeout, n.write_timeout, n.history) == ("nats://10.0.0.2:4222", "cf", 2.0, 3.0, "")
    # Centrifugo: Redis engine (presence) + NATS broker; here Redis keeps history as well.
    beside_redis = settings_from_mapping(
        {"engine": {"type": "redis"}, "broker": {"enabled": True, "type": "nats", "nats": {"prefix": "cf"}}}
    )
    assert (beside_redis.engine.type, beside_redis.engine.nats.history) == ("nats", "redis")
    off = settings_from_mapping({"broker": {"enabled": False, "type": "nats"}})
    assert off.engine.type == "memory"


@pytest.mark.parametrize(
    ("broker", "key", "words"),
    [
        ({"enabled": True, "type": "redis"}, "broker.type", 'only "nats"'),
        ({"enabled": True, "type": "nats", "nats": {"raw_mode": {"enabled": True}}}, "broker.nats.raw_mode", "raw"),
        ({"enabled": True, "type": "nats", "nats": {"allow_wildcards": True}}, "broker.nats.allow_wildcards", "wild"),
        ({"enabled": True, "type": "nats", "nats": {"urll": "x"}}, "broker.nats.urll", "unknown key"),
        ({"enabled": True, "type": "nats", "shards": 2}, "broker.shards", "unknown key"),
        ({"enabled": True, "type": "nats", "nats": {"url": "http://x"}}, "engine.nats.url", "nats://"),
    ],
)
def test_a_broker_section_trunkline_cannot_honour_is_refused(broker: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"broker": broker})
    assert err.value.key == key
    assert words in err.value.message


@given(st.binary(max_size=200))
def test_any_bytes_on_a_channel_subject_are_delivered_whole_or_dropped(data: bytes) -> None:
    """The NATS message parser: garbage never raises into nats-py and never reaches the node."""
    from nats.aio.msg import Msg

    from trunkline.broker import nats as nats_module

    broker = NatsBroker()
    events = Recorder()
    broker._handler = events
    broker._subs["c"] = object()  # type: ignore[assignment]
    msg = Msg(_client=None, subject="p.client.c", data=data)  # type: ignore[arg-type]
    asyncio.run(broker._on_message(msg))
    asyncio.run(broker._on_pattern_message(msg))
    try:
        envelope = nats_module._decoder.decode(data)
    except Exception:
        assert events.events == []
        return
    if envelope.channel != "c" or envelope.kind not in ("p", "j", "l"):
        assert events.events == []
