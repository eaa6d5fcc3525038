"""An application backend that Trunkline asks through its proxy: users log in with a session cookie.

Pages: ``/`` (login form, or the chat once logged in), ``POST /login``, ``POST /logout``.
Proxy endpoints (Centrifugo's HTTP proxy JSON): ``/centrifugo/connect`` reads the session cookie
the browser sent with its WebSocket (Trunkline forwards ``Cookie``), ``/centrifugo/subscribe``
lets members into ``chat:*`` rooms but only admins into ``chat:admins``, ``/centrifugo/publish``
stamps every message with its author and refuses empty ones, ``/centrifugo/rpc`` answers
``whoami`` and ``time``.
"""

from __future__ import annotations

import html
import secrets
import time
from typing import Any

from aiohttp import web

USERS = {"alice": {"password": "alice", "admin": True}, "bob": {"password": "bob", "admin": False}}
SESSION_COOKIE = "session"

SESSIONS = web.AppKey("sessions", dict)
TRUNKLINE_URL = web.AppKey("trunkline_url", str)


def _user(request: web.Request) -> str | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""))


async def index(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        return web.Response(content_type="text/html", text=LOGIN_PAGE)
    page = CHAT_PAGE.replace("{{user}}", html.escape(user)).replace("{{trunkline}}", request.app[TRUNKLINE_URL])
    return web.Response(content_type="text/html", text=page)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    if USERS.get(name, {}).get("password") != password:
        return web.Response(status=403, content_type="text/html", text="wrong user or password")
    sid = secrets.token_urlsafe(24)
    request.app[SESSIONS][sid] = name
    response = web.HTTPSeeOther("/")
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax")
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    response = web.HTTPSeeOther("/")
    response.del_cookie(SESSION_COOKIE)
    return response


# --- the proxy ------------------------------------------------------------------------------


def _result(result: dict[str, Any]) -> web.Response:
    return web.json_response({"result": result})


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}})


async def connect(request: web.Request) -> web.Response:
    user = _user(request)  # the browser's cookie, forwarded by Trunkline (http_headers = ["Cookie"])
    if user is None:
        return web.json_response({"disconnect": {"code": 4501, "reason": "not logged in"}})
    return _result(
        {
            "user": user,
            "info": {"name": user.title()},
            "meta": {"admin": USERS[user]["admin"]},  # server-only: sent back with include_connection_meta
            "expire_at": int(time.time()) + 600,  # the refresh proxy extends it while the session lives
        }
    )


async def refresh(request: web.Request) -> web.Response:
    body = await request.json()
    if _user(request) != body["user"]:  # logged out meanwhile
        return _result({"expired": True})
    return _result({"expire_at": int(time.time()) + 600})


async def subscribe(request: web.Request) -> web.Response:
    body = await request.json()
    if body["channel"] == "chat:admins" and not (body.get("meta") or {}).get("admin"):
        return _error(403, "admins only")
    return _result({})


async def publish(request: web.Request) -> web.Response:
    body = await request.json()
    text = str((body.get("data") or {}).get("text", "")).strip()
    if not text:
        return _error(400, "empty message")
    return _result({"data": {"text": text[:500], "by": body["user"], "at": int(time.time())}})


async def rpc(request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("method") == "whoami":
        return _result({"data": {"user": body["user"], "admin": (body.get("meta") or {}).get("admin", False)}})
    if body.get("method") == "time":
        return _result({"data": {"time": time.time()}})
    return _error(404, "unknown method")


def make_app(trunkline_url: str) -> web.Application:
    app = web.Application()
    app[SESSIONS] = {}
    app[TRUNKLINE_URL] = trunkline_url
    app.router.add_get("/", index)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    for name, handler in (
        ("connect", connect),
        ("refresh", refresh),
        ("subscribe", subscribe),
        ("publish", publish),
        ("rpc", rpc),
    ):
        app.router.add_post(f"/centrifugo/{name}", handler)
    return app


LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>Log in</title>
<h1>Log in</h1>
<form method="post" action="/login">
  <input name="user" placeholder="alice or bob"> <input name="password" type="password" placeholder="same as the name">
  <button>Log in</button>
</form>"""

CHAT_PAGE = """<!doctype html><meta charset="utf-8"><title>Chat</title>
<p>Logged in as <b>{{user}}</b> <form method="post" action="/logout"><button>Log out</button></form></p>
<ul id="log"></ul>
<form id="send"><input id="text" autocomplete="off"> <button>Send</button></form>
<script src="{{trunkline}}/static/vendor/centrifuge.js"></script>
<script>
  // No token: Trunkline asks this backend, which reads the session cookie the browser sends.
  const ws = "{{trunkline}}".replace(/^http/, "ws") + "/connection/websocket";
  const centrifuge = new Centrifuge(ws);
  const log = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    document.getElementById("log").append(li);
  };
  centrifuge.on("connected", async () => {
    log("connected as " + JSON.stringify((await centrifuge.rpc("whoami", {})).data));
  });
  centrifuge.on("disconnected", (ctx) => log("disconnected " + ctx.code + " " + ctx.reason));
  const room = centrifuge.newSubscription("chat:lobby");
  room.on("publication", (ctx) => log(ctx.data.by + ": " + ctx.data.text));
  room.subscribe();
  document.getElementById("send").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("text");
    try { await room.publish({text: input.value}); input.value = ""; } catch (err) { log("refused: " + err.message); }
  });
  centrifuge.connect();
</script>"""
