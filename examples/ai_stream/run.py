"""AI answer streaming: an RPC starts a job that streams tokens into a per-job channel.

    .venv/bin/python examples/ai_stream/run.py        # what `make example-ai-stream` runs

One process runs Trunkline embedded (``trunkline.app.Server`` with a ``Node`` whose ``on_rpc``
hook is below; settings in ``examples/ai_stream/trunkline.toml``, port 8002) and, on its own
port (8082), the page with the one route an application adds next to Trunkline:
``POST /token``, which signs a connection token for a name (demo only: anyone gets one).

The page calls two RPC methods over its Trunkline connection:

    ask     {"question": "..."}  -> {"job": "<id>", "channel": "ai:job-<id>#<user>", "epoch": "..."}
    cancel  {"job": "<id>"}      -> {"cancelled": true}

Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import time
from pathlib import Path

import jwt
from aiohttp import web
from answers import answer_tokens
from jobs import Jobs

import trunkline
from trunkline.app import Server
from trunkline.config import Settings, load_settings
from trunkline.errors import BAD_REQUEST, METHOD_NOT_FOUND
from trunkline.events import OnRPC, RPCEvent
from trunkline.node import Node

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = Path(trunkline.__file__).resolve().parent / "web" / "static" / "vendor"  # centrifuge.js
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")  # no '#' or ',': a name is safe in a user-limited channel
MAX_QUESTION = 500
TOKEN_TTL = 3600
NO_STORE = {"Cache-Control": "no-store"}


def connection_token(user: str, secret: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + TOKEN_TTL}, secret, algorithm="HS256")


def rpc_handler(jobs: Jobs) -> OnRPC:
    """The node's ``on_rpc`` hook: ``ask`` and ``cancel``; anything else is 104 method not found."""

    async def rpc(event: RPCEvent) -> bytes:
        try:
            params = json.loads(event.data or b"{}")
        except ValueError:
            raise BAD_REQUEST.with_message("RPC data must be a JSON object") from None
        if not isinstance(params, dict):
            raise BAD_REQUEST.with_message("RPC data must be a JSON object")
        user = event.client.user
        if event.method == "ask":
            question = params.get("question")
            if not isinstance(question, str) or not question.strip() or len(question) > MAX_QUESTION:
                raise BAD_REQUEST.with_message(f"question must be 1-{MAX_QUESTION} characters")
            return json.dumps(await jobs.start(user, question.strip())).encode()
        if event.method == "cancel":
            job = params.get("job")
            if not isinstance(job, str):
                raise BAD_REQUEST.with_message('cancel needs {"job": "<id>"}')
            jobs.cancel(user, job)
            return b'{"cancelled":true}'
        raise METHOD_NOT_FOUND()

    return rpc


def page_app(settings: Settings, trunkline_port: int, tokens_per_second: float) -> web.Application:
    secret = settings.client.token.hmac_secret_key

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def config(request: web.Request) -> web.Response:
        host = request.url.host or "127.0.0.1"
        url = f"ws://{host}:{trunkline_port}/connection/websocket"
        return web.json_response({"websocket": url, "tokens_per_second": tokens_per_second}, headers=NO_STORE)

    async def token(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not NAME.fullmatch(user):
            error = {"error": 'body must be {"user": "<1-32 letters, digits, _ - .>"}'}
            return web.json_response(error, status=400, headers=NO_STORE)
        return web.json_response({"user": user, "token": connection_token(user, secret)}, headers=NO_STORE)

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config)
    app.router.add_post("/token", token)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_static("/vendor/", VENDOR, follow_symlinks=False)
    return app


async def main(a: argparse.Namespace) -> None:
    overrides: dict[str, object] = {} if a.port is None else {"http_server.port": a.port}
    settings = load_settings(a.config, overrides=overrides)
    logging.basicConfig(level=settings.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = Node(settings)
    jobs = Jobs(node, answer_tokens, tokens_per_second=a.tokens_per_second)
    node.on_rpc(rpc_handler(jobs))
    async with Server(settings, node) as server:
        runner = web.AppRunner(page_app(settings, server.port, a.tokens_per_second), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", a.page_port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"AI answer streaming: http://127.0.0.1:{a.page_port}/  (Trunkline on port {server.port})", flush=True)
        try:
            await stop.wait()
        finally:
            await jobs.close()
            await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"))
    p.add_argument("--port", type=int, help="Trunkline's port (default: the config's, 8002)")
    p.add_argument("--page-port", type=int, default=8082, help="the page's port")
    p.add_argument("--tokens-per-second", type=float, default=30.0, help="the stand-in model's pace (1-200)")
    args = p.parse_args()
    args.tokens_per_second = max(1.0, min(args.tokens_per_second, 200.0))
    asyncio.run(main(args))
