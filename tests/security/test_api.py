"""Server API protection: the key check, the internal listener, request body limits, command caps."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.api import rawhttp
from tests.conftest import Running, free_port
from tests.security.conftest import API_KEY, api
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


async def test_a_key_that_is_not_utf8_is_401(serve: Serve) -> None:
    """Header bytes that are not UTF-8 (or a query key that decodes to none) are a wrong key, not a 500."""
    running = await serve()
    body = b"{}"
    for extra, query in (
        (b"X-API-Key: \xff\xfe", ""),
        (b"X-API-Key: " + API_KEY.encode() + b"\xff", ""),
        (b"Authorization: apikey \xff\xfe\x80", ""),
        (b"Authorization: \xc3\x28 \xff", ""),
        (b"", "?api_key=%FF%FE"),
        (b"", "?api_key=%ED%A0%80"),  # an encoded lone surrogate
    ):
        for path in ("/api/info", "/api", "/api/nope/"):
            req = rawhttp.head(path + query, {"Content-Type": "application/json"}, content_length=2, extra=extra)
            resp = await rawhttp.request(running.port, req, [body])
            assert (resp.status, resp.json()) == UNAUTHORIZED, (extra, query, path)
    # The valid key still works over the same raw path.
    req = rawhttp.head("/api/info", {"X-API-Key": API_KEY}, content_length=2)
    resp = await rawhttp.request(running.port, req, [body])
    assert resp.status == 200 and resp.json()["result"]["nodes"]


# ----------------------------------------------------------------------------------- every answer is JSON


async def test_unknown_paths_and_wrong_methods_answer_json(serve: Serve) -> None:
    """``/api/publish/`` (a trailing slash names no method), other unknown paths under the
    prefix and every non-POST method get a JSON error, never aiohttp's plain text."""
    running = await serve()
    headers = {"X-API-Key": API_KEY}
    not_found = (404, {"error": {"code": 104, "message": "not found"}})
    for path in ("/api/publish/", "/api/", "/api/publish/extra", "/api/a/b/c", "/api//publish"):
        assert await post(running.http_url + path, b"{}", headers) == not_found, path
        assert await post(running.http_url + path, b"{}") == UNAUTHORIZED, path  # the key first, as everywhere
    status, body = await post(running.api_url + "/nope", b"{}", headers)
    assert status == 404 and body["error"]["code"] == 104
    use_post = {"error": {"code": 405, "message": "use POST"}}
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/api", "/api/publish", "/api/publish/", "/api/a/b"):
                async with session.request(method, running.http_url + path, headers=headers) as resp:
                    assert resp.status == 405, (method, path)
                    assert resp.content_type == "application/json", (method, path)
                    assert resp.headers["Allow"] == "POST"
                    assert await resp.json() == use_post, (method, path)
    # The real methods are unaffected.
    status, body = await post(running.api_url + "/publish", b'{"channel":"json","data":1}', headers)
    assert status == 200 and body["result"]["offset"] == 1


# ----------------------------------------------------------------------------------- command caps


def legacy_publishes(channel: str, count: int) -> bytes:
    line = json.dumps({"method": "publish", "params": {"channel": channel, "data": 1}}, separators=(",", ":"))
    return "\n".join([line] * count).encode()


async def test_legacy_api_obeys_the_batch_cap(serve: Serve) -> None:
    running = await serve()
    headers = {"X-API-Key": API_KEY}
    expected = (400, {"error": {"code": 107, "message": "bad request: at most 1000 commands per request"}})
    assert await post(running.api_url, legacy_publishes("capped", 1001), headers) == expected
    assert await post(running.api_url, legacy_publishes("capped", 6000), headers) == expected
    history = await api(running, "history", {"channel": "capped", "limit": -1})
    assert history["result"].get("offset", 0) == 0, "a refused request executed commands"
    status, text = await post(running.api_url, legacy_publishes("capped", 1000), headers)
    assert status == 200, text
    history = await api(running, "history", {"channel": "capped", "limit": 0})
    assert history["result"]["offset"] == 1000
    # batch cannot be nested in a legacy request (1000 lines x 1000 commands would pass the cap).
    nested = json.dumps({"method": "batch", "params": {"commands": [{"info": {}}]}}).encode()
    assert await post(running.api_url, nested, headers) == (
        200,
        {"error": {"code": 104, "message": "method not found"}},
    )


async def test_broadcast_has_a_channel_cap(serve: Serve) -> None:
    running = await serve()
    channels = [f"wide-{i}" for i in range(1001)]
    refused = await api(running, "broadcast", {"channels": channels, "data": 1})
    assert refused == {"error": {"code": 107, "message": "bad request: at most 1000 channels per broadcast"}}
    history = await api(running, "history", {"channel": "wide-0", "limit": 0})
    assert history["result"].get("offset", 0) == 0
    accepted = await api(running, "broadcast", {"channels": channels[:1000], "data": 1})
    assert len(accepted["result"]["responses"]) == 1000
    assert all(r["result"]["offset"] == 1 for r in accepted["result"]["responses"])
