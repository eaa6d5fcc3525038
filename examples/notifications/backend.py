"""The application backend of the notifications example: sign-in, connection tokens, notifications.

    .venv/bin/python examples/notifications/backend.py --trunkline http://127.0.0.1:8001

A small aiohttp app, separate from Trunkline, as a real backend is. It knows Trunkline only
through two things: the HMAC secret it signs connection tokens with, and the server API
(``POST /api/publish`` with the API key) it publishes notifications through. Both come from
``trunkline.toml`` here; a real backend reads them from its own secret store.

Routes (the session is a cookie; POST bodies are JSON, which a cross-site form cannot send):

    GET  /            the page
    GET  /me          {"user", "channel", "websocket"}, or 401 when signed out
    POST /login       {"name": "ann"}: sets the session cookie
    POST /logout      clears it
    GET  /token       a connection token for the signed-in user (centrifuge-js getToken)
    GET  /users       names signed in recently (for the page's "To" field)
    POST /notify      {"to": "bob", "text": "..."}: publishes to notify:#bob
    POST /read        {"upTo": <offset>}: tells every tab of the user that it has read up to there
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import signal
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

import trunkline
from trunkline.config import load_settings

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = Path(trunkline.__file__).resolve().parent / "web" / "static" / "vendor"  # centrifuge.js
NAME = re.compile(r"[a-z0-9_.\-]{1,32}")  # lower case, no '#' or ',': safe in a channel name
COOKIE = "notify_session"
MAX_SESSIONS = 10_000
MAX_TEXT = 280
TOKEN_TTL = 600  # seconds; centrifuge-js asks /token again before it expires
SEND_RATE = 5.0  # notifications per second per session (and a burst of 20)
NO_STORE = {"Cache-Control": "no-store"}


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=NO_STORE)


class Backend:
    def __init__(self, secret: str, api_url: str, api_key: str, websocket_url: str) -> None:
        self.secret = secret
        self.api_url = api_url
        self.api_key = api_key
        self.websocket_url = websocket_url
        # session id -> [user, tokens left, last refill]; the oldest sessions go first past MAX_SESSIONS
        self.sessions: OrderedDict[str, list[Any]] = OrderedDict()
        self.http: aiohttp.ClientSession | None = None

    # ---- the two places the backend meets Trunkline ------------------------------------------

    def connection_token(self, user: str) -> str:
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL, "info": {"name": user}}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    async def publish(self, user: str, data: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/publish`` into the user's personal channel; returns the API's result."""
        assert self.http is not None
        body = {"channel": f"notify:#{user}", "data": data}
        headers = {"X-API-Key": self.api_key}
        async with self.http.post(f"{self.api_url}/publish", json=body, headers=headers) as resp:
            reply = await resp.json()
        if resp.status != 200 or "error" in reply:
            raise web.HTTPBadGateway(
                text=json.dumps({"error": f"server API: {reply}"}), content_type="application/json"
            )
        result: dict[str, Any] = reply.get("result") or {}
        return result

    # ---- sessions ----------------------------------------------------------------------------

    def user_of(self, request: web.Request) -> str | None:
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        return session[0] if session else None

    def allow_send(self, request: web.Request) -> bool:
        """A token bucket per session: SEND_RATE per second, bursts of 20."""
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        if session is None:
            return False
        now = time.monotonic()
        session[1] = min(20.0, session[1] + (now - session[2]) * SEND_RATE)
        session[2] = now
        if session[1] < 1:
            return False
        session[1] -= 1
        return True

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        """The JSON object a POST carries; anything else (a form, say) is a 400."""
        if request.content_type != "application/json":
            raise web.HTTPBadRequest(text='{"error": "send JSON"}', content_type="application/json")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return body

    # ---- routes ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def me(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        if user is None:
            return error(401, "signed out")
        host = request.url.host or "127.0.0.1"
        websocket = self.websocket_url.replace("127.0.0.1", host, 1)
        return web.json_response({"user": user, "channel": f"notify:#{user}", "websocket": websocket}, headers=NO_STORE)

    async def login(self, request: web.Request) -> web.Response:
        name = (await self.json_body(request)).get("name")
        name = name.strip().lower() if isinstance(name, str) else ""
        if not NAME.fullmatch(name):
            return error(400, "a name is 1-32 letters, digits, '_', '-' or '.'")
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = [name, 20.0, time.monotonic()]
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        resp = web.json_response({"user": name}, headers=NO_STORE)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Lax", path="/", max_age=7 * 86400)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        resp = web.json_response({"user": None}, headers=NO_STORE)
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def token(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        if user is None:
            return error(401, "sign in first")
        return web.json_response({"token": self.connection_token(user)}, headers=NO_STORE)

    async def users(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return error(401, "sign in first")
        names = sorted({s[0] for s in list(self.sessions.values())[-200:]})
        return web.json_response({"users": names}, headers=NO_STORE)

    async def notify(self, request: web.Request) -> web.Response:
        sender = self.user_of(request)
        if sender is None:
            return error(401, "sign in first")
        body = await self.json_body(request)
        to, text = body.get("to"), body.get("text")
        to = to.strip().lower() if isinstance(to, str) else ""
        if not NAME.fullmatch(to):
            return error(400, '"to" must be a user name')
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return error(400, f'"text" must be 1-{MAX_TEXT} characters')
        if not self.allow_send(request):
            return error(429, "slow down: at most 5 notifications a second")
        data = {
            "type": "notification",
            "id": secrets.token_hex(8),
            "from": sender,
            "text": text.strip(),
            "sent_at": time.time() * 1000,
        }
        result = await self.publish(to, data)
        return web.json_response({"id": data["id"], "offset": result.get("offset")}, headers=NO_STORE)

    async def read(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        if user is None:
            return error(401, "sign in first")
        up_to = (await self.json_body(request)).get("upTo")
        if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0:
            return error(400, '"upTo" must be an offset (an integer >= 0)')
        await self.publish(user, {"type": "read", "upTo": up_to})
        return web.json_response({"upTo": up_to}, headers=NO_STORE)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4096)
        app.router.add_get("/", self.index)
        app.router.add_get("/me", self.me)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/token", self.token)
        app.router.add_get("/users", self.users)
        app.router.add_post("/notify", self.notify)
        app.router.add_post("/read", self.read)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.router.add_static("/vendor/", VENDOR, follow_symlinks=False)
        app.cleanup_ctx.append(self._http_client)
        return app

    async def _http_client(self, app: web.Application) -> Any:
        # Trunkline closes an idle keep-alive connection after websocket.handshake_timeout
        # (10 s); a pooled connection kept longer (aiohttp: 15 s) can be reused just as the
        # server closes it, and that request fails. Keep idle connections for less.
        connector = aiohttp.TCPConnector(keepalive_timeout=5)
        self.http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5))
        yield
        await self.http.close()


async def main(a: argparse.Namespace) -> None:
    settings = load_settings(a.config)  # the secret and the API key this backend shares with Trunkline
    trunkline_url = a.trunkline.rstrip("/")
    websocket = trunkline_url.replace("http", "ws", 1) + "/connection/websocket"
    backend = Backend(settings.client.token.hmac_secret_key, trunkline_url + "/api", settings.http_api.key, websocket)
    runner = web.AppRunner(backend.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", a.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend: http://127.0.0.1:{a.port}/ (Trunkline at {trunkline_url})", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"), help="where the secret and API key are")
    p.add_argument("--trunkline", default="http://127.0.0.1:8001", help="Trunkline's URL")
    p.add_argument("--port", type=int, default=8081)
    asyncio.run(main(p.parse_args()))
