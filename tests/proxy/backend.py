"""An application backend that answers Trunkline's proxy, run as its own process by the tests.

``python tests/proxy/backend.py PORT``. It authenticates connections by a session cookie
(``sid``), decides subscriptions, rewrites publications, answers RPCs, and has endpoints that
misbehave on purpose (``/slow`` sleeps, ``/fail`` answers 500, ``/garbage`` answers non-JSON).
``GET /requests`` returns every proxy request it received (path, JSON body, headers).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

SESSIONS = {"alice-sid": "alice", "bob-sid": "bob"}
SLOW_SECONDS = 3.0
requests: list[dict[str, Any]] = []


def _cookie(request: web.Request, name: str) -> str:
    return request.cookies.get(name, "")


async def _record(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    requests.append({"path": request.path, "body": body, "headers": dict(request.headers)})
    del requests[:-500]
    return body  # type: ignore[no-any-return]


def _ok(result: dict[str, Any]) -> web.Response:
    return web.json_response({"result": result})


async def connect(request: web.Request) -> web.Response:
    body = await _record(request)
    user = SESSIONS.get(_cookie(request, "sid"))
    if user is None:
        return web.json_response({"disconnect": {"code": 4501, "reason": "unauthorized"}})
    ttl = int(request.query.get("ttl", "0"))
    result: dict[str, Any] = {
        "user": user,
        "info": {"name": user.title()},
        "data": {"welcome": user, "client_data": body.get("data")},
        "meta": {"role": "admin" if user == "alice" else "member"},
    }
    if ttl:
        result["expire_at"] = int(time.time()) + ttl
    if user == "bob":
        result["channels"] = ["news:bob"]
        result["subs"] = {"news:all": {"info": {"sub": "all"}, "data": {"first": True}}}
    return _ok(result)


async def refresh(request: web.Request) -> web.Response:
    body = await _record(request)
    return _ok({"expire_at": int(time.time()) + 3600, "info": {"name": body["user"].title(), "refreshed": True}})


async def subscribe(request: web.Request) -> web.Response:
    body = await _record(request)
    channel = body["channel"]
    if channel.endswith(":secret") and body.get("user") != "alice":
        return web.json_response({"error": {"code": 403, "message": "permission denied"}})
    result: dict[str, Any] = {"info": {"ch": channel}, "data": {"hello": channel, "meta": body.get("meta")}}
    if channel.startswith("exp:"):
        result["expire_at"] = int(time.time()) + 2
    return _ok(result)


async def sub_refresh(request: web.Request) -> web.Response:
    await _record(request)
    return _ok({"expire_at": int(time.time()) + 3600, "info": {"refreshed": True}})


async def publish(request: web.Request) -> web.Response:
    body = await _record(request)
    data = body.get("data")
    if isinstance(data, dict) and data.get("text") == "bad":
        return web.json_response({"error": {"code": 1000, "message": "bad word"}})
    if isinstance(data, dict) and data.get("text") == "quit":
        return web.json_response({"disconnect": {"code": 4503, "reason": "banned"}})
    return _ok({"data": {"text": str((data or {}).get("text", "")).upper(), "by": body["user"]}})


async def rpc(request: web.Request) -> web.Response:
    body = await _record(request)
    method, data = body.get("method"), body.get("data") or {}
    if method == "sum":
        return _ok({"data": {"sum": data["a"] + data["b"]}})
    if method == "whoami":
        return _ok({"data": {"user": body["user"], "meta": body.get("meta")}})
    return web.json_response({"error": {"code": 404, "message": "unknown method"}})


async def slow(request: web.Request) -> web.Response:
    await _record(request)
    await asyncio.sleep(SLOW_SECONDS)
    return _ok({})


async def fail(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=500, text="boom")


async def garbage(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=200, text="<html>not json</html>", content_type="text/html")


async def recorded(request: web.Request) -> web.Response:
    return web.json_response(requests)


async def login(request: web.Request) -> web.Response:
    """Sets the session cookie of ``?user=`` (a stand-in for a real login form)."""
    sid = {user: sid for sid, user in SESSIONS.items()}.get(request.query.get("user", ""))
    if sid is None:
        return web.Response(status=403, text="unknown user")
    response = web.Response(text="<!doctype html><title>logged in</title>", content_type="text/html")
    response.set_cookie("sid", sid, httponly=True, samesite="Lax")
    return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    for path, handler in {
        "/connect": connect,
        "/refresh": refresh,
        "/subscribe": subscribe,
        "/sub_refresh": sub_refresh,
        "/publish": publish,
        "/rpc": rpc,
        "/slow": slow,
        "/fail": fail,
        "/garbage": garbage,
    }.items():
        application.router.add_post(path, handler)
    application.router.add_get("/requests", recorded)
    application.router.add_get("/health", health)
    application.router.add_get("/login", login)
    return application


if __name__ == "__main__":
    port = int(sys.argv[1])
    print(json.dumps({"listening": port}), flush=True)
    web.run_app(app(), host="127.0.0.1", port=port, print=None)
