"""The admin dashboard: ``/dashboard``, its login, and the token it connects with.

Routes (added only when ``admin.enabled``):

- ``GET /dashboard``: the dashboard page, or a login form when not logged in;
- ``POST /dashboard/login``: form or JSON ``{"password": ...}``; the password is
  compared in constant time with ``admin.password``; success sets an HttpOnly,
  SameSite=Strict cookie holding an expiring session value signed with HMAC (key
  derived from ``admin.secret`` and ``admin.password``, so changing either logs
  every session out). Failures are limited per address;
- ``POST /dashboard/logout``: clears the cookie (with the session's CSRF token);
- ``GET /dashboard/token``: for a logged-in browser, a connection JWT (HS256 with
  ``admin.secret``, ``sub`` ``admin``, one hour, ``meta: {"trunkline_admin": true}``)
  that makes its WebSocket connection an admin one, allowed to subscribe to the
  node's ``__trunkline:stats`` channel; 401 JSON otherwise;
- ``GET /dashboard/stats``: the recent stats documents, so charts start filled;
- ``GET /dashboard/assets/{name}``: the page's scripts and styles, from the package
  (uPlot and centrifuge.js are vendored by ``make setup``; nothing from a CDN);
- the administration endpoints of :mod:`~trunkline.observe.admin_views` (channels,
  connections, actions, the event log), CSRF-protected and audited as
  :mod:`~trunkline.observe.admin_auth` describes.

With ``admin.insecure`` there is no login: every request is an admin's.

The page works on the public listener and on the internal one
(``http_server.internal_port``): when the application has no
``/connection/websocket`` route (the internal one), it gets one here, and the
dashboard's stats and event-log tasks start with the application.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jwt.utils import base64url_encode

from ..appkeys import NODE_KEY
from ..transport.remote import client_ip, is_https
from . import admin_auth, admin_events, admin_views, stats
from .admin_auth import COOKIE, COOKIE_PATH, SESSION_TTL

if TYPE_CHECKING:
    from ..config import Settings
    from ..node import Node

log = logging.getLogger("trunkline.dashboard")

__all__ = ["COOKIE", "COOKIE_PATH", "SESSION_TTL", "add_dashboard_routes", "admin_token"]

TOKEN_TTL = 3600
LOGIN_FAILURES = 10  # per address …
LOGIN_WINDOW = 60.0  # … per this many seconds, then 429
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
ASSETS: dict[str, tuple[str, str]] = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "admin.js": ("admin.js", "text/javascript"),
    "centrifuge.js": ("vendor/centrifuge.js", "text/javascript"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
_FAILURES = web.AppKey("dashboard_login_failures", dict[str, list[float]])


def add_dashboard_routes(app: web.Application, settings: Settings) -> None:
    if not settings.admin.enabled:
        return
    app[_FAILURES] = {}
    r = app.router
    r.add_get("/dashboard", dashboard_page)
    r.add_get("/dashboard/", _to_dashboard)
    r.add_post("/dashboard/login", login)
    r.add_post("/dashboard/logout", logout)
    r.add_get("/dashboard/token", token)
    r.add_get("/dashboard/stats", recent_stats)
    r.add_get("/dashboard/assets/{name}", asset)
    admin_views.add_admin_routes(app)
    if not any(res.canonical == "/connection/websocket" for res in r.resources()):
        from ..transport.websocket import websocket_handler

        r.add_get("/connection/websocket", websocket_handler)
    admin_auth.start_insecure_key(app)
    app.on_startup.append(_start_tasks)


async def _start_tasks(app: web.Application) -> None:
    stats.start_stats(_node(app))
    admin_events.start_events(_node(app))


def _node(app: web.Application) -> Node:
    return app[NODE_KEY]


def _client(request: web.Request) -> str:
    return client_ip(request, _node(request.app).settings)


# ---------------------------------------------------------------------------------- sessions

# the session cookie and its CSRF token live in admin_auth; these names stay importable from here
new_session_value = admin_auth.new_session_value
valid_session = admin_auth.valid_session
_authorized = admin_auth.authorized


def _password_ok(settings: Settings, given: str) -> bool:
    expected = settings.admin.password
    if not expected:
        return False
    # compare digests: constant time, and the length of the password does not leak either
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def _limited(request: web.Request) -> bool:
    failures = request.app[_FAILURES]
    now = time.monotonic()
    recent = [t for t in failures.get(_client(request), ()) if now - t < LOGIN_WINDOW]
    if recent:
        failures[_client(request)] = recent
    else:
        failures.pop(_client(request), None)
    return len(recent) >= LOGIN_FAILURES


def _record_failure(request: web.Request) -> None:
    failures = request.app[_FAILURES]
    if len(failures) > 10_000:  # many addresses: forget, rather than grow without bound
        failures.clear()
    failures.setdefault(_client(request), []).append(time.monotonic())


# ---------------------------------------------------------------------------------- handlers


def _headers(request: web.Request) -> dict[str, str]:
    host = request.host
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard")


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return _login_page(request)
    page = STATIC / "dashboard.html"
    return web.Response(body=page.read_bytes(), content_type="text/html", charset="utf-8", headers=_headers(request))


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Trunkline dashboard — log in</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css">
</head>
<body class="login">
<main>
<form method="post" action="/dashboard/login" class="login-form">
<h1>Trunkline</h1>
<label for="password">Admin password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
{message}
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
"""
    return web.Response(text=body, status=status, content_type="text/html", headers=_headers(request))


def _wants_json(request: web.Request) -> bool:
    return request.content_type == "application/json" or "application/json" in request.headers.get("Accept", "")


async def login(request: web.Request) -> web.StreamResponse:
    settings = _node(request.app).settings
    as_json = _wants_json(request)
    if settings.admin.insecure:
        return _logged_in(request, as_json, settings)
    if _limited(request):
        log.warning("dashboard login refused from %s: too many failures", _client(request))
        if as_json:
            return web.json_response({"error": "too many attempts, try again later"}, status=429)
        return _login_page(request, "Too many attempts, try again later.", status=429)
    given = ""
    try:
        if request.content_type == "application/json":
            body: Any = await request.json()
            value = body.get("password") if isinstance(body, dict) else None
        else:
            value = (await request.post()).get("password")
        given = value if isinstance(value, str) else ""
    except ValueError:
        given = ""
    if not _password_ok(settings, given):
        _record_failure(request)
        log.warning("dashboard login failed from %s", _client(request))
        if as_json:
            return web.json_response({"error": "wrong password"}, status=401)
        return _login_page(request, "Wrong password.", status=401)
    return _logged_in(request, as_json, settings)


def _logged_in(request: web.Request, as_json: bool, settings: Settings) -> web.StreamResponse:
    response: web.StreamResponse
    if as_json:
        response = web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})
    else:
        response = web.Response(status=303, headers={"Location": "/dashboard", "Cache-Control": "no-store"})
    if not settings.admin.insecure:
        value = new_session_value(settings)
        admin_auth.audit_log.info(
            "dashboard login from %s: session=%s", _client(request), admin_auth.session_name(value.split(".")[2])
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_TTL,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=is_https(request, settings),
        )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """Clears the cookie; a logged-in session must send its CSRF token (header or ``csrf`` form field)."""
    if admin_auth.authorized(request) and not _node(request.app).settings.admin.insecure:
        form_token = ""
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            value = (await request.post()).get(admin_auth.CSRF_FIELD)
            form_token = value if isinstance(value, str) else ""
        denied = admin_auth.check_state_change(request, form_token)
        if denied is not None:
            return denied
        admin_auth.audit_log.info("admin logout by %s", admin_auth.identity(request))
    response: web.StreamResponse
    if _wants_json(request):
        response = web.json_response({"ok": True})
    else:
        response = web.Response(status=303, headers={"Location": "/dashboard", "Cache-Control": "no-store"})
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    return response


def admin_secret(node: Node) -> str:
    """The key dashboard tokens are signed with: the node's (it may generate one), else ``admin.secret``."""
    own = getattr(node, "admin_secret", "")
    return own if isinstance(own, str) and own else node.settings.admin.secret


def admin_token(secret: str, now: float | None = None) -> str:
    """A connection JWT (HS256) that makes a connection an admin one.

    Signed here with ``hmac`` (HS256 is one HMAC-SHA256 over ``header.payload``):
    ``jwt.encode`` warns about keys under 32 bytes on every call, which the token
    verifier already reports once at startup.
    """
    issued = int(time.time() if now is None else now)
    claims = {"sub": "admin", "iat": issued, "exp": issued + TOKEN_TTL, "meta": {"trunkline_admin": True}}
    header = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = base64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(secret.encode(), signing_input, "sha256").digest()
    return (signing_input + b"." + base64url_encode(signature)).decode()


async def token(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return web.json_response({"error": "login required"}, status=401, headers={"Cache-Control": "no-store"})
    secret = admin_secret(_node(request.app))
    if not secret:
        return web.json_response({"error": "admin.secret is not set"}, status=503)
    return web.json_response({"token": admin_token(secret)}, headers={"Cache-Control": "no-store"})


async def recent_stats(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return web.json_response({"error": "login required"}, status=401)
    node = _node(request.app)
    return web.json_response(
        {"channel": stats.STATS_CHANNEL, "interval": stats.INTERVAL, "recent": stats.recent(node)},
        headers={"Cache-Control": "no-store"},
    )


async def asset(request: web.Request) -> web.StreamResponse:
    entry = ASSETS.get(request.match_info["name"])
    if entry is None:
        raise web.HTTPNotFound()
    path = STATIC / entry[0]
    if not path.is_file():
        return web.Response(status=404, text=f"{entry[0]} is missing: run `make setup` to vendor it")
    return web.FileResponse(path, headers={"Content-Type": entry[1], "Cache-Control": "no-cache"})
