"""Who the dashboard's admin is: the signed session cookie, its CSRF token, and the audit log.

A login sets the cookie ``v1.<expiry>.<nonce>.<hmac>`` (HMAC-SHA256 with a key derived
from ``admin.secret`` and ``admin.password``, so changing either ends every session).
The nonce names the session: the *CSRF token* is an HMAC of it under the same key, so
it is bound to the session, needs no server-side state and dies with it. Every
state-changing request (the actions, the disconnect button, logout) must carry the
token in the ``X-CSRF-Token`` header (or a ``csrf`` form field): a page on another
origin can make the browser send the cookie (a same-site page on another port can,
whatever ``SameSite`` says) but it can neither read the token nor set the header.

With ``admin.insecure`` there is no session; the token is then an HMAC of a key
derived from the node's admin secret (``admin.secret``, else one made when the node
starts, or by the supervisor for all the workers of ``serve --workers``), handed out
by ``GET /dashboard/session`` (which other origins cannot read), so cross-site posts
are still refused.

An admin is named in the logs by the session's *id* (a hash of its nonce, never the
cookie) and the client address (behind trusted proxies, the forwarded one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..appkeys import NODE_KEY
from ..transport.remote import client_ip

if TYPE_CHECKING:
    from ..config import Settings
    from ..node import Node

audit_log = logging.getLogger("trunkline.admin")

COOKIE = "trunkline_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_TTL = 8 * 3600
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
_INSECURE_KEY = web.AppKey("dashboard_insecure_csrf_key", bytes)


def _session_key(settings: Settings) -> bytes:
    admin = settings.admin
    return hmac.new(
        admin.secret.encode(), b"trunkline dashboard session\0" + admin.password.encode(), "sha256"
    ).digest()


def _sign(key: bytes, expires: int, nonce: str) -> str:
    return hmac.new(key, f"v1|{expires}|{nonce}".encode(), "sha256").hexdigest()


def new_session_value(settings: Settings, now: float | None = None) -> str:
    """A cookie value ``v1.<expiry>.<nonce>.<hmac>``, valid for ``SESSION_TTL`` seconds."""
    expires = int((time.time() if now is None else now) + SESSION_TTL)
    nonce = secrets.token_urlsafe(12)
    return f"v1.{expires}.{nonce}.{_sign(_session_key(settings), expires, nonce)}"


def session_nonce(settings: Settings, value: str, now: float | None = None) -> str | None:
    """The nonce of a valid, unexpired session cookie value; None for anything else."""
    if not (settings.admin.secret and settings.admin.password):
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    expires, nonce, mac = int(parts[1]), parts[2], parts[3]
    if expires <= (time.time() if now is None else now):
        return None
    if not hmac.compare_digest(_sign(_session_key(settings), expires, nonce).encode(), mac.encode("utf-8", "replace")):
        return None
    return nonce


def valid_session(settings: Settings, value: str, now: float | None = None) -> bool:
    return session_nonce(settings, value, now) is not None


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def start_insecure_key(app: web.Application) -> None:
    """The key of the CSRF token when there is no login (``admin.insecure``) and no admin secret."""
    app[_INSECURE_KEY] = secrets.token_bytes(32)


def _insecure_key(request: web.Request) -> bytes | None:
    """The CSRF key with ``admin.insecure``: derived from the node's admin secret, which every worker of
    ``serve --workers`` shares (the supervisor makes one) and a node without ``admin.secret`` makes
    on start; the application's random key when there is none."""
    secret = getattr(_node(request), "admin_secret", "")
    if isinstance(secret, str) and secret:
        return hmac.new(secret.encode(), b"trunkline dashboard insecure csrf", "sha256").digest()
    return request.app.get(_INSECURE_KEY)


def _nonce(request: web.Request) -> str | None:
    """The session of the request: its nonce, ``""`` in insecure mode, None when not logged in."""
    settings = _node(request).settings
    if settings.admin.insecure:
        return ""
    return session_nonce(settings, request.cookies.get(COOKIE, ""))


def authorized(request: web.Request) -> bool:
    return _nonce(request) is not None


def csrf_token(request: web.Request) -> str | None:
    """The CSRF token of the request's session (None when not logged in)."""
    nonce = _nonce(request)
    if nonce is None:
        return None
    key = _insecure_key(request) if nonce == "" else _session_key(_node(request).settings)
    if not key:  # never a token anyone could compute
        return None
    return hmac.new(key, b"trunkline dashboard csrf\0" + nonce.encode(), "sha256").hexdigest()


def csrf_ok(request: web.Request, given: str) -> bool:
    expected = csrf_token(request)
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def session_id(request: web.Request) -> str:
    """A short, stable name of the request's session for logs (not the cookie, not the nonce)."""
    nonce = _nonce(request)
    if nonce is None:
        return "-"
    return session_name(nonce)


def session_name(nonce: str) -> str:
    """The id of the session with this nonce (a hash: the logs never hold the cookie or the nonce)."""
    if nonce == "":
        return "insecure"
    return hashlib.sha256(nonce.encode()).hexdigest()[:12]


def identity(request: web.Request) -> str:
    """Who did it, for the audit log: ``session=<id> from=<client address>``."""
    return f"session={session_id(request)} from={client_ip(request, _node(request).settings)}"


def refused(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


def check_state_change(request: web.Request, form_token: str = "") -> web.Response | None:
    """None if a state-changing request may proceed, else the 401/403 answer (logged)."""
    if not authorized(request):
        return refused("login required", 401)
    given = request.headers.get(CSRF_HEADER, "") or form_token
    if not csrf_ok(request, given):
        audit_log.warning(
            "admin request refused (%s CSRF token) %s %s by %s",
            "wrong" if given else "no",
            request.method,
            request.path,
            identity(request),
        )
        return refused("missing or wrong CSRF token", 403)
    return None
