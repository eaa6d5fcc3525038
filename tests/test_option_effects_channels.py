"""Channel options over a real WebSocket (JSON protocol), each set by its test.

- ``client.subscribe_to_user_personal_channel.personal_channel_namespace``: the personal
  channel a connection is subscribed to lives in that namespace (``personal:#u1``), not
  ``#u1``;
- ``channel.without_namespace.allow_positioning``: a client that asks for a positioned
  subscription, without recovery and without history access, gets one only when it is on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from tests.conftest import Running, eventually, token
from tests.sdk.helpers import ClientRecorder, new_client
from trunkline.errors import ClientError

Start = Callable[..., Any]


async def replies(srv: Running, *commands: dict[str, Any], user: str = "u1") -> dict[int, dict[str, Any]]:
    """Connect as ``user``, send ``commands`` (ids 2, 3, …); every reply by id."""
    frames = [{"id": 1, "connect": {"token": token(user)}}] + [{"id": i + 2, **c} for i, c in enumerate(commands)]
    out: dict[int, dict[str, Any]] = {}
    async with websockets.connect(srv.ws_url) as ws:
        await ws.send("\n".join(json.dumps(f) for f in frames))
        for _ in range(20):
            for line in (await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                reply = json.loads(line)
                if reply.get("id"):
                    out[reply["id"]] = reply
            if len(out) == len(frames):
                return out
    raise AssertionError(f"replies missing: {out}")


@pytest.mark.parametrize("namespace", ["personal", ""], ids=["namespaced", "default"])
async def test_personal_channel_namespace(start_server: Start, namespace: str) -> None:
    personal = {"enabled": True, "personal_channel_namespace": namespace}
    extra: dict[str, Any] = {"client": {"subscribe_to_user_personal_channel": personal}}
    if namespace:
        extra["channel"] = {"namespaces": [{"name": "personal"}]}
    srv = await start_server(extra)
    subs = (await replies(srv))[1]["connect"]["subs"]
    assert set(subs) == {"personal:#u1" if namespace else "#u1"}


@pytest.mark.parametrize("allow", [True, False], ids=["allowed", "not-allowed"])
async def test_allow_positioning(start_server: Start, allow: bool) -> None:
    without_namespace = {
        "force_recovery": False,
        "allow_history_for_subscriber": False,  # no history access: only the option can grant positioning
        "allow_positioning": allow,
    }
    srv = await start_server({"channel": {"without_namespace": without_namespace}})
    subscribed = (await replies(srv, {"subscribe": {"channel": "pos", "positioned": True}}))[2]["subscribe"]
    assert subscribed.get("positioned", False) is allow
    assert not subscribed.get("recoverable", False)


async def test_single_connection_keeps_the_newest(start_server: Callable[..., Any]) -> None:
    """``single_connection``: a user's second connection closes the first with 3504 (it does not come back)."""
    srv = await start_server(
        {
            "channel": {"namespaces": [{"name": "personal", "presence": True}]},
            "client": {
                "subscribe_to_user_personal_channel": {
                    "enabled": True,
                    "personal_channel_namespace": "personal",
                    "single_connection": True,
                }
            },
        }
    )
    first_events, second_events = ClientRecorder(), ClientRecorder()
    first = new_client(srv.ws_url, first_events, token=token("solo"))
    await first.connect()
    await eventually(lambda: first_events.connected)
    second = new_client(srv.ws_url, second_events, token=token("solo"))
    await second.connect()
    await eventually(lambda: second_events.connected)
    await eventually(lambda: first_events.disconnected, timeout=10)
    assert first_events.disconnected[-1].code == 3504
    assert not second_events.disconnected
    assert [c.user for c in srv.server.node.hub.connections()] == ["solo"]
    await first.disconnect()
    await second.disconnect()


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [("json", b'"text"', b"not json"), ("json_object", b'{"a": 1}', b"[1, 2]")],
)
async def test_publication_data_format(start_server: Callable[..., Any], fmt: str, good: bytes, bad: bytes) -> None:
    """``publication_data_format``: data that is not in the format is refused with 107, in every publish path."""
    srv = await start_server({"channel": {"without_namespace": {"publication_data_format": fmt}}})
    node = srv.server.node
    await node.publish("fmt", good)  # accepted (raises otherwise)
    with pytest.raises(ClientError) as refused:
        await node.publish("fmt", bad)
    assert refused.value.code == 107
