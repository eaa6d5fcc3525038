"""Routes for the demo chat served at ``/``: ``POST /demo/token``.

The demo page asks for a connection token for a display name and gets an HS256 JWT
signed with ``client.token.hmac_secret_key``, valid for an hour. The user id (``sub``)
is not the name: the server picks a random one (12 hex digits) unless the request
brings back an id it handed out before, so two people who both call themselves "Ann"
are two users, and one person keeps the same id across reloads and token refreshes.
The name travels in ``info = {"name": name}``, which the server attaches to that
user's publications and presence entries.

Request ``{"user": "<name>", "id": "<optional earlier id>"}``; answer
``{"token": ..., "user": "<id>", "name": "<name>"}``; bad input is a 400 with
``{"error": ...}``. Anyone who can reach the route can obtain a token for any id, so
it is mounted only when ``demo.enabled`` is set, which is never the case by default:
keep it off on servers whose tokens mean something.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any, Final

import jwt
from aiohttp import web

from trunkline.config import Settings

__all__ = ["TOKEN_TTL", "add_demo_routes", "demo_token", "new_user_id", "parse_request"]

TOKEN_TTL: Final = 3600  # seconds
_NAME: Final = re.compile(r"[\w .\-]{1,32}")  # letters, digits, space, _ - .
_NAME_RULE: Final = "user must be 1-32 characters: letters, digits, spaces, '_', '-' or '.'"
_ID: Final = re.compile(r"[0-9a-f]{12}")
_ID_RULE: Final = "id must be a user id this route handed out before: 12 lowercase hex digits"
_BODY_RULE: Final = 'body must be JSON: {"user": "<name>"} or {"user": "<name>", "id": "<earlier id>"}'
_SETTINGS_KEY: Final = web.AppKey("demo_settings", Settings)
_NO_STORE: Final = {"Cache-Control": "no-store"}


def add_demo_routes(app: web.Application, settings: Settings) -> None:
    """Add ``POST /demo/token`` to ``app``; call only when the demo is enabled."""
    app[_SETTINGS_KEY] = settings
    app.router.add_post("/demo/token", _token_handler)


def new_user_id() -> str:
    """A fresh random demo user id: 12 lowercase hex digits."""
    return secrets.token_hex(6)


def demo_token(user: str, name: str, secret: str, *, now: float | None = None) -> str:
    """An HS256 connection token for user id ``user``, carrying ``info = {"name": name}``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + TOKEN_TTL, "info": {"name": name}}
    return jwt.encode(claims, secret, algorithm="HS256")


def parse_request(body: object) -> tuple[str, str | None] | str:
    """``(name, earlier id or None)`` from a decoded request body, or the error message."""
    if not isinstance(body, dict) or not isinstance(body.get("user"), str):
        return _BODY_RULE
    name = body["user"].strip()
    if not _NAME.fullmatch(name):
        return _NAME_RULE
    user = body.get("id")
    if user is None:
        return name, None
    if not isinstance(user, str) or not _ID.fullmatch(user):
        return _ID_RULE
    return name, user


def _error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400, headers=_NO_STORE)


async def _token_handler(request: web.Request) -> web.Response:
    secret = request.app[_SETTINGS_KEY].client.token.hmac_secret_key
    if not secret:
        return _error("demo tokens need client.token.hmac_secret_key to be configured")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(_BODY_RULE)
    parsed = parse_request(body)
    if isinstance(parsed, str):
        return _error(parsed)
    name, earlier = parsed
    user = earlier or new_user_id()
    answer = {"token": demo_token(user, name, secret), "user": user, "name": name}
    return web.json_response(answer, headers=_NO_STORE)
