"""The dashboard's node list with several nodes: worker ids, the whole server's sums, admin connections left out.

A real node with a real admin connection (centrifuge-python) subscribed to both of a
dashboard's channels (stats and the event log), and a peer's announcement fed through the
node's control channel handler, as the broker delivers it. ``tests/test_workers_dashboard.py``
proves the same with ``trunkline serve --workers 2`` and Chromium.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Running, eventually, token
from trunkline.observe import admin_events, stats

from . import connect, subscribe
from .test_dashboard import ADMIN, admin_client, http_session, login


def _announce(running: Running, info: dict[str, Any]) -> None:
    """A peer's node announcement, as the broker hands it to the node."""
    payload = msgspec.json.encode(info).decode()
    running.server.node.handle_control(
        f'{{"op": "node", "node": "{info["uid"]}", "payload": {payload}}}'.encode(),
    )


async def test_node_rows_and_server_sums_leave_every_dashboard_out(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    node = running.server.node
    async with http_session() as http:
        assert (await login(http, running.http_url)).status == 303
        admin = await admin_client(running.ws_url, http, running.http_url)
        users = [await connect(running.ws_url, token(f"u{i}")) for i in range(2)]
        try:
            for user in users:
                await subscribe(user, "news")
            _, received = await subscribe(admin, stats.STATS_CHANNEL)
            await subscribe(admin, admin_events.EVENTS_CHANNEL)  # as the page's admin.js does
            # the node info says what its dashboards add; the info API and peers read it
            own = {"num_clients": 1, "num_users": 1, "num_subs": 2, "num_channels": 2}
            assert node.local_info()["admin"] == own
            assert "worker" not in node.local_info(), "only a worker of serve --workers has an id"

            peer = {
                "uid": str(uuid.uuid4()),
                "name": "edge_w1",
                "worker": 1,
                "version": node.version,
                "num_clients": 5,
                "num_users": 4,
                "num_subs": 9,
                "num_channels": 3,
                "uptime": 7,
                "process": {"pid": 1},
                "admin": {"num_clients": 1, "num_users": 1, "num_subs": 2, "num_channels": 2},  # its dashboard
            }
            _announce(running, peer)

            def settled() -> dict[str, Any] | None:
                if not received.publications:
                    return None
                last: dict[str, Any] = received.publications[-1]
                return last if len(last["nodes"]) == 2 and last["subscriptions"] == 2 else None

            doc = await eventually(settled, timeout=4)
            assert (doc["connections"], doc["users"], doc["subscriptions"], doc["channels"]) == (2, 2, 2, 1)
            rows = {row["uid"]: row for row in doc["nodes"]}
            mine, theirs = rows[node.uid], rows[peer["uid"]]
            assert (mine["num_clients"], mine["num_subs"], mine["num_channels"]) == (2, 2, 1)
            assert mine["worker"] is None
            assert (theirs["worker"], theirs["name"]) == (1, "edge_w1")
            assert (theirs["num_clients"], theirs["num_users"], theirs["num_subs"], theirs["num_channels"]) == (
                4,
                3,
                7,
                1,
            )
            assert doc["server"] == {"nodes": 2, "connections": 6, "subscriptions": 9}
        finally:
            for client in [*users, admin]:
                await client.disconnect()
    await eventually(lambda: node.local_info()["admin"] == dict.fromkeys(own, 0))


def test_server_totals_sum_what_is_known() -> None:
    rows = [
        {"num_clients": 3, "num_subs": 4},
        {"num_clients": 2, "num_subs": None},  # a node that did not say
        {},
    ]
    assert stats.server_totals(rows) == {"nodes": 3, "connections": 5, "subscriptions": 4}
    assert stats.server_totals([]) == {"nodes": 0, "connections": 0, "subscriptions": 0}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_counts = st.sampled_from(["num_clients", "num_users", "num_subs", "num_channels"])


@given(
    st.dictionaries(_counts | st.sampled_from(["uid", "name", "worker", "admin"]) | st.text(max_size=6), _json),
    st.dictionaries(_counts, st.integers(-5, 50)),
)
def test_any_announcement_makes_a_row(info: dict[str, Any], admin: dict[str, int]) -> None:
    """Another node's info comes from the broker (any version, any shape): a row, never a crash."""
    for announced in (info, {**info, "admin": admin}):
        row = stats._node_row(announced)
        assert set(row) == set(stats._NODE_FIELDS)
        for key in ("num_clients", "num_users", "num_subs", "num_channels"):
            value = announced.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                assert 0 <= row[key] <= value
        stats.server_totals([row])
