"""Issue 19 item 1: ``trunkline serve --workers 2`` is one server to its dashboard, metrics, ``/ready`` and logs.

Real processes (the supervisor, two workers on one port, a redis-server), real
centrifuge-python clients and a real Chromium logged in to the admin dashboard:

- the dashboard of either worker (on its internal port) lists both workers with their
  worker ids, and its totals (the "Whole server" row, the tiles, the chart) are the sums
  over the clients connected to both; each dashboard's own admin connection is left out of
  its worker's row, also in the other worker's dashboard;
- each worker's ``/metrics`` (on ``internal_port + i``) counts its own connections, and the
  sum over the two scrape targets is the whole server, as docs/operations.md tells
  Prometheus users to sum them;
- ``/ready`` answers 200 on every worker and through the shared port; when the server is
  stopped every worker answers 503 during ``shutdown.ready_delay``;
- with ``log.format = "json"`` every worker line carries ``"worker": i``;
- with ``admin.insecure`` and no ``admin.secret`` on the shared port, a dashboard token or
  CSRF token made by one worker is good on the other (the supervisor gives them one secret).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, eventually, token
from tests.sdk.helpers import Recorder, new_client
from tests.test_workers import Workers

PASSWORD = "correct horse battery staple"
CLIENTS = 12  # P(all on one worker) = 2 * 2**-12
EXTRA_SUBS = CLIENTS // 2  # every even client also subscribes to a channel of its own

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.timeout(60)]

_CONNECTIONS = re.compile(r'^trunkline_connections\{transport="([a-z_]+)"\} ([0-9.e+]+)$', re.MULTILINE)


def _free_pair() -> int:
    """A port p with p and p + 1 free (the workers' internal ports), below the ephemeral range.

    Not from the kernel's ephemeral range (``free_port``): the workers' own outgoing
    connections (to Redis) draw their local ports from it and may take p + 1 meanwhile.
    """
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20_000, 32_000)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no two adjacent free ports")


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[tuple[Workers, int]]:
    """The supervisor with 2 workers, and the first worker's internal port (the second's is + 1)."""
    internal = _free_pair()
    extra = {
        "admin": {"enabled": True, "password": PASSWORD, "secret": "admin-secret-0123456789abcdef0123456789"},
        "http_server": {"internal_port": internal},
        "shutdown": {"timeout": 3, "ready_delay": 1.0},
        "log": {"level": "info", "format": "json"},
    }
    running = Workers(tmp_path, redis_url, count=2, extra=extra)
    running.start()
    yield running, internal
    if running.proc is not None and running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as r:
        return r.status, await r.text()


async def _connections(http: aiohttp.ClientSession, port: int) -> int:
    """Open connections in one worker's own /metrics (every transport)."""
    status, text = await _get(http, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return int(sum(float(v) for _, v in _CONNECTIONS.findall(text)))


async def _nodes(http: aiohttp.ClientSession, port: int) -> dict[int, dict[str, Any]]:
    """The ``info`` API of the worker on internal ``port``: its node list, by worker id."""
    url = f"http://127.0.0.1:{port}/api/info"
    async with http.post(url, json={}, headers={"X-API-Key": API_KEY}) as r:
        assert r.status == 200
        answer = await r.json()
    return {n["worker"]: n for n in answer["result"]["nodes"]}


async def _up(workers: Workers, http: aiohttp.ClientSession, internal: int) -> dict[int, dict[str, Any]]:
    """Wait until each worker lists both; fails at once (with the log) if the supervisor exits."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert workers.proc is not None and workers.proc.poll() is None, workers.output()
        try:
            views = [await _nodes(http, internal + i) for i in (0, 1)]
        except (aiohttp.ClientError, OSError):
            views = []
        if views and all(sorted(view) == [0, 1] for view in views):
            return views[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the workers did not see each other in 40 s:\n{workers.output()}")


async def _login(browser: Any, port: int) -> Any:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"http://127.0.0.1:{port}/dashboard")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_function("() => window.__dashboard && window.__dashboard.state === 'live'", timeout=15_000)
    return page


async def test_dashboard_metrics_ready_and_logs_of_two_workers(
    server: tuple[Workers, int], http: aiohttp.ClientSession, chromium: Callable[..., Any]
) -> None:
    workers, internal = server
    by_worker = await _up(workers, http, internal)
    assert all(by_worker[i]["name"].endswith(f"_w{i}") for i in (0, 1)), "each worker's node info names its id"

    # /ready: every worker (its own internal port) and the shared port (new connections reach either)
    for i in (0, 1):
        assert await _get(http, f"http://127.0.0.1:{internal + i}/ready") == (200, '{"status": "ok"}')
    for _ in range(4):
        assert (await _get(http, f"{workers.base}/ready"))[0] == 200

    async def connect(i: int) -> Any:
        client = new_client(workers.ws_url, token=token(f"u{i}"))
        await client.connect()
        for channel in ("room", f"own{i}") if i % 2 == 0 else ("room",):
            sub = client.new_subscription(channel, Recorder())
            await sub.subscribe()
            await sub.ready()
        return client

    clients = await asyncio.gather(*(connect(i) for i in range(CLIENTS)))
    browser = await chromium()
    try:
        pages = [await _login(browser, internal + i) for i in (0, 1)]  # one dashboard on each worker
        # per-worker metrics: each counts its own (its clients and its dashboard); the sum is the server
        per_worker = [await _connections(http, internal + i) for i in (0, 1)]
        assert sum(per_worker) == CLIENTS + 2 and min(per_worker) > 1, f"clients on both workers: {per_worker}"

        # another worker's figures arrive with its node announcement (every 5 s)
        want = {"connections": CLIENTS, "subscriptions": CLIENTS + EXTRA_SUBS, "nodes": 2}
        for page in pages:
            await page.wait_for_function(
                """(want) => { const s = window.__dashboard.last && window.__dashboard.last.server;
                     return !!s && s.nodes === want.nodes && s.connections === want.connections
                       && s.subscriptions === want.subscriptions; }""",
                arg=want,
                timeout=15_000,
            )
        for i, page in enumerate(pages):
            doc = await page.evaluate("window.__dashboard.last")
            assert doc["node"] == by_worker[i]["uid"], "the internal port of worker i serves worker i"
            assert doc["connections"] == per_worker[i] - 1 < CLIENTS, "its own figure is a part of the whole"
            rows = {row["worker"]: row for row in doc["nodes"]}
            assert sorted(rows) == [0, 1]
            for w in (0, 1):  # both rows leave out their worker's dashboard connection
                assert rows[w]["num_clients"] == per_worker[w] - 1, f"page {i}, worker {w}: {rows[w]} {per_worker}"
            assert sum(r["num_subs"] for r in rows.values()) == CLIENTS + EXTRA_SUBS

        # what the page shows: a worker column, both rows, the whole server's sums in the tiles and the footer
        page = pages[0]
        header = await page.eval_on_selector_all("#nodes thead th:not([hidden])", "ths => ths.map(t => t.textContent)")
        assert header[:2] == ["Name", "Worker"]
        table = await page.eval_on_selector_all(
            "#nodes tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
        )
        assert sorted((cells[0], cells[1]) for cells in table) == [(by_worker[i]["name"], str(i)) for i in (0, 1)]
        clients_col = header.index("Clients")
        assert sum(int(cells[clients_col]) for cells in table) == CLIENTS
        assert await page.is_visible("#nodes tfoot")
        assert await page.text_content("#total-clients") == str(CLIENTS)
        assert await page.text_content("#total-subs") == str(CLIENTS + EXTRA_SUBS)
        assert await page.text_content("#tile-connections") == str(CLIENTS)
        assert await page.text_content("#tile-subscriptions") == str(CLIENTS + EXTRA_SUBS)
        assert await page.text_content("#label-connections") == "Connections · 2 nodes"
        assert await page.text_content("#label-users") == "Users · this node"
        charted = await page.evaluate("window.__dashboard.charts.connections.data[1].at(-1)")
        assert charted == CLIENTS, "the connections chart draws the whole server"
    finally:
        await browser.close()
        for client in clients:
            await client.disconnect()

    # the whole server stops: during shutdown.ready_delay every worker answers /ready with 503
    assert workers.proc is not None
    workers.proc.send_signal(signal.SIGTERM)

    async def draining() -> list[int] | None:
        answers = []
        for i in (0, 1):
            try:
                answers.append((await _get(http, f"http://127.0.0.1:{internal + i}/ready"))[0])
            except aiohttp.ClientError:
                return None
        return answers if answers == [503, 503] else None

    assert await eventually(draining, timeout=5, interval=0.05) == [503, 503]
    assert workers.proc.wait(20) == 0

    lines = [line for line in workers.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {e["worker"] for e in entries if "worker" in e} == {0, 1}
    unmarked = [e for e in entries if "worker" not in e]
    assert all(e["logger"] == "trunkline.workers" for e in unmarked), "only the supervisor's lines have no worker"
    assert any("worker 1 ready" in e["message"] and e.get("worker") == 1 for e in entries)


@pytest.fixture
def insecure(tmp_path: Path, redis_url: str) -> Iterator[Workers]:
    """2 workers, the dashboard on the shared port with ``admin.insecure`` and no ``admin.secret``."""
    running = Workers(tmp_path, redis_url, count=2, extra={"admin": {"enabled": True, "insecure": True}})
    running.start()
    yield running
    if running.proc is not None and running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


async def test_insecure_dashboard_tokens_work_on_every_worker(insecure: Workers, http: aiohttp.ClientSession) -> None:
    """Without ``admin.secret`` the supervisor gives every worker one dashboard key (each would make its own).

    Each request and connection below is a new TCP connection, so the kernel hands it to
    either worker: a dashboard token or a CSRF token one worker made must be good on the other.
    """
    nodes = await insecure.ready()
    assert len(nodes) == 2
    seen: set[str] = set()
    for n in range(8):
        async with http.get(f"{insecure.base}/dashboard/session") as r:
            assert r.status == 200
            session = await r.json()
        seen.add(session["node"])
        async with http.post(
            f"{insecure.base}/dashboard/api/info", json={}, headers={"X-CSRF-Token": session["csrf"]}
        ) as r:
            assert r.status == 200, f"request {n}: the CSRF token of {session['node']} refused: {await r.text()}"
    assert len(seen) == 2, "both workers answered"

    async def admin(n: int) -> tuple[Any, str]:
        async with http.get(f"{insecure.base}/dashboard/token") as r:
            assert r.status == 200
            issued = (await r.json())["token"]
        client = new_client(insecure.ws_url, token=issued)
        await client.connect()
        rec = Recorder()
        sub = client.new_subscription("__trunkline:stats", rec)
        await sub.subscribe()
        await sub.ready(timeout=5)  # connected and subscribed: the token was good on this worker
        doc = await eventually(lambda: rec.publications[-1][1] if rec.publications else None, timeout=5)
        return client, doc["node"]

    admins = list(await asyncio.gather(*(admin(n) for n in range(8)), return_exceptions=True))
    try:
        failed = [a for a in admins if isinstance(a, BaseException)]
        assert not failed, failed
        # The kernel picks the worker by a hash of the client's port: 8 land on one worker about
        # once in 128 runs, so a few more (at most 16) are opened until both have been reached.
        for n in range(8, 24):
            if len({node for _, node in admins}) >= 2:
                break
            admins.append(await admin(n))
        stats_from = {node for _, node in admins}
        assert stats_from == {n["uid"] for n in nodes.values()}, "admin connections on both workers"
    finally:
        for a in admins:
            if not isinstance(a, BaseException):
                await a[0].disconnect()
    assert insecure.stop() == 0
