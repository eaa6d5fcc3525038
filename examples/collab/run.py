"""The collaborative editing example: Yjs in the page, the merged document on the server through a hook.

    .venv/bin/python examples/collab/run.py --snapshot-dir .collab-snapshots    # `make example-collab`
    .venv/bin/python examples/collab/run.py                                     # documents in memory only

Centrifugo relays publications and leaves CRDTs to the application. Here the application is
two Python hooks on an embedded Trunkline node (``trunkline.toml`` beside this file, port 8000):

- ``on_publish`` merges every Yjs update published on ``doc:<room>`` into the room's pycrdt
  document before Trunkline publishes it (an update that is not Yjs is refused with 107);
  cursors are not publications but writes into the map channel ``cursor:<room>``, which
  Trunkline keeps by itself (see ``trunkline.toml``);
- ``on_rpc`` answers ``sync``: the part of the document a tab lacks (from its state vector),
  which is how a late joiner gets the whole document and how any tab catches up whatever
  recovery could not replay.

With ``--snapshot-dir`` the documents are written there (every second when changed, and on
shutdown) and read back on first use: they survive a restart. On its own port (8070) the
runner serves the page, ``POST /token`` (a connection token for any name: demo only) and
``GET /config.json``. Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import signal
import time
from pathlib import Path

import jwt
from aiohttp import web
from documents import Rooms, b64, parse_sync, parse_update, room_of  # beside this file

import trunkline
from trunkline.app import Server
from trunkline.config import Settings, load_settings
from trunkline.errors import BAD_REQUEST, LIMIT_EXCEEDED, METHOD_NOT_FOUND, PERMISSION_DENIED
from trunkline.events import PublishEvent, PublishReply, RPCEvent
from trunkline.node import Node
from trunkline.observe.logs import setup_logging

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"  # the page, and vendor/ with yjs.mjs + lib0 (copied from node_modules by make)
VENDOR = Path(trunkline.__file__).resolve().parent / "web" / "static" / "vendor"  # centrifuge.js
NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,24}")
COLORS = ["#e5484d", "#0090ff", "#30a46c", "#8e4ec6", "#f76b15", "#12a594", "#d6409f", "#ffb224"]
TOKEN_TTL = 3600
NO_STORE = {"Cache-Control": "no-store"}
log = logging.getLogger("collab")


def add_hooks(node: Node, rooms: Rooms) -> None:
    @node.on_publish
    async def publish(event: PublishEvent) -> PublishReply | None:
        """Replaces allow_publish_* for stream channels: Yjs updates (merged here first), from signed-in users.

        Cursors are map writes into cursor:<room>: the map block of trunkline.toml decides them."""
        if not event.client.user:
            raise PERMISSION_DENIED()
        try:
            if event.channel.startswith("doc:"):
                rooms.apply(room_of(event.channel, "doc"), parse_update(event.data))
                return None  # published as sent: every tab applies the same update
        except ValueError as exc:
            raise BAD_REQUEST.with_message(str(exc)) from None
        except OverflowError as exc:
            raise LIMIT_EXCEEDED.with_message(str(exc)) from None
        raise PERMISSION_DENIED()

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:
        if event.method != "sync":
            raise METHOD_NOT_FOUND()
        try:
            room, state_vector = parse_sync(event.data)
            update, server_sv = rooms.sync(room, state_vector)
        except ValueError as exc:
            raise BAD_REQUEST.with_message(str(exc)) from None
        except OverflowError as exc:
            raise LIMIT_EXCEEDED.with_message(str(exc)) from None
        return json.dumps({"update": b64(update), "sv": b64(server_sv)}).encode()


async def snapshots(rooms: Rooms, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if rooms.dirty:
            rooms.save()


def color_of(name: str) -> str:
    return COLORS[hashlib.sha256(name.encode()).digest()[0] % len(COLORS)]


def page_app(settings: Settings, trunkline_port: int) -> web.Application:
    secret = settings.client.token.hmac_secret_key

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def config(request: web.Request) -> web.Response:
        host = request.url.host or "127.0.0.1"
        return web.json_response({"centrifugo": f"ws://{host}:{trunkline_port}/connection/websocket"}, headers=NO_STORE)

    async def token(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not NAME.fullmatch(name.strip() or "-"):
            return web.json_response(
                {"error": 'body must be {"name": "<1-24 letters, digits, spaces, _ - .>"}'},
                status=400,
                headers=NO_STORE,
            )
        name = name.strip()
        user = "u-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        now = int(time.time())
        info = {"name": name, "color": color_of(name)}
        claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL, "info": info}
        return web.json_response(
            {"user": user, **info, "token": jwt.encode(claims, secret, algorithm="HS256")}, headers=NO_STORE
        )

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config)
    app.router.add_post("/token", token)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_static("/vendor/", VENDOR, follow_symlinks=False)
    return app


async def main(a: argparse.Namespace) -> None:
    overrides: dict[str, object] = {}
    if a.port is not None:
        overrides["http_server.port"] = a.port
    settings = load_settings(a.config, overrides=overrides)
    setup_logging(settings.log.level, settings.log.format)
    rooms = Rooms(Path(a.snapshot_dir) if a.snapshot_dir else None)
    node = Node(settings)
    add_hooks(node, rooms)
    async with Server(settings, node) as server:
        runner = web.AppRunner(page_app(settings, server.port), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", a.page_port).start()
        saver = asyncio.ensure_future(snapshots(rooms, 1.0))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"collaborative editor: http://127.0.0.1:{a.page_port}/?room=welcome", flush=True)
        where = f"snapshots in {a.snapshot_dir}" if a.snapshot_dir else "documents in memory only"
        print(f"trunkline: port {server.port}, {where}", flush=True)
        try:
            await stop.wait()
        finally:
            saver.cancel()
            await runner.cleanup()
    log.info("saved %d documents", rooms.save())  # after the last client is gone: nothing changes any more


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"))
    p.add_argument("--port", type=int, help="Trunkline's port (default: the config's, 8000)")
    p.add_argument("--page-port", type=int, default=8070, help="the page's port")
    p.add_argument("--snapshot-dir", default="", help="keep documents in this directory across restarts")
    asyncio.run(main(p.parse_args()))
