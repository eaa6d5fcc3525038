"""``trunkline serve --workers N``: real processes on one port, a real redis-server, real SDK clients.

- the memory engine with N > 1 is a config error naming ``engine.type``;
- 2 workers on one port: clients land on both (the ``info`` API's node list), a publication
  on one reaches subscribers on the other, presence and history agree whichever worker
  answers, ``/emulation`` requests reach the worker that holds the session, every log line
  carries its worker id;
- under load, a worker stopped with SIGTERM and one killed with ``kill -9`` are started again
  by the supervisor, and every client reconnects and recovers with nothing missing; SIGTERM
  to the supervisor stops every worker and it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import API_KEY, BASE_CONFIG, ROOT, deep_merge, eventually, free_port, make_settings, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client
from tests.transport.streams import Stream
from trunkline.errors import ConfigError
from trunkline.workers import parse_workers, validate, worker_settings

pytestmark = pytest.mark.timeout(120)


class Workers:
    """``trunkline serve --workers N`` in a subprocess, and the API on its shared port."""

    def __init__(self, tmp: Path, redis_url: str, count: int = 2, extra: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        config = deep_merge(
            BASE_CONFIG,
            {
                "engine": {"type": "redis", "redis": {"address": redis_url, "prefix": f"w{self.port}"}},
                "log": {"level": "info"},
                "shutdown": {"timeout": 3},
                **(extra or {}),
            },
        )
        self.config = tmp / "workers.json"
        self.config.write_text(json.dumps(config))
        self.log = tmp / "workers.log"
        self.count = count
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trunkline", "serve", "--config", str(self.config), "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TRUNKLINE_WORKERS": str(self.count)},
                cwd=ROOT,
            )

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    async def api(self, method: str, body: dict[str, Any], attempts: int = 50) -> dict[str, Any]:
        """POST /api/<method>; retried while a worker restarts (a connection refused or reset)."""
        for _ in range(attempts):
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                    http.post(f"{self.base}/api/{method}", json=body, headers={"X-API-Key": API_KEY}) as r,
                ):
                    if r.status == 200:
                        answer: dict[str, Any] = await r.json()
                        assert "error" not in answer, answer
                        return answer
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"/api/{method} did not answer in {attempts} attempts")

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """The nodes the ``info`` API lists, by name."""
        answer = await self.api("info", {})
        return {n["name"]: n for n in answer["result"]["nodes"]}

    async def ready(self) -> dict[str, dict[str, Any]]:
        async def all_up() -> dict[str, dict[str, Any]] | None:
            try:
                nodes = await self.nodes()
            except AssertionError:  # not listening yet (workers start in a few seconds on a busy machine)
                return None
            names = {name.rsplit("_", 1)[-1] for name in nodes}
            return nodes if names >= {f"w{i}" for i in range(self.count)} else None

        return await eventually(all_up, timeout=60, interval=0.2)  # type: ignore[no-any-return]

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def workers(tmp_path: Path, redis_url: str) -> Iterator[Workers]:
    running = Workers(tmp_path, redis_url, extra={"http_stream": {"enabled": True}})
    yield running
    if running.proc is not None and running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


def test_memory_engine_with_workers_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "memory.json"
    config.write_text(json.dumps(BASE_CONFIG))
    done = subprocess.run(
        [sys.executable, "-m", "trunkline", "serve", "--config", str(config), "--workers", "2"],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert b"error: engine.type:" in done.stderr and b"redis" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "trunkline", "serve", "--config", str(config), "--workers", "many"],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and b"--workers" in bad.stderr


async def test_two_workers_act_as_one_server(workers: Workers, http: aiohttp.ClientSession) -> None:
    workers.start()
    await workers.ready()
    clients, recorders = [], []
    try:
        for i in range(12):
            rec = Recorder()
            client = new_client(workers.ws_url, token=token(f"u{i}"))
            sub = client.new_subscription("room", rec)
            await client.connect()
            await sub.subscribe()
            await sub.ready()
            clients.append(client)
            recorders.append(rec)

        async def spread() -> dict[str, int] | None:
            counts = {name: n["num_clients"] for name, n in (await workers.nodes()).items()}
            return counts if sum(counts.values()) == 12 else None

        counts = await eventually(spread, timeout=15, interval=0.5)  # node info is announced every 5 s
        assert len(counts) == 2 and all(n > 0 for n in counts.values()), f"clients on both workers: {counts}"

        for i in range(5):
            await workers.api("publish", {"channel": "room", "data": {"i": i}})
        await eventually(lambda: all(len(r.publications) == 5 for r in recorders), timeout=10)
        assert all([o for o, _ in r.publications] == [1, 2, 3, 4, 5] for r in recorders)

        for _ in range(6):  # each request on a new connection: both workers answer
            presence = await workers.api("presence", {"channel": "room"})
            assert len(presence["result"]["presence"]) == 12
            history = await workers.api("history", {"channel": "room", "limit": 10})
            assert [p["data"]["i"] for p in history["result"]["publications"]] == [0, 1, 2, 3, 4]

        # /emulation: each request on a new connection; those the kernel gives the other worker are forwarded.
        nodes_seen: set[str] = set()
        for n in range(8):
            body = json.dumps({"id": 1, "connect": {"token": token(f"e{n}")}})
            stream = await Stream.open(http, workers.base, body=body)
            try:
                await stream.connect_result()
                nodes_seen.add(stream.node)
                for k in range(4):
                    status = await stream.send({"id": 2 + k, "subscribe": {"channel": f"emu{n}"}})
                    assert status == 204, f"emulation request {k} of stream {n}: {status}"
                reply = await stream.next(lambda m: m.get("id") == 2)
                assert "subscribe" in reply
            finally:
                stream.close()
        assert len(nodes_seen) == 2, "streams on both workers"
    finally:
        for client in clients:
            await client.disconnect()
    assert workers.stop() == 0
    lines = [line for line in workers.output().splitlines() if line.strip()]
    assert any("[worker 0]" in line for line in lines) and any("[worker 1]" in line for line in lines)
    assert all("[worker " in line or "[supervisor]" in line for line in lines), lines
    assert "all workers stopped" in workers.output()


async def test_sigterm_and_kill_9_of_workers_lose_nothing(workers: Workers) -> None:
    workers.start()
    nodes = await workers.ready()
    pids = {name.rsplit("_", 1)[-1]: n["process"]["pid"] for name, n in nodes.items()}
    clients, recorders, events = [], [], []
    published = 0
    stop = asyncio.Event()

    async def publish() -> None:
        nonlocal published
        while not stop.is_set() and published < 2000:
            # ``api`` retries a request whose worker died; a key makes a retry of a publication
            # that was made (its answer lost with the worker) not publish it twice.
            body = {"channel": "stream", "data": {"i": published}, "idempotency_key": f"p{published}"}
            await workers.api("publish", body)
            published += 1
            await asyncio.sleep(0.01)

    try:
        for i in range(8):
            rec, ev = Recorder(), ClientRecorder()
            client = new_client(workers.ws_url, ev, token=token(f"u{i}"))
            sub = client.new_subscription("stream", rec)
            await client.connect()
            await sub.subscribe()
            await sub.ready()
            clients.append(client)
            recorders.append(rec)
            events.append(ev)
        load = asyncio.create_task(publish())
        await eventually(lambda: published >= 50, timeout=10)

        os.kill(pids["w0"], signal.SIGTERM)  # graceful: its clients are closed with 3001 and reconnect
        await eventually(lambda: published >= 150, timeout=20)
        os.kill(pids["w1"], signal.SIGKILL)  # abrupt: its clients see the link drop
        await eventually(lambda: published >= 300, timeout=30)

        async def restarted() -> bool:
            now = {name.rsplit("_", 1)[-1]: n["process"]["pid"] for name, n in (await workers.nodes()).items()}
            return now.get("w0") not in (None, pids["w0"]) and now.get("w1") not in (None, pids["w1"])

        await eventually(restarted, timeout=30, interval=0.5)
        stop.set()
        await asyncio.wait_for(load, 10)
        total = published
        await eventually(lambda: all(len(r.publications) >= total for r in recorders), timeout=30)
        for rec in recorders:
            assert [o for o, _ in rec.publications] == list(range(1, total + 1)), "in order, no gap, no duplicate"
            assert [d["i"] for _, d in rec.publications] == list(range(total))
        assert sum(len(ev.connected) >= 2 for ev in events) == len(events), "every client reconnected"
        assert all(rec.subscribed[-1].recovered for rec in recorders if len(rec.subscribed) > 1)
    finally:
        stop.set()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
    started = time.monotonic()
    assert workers.stop() == 0
    assert time.monotonic() - started < 15
    out = workers.output()
    assert "worker 1 (pid" in out and "signal SIGKILL" in out and "restarting" in out


@given(st.text(max_size=12))
def test_parse_workers_answers_every_text(text: str) -> None:
    try:
        count = parse_workers(text)
    except ValueError as exc:
        assert "must be" in str(exc)
    else:
        assert 1 <= count <= 1024


def test_worker_settings_name_and_internal_port() -> None:
    settings = make_settings({"node": {"name": "edge"}, "http_server": {"internal_port": 9000}})
    assert parse_workers("auto") == (os.cpu_count() or 1) and parse_workers(" 3 ") == 3
    second = worker_settings(settings, 1)
    assert second.node.name == "edge_w1" and second.http_server.internal_port == 9001
    assert worker_settings(make_settings(), 2).http_server.internal_port == 0
    with pytest.raises(ConfigError) as info:
        validate(make_settings(), 2)
    assert info.value.key == "engine.type"
    validate(make_settings(), 1)  # one worker: any engine
