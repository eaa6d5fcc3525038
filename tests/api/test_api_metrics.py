"""Server API metrics: every answer counted by method, result and status class, over real HTTP.

Requests go through aiohttp (and the ``cent`` SDK for a batch); the figures are read back
from the server's own ``/metrics`` endpoint, parsed with prometheus_client's parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from cent import AsyncClient, BatchRequest, PublishRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running
from tests.observe import scrape, total, value
from trunkline.observe.metrics import API_METHODS, Metrics

HEADERS = {"X-API-Key": API_KEY}


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    async with http.post(url, data=body, headers=HEADERS if headers is None else headers) as resp:
        await resp.read()
        return resp.status


async def test_requests_counted_by_method_result_and_status(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({"http_api": {"max_body_size": 1024}})
    api = running.api_url
    async with aiohttp.ClientSession() as http:
        assert await _post(http, f"{api}/publish", b'{"channel": "news", "data": {"n": 1}}') == 200
        assert await _post(http, f"{api}/publish", b'{"channel": "news", "data": {"n": 2}}') == 200
        assert await _post(http, f"{api}/publish", b'{"channel": "unknownns:x", "data": {}}') == 200  # 102 in body
        assert await _post(http, f"{api}/publish", b"{not json") == 400
        assert await _post(http, f"{api}/publish", b"x" * 2000) == 413
        assert await _post(http, f"{api}/info", b"{}", headers={"X-API-Key": "wrong"}) == 401
        assert await _post(http, f"{api}/no_such_method_31337", b"{}") == 404
        assert await _post(http, f"{api}/a/b", b"{}") == 404
        async with http.get(f"{api}/info") as resp:
            assert resp.status == 405
        # transport error mode: the error code travels as an HTTP status
        transport = {**HEADERS, "X-Centrifugo-Error-Mode": "transport"}
        assert await _post(http, f"{api}/publish", b'{"channel": "unknownns:y", "data": {}}', transport) == 404
        legacy = b'{"method": "publish", "params": {"channel": "news", "data": {}}}\n{"method": "nope", "params": {}}'
        assert await _post(http, api, legacy) == 200

    samples = await scrape(f"{running.http_url}/metrics")
    requests = "trunkline_api_requests_total"
    assert value(samples, requests, method="publish", result="ok", status="2xx") == 2
    assert value(samples, requests, method="publish", result="102", status="2xx") == 1
    assert value(samples, requests, method="publish", result="107", status="4xx") == 2  # malformed, too large
    assert value(samples, requests, method="publish", result="102", status="4xx") == 1  # transport mode
    assert value(samples, requests, method="info", result="401", status="4xx") == 1
    assert value(samples, requests, method="info", result="405", status="4xx") == 1
    assert value(samples, requests, method="unknown", result="104", status="4xx") == 2  # unknown name, a/b
    assert value(samples, requests, method="legacy", result="ok", status="2xx") == 1
    assert total(samples, requests) == 11

    commands = "trunkline_api_commands_total"
    assert value(samples, commands, method="publish", result="ok") == 3  # two direct, one legacy line
    assert value(samples, commands, method="publish", result="102") == 2
    assert value(samples, commands, method="publish", result="107") == 1  # the malformed body reached the method
    assert value(samples, commands, method="unknown", result="104") == 1  # the legacy "nope" line

    hist = "trunkline_api_request_duration_seconds_count"
    assert value(samples, hist, method="publish") == 6
    assert total(samples, hist) == 11
    # no label value outside the bounded set, whatever the paths asked for
    methods = {dict(labels)["method"] for name, labels in samples if name in (requests, commands, hist)}
    assert methods <= API_METHODS | {"unknown"}
    assert "no_such_method_31337" not in str(samples)


async def test_batch_counts_each_command_and_feeds_the_dashboard_rate(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    node = running.server.node
    async with AsyncClient(running.api_url, API_KEY) as cent:  # the SDK's own batch (all succeed)
        await cent.batch(BatchRequest(requests=[PublishRequest(channel="news", data={"n": n}) for n in (1, 2)]))
    body = b'{"commands": [{"publish": {"channel": "unknownns:z", "data": {}}}, {"nope": {}}, {"a": {}, "b": {}}]}'
    async with aiohttp.ClientSession() as http:  # a failing batch by hand (cent cannot parse error replies)
        assert await _post(http, f"{running.api_url}/batch", body) == 200
    samples = await scrape(f"{running.http_url}/metrics")
    assert value(samples, "trunkline_api_requests_total", method="batch", result="ok", status="2xx") == 2
    assert value(samples, "trunkline_api_commands_total", method="publish", result="ok") == 2
    assert value(samples, "trunkline_api_commands_total", method="publish", result="102") == 1
    assert value(samples, "trunkline_api_commands_total", method="unknown", result="104") == 1
    assert value(samples, "trunkline_api_commands_total", method="unknown", result="107") == 1
    assert total(samples, "trunkline_api_commands_total", method="batch") == 0, "a batch is not a command"
    assert node.metrics.snapshot().api_commands == 5


async def test_no_created_series(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    async with aiohttp.ClientSession() as http:
        assert await _post(http, f"{running.api_url}/info", b"{}") == 200
        async with http.get(f"{running.http_url}/metrics") as resp:
            text = await resp.text()
    assert "trunkline_connects_total" in text and "trunkline_api_requests_total" in text
    assert "_created" not in text


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.text(min_size=0, max_size=80), min_size=1, max_size=20),
    results=st.lists(st.sampled_from(["ok", "100", "102", "104", "107", "401", "405"]), min_size=1, max_size=20),
    status=st.sampled_from([200, 400, 401, 404, 405, 413, 500]),
)
def test_method_label_is_bounded_whatever_the_path_names(names: list[str], results: list[str], status: int) -> None:
    metrics = Metrics()
    for name, result in zip(names, results * len(names), strict=False):
        metrics.api_request(name, result, status, 0.001)
        metrics.api_command(name, result)
    for vec in (metrics.api_requests, metrics.api_commands):
        assert {key[0] for key in vec.values} <= API_METHODS | {"unknown"}
    assert all(key[2] == f"{status // 100}xx" for key in metrics.api_requests.values)
    known = [n for n in names if n in API_METHODS]
    assert metrics.api_request_seconds.count("unknown") == len(names) - len(known)
    assert metrics.api_commands.total() == len(names)
