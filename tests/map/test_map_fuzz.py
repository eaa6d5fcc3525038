"""Hypothesis against the map subscribe flow and map writes: any sequence of commands, any fields.

A session (memory transport, no sockets) runs a drawn sequence of ``subscribe`` (map types,
phases, cursors, limits, epochs, offsets, recover) and ``publish`` (map writes) commands, with
the epoch and cursor of the previous reply sometimes reused so flows get deep. Every command
must get a reply (a result, or an error of the protocol's codes); the session never closes
but for a bad request (3501); once it is closed no subscription, pending join or broker
interest of it is left on the node.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import make_settings, token
from tests.map.test_map_js import CONFIG
from tests.memory_transport import MemoryTransport

from trunkline.broker.map_base import MapWrite
from trunkline.commands import new_session
from trunkline.node import Node
from trunkline.session import Session

SETTINGS = make_settings(CONFIG, port=8000)
CODES = {102, 103, 105, 106, 107, 108, 112}
CHANNELS = ["mm:f", "ephlong:f", "small:f", "chat:f", "ro:f", "own:f", "nope:f", ""]

subscribes = st.fixed_dictionaries(
    {"channel": st.sampled_from(CHANNELS)},
    optional={
        "type": st.integers(-2, 6),
        "phase": st.integers(-1, 3),
        "cursor": st.sampled_from(["$cursor", "", "kzz", "s1:k", "garbage"]),
        "limit": st.integers(-5, 2000),
        "epoch": st.sampled_from(["$epoch", "", "other"]),
        "offset": st.integers(0, 30),
        "recover": st.booleans(),
        "asc": st.booleans(),
        "delta": st.sampled_from(["", "fossil"]),
    },
).map(lambda r: ("subscribe", r))
publishes = st.fixed_dictionaries(
    {"channel": st.sampled_from(CHANNELS)},
    optional={
        "type": st.integers(-1, 3),
        "key": st.text(max_size=6),
        "removed": st.booleans(),
        "data": st.sampled_from([{"v": 1}, [1], "s", None]),
    },
).map(lambda r: ("publish", r))
others = st.sampled_from([("unsubscribe", {"channel": c}) for c in CHANNELS[:4]])
commands = st.lists(st.one_of(subscribes, subscribes, publishes, others), min_size=1, max_size=12)


async def _run(sequence: list[tuple[str, dict[str, Any]]]) -> None:
    node = Node(SETTINGS)
    node.session_factory = new_session
    for channel in ("mm:f", "ephlong:f", "small:f"):
        for i in range(7):
            await node.map_publish(channel, MapWrite(key=f"k{i}", data=b'{"n":1}'))
    transport = MemoryTransport()
    session = node.new_session(transport)
    assert isinstance(session, Session)
    await session.handle_frame(json.dumps({"id": 1, "connect": {"token": token("fuzz")}}).encode())
    last: dict[str, Any] = {}
    for n, (method, drawn) in enumerate(sequence, start=2):
        if transport.closed:
            break
        params = dict(drawn)
        for field in ("cursor", "epoch"):
            if params.get(field) == f"${field}":
                params[field] = last.get(field, "")
        if params.get("data") is None:
            params.pop("data", None)
        await session.handle_frame(json.dumps({"id": n, method: params}).encode())
        await asyncio.sleep(0)
        if transport.closed:
            assert transport.close_code == 3501, (transport.close_code, transport.close_reason, method, params)
            break
        reply = await transport.reply(n)
        if "error" in reply:
            assert reply["error"]["code"] in CODES, (reply, method, params)
        else:
            assert method in reply, reply
            if method == "subscribe":
                last = reply["subscribe"]
    await session.close()
    assert not node.hub.channels() and not node.hub.connections()
    assert not any(node.hub.has_subscribers(c) for c in CHANNELS)
    assert not node._broker_subs, "every broker subscription of the session was dropped"
    await node.shutdown(timeout=0.1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_any_map_command_sequence_gets_replies_and_leaks_nothing(sequence: list[tuple[str, dict[str, Any]]]) -> None:
    asyncio.run(_run(sequence))
