"""hub/map_presence on the memory map broker, with a manual clock (no sockets): which keys a
subscription keeps, when they go, and how the refresh keeps them alive or brings them back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.broker.conftest import Recorder

from trunkline.broker.map_base import MapStateQuery
from trunkline.broker.map_memory import MemoryMapBroker
from trunkline.config import Settings, settings_from_mapping
from trunkline.hub.channels import ChannelRules
from trunkline.hub.map_presence import USER_DATA, MapPresence
from trunkline.records import ClientInfo

USERS_TTL = 10.0

CONFIG: dict[str, Any] = {
    "client": {"presence_update_interval": "25s"},
    "channel": {
        "namespaces": [
            {
                "name": "game",
                "map_clients_presence_channel_prefix": "clients:",
                "map_users_presence_channel_prefix": "users:",
            },
            {"name": "lobby", "map_clients_presence_channel_prefix": "clients:"},
            {"name": "plain"},
            {"name": "odd", "map_clients_presence_channel_prefix": "nowhere"},  # no boundary: not checked
            {"name": "clients", "subscription_type": "map_clients", "map": {"mode": "durable"}},
            {"name": "users", "subscription_type": "map_users", "map": {"mode": "durable", "key_ttl": "10s"}},
        ]
    },
}


class Env:
    def __init__(self, settings: Settings) -> None:
        self.now = 1000.0
        self.broker = MemoryMapBroker(lambda: self.now, cleanup_interval=0)
        self.events = Recorder()
        rules = ChannelRules()
        namespace = lambda ch: settings.namespace(rules.namespace_of(ch))  # noqa: E731
        self.presence = MapPresence(settings, lambda: self.broker, namespace)

    async def keys(self, channel: str) -> dict[str, Any]:
        options = self.presence.options(channel)
        assert options is not None
        page = await self.broker.read_state(channel, MapStateQuery(limit=1000), options)
        return {p.key: p for p in page.entries}

    def updates(self, channel: str) -> list[tuple[str, bool]]:
        return [(p.key, p.removed) for p in self.events.publications(channel)]


@pytest.fixture
async def env() -> Env:
    e = Env(settings_from_mapping(CONFIG, source="<test>"))
    await e.broker.start(e.events)
    for channel in ("clients:game:1", "users:game:1", "clients:lobby:1"):
        await e.broker.subscribe(channel)
    return e


def info(client: str, user: str) -> tuple[ClientInfo, bytes]:
    record = ClientInfo(user, client, b'{"n":1}', None)
    return record, b'{"user":"%s","client":"%s","conn_info":{"n":1}}' % (user.encode(), client.encode())


async def test_a_client_key_carries_its_info_and_goes_on_leave(env: Env) -> None:
    record, data = info("c1", "ann")
    await env.presence.join("game:1", record, data)
    keys = await env.keys("clients:game:1")
    assert list(keys) == ["c1"] and keys["c1"].info == record and keys["c1"].data == data
    assert (await env.keys("users:game:1"))["ann"].data == USER_DATA
    assert env.updates("clients:game:1") == [("c1", False)]

    await env.presence.refresh()
    assert env.updates("clients:game:1") == [("c1", False)], "a refresh of a live key delivers nothing"

    await env.presence.leave("game:1", "c1", "ann")
    assert await env.keys("clients:game:1") == {}
    assert env.updates("clients:game:1") == [("c1", False), ("c1", True)]
    assert "ann" in await env.keys("users:game:1"), "the user key waits for its TTL"
    assert len(env.presence) == 0


async def test_a_user_key_lives_while_one_connection_holds_it(env: Env) -> None:
    for client in ("c1", "c2"):
        await env.presence.join("game:1", *info(client, "ann"))
    assert env.updates("users:game:1") == [("ann", False)], "one key for two connections"

    await env.presence.leave("game:1", "c1", "ann")
    for _ in range(5):  # 5 x 4 s: twice the TTL, refreshed by the connection that stays
        env.now += USERS_TTL * 0.4
        await env.presence.refresh()
        env.broker.cleanup()
    assert env.updates("users:game:1") == [("ann", False)]

    await env.presence.leave("game:1", "c2", "ann")
    env.now += USERS_TTL * 0.9
    await env.presence.refresh()
    env.broker.cleanup()
    assert env.updates("users:game:1") == [("ann", False)], "not before the TTL"
    env.now += USERS_TTL * 0.2
    env.broker.cleanup()
    assert env.updates("users:game:1") == [("ann", False), ("ann", True)]


async def test_anonymous_connections_keep_no_user_key(env: Env) -> None:
    await env.presence.join("game:1", *info("c9", ""))
    assert list(await env.keys("clients:game:1")) == ["c9"]
    assert await env.keys("users:game:1") == {}


async def test_a_lost_key_comes_back_with_the_next_refresh(env: Env) -> None:
    await env.presence.join("lobby:1", *info("c1", "ann"))
    assert env.presence.targets("lobby:1").users == "", "lobby sets only the clients prefix"
    await env.broker.clear("clients:lobby:1")
    assert await env.keys("clients:lobby:1") == {}
    await env.presence.refresh()
    assert list(await env.keys("clients:lobby:1")) == ["c1"]


async def test_channels_without_prefixes_write_nothing(env: Env) -> None:
    assert not env.presence.targets("plain:1") and not env.presence.targets("nowhere:1")
    await env.presence.join("plain:1", *info("c1", "ann"))
    await env.presence.leave("nowhere:1", "c1", "ann")
    assert len(env.presence) == 0 and env.events.events == []


def test_refresh_interval_fits_the_shortest_key_ttl() -> None:
    settings = settings_from_mapping(CONFIG, source="<test>")
    presence = MapPresence(settings, MemoryMapBroker, lambda ch: None)
    assert presence.active
    assert presence.interval == pytest.approx(USERS_TTL / 3), "3 refreshes per users key_ttl (10s), not 25s"
    quiet = MapPresence(settings_from_mapping({}, source="<test>"), MemoryMapBroker, lambda ch: None)
    assert not quiet.active


async def test_a_refresh_renews_every_key_in_batches(env: Env) -> None:
    clients = [f"c{i}" for i in range(150)]  # more than one REFRESH_BATCH
    for client in clients:
        await env.presence.join("lobby:1", *info(client, f"u{client}"))
    await env.broker.clear("clients:lobby:1")
    await env.presence.refresh()
    assert sorted(await env.keys("clients:lobby:1")) == sorted(clients)


async def test_a_broker_error_ends_the_round_and_the_next_one_retries(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await env.presence.join("lobby:1", *info("c1", "ann"))
    await env.broker.clear("clients:lobby:1")

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("map broker down")

    with monkeypatch.context() as patched:
        patched.setattr(env.broker, "publish", down)
        await env.presence.refresh()
    assert "cannot refresh map presence: map broker down" in caplog.text
    assert await env.keys("clients:lobby:1") == {}
    await env.presence.refresh()
    assert list(await env.keys("clients:lobby:1")) == ["c1"]


async def test_a_prefix_that_names_no_map_channel_writes_nothing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """``nowhere`` + ``odd:1`` is ``nowhereodd:1``, of no namespace: one warning, no key, nothing held."""
    for client in ("c1", "c2"):
        assert not env.presence.targets("odd:1")
        await env.presence.join("odd:1", *info(client, "ann"))
    assert len(env.presence) == 0 and env.events.events == []
    assert caplog.text.count("map presence prefix 'nowhere'") == 1


_ops = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "refresh"]), st.integers(0, 5), st.integers(0, 2)), max_size=40
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(ops=_ops)
def test_keys_follow_any_sequence_of_joins_and_leaves(ops: list[tuple[str, int, int]]) -> None:
    """After any sequence, the client keys are exactly the live subscriptions, every live user has
    its key, and a user key is only removed by its TTL."""

    async def run() -> None:
        env = Env(settings_from_mapping(CONFIG, source="<test>"))
        await env.broker.start(env.events)
        live: dict[str, str] = {}  # client -> user
        for op, c, u in ops:
            client, user = f"c{c}", f"u{u}"
            if op == "join" and client not in live:
                live[client] = user
                await env.presence.join("game:1", *info(client, user))
            elif op == "leave" and client in live:
                await env.presence.leave("game:1", client, live.pop(client))
            elif op == "refresh":
                await env.presence.refresh()
        assert set(await env.keys("clients:game:1")) == set(live)
        assert set(live.values()) <= set(await env.keys("users:game:1"))
        assert not [p for p in env.events.publications("users:game:1") if p.removed], "users go by TTL only"
        await env.broker.close()

    asyncio.run(run())
