"""``http_api.error_mode``: "transport" answers a failed command with an HTTP status, the default with 200.

Real HTTP to a real server: publishing to a channel of an unknown namespace is error 102.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, Running

HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
UNKNOWN = b'{"channel": "nosuchnamespace:x", "data": {}}'


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_error_mode_transport_answers_with_the_http_status(
    start_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    srv: Running = await start_server({"http_api": {"error_mode": "transport"}})
    async with http.post(srv.api_url + "/publish", data=UNKNOWN, headers=HEADERS) as r:
        assert r.status == 404
        body = await r.json()
    assert body["code"] == 102 and "error" not in body  # the error object itself, no envelope
    async with http.post(srv.api_url + "/publish", data=b'{"channel": "news", "data": {}}', headers=HEADERS) as r:
        assert r.status == 200 and "result" in await r.json()  # success is unchanged


async def test_default_error_mode_answers_200_with_the_error(
    start_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    srv: Running = await start_server()
    async with http.post(srv.api_url + "/publish", data=UNKNOWN, headers=HEADERS) as r:
        assert r.status == 200
        assert (await r.json())["error"]["code"] == 102
