"""Issue 9 item 3 proof: the server API and WebSocket work when data arrives in small TCP segments.

A :class:`~tests.faults.proxy.SegmentingProxy` sits between the real clients
(``cent``, aiohttp, centrifuge-python) and a ``python -m trunkline serve`` node
(memory engine, ``http_api.max_body_size`` = 4 MiB so that a 1 MB publication fits;
the default is 1 MiB). It forwards both directions in 1–1448-byte segments with
delays of up to a few milliseconds; hypothesis chooses the cut points.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cent import AsyncClient, HistoryRequest, PublishRequest
from centrifuge import PublicationContext, SubscriptionEventHandler
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import API_KEY, token
from tests.faults.conftest import NAMESPACE, NodeProcess
from tests.faults.proxy import MSS, SegmentingProxy, Segments
from tests.sdk.helpers import new_client, subscribe_ready

MAX_BODY = 4 * 1024 * 1024
SIZES = {"1KB": 1_000, "10KB": 10_000, "100KB": 100_000, "1MB": 1_000_000}
# Bounded: a handful of examples, no shrinking (a failure shows the first failing cut).
FEW = settings(
    max_examples=6,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


class Inbox(SubscriptionEventHandler):
    """Publications as (offset, data); ``wait(n)`` returns once there are ``n``."""

    def __init__(self) -> None:
        self.publications: list[tuple[int, Any]] = []
        self._changed = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.append((ctx.pub.offset, ctx.pub.data))
        self._changed.set()

    async def wait(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.publications) < count:
                self._changed.clear()
                await self._changed.wait()


def channel() -> str:
    return f"{NAMESPACE}:seg-{uuid.uuid4().hex[:8]}"


async def test_the_proxy_forwards_in_small_segments() -> None:
    """The tool itself: the receiver's reads are the proxy's segments, never more than one MSS."""
    reads: list[int] = []
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            reads.append(len(data))
        done.set()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with SegmentingProxy(port, up=Segments(min_delay=0.001, max_delay=0.002, seed=1)) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x" * 20_000)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(10):
            await done.wait()
        writer.close()
    server.close()
    await server.wait_closed()
    assert sum(reads) == 20_000
    assert max(reads) <= MSS
    assert len(reads) >= 20_000 // MSS


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
async def test_cent_publishes_through_small_segments(api_node: NodeProcess, size: int) -> None:
    ch = channel()
    blob = "x" * size
    async with SegmentingProxy(api_node.port, up=Segments(seed=size), down=Segments(seed=size + 1)) as proxy:
        async with AsyncClient(proxy.http_url + "/api", API_KEY, timeout=60) as api:
            result = await api.publish(PublishRequest(channel=ch, data={"blob": blob}))
        assert proxy.segments_sent > size // MSS
    assert result.offset == 1
    async with AsyncClient(api_node.api_url, API_KEY) as direct:
        history = await direct.history(HistoryRequest(channel=ch, limit=1))
    assert history.publications[0].data == {"blob": blob}


async def _chunks(total: int, chunk: int = 65536) -> AsyncIterator[bytes]:
    head = b'{"channel":"faults:big","data":{"blob":"'
    yield head
    left = total - len(head) - 3
    while left > 0:
        n = min(chunk, left)
        yield b"x" * n
        left -= n
    yield b'"}}'


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_10mb_body_gets_413_with_a_json_body(api_node: NodeProcess, framing: str) -> None:
    total = 10 * 1024 * 1024
    body: Any = (
        io.BytesIO(b"".join([c async for c in _chunks(total)])) if framing == "content-length" else _chunks(total)
    )
    cut = Segments(min_size=1, max_size=16384, max_delay=0.0005, seed=7)
    async with SegmentingProxy(api_node.port, up=cut, down=Segments(seed=8)) as proxy, aiohttp.ClientSession() as http:
        request = http.post(
            f"{proxy.http_url}/api/publish",
            data=body,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=60),
        )
        async with request as resp:
            status, text = resp.status, await resp.text()
    assert status == 413, text[:300]
    reply = json.loads(text)
    assert "error" in reply and reply["error"]["code"], reply


async def _receive_through_proxy(
    node: NodeProcess, up: Segments, down: Segments, sizes: list[int], timeout: float = 20.0
) -> None:
    """A centrifuge-python client behind the proxy subscribes and gets every publication, in order."""
    ch = channel()
    async with SegmentingProxy(node.port, up=up, down=down) as proxy:
        client = new_client(proxy.ws_url, token=token("seg"))
        rec = Inbox()
        try:
            await client.connect()
            await subscribe_ready(client.new_subscription(ch, rec), timeout=10)
            async with AsyncClient(node.api_url, API_KEY) as api:
                for i, size in enumerate(sizes):
                    await api.publish(PublishRequest(channel=ch, data={"i": i, "blob": "y" * size}))
            await rec.wait(len(sizes), timeout)
        finally:
            await client.disconnect()
    assert [o for o, _ in rec.publications] == list(range(1, len(sizes) + 1))
    assert [(d["i"], len(d["blob"])) for _, d in rec.publications] == list(enumerate(sizes))


async def test_centrifuge_client_through_small_segments(api_node: NodeProcess) -> None:
    sizes = [10, 1_000, 1_447, 1_448, 1_449, 5_000, 20_000, 60_000, 3, 100_000]
    await _receive_through_proxy(api_node, Segments(seed=3), Segments(seed=4), sizes)


@FEW
@given(
    cuts=st.lists(st.integers(1, 3 * MSS), min_size=1, max_size=12),
    size=st.integers(0, 60_000),
)
def test_api_bodies_split_at_random_points(api_node: NodeProcess, cuts: list[int], size: int) -> None:
    async def scenario() -> None:
        ch = channel()
        up = Segments(schedule=cuts, max_delay=0.001)
        proxy = await SegmentingProxy(api_node.port, up=up).start()
        try:
            async with AsyncClient(proxy.http_url + "/api", API_KEY, timeout=30) as api:
                result = await api.publish(PublishRequest(channel=ch, data={"blob": "z" * size}))
        finally:
            await proxy.close()
        assert result.offset == 1

    asyncio.run(scenario())


@FEW
@given(
    up_cuts=st.lists(st.integers(1, 200), min_size=1, max_size=8),
    down_cuts=st.lists(st.integers(1, 3 * MSS), min_size=1, max_size=8),
    sizes=st.lists(st.integers(0, 20_000), min_size=1, max_size=6),
)
def test_websocket_frames_split_at_random_points(
    api_node: NodeProcess, up_cuts: list[int], down_cuts: list[int], sizes: list[int]
) -> None:
    up = Segments(schedule=up_cuts, max_delay=0.001)
    down = Segments(schedule=down_cuts, max_delay=0.001)
    asyncio.run(_receive_through_proxy(api_node, up, down, sizes))
