"""Server API protection: the key check, the internal listener, request body limits."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import Running, free_port
from tests.security.conftest import API_KEY
from trunkline.api import http as api_http

Serve = Callable[..., Awaitable[Running]]
UNAUTHORIZED = (401, {"error": {"code": 401, "message": "unauthorized"}})


async def post(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers, **kwargs) as resp:
        data = await resp.read()
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, data.decode(errors="replace")


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status


# ----------------------------------------------------------------------------------- the key


async def test_api_requires_the_key(serve: Serve) -> None:
    running = await serve()
    url = running.api_url + "/info"
    assert await post(url, b"{}") == UNAUTHORIZED
    for wrong in ("", "x", API_KEY[:-1], API_KEY + "x", API_KEY.upper(), API_KEY + "-"):
        assert await post(url, b"{}", {"X-API-Key": wrong}) == UNAUTHORIZED, wrong
        assert await post(url, b"{}", {"Authorization": f"apikey {wrong}"}) == UNAUTHORIZED, wrong
    assert await post(url, b"{}", {"Authorization": f"Bearer {API_KEY}"}) == UNAUTHORIZED
    for headers, params in (
        ({"X-API-Key": API_KEY}, {}),
        ({"Authorization": f"apikey {API_KEY}"}, {}),
        ({"Authorization": f"APIKEY {API_KEY}"}, {}),
        ({}, {"api_key": API_KEY}),
    ):
        status, body = await post(url, b"{}", headers, params=params)
        assert status == 200 and "result" in body


async def test_empty_configured_key_refuses_everyone(serve: Serve) -> None:
    running = await serve({"http_api": {"key": ""}})
    assert await post(running.api_url + "/info", b"{}") == UNAUTHORIZED
    assert await post(running.api_url + "/info", b"{}", {"X-API-Key": ""}) == UNAUTHORIZED


async def test_api_key_is_compared_in_constant_time(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every guess, whatever its length or common prefix, goes through ``hmac.compare_digest``
    (no early exit on the first differing byte); a brute force of many guesses gets 401 each."""
    running = await serve()
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_http.hmac, "compare_digest", spy)
    guesses = [API_KEY[:n] + "?" for n in range(0, len(API_KEY), 7)] + [f"guess-{i}" for i in range(50)]
    results = await asyncio.gather(*(post(running.api_url + "/info", b"{}", {"X-API-Key": g}) for g in guesses))
    assert all(result == UNAUTHORIZED for result in results)
    assert sorted(a for a, _ in seen) == sorted(g.encode() for g in guesses)
    assert {b for _, b in seen} == {API_KEY.encode()}


async def test_api_is_post_only(serve: Serve) -> None:
    running = await serve()
    async with aiohttp.ClientSession() as session, session.get(running.api_url + "/info") as resp:
        assert resp.status == 405
        assert await resp.json() == {"error": {"code": 405, "message": "use POST"}}


# ----------------------------------------------------------------------------------- internal listener


async def test_internal_listener_keeps_admin_routes_off_the_public_port(serve: Serve) -> None:
    running = await serve({"http_server": {"internal_port": free_port()}})
    public = running.http_url
    internal = f"http://127.0.0.1:{running.server.internal_port}"
    assert running.server.internal_port and running.server.internal_port != running.port
    headers = {"X-API-Key": API_KEY}
    for path in ("/api/info", "/api/publish", "/api"):
        status, _ = await post(public + path, b"{}", headers)
        assert status == 404, path
    assert await get_status(public + "/metrics") == 404
    assert await get_status(public + "/dashboard") == 404
    status, body = await post(internal + "/api/info", b"{}", headers)
    assert status == 200 and body["result"]["nodes"]
    assert await post(internal + "/api/info", b"{}") == UNAUTHORIZED  # still needs the key
    assert await get_status(internal + "/metrics") == 200
    assert await get_status(internal + "/connection/websocket") == 404  # clients use the public port
    assert await get_status(public + "/health") == 200


async def test_without_internal_port_the_api_is_on_the_public_port(serve: Serve) -> None:
    running = await serve()
    status, _ = await post(running.http_url + "/api/info", b"{}", {"X-API-Key": API_KEY})
    assert status == 200


# ----------------------------------------------------------------------------------- bodies


async def test_request_body_over_the_limit_is_413(serve: Serve) -> None:
    running = await serve({"http_api": {"max_body_size": 4096}})
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    expected = (413, {"error": {"code": 107, "message": "request body over 4096 bytes"}})
    body = b'{"channel":"news","data":"' + b"x" * 5000 + b'"}'
    assert await post(running.api_url + "/publish", body, headers) == expected

    async def chunked() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    assert await post(running.api_url + "/publish", chunked(), headers) == expected  # type: ignore[arg-type]
    assert await post(running.api_url, body, headers) == expected  # the legacy endpoint too
    small = b'{"channel":"news","data":"' + b"x" * 3000 + b'"}'
    status, reply = await post(running.api_url + "/publish", small, headers)
    assert status == 200 and "result" in reply


async def test_unauthenticated_body_is_never_read(serve: Serve) -> None:
    """Without the key the answer is 401 at once, before a (huge, slow) body is read."""
    running = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n{"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 401")
    writer.close()
