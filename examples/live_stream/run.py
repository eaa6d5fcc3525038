"""The live stream room example: a Twitch-style room on one embedded Trunkline node.

    .venv/bin/python examples/live_stream/run.py                 # what `make example-live` runs
    .venv/bin/python examples/live_stream/run.py --rate 500      # a busier feed

One process runs Trunkline (``trunkline.toml`` beside this file, port 8000) with two hooks,
and on its own port (8090) the page and the routes an application adds next to Trunkline:

- ``POST /token``: a connection token for a viewer (demo only: any name), or for a moderator
  when the body carries the moderator key printed at startup;
- ``POST /mod/remove`` and ``POST /mod/disconnect``: moderator actions, checked against the
  moderator's token and carried out through Trunkline's server HTTP API (a tombstone
  publication, a disconnect);
- ``GET /config.json``: where Trunkline is.

Three tasks publish with ``node.publish``: the live feed (race telemetry, ``--rate`` events a
second), the viewer count (presence stats of the chat channel, every second) and a small crowd
of simulated chatters (``--crowd`` messages a second).

Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import secrets
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from chat import SlowMode, clean_text, parse_chat, parse_reaction, viewer  # beside this file

import trunkline
from trunkline.app import Server
from trunkline.config import Settings, load_settings
from trunkline.errors import BAD_REQUEST, PERMISSION_DENIED, TOO_MANY_REQUESTS, Disconnect
from trunkline.events import ConnectEvent, ConnectReply, PublishEvent, PublishReply
from trunkline.node import Node
from trunkline.observe.logs import setup_logging

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = Path(trunkline.__file__).resolve().parent / "web" / "static" / "vendor"  # centrifuge.js
EVENTS, CHAT, REACTIONS = "events:main", "chat:main", "reactions:main"
NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,24}")
TOKEN_TTL = 3600
NO_STORE = {"Cache-Control": "no-store"}
BANNED = Disconnect(3503, "disconnected by a moderator")  # 3500-3999: the SDK does not reconnect
CARS = ["VER", "HAM", "LEC", "NOR", "ALO", "PIA", "RUS", "SAI", "GAS", "OCO", "ALB", "TSU"]
CROWD = ["pitwall_pat", "apex_anna", "drs_dan", "slipstream", "gridgirl", "boxbox", "tyrewhisperer"]
CROWD_LINES = [
    "what a move into turn 1!",
    "that undercut is going to work",
    "tyres are gone, box box",
    "purple sector!!",
    "gap is closing fast",
    "this pace is unreal",
    "safety car incoming?",
    "GG what a race",
]


@dataclass
class Room:
    """The application's own state: who is banned, slow mode, the moderator key."""

    mod_key: str
    slow: SlowMode
    reactions: SlowMode
    banned: set[str] = field(default_factory=set)


def now_ms() -> float:
    return time.time() * 1000.0


def sign(user: str, name: str, role: str, secret: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL, "info": {"name": name, "role": role}}
    return jwt.encode(claims, secret, algorithm="HS256")


def user_id(name: str) -> str:
    return "u-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def add_hooks(node: Node, room: Room) -> None:
    """The two hooks of the room: banned users cannot connect, every client publication is checked."""

    @node.on_connecting
    async def connecting(event: ConnectEvent) -> ConnectReply | None:
        if event.credentials is not None and event.credentials.user in room.banned:
            raise BANNED()
        return None  # keep what the token says

    @node.on_publish
    async def publish(event: PublishEvent) -> PublishReply | None:
        """Replaces allow_publish_* for every channel: chat (slow mode) and reactions only."""
        who = viewer(event.client.info, event.client.user)
        if not event.client.user:
            raise PERMISSION_DENIED()
        try:
            if event.channel == CHAT:
                text = parse_chat(event.data)
                wait = 0.0 if who.moderator else room.slow.check(event.client.user)
                if wait:
                    raise TOO_MANY_REQUESTS.with_message(f"slow mode: wait {wait:.1f} s")
                message = {"type": "msg", "id": uuid.uuid4().hex[:12], "user": event.client.user}
                message |= {"name": who.name, "role": who.role, "text": text, "ts": now_ms()}
                return PublishReply(data=json.dumps(message).encode())  # what every viewer gets
            if event.channel == REACTIONS:
                emoji = parse_reaction(event.data)
                if room.reactions.check(event.client.user):
                    raise TOO_MANY_REQUESTS.with_message("too many reactions")
                reaction = {"emoji": emoji, "user": event.client.user, "name": who.name}
                return PublishReply(data=json.dumps(reaction).encode())
        except ValueError as exc:
            raise BAD_REQUEST.with_message(str(exc)) from None
        raise PERMISSION_DENIED()  # the feed and anything else: the server only


# ---------------------------------------------------------------------- publishers (node.publish)


async def feed(node: Node, rate: float) -> None:
    """Race telemetry: ``rate`` publications a second on the feed, each a car's position and speed.

    Every publication carries its wall-clock publish time (``ts``, ms) so a page can show the
    end-to-end latency. Publications go out in small batches every 10 ms; a stalled loop does
    not burst more than a tenth of a second's worth to catch up.
    """
    loop = asyncio.get_running_loop()
    started, sent, seq = loop.time(), 0, 0
    cars = [{"speed": 290.0 + 10 * random.random(), "dist": 0.0, "at": started} for _ in CARS]
    while True:
        await asyncio.sleep(0.01)
        now = loop.time()
        if (now - started) * rate - sent > rate:  # fell behind by over a second: count from here
            started, sent = now, 0
        due = min(int((now - started) * rate) - sent, max(1, int(rate / 10)))
        for _ in range(max(due, 0)):
            i = seq % len(CARS)
            car = cars[i]
            car["speed"] = min(345.0, max(90.0, car["speed"] + random.gauss(0, 6)))
            car["dist"] += car["speed"] / 3.6 * (now - car["at"])
            car["at"] = now
            event = {"type": "tick", "seq": seq, "ts": now_ms(), "car": CARS[i]}
            event |= {"speed": round(car["speed"], 1), "dist": round(car["dist"], 1)}
            await node.publish(EVENTS, json.dumps(event).encode())
            sent += 1
            seq += 1


async def viewer_count(node: Node) -> None:
    """Presence stats of the chat channel, read once a second and published on the feed when it changes."""
    last: tuple[int, int] | None = None
    quiet = 0
    while True:
        clients, users = await node.presence_stats(CHAT)
        if (clients, users) != last or quiet >= 5:
            await node.publish(EVENTS, json.dumps({"type": "viewers", "users": users, "clients": clients}).encode())
            last, quiet = (clients, users), 0
        else:
            quiet += 1
        await asyncio.sleep(1.0)


async def crowd(node: Node, rate: float) -> None:
    """Simulated chatters: what a busy room's chat looks like (moderators can remove these too)."""
    if rate <= 0:
        return
    while True:
        await asyncio.sleep(random.expovariate(rate))
        name = random.choice(CROWD)
        message = {"type": "msg", "id": uuid.uuid4().hex[:12], "user": f"crowd-{name}", "name": name}
        message |= {"role": "viewer", "text": random.choice(CROWD_LINES), "ts": now_ms(), "bot": True}
        await node.publish(CHAT, json.dumps(message).encode())


# ---------------------------------------------------------------------- the page's routes


class ServerAPI:
    """Trunkline's server HTTP API, as a separate backend would call it."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.key = key
        self.http: aiohttp.ClientSession | None = None

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            # Trunkline closes an idle keep-alive connection after websocket.handshake_timeout
            # (10 s); a pooled connection kept longer (aiohttp: 15 s) can be reused just as the
            # server closes it, and that request fails. Keep idle connections for less.
            connector = aiohttp.TCPConnector(keepalive_timeout=5)
            self.http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5))
        async with self.http.post(f"{self.base}/{method}", json=body, headers={"X-API-Key": self.key}) as r:
            answer: dict[str, Any] = await r.json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


def page_app(settings: Settings, trunkline_port: int, room: Room, api: ServerAPI) -> web.Application:
    secret = settings.client.token.hmac_secret_key

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=NO_STORE)

    async def body_of(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def config(request: web.Request) -> web.Response:
        host = request.url.host or "127.0.0.1"
        slow = {"interval": room.slow.interval, "burst": room.slow.burst}
        return web.json_response(
            {"centrifugo": f"ws://{host}:{trunkline_port}/connection/websocket", "slow_mode": slow}, headers=NO_STORE
        )

    async def token(request: web.Request) -> web.Response:
        body = await body_of(request)
        name = body.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name) or not clean_text(name, 24):
            return error(400, 'body must be {"name": "<1-24 letters, digits, spaces, _ - .>", "mod"?: "<key>"}')
        mod = body.get("mod")
        if mod is not None and not (isinstance(mod, str) and secrets.compare_digest(mod, room.mod_key)):
            return error(403, "wrong moderator key")
        user = user_id(name)
        if user in room.banned:
            return error(403, "you were disconnected by a moderator")
        role = "moderator" if mod else "viewer"
        name = clean_text(name, 24)
        return web.json_response(
            {"user": user, "name": name, "role": role, "token": sign(user, name, role, secret)}, headers=NO_STORE
        )

    def moderator(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise web.HTTPUnauthorized(
                text='{"error": "a moderator token is required"}', content_type="application/json"
            ) from None
        info = claims.get("info")
        if not isinstance(info, dict) or info.get("role") != "moderator":
            raise web.HTTPForbidden(text='{"error": "moderators only"}', content_type="application/json")
        return str(info.get("name", "moderator"))

    async def remove(request: web.Request) -> web.Response:
        """A tombstone on the chat channel: live viewers drop the message, and so does a late
        joiner, because history is the channel's latest publications and the tombstone always
        comes after the message it removes."""
        by = moderator(request)
        message = (await body_of(request)).get("id")
        if not isinstance(message, str) or not re.fullmatch(r"[0-9a-f]{12}", message):
            return error(400, 'body must be {"id": "<message id>"}')
        await api.call("publish", {"channel": CHAT, "data": {"type": "remove", "id": message, "by": by}})
        return web.json_response({"removed": message}, headers=NO_STORE)

    async def disconnect(request: web.Request) -> web.Response:
        moderator(request)
        user = (await body_of(request)).get("user")
        if not isinstance(user, str) or not re.fullmatch(r"u-[a-z0-9-]{1,24}", user):
            return error(400, 'body must be {"user": "<user id>"}')
        room.banned.add(user)  # no new token, and on_connecting refuses the ones it has
        await api.call("disconnect", {"user": user, "disconnect": {"code": BANNED.code, "reason": BANNED.reason}})
        return web.json_response({"disconnected": user}, headers=NO_STORE)

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config)
    app.router.add_post("/token", token)
    app.router.add_post("/mod/remove", remove)
    app.router.add_post("/mod/disconnect", disconnect)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_static("/vendor/", VENDOR, follow_symlinks=False)
    return app


async def main(a: argparse.Namespace) -> None:
    overrides: dict[str, object] = {}
    if a.port is not None:
        overrides["http_server.port"] = a.port
    settings = load_settings(a.config, overrides=overrides)
    setup_logging(settings.log.level, settings.log.format)
    room = Room(
        mod_key=a.mod_key or secrets.token_urlsafe(12),
        slow=SlowMode(a.slow_mode),
        reactions=SlowMode(0.2, burst=5),
    )
    node = Node(settings)
    add_hooks(node, room)
    async with Server(settings, node) as server:
        api = ServerAPI(f"http://127.0.0.1:{server.port}{settings.http_api.handler_prefix}", settings.http_api.key)
        runner = web.AppRunner(page_app(settings, server.port, room, api), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", a.page_port).start()
        tasks = [asyncio.ensure_future(t) for t in (feed(node, a.rate), viewer_count(node), crowd(node, a.crowd))]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"live room:  http://127.0.0.1:{a.page_port}/", flush=True)
        print(f"moderator:  http://127.0.0.1:{a.page_port}/?mod={room.mod_key}", flush=True)
        print(f"trunkline:  port {server.port}, feed at {a.rate:g} publications/s", flush=True)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api.close()
            await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"))
    p.add_argument("--port", type=int, help="Trunkline's port (default: the config's, 8000)")
    p.add_argument("--page-port", type=int, default=8090, help="the page's port")
    p.add_argument("--rate", type=float, default=300.0, help="feed publications per second (1-5000)")
    p.add_argument("--crowd", type=float, default=1.5, help="simulated chat messages per second (0: none)")
    p.add_argument("--slow-mode", type=float, default=5.0, help="seconds between two messages of a viewer")
    p.add_argument("--mod-key", default="", help="the moderator key (default: random, printed)")
    args = p.parse_args()
    args.rate = max(1.0, min(args.rate, 5000.0))
    args.slow_mode = max(0.1, args.slow_mode)
    if not math.isfinite(args.crowd) or args.crowd < 0:
        args.crowd = 0.0
    asyncio.run(main(args))
