"""A backend answering Trunkline's shared-poll refresh proxy, run as its own process by the tests.

``python tests/shared_poll/backend.py PORT``. ``POST /refresh`` answers Centrifugo's
``SharedPollRefreshRequest`` from an in-memory store: every tracked key the store holds, with its
data (and version, which ``versioned`` channels need). ``/slow`` sleeps before answering,
``/sleepy`` sleeps a little (and keeps the most calls it had in flight at once), ``/fail``
answers HTTP 500, ``/error`` answers a proxy ``error``. The tests drive it with ``POST /set``
(``{"channel", "key", "data", "version"?, "removed"?}``), read ``GET /stats`` (refresh calls and
keys asked, per path and channel) and clear counters with ``POST /reset``.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from typing import Any

from aiohttp import web

SLOW_SECONDS = 2.0
SLEEPY_SECONDS = 0.15
in_flight = {"now": 0, "max": 0}
store: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
keys_asked: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
asked: dict[str, set[str]] = defaultdict(set)
last: dict[str, dict[str, Any]] = {}  # channel -> the last request's items and headers


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    channel = body["channel"]
    items = []
    for item in body["items"]:
        value = store[channel].get(item["key"])
        if value is not None:
            items.append({"key": item["key"], **value})
    return {"result": {"items": items}}


async def _record(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = await request.json()
    calls[request.path][body["channel"]] += 1
    keys_asked[request.path][body["channel"]] += len(body["items"])
    asked[body["channel"]].update(i["key"] for i in body["items"])
    last[body["channel"]] = {"items": body["items"], "headers": dict(request.headers)}
    return body


async def refresh(request: web.Request) -> web.Response:
    return web.json_response(_answer(await _record(request)))


async def slow(request: web.Request) -> web.Response:
    body = await _record(request)
    await asyncio.sleep(SLOW_SECONDS)
    return web.json_response(_answer(body))


async def sleepy(request: web.Request) -> web.Response:
    body = await _record(request)
    in_flight["now"] += 1
    in_flight["max"] = max(in_flight["max"], in_flight["now"])
    try:
        await asyncio.sleep(SLEEPY_SECONDS)
    finally:
        in_flight["now"] -= 1
    return web.json_response(_answer(body))


async def fail(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=500, text="down")


async def error(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response({"error": {"code": 1000, "message": "backend unavailable"}})


async def set_value(request: web.Request) -> web.Response:
    body = await request.json()
    value = {k: body[k] for k in ("data", "version", "removed") if k in body}
    store[body["channel"]][body["key"]] = value
    return web.json_response({})


async def stats(request: web.Request) -> web.Response:
    listed = {c: sorted(k) for c, k in asked.items()}
    return web.json_response(
        {"calls": calls, "keys": keys_asked, "asked": listed, "max_in_flight": in_flight["max"], "last": last}
    )


async def reset(request: web.Request) -> web.Response:
    calls.clear()
    keys_asked.clear()
    asked.clear()
    in_flight["max"] = 0
    return web.json_response({})


async def health(request: web.Request) -> web.Response:
    return web.json_response({})


def app() -> web.Application:
    application = web.Application()
    application.router.add_post("/refresh", refresh)
    application.router.add_post("/slow", slow)
    application.router.add_post("/sleepy", sleepy)
    application.router.add_post("/fail", fail)
    application.router.add_post("/error", error)
    application.router.add_post("/set", set_value)
    application.router.add_post("/reset", reset)
    application.router.add_get("/stats", stats)
    application.router.add_get("/health", health)
    return application


if __name__ == "__main__":
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
