"""The Grafana dashboard and the alerting rules of ``docs/monitoring/`` against a real Prometheus.

A Trunkline node (Redis broker, real redis-server) serves real traffic: centrifuge-python
clients subscribe and publish, raw WebSocket clients come and go, one stalls until it is
cut as a slow consumer, one asks to recover from a stale position, the server API is
called over HTTP (publish, broadcast, presence, history, a wrong key) and one presence
key in Redis holds the wrong type, so the broker fails for real. A ``prometheus`` process
(Debian package) scrapes the node every second; every query of every dashboard panel
must return data, the panel variable must list the node, and every alerting rule must
be loaded, evaluated without error by Prometheus and answer an instant query.
``promtool`` checks the rules file and runs its unit tests (``alerts_test.yml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from centrifuge import Client, SubscriptionState

from tests.conftest import API_KEY, ROOT, Running, eventually, free_port, token

from . import connect, scrape, subscribe, value

MONITORING = ROOT / "docs" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval becomes for a 1 s scrape interval, with margin
BROKEN = "broken-presence"  # a channel whose presence key in Redis holds a string

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None, reason="prometheus/promtool not installed (make system-deps)"
)


# ------------------------------------------------------------------------------ the files themselves


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]


def alert_expressions() -> list[tuple[str, str]]:
    """(alert name, expression) of every rule of alerts.yml (no YAML library: the file keeps to two shapes)."""
    rules: list[tuple[str, str]] = []
    name = ""
    lines = ALERTS.read_text().splitlines()
    i = 0
    while i < len(lines):  # a small reader for this file's shapes: "expr: one line" or "expr: >-" + block
        line = lines[i].strip()
        if line.startswith("- alert:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("expr:"):
            rest = line.split(":", 1)[1].strip()
            if rest in (">-", ">", "|"):
                indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
                block = []
                while i + 1 < len(lines) and len(lines[i + 1]) - len(lines[i + 1].lstrip()) >= indent:
                    i += 1
                    block.append(lines[i].strip())
                rest = " ".join(block)
            rules.append((name, rest))
        i += 1
    return rules


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 25
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            used = set(re.findall(r"\$(\w+)", expr))
            assert used <= {"instance", "__rate_interval"}, (panel["title"], used)
            # every trunkline_/process_ selector is narrowed to the chosen nodes
            for selector in re.findall(r"\b((?:trunkline|process)_\w+)(\{[^}]*\})?", expr):
                assert 'instance=~"$instance"' in selector[1], (panel["title"], expr)
    titles = [p["title"] for p in graphs]
    assert len(titles) == len(set(titles))


@needs_prometheus
def test_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in check.stdout
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=MONITORING,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    names = {name for name, _ in alert_expressions()}
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested <= names
    for must in (
        "TrunklineNoReadyNodes",
        "TrunklineBrokerErrors",
        "TrunklineSlowConsumerDisconnectsRising",
        "TrunklineOutboundBufferNearLimit",
    ):
        assert must in tested, f"{must} has no unit test"


# ------------------------------------------------------------------------------ /metrics additions


async def test_metrics_report_readiness_and_the_buffer_limit(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({"client": {"queue_max_size": 123456}})
    url = f"{running.http_url}/metrics"
    samples = await scrape(url)
    assert value(samples, "trunkline_ready") == 1
    assert value(samples, "trunkline_outbound_buffer_limit_bytes") == 123456
    running.server.node.accepting = False  # what a shutdown does first
    try:
        assert value(await scrape(url), "trunkline_ready") == 0
    finally:
        running.server.node.accepting = True


# ------------------------------------------------------------------------------ a real Prometheus


@dataclass
class Prometheus:
    url: str
    proc: asyncio.subprocess.Process
    log: Path

    async def get(self, http: aiohttp.ClientSession, path: str, **params: str) -> dict[str, Any]:
        async with http.get(f"{self.url}{path}", params=params) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200 and body["status"] == "success", (path, params, body)
            return body

    async def query(self, http: aiohttp.ClientSession, expr: str) -> list[Any]:
        result: list[Any] = (await self.get(http, "/api/v1/query", query=expr))["data"]["result"]
        return result


@contextlib.asynccontextmanager
async def run_prometheus(tmp: Path, target: str) -> AsyncIterator[Prometheus]:
    assert PROMETHEUS is not None
    port = free_port()
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "trunkline", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert proc.returncode is None, f"prometheus exited:\n{log.read_text()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{prom.url}/-/ready") as resp:
                        return resp.status == 200
                return False

            await eventually(ready, timeout=15, interval=0.1)
        yield prom
    finally:
        if proc.returncode is None:
            proc.terminate()  # by PID: the process this test started
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 5)


class Traffic:
    """Everything a dashboard panel shows, produced by real clients until stopped."""

    def __init__(self, running: Running, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http
        self.clients: list[Client] = []
        self.rounds = 0
        self.stop = asyncio.Event()

    async def api(self, method: str, params: dict[str, Any], key: str = API_KEY) -> int:
        async with self.http.post(f"{self.running.api_url}/{method}", json=params, headers={"X-API-Key": key}) as resp:
            await resp.read()
            return resp.status

    async def start_clients(self) -> None:
        ws = self.running.ws_url
        self.clients = [await connect(ws, token(f"user-{i}")) for i in range(3)]
        for client in self.clients:
            await subscribe(client, "news")
        await subscribe(self.clients[0], "smallhistory:room")
        refused = self.clients[1].new_subscription("unknownns:x")  # a client command error (102)
        await refused.subscribe()
        await eventually(lambda: refused.state == SubscriptionState.UNSUBSCRIBED)

    async def recover_from_a_stale_position(self) -> None:
        async with self.http.ws_connect(self.running.ws_url) as ws:
            await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("recovering")}}))
            assert "connect" in json.loads((await ws.receive(timeout=5)).data)
            sub = {"channel": "news", "recover": True, "epoch": "stale-epoch", "offset": 1}
            await ws.send_str(json.dumps({"id": 2, "subscribe": sub}))
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert reply["subscribe"].get("recovered") is not True, reply

    async def slow_consumer(self) -> None:
        """A subscriber on a thin link that stops reading, fed until the node cuts it (3008)."""
        node = self.running.server.node

        def thin(addr_info: tuple[Any, ...]) -> Any:
            import socket

            family, kind, proto, _, _ = addr_info
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            return sock

        connector = aiohttp.TCPConnector(socket_factory=thin)
        async with aiohttp.ClientSession(connector=connector) as thin_http:
            ws = await thin_http.ws_connect(self.running.ws_url)
            await ws.send_str(json.dumps({"id": 1, "connect": {"token": token("slow")}}))
            await ws.receive(timeout=5)
            await ws.send_str(json.dumps({"id": 2, "subscribe": {"channel": "nohistory:flood"}}))
            await ws.receive(timeout=5)
            payload = json.dumps({"p": "x" * 16000}).encode()
            before = node.metrics.slow._value.get()
            deadline = time.monotonic() + 10
            for _ in range(5000):  # bounded: well past what any socket buffer holds
                if node.metrics.slow._value.get() > before or time.monotonic() > deadline:
                    break
                await node.publish("nohistory:flood", payload)
                await asyncio.sleep(0)
            assert node.metrics.slow._value.get() > before, "the stalled reader was not cut"
            await ws.close()

    async def loop(self) -> None:
        """Publications, server API calls (good and bad), connection churn: about 5 rounds a second."""
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.rounds += 1
            n = self.rounds
            await self.clients[n % 3].publish("news", {"n": n})
            assert await self.api("publish", {"channel": "news", "data": {"api": n}}) == 200
            assert await self.api("broadcast", {"channels": ["news", "smallhistory:room"], "data": {"b": n}}) == 200
            assert await self.api("presence", {"channel": "news"}) == 200
            assert await self.api("history", {"channel": "news", "limit": 5}) == 200
            assert await self.api("presence", {"channel": BROKEN}) == 200  # error 100 in the body: broker failed
            assert await self.api("info", {}, key="wrong-key") == 401
            async with self.http.ws_connect(self.running.ws_url) as ws:  # a connection that comes and goes
                await ws.send_str(json.dumps({"id": 1, "connect": {"token": token(f"churn-{n}")}}))
                await ws.receive(timeout=5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.2)

    async def close(self) -> None:
        for client in self.clients:
            await client.disconnect()


@needs_prometheus
async def test_dashboard_and_alerts_against_real_prometheus(
    start_server: Callable[..., Any], redis_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    running: Running = await start_server(
        {
            "engine": {"type": "redis", "redis": {"address": redis_url, "prefix": prefix}},
            "client": {"queue_max_size": 65536},
        }
    )
    target = f"127.0.0.1:{running.port}"
    r = aioredis.Redis.from_url(redis_url)
    await r.set(f"{prefix}.presence.data.{BROKEN}", "not a hash")  # every presence read of it fails
    queries = dashboard_queries()
    alerts = alert_expressions()
    assert len(alerts) >= 10

    async with aiohttp.ClientSession() as http, run_prometheus(tmp_path, target) as prom:
        traffic = Traffic(running, http)
        await traffic.start_clients()
        await traffic.recover_from_a_stale_position()
        await traffic.slow_consumer()
        looping = asyncio.ensure_future(traffic.loop())
        try:
            # every panel query returns data, with the dashboard's variables as Grafana would fill them
            pending = {expr for _, expr in queries}
            last: dict[str, Any] = {}

            async def all_answered() -> bool:
                assert not looping.done() or looping.exception() is None, looping.exception()
                for expr in sorted(pending):
                    concrete = expr.replace("$instance", re.escape(target).replace("\\", "\\\\"))
                    concrete = concrete.replace("$__rate_interval", RATE_INTERVAL)
                    last[expr] = result = await prom.query(http, concrete)
                    if result:
                        pending.discard(expr)
                return not pending

            started = time.monotonic()
            try:
                await eventually(all_answered, timeout=25, interval=0.5)
            except AssertionError:
                titles = sorted({title for title, expr in queries if expr in pending})
                raise AssertionError(f"panels without data: {titles}\n{[(e, last.get(e)) for e in pending]}") from None
            waited = time.monotonic() - started

            # the panel variable lists this node; the target is scraped
            instances = await prom.get(http, "/api/v1/label/instance/values", **{"match[]": "trunkline_build_info"})
            assert target in instances["data"]

            async def scraped() -> bool:  # polled: one scrape of a loaded machine may pass the 1 s timeout
                targets = (await prom.get(http, "/api/v1/targets"))["data"]["activeTargets"]
                return [(t["labels"]["instance"], t["health"]) for t in targets] == [(target, "up")]

            await eventually(scraped, timeout=10, interval=0.5)

            # what the traffic did shows in Prometheus, not only somewhere
            for expr in (
                f'trunkline_broker_errors_total{{instance="{target}",op="presence"}} > 0',
                f'trunkline_slow_consumers_total{{instance="{target}"}} > 0',
                f'trunkline_disconnects_total{{instance="{target}",code="3008"}} > 0',
                f'trunkline_recoveries_total{{instance="{target}",recovered="false"}} > 0',
                f'trunkline_api_requests_total{{instance="{target}",method="info",result="401"}} > 0',
                f'trunkline_api_requests_total{{instance="{target}",method="presence",result="100"}} > 0',
                f'trunkline_commands_total{{instance="{target}",method="subscribe",code="102"}} > 0',
                f'trunkline_ready{{instance="{target}"}} == 1',
                f'trunkline_outbound_buffer_limit_bytes{{instance="{target}"}} == 65536',
            ):
                assert await prom.query(http, expr), expr
            assert not await prom.query(http, '{__name__=~".+_created"}'), "no *_created series"
            # every Trunkline metric Prometheus stored is described in docs/monitoring/README.md
            names = (await prom.get(http, "/api/v1/label/__name__/values"))["data"]
            readme = (MONITORING / "README.md").read_text()
            stored = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if n.startswith("trunkline_")}
            assert len(stored) >= 25
            assert sorted(n for n in stored if f"`{n}" not in readme) == []

            # every alerting rule: loaded, evaluated by Prometheus without error, and answers a query
            for _, expr in alerts:
                await prom.query(http, expr)  # status success, or get() fails

            # the broker and API failures of the traffic make their alerts pending (their "for" is minutes)
            expected_active = {"TrunklineBrokerErrors", "TrunklineApiInternalErrors"}

            async def rules_evaluated() -> list[dict[str, Any]] | None:
                groups = (await prom.get(http, "/api/v1/rules", type="alert"))["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                done = all(rule["lastEvaluation"] > "2000" and rule["health"] == "ok" for rule in rules)
                active = {rule["name"] for rule in rules if rule["state"] != "inactive"}
                return rules if rules and done and expected_active <= active else None

            rules = await eventually(rules_evaluated, timeout=15, interval=0.5)
            assert sorted(rule["name"] for rule in rules) == sorted(name for name, _ in alerts)
            assert all(rule.get("lastError", "") == "" for rule in rules)
            active = {rule["name"] for rule in rules if rule["state"] != "inactive"}
            assert "TrunklineNoReadyNodes" not in active and "TrunklineTargetDown" not in active
            print(
                f"\n{len(queries)} panel queries answered {waited:.1f}s after the traffic started; "
                f"{len(rules)} rules evaluated, active: {sorted(active)}; {traffic.rounds} traffic rounds"
            )
        finally:
            traffic.stop.set()
            await looping
            await traffic.close()
            await r.aclose()
