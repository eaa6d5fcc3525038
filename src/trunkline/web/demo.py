"""Routes for the demo chat served at ``/``: ``POST /demo/token``.

The demo page asks for a connection token for a display name and gets an HS256 JWT
(``sub`` = the name, ``info`` = ``{"name": name}``, valid for an hour) signed with
``client.token.hmac_secret_key``. Anyone who can reach the route can obtain a token
for any user id, so it is mounted only when ``demo.enabled`` is set, which is never
the case by default: keep it off on servers whose tokens mean something.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Final

import jwt
from aiohttp import web

from trunkline.config import Settings

__all__ = ["TOKEN_TTL", "add_demo_routes", "demo_token"]

TOKEN_TTL: Final = 3600  # seconds
_NAME: Final = re.compile(r"[\w .\-]{1,32}")  # letters, digits, space, _ - .
_NAME_RULE: Final = "user must be 1-32 characters: letters, digits, spaces, '_', '-' or '.'"
_SETTINGS_KEY: Final = web.AppKey("demo_settings", Settings)
_NO_STORE: Final = {"Cache-Control": "no-store"}


def add_demo_routes(app: web.Application, settings: Settings) -> None:
    """Add ``POST /demo/token`` to ``app``; call only when the demo is enabled."""
    app[_SETTINGS_KEY] = settings
    app.router.add_post("/demo/token", _token_handler)


def demo_token(name: str, secret: str, *, now: float | None = None) -> str:
    """An HS256 connection token for ``name``, carrying ``info = {"name": name}``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": name, "iat": issued, "exp": issued + TOKEN_TTL, "info": {"name": name}}
    return jwt.encode(claims, secret, algorithm="HS256")


def _error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400, headers=_NO_STORE)


async def _token_handler(request: web.Request) -> web.Response:
    secret = request.app[_SETTINGS_KEY].client.token.hmac_secret_key
    if not secret:
        return _error("demo tokens need client.token.hmac_secret_key to be configured")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error('body must be JSON: {"user": "<name>"}')
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str):
        return _error('body must be JSON: {"user": "<name>"}')
    name = user.strip()
    if not _NAME.fullmatch(name):
        return _error(_NAME_RULE)
    return web.json_response({"token": demo_token(name, secret)}, headers=_NO_STORE)
