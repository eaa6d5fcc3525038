"""Hypothesis against the input the notifications and AI-streaming examples parse.

- The AI example's ``on_rpc`` hook, on a started node with the example's settings: any
  method and any data get either a JSON object or a ``ClientError`` with a documented code
  (104, 107, 404, 429), never another exception, and the jobs stay bounded.
- The notifications backend, in-process next to a real Trunkline with the example's
  settings: any body, content type and cookie on its JSON routes gets a documented status
  with a JSON body (200, 400, 401, 429), never a 500.

Hypothesis runs in a worker thread and hands each case to the test's event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, free_port
from trunkline.app import Server
from trunkline.config import load_settings
from trunkline.errors import ClientError
from trunkline.events import ClientView, RPCEvent
from trunkline.node import Node

T = TypeVar("T")
CASES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["question", "job", "name", "to", "text", "upTo"]
OBJECTS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON, max_size=4)
BODIES = st.one_of(OBJECTS.map(json.dumps), JSON.map(json.dumps), st.text(max_size=60)).map(str.encode) | st.binary(
    max_size=60
)


def load_example(name: str, module: str) -> ModuleType:
    """Import ``examples/<name>/<module>.py`` as its runner does (its folder on ``sys.path``)."""
    folder = str(ROOT / "examples" / name)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(f"example_{name}_{module}", Path(folder) / f"{module}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(folder)


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)


async def test_ai_rpc_hook_answers_any_input() -> None:
    run = load_example("ai_stream", "run")
    config = load_settings(
        ROOT / "examples" / "ai_stream" / "trunkline.toml", overrides={"http_server.port": free_port()}
    )
    node = Node(config)
    jobs = run.Jobs(node, run.answer_tokens, tokens_per_second=200)
    rpc = run.rpc_handler(jobs)
    loop = asyncio.get_running_loop()
    codes: set[int] = set()

    async def case(user: str, method: str, data: bytes | None) -> None:
        try:
            reply = await rpc(RPCEvent(ClientView("client", user, None), method, data))
        except ClientError as err:
            assert err.code in {104, 107, 404, 429}, err
            codes.add(err.code)
            return
        assert isinstance(json.loads(reply), dict)
        assert len(jobs.running) <= jobs.max_total

    @CASES
    @given(
        st.sampled_from(["ann", "bob"]),
        st.sampled_from(["ask", "cancel"]) | st.text(max_size=12),
        st.none() | BODIES,
    )
    def prop(user: str, method: str, data: bytes | None) -> None:
        on_loop(loop, case(user, method, data))

    async with Server(config, node):
        await asyncio.to_thread(prop)
        await jobs.close()
    assert 107 in codes and 104 in codes


async def test_notifications_backend_answers_any_input() -> None:
    backend_mod = load_example("notifications", "backend")
    port = free_port()
    config = load_settings(ROOT / "examples" / "notifications" / "trunkline.toml", overrides={"http_server.port": port})
    trunkline_url = f"http://127.0.0.1:{port}"
    backend = backend_mod.Backend(
        config.client.token.hmac_secret_key, trunkline_url + "/api", config.http_api.key, "ws://127.0.0.1/"
    )
    runner = web.AppRunner(backend.app(), access_log=None)
    loop = asyncio.get_running_loop()
    statuses: set[int] = set()
    async with Server(config):
        await runner.setup()
        page_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", page_port).start()
        base = f"http://127.0.0.1:{page_port}"
        # the fuzzing session keeps no cookies: each case sends only the cookie it was given
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as fuzz:
            async with http.post(base + "/login", json={"name": "ann"}) as resp:
                assert resp.status == 200
                good_cookie = resp.cookies[backend_mod.COOKIE].value

            async def case(path: str, content_type: str, body: bytes, cookie: str | None) -> None:
                headers = {"Content-Type": content_type}
                if cookie is not None:
                    headers["Cookie"] = f"{backend_mod.COOKIE}={cookie}"
                async with fuzz.post(base + path, data=body, headers=headers) as resp:
                    statuses.add(resp.status)
                    assert resp.status in {200, 400, 401, 429}, (resp.status, await resp.text())
                    reply = await resp.json(content_type=None)
                    assert isinstance(reply, dict)
                    if resp.status != 200:
                        assert isinstance(reply.get("error"), str)

            @CASES
            @given(
                st.sampled_from(["/login", "/notify", "/read", "/logout"]),
                st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
                BODIES,
                st.none() | st.just(good_cookie) | st.text(alphabet="abcXYZ019-_", max_size=30),
            )
            def prop(path: str, content_type: str, body: bytes, cookie: str | None) -> None:
                on_loop(loop, case(path, content_type, body, cookie))

            await asyncio.to_thread(prop)
        await runner.cleanup()
    assert {200, 400, 401} <= statuses
