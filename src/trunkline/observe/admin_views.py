"""The dashboard's administration endpoints (behind the admin login).

Reads (``GET``, no CSRF token needed; nothing changes):

- ``/dashboard/session``: the session's CSRF token and id (``admin_auth``);
- ``/dashboard/channels?pattern=``: the server API's ``channels`` method, grouped by namespace;
- ``/dashboard/channel?name=``: one channel: local subscribers, and the ``presence``,
  ``presence_stats`` and ``history`` methods (each part answers or says why not);
- ``/dashboard/connections?user=&search=``: this node's connections of one user
  (transport, address, subscriptions), or the users with connections here;
- ``/dashboard/events``: the event log's recent rows (``admin_events``).

Actions (``POST /dashboard/api/{method}``, a JSON body and the ``X-CSRF-Token``
header): any server API method, run in-process through the API's own method table
(:data:`trunkline.api.methods.METHODS`), so the answer is the server API's answer —
``{"result": ...}`` or ``{"error": {"code", "message"}}``; ``batch`` answers
``{"replies": [...]}``. A refusal before the method runs is an HTTP status with
``{"error": "<message>"}``: 401 (no login), 403 (CSRF), 404 (no such method), 413,
415 (not JSON), 400 (not UTF-8 JSON). Every action is logged on ``trunkline.admin``
with the admin's session id and address, the method, its targets (channel, user,
client; never the data) and the outcome.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from .. import errors as E
from ..api.methods import METHODS, MalformedBody
from ..appkeys import NODE_KEY
from . import admin_events
from .admin_auth import audit_log, authorized, check_state_change, csrf_token, identity, refused, session_id
from .logs import log_failure

if TYPE_CHECKING:
    from ..contracts import Connection
    from ..node import Node

log = logging.getLogger("trunkline.dashboard")
_encoder = msgspec.json.Encoder()
_loose = msgspec.json.Decoder()
SYSTEM_PREFIX = "__trunkline:"
MAX_CHANNELS = 1000  # rows of the channel browser
MAX_USERS = 200  # rows of the users list
MAX_SUBSCRIPTIONS = 200  # channels listed per connection
HISTORY_LIMIT = 20
MAX_QUERY = 1024  # characters of a query parameter


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/dashboard/session", session_info)
    r.add_get("/dashboard/channels", channels)
    r.add_get("/dashboard/channel", channel)
    r.add_get("/dashboard/connections", connections)
    r.add_get("/dashboard/events", recent_events)
    # any name (braces and slashes included) reaches the handler, which answers 404 in JSON for an unknown one
    r.add_post("/dashboard/api/{method:(?s:.*)}", action)
    r.add_route("*", "/dashboard/api/{method:(?s:.*)}", _post_only)


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=_encoder.encode(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _param(request: web.Request, name: str) -> str | web.Response:
    value = request.query.get(name, "")
    if len(value) > MAX_QUERY:
        return refused(f"{name} is longer than {MAX_QUERY} characters", 400)
    return value


async def _call(node: Node, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run a server API method in-process: ``{"result": ...}`` or ``{"error": {...}}``."""
    try:
        result = await METHODS[method](node, _encoder.encode(params))
    except E.ClientError as err:
        return {"error": {"code": err.code, "message": err.message}}
    except Exception as exc:  # e.g. binary data in a history the JSON view cannot show
        log.warning("dashboard: %s of %r failed: %s", method, params.get("channel"), exc)
        return {"error": {"code": 100, "message": f"{method} failed: {type(exc).__name__}"}}
    return {"result": result}


# ---------------------------------------------------------------------------------- reads


async def session_info(request: web.Request) -> web.StreamResponse:
    token = csrf_token(request)
    if token is None:
        return refused("login required", 401)
    node = _node(request)
    return _json({"csrf": token, "session": session_id(request), "node": node.name, "methods": sorted(METHODS)})


async def channels(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return refused("login required", 401)
    pattern = _param(request, "pattern")
    if isinstance(pattern, web.Response):
        return pattern
    node = _node(request)
    answer = await _call(node, "channels", {"pattern": pattern})
    if "error" in answer:
        return _json(answer)
    found = [
        (name, int(entry["num_clients"]))
        for name, entry in answer["result"]["channels"].items()
        if not name.startswith(SYSTEM_PREFIX)
    ]
    found.sort(key=lambda item: (-item[1], item[0]))
    shown = found[:MAX_CHANNELS]
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, count in shown:
        groups.setdefault(node.rules.namespace_of(name), []).append({"channel": name, "num_clients": count})
    namespaces = [
        {"namespace": ns, "channels": rows, "num_clients": sum(row["num_clients"] for row in rows)}
        for ns, rows in sorted(groups.items())
    ]
    return _json({"namespaces": namespaces, "total": len(found), "truncated": len(found) > len(shown)})


async def channel(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return refused("login required", 401)
    name = _param(request, "name")
    if isinstance(name, web.Response):
        return name
    if not name:
        return refused("name required", 400)
    node = _node(request)
    if name.startswith(SYSTEM_PREFIX):
        return refused("a channel of the node itself", 400)
    local = node.hub.subscribers(name)
    return _json(
        {
            "channel": name,
            "namespace": node.rules.namespace_of(name),
            "local_subscribers": len(local),
            "presence": await _call(node, "presence", {"channel": name}),
            "presence_stats": await _call(node, "presence_stats", {"channel": name}),
            "history": await _call(node, "history", {"channel": name, "limit": HISTORY_LIMIT, "reverse": True}),
        }
    )


def describe(conn: Connection) -> dict[str, Any]:
    """One connection for the connection view."""
    info = getattr(getattr(conn, "transport", None), "info", None)
    subscriptions = sorted(str(c) for c in getattr(conn, "subscriptions", {}) or {})
    expire_at = getattr(conn, "expire_at", None)
    return {
        "client": conn.client_id,
        "user": conn.user,
        "transport": getattr(info, "name", ""),
        "protocol": getattr(info, "protocol", ""),
        "remote": str(getattr(conn, "remote", "") or ""),
        "admin": bool(getattr(conn, "is_admin", False)),
        "expires_in": int(expire_at - time.time()) if isinstance(expire_at, int | float) else None,
        "subscriptions": subscriptions[:MAX_SUBSCRIPTIONS],
        "num_subscriptions": len(subscriptions),
    }


async def connections(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return refused("login required", 401)
    user = _param(request, "user")
    search = _param(request, "search")
    for value in (user, search):
        if isinstance(value, web.Response):
            return value
    assert isinstance(user, str) and isinstance(search, str)
    node = _node(request)
    if "user" in request.query:
        conns = sorted(node.hub.user_connections(user), key=lambda c: c.client_id)
        return _json({"node": node.name, "user": user, "connections": [describe(c) for c in conns]})
    counts: dict[str, int] = {}
    for conn in node.hub.connections():
        if getattr(conn, "is_admin", False) or (search and search not in conn.user):
            continue
        counts[conn.user] = counts.get(conn.user, 0) + 1
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return _json(
        {
            "node": node.name,
            "users": [{"user": u, "connections": n} for u, n in rows[:MAX_USERS]],
            "total": len(rows),
            "truncated": len(rows) > MAX_USERS,
        }
    )


async def recent_events(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return refused("login required", 401)
    return _json({"channel": admin_events.EVENTS_CHANNEL, "recent": admin_events.recent(_node(request))})


# ---------------------------------------------------------------------------------- actions


async def _post_only(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "use POST"}, status=405, headers={"Allow": "POST"})


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None once it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):  # at most limit + 1 reads
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def targets(body: bytes) -> str:
    """What an action is about, for the audit log: channel, channels, user, client (never data)."""
    try:
        params = _loose.decode(body or b"{}")
    except (msgspec.DecodeError, RecursionError):
        return "(malformed)"
    if not isinstance(params, dict):
        return "(not an object)"
    parts: list[str] = []
    for key in ("channel", "user", "client"):
        value = params.get(key)
        if isinstance(value, str) and value:
            parts.append(f"{key}={value[:200]!r}")
    many = params.get("channels")
    if isinstance(many, list):
        shown = ",".join(str(c)[:100] for c in many[:3])
        parts.append(f"channels={len(many)}[{shown}{',…' if len(many) > 3 else ''}]")
    commands = params.get("commands")
    if isinstance(commands, list):
        names = [next(iter(c)) for c in commands[:10] if isinstance(c, dict) and len(c) == 1]
        parts.append(f"commands={len(commands)}[{','.join(str(n)[:30] for n in names)}]")
    return " ".join(parts) or "-"


async def action(request: web.Request) -> web.StreamResponse:
    denied = check_state_change(request)
    if denied is not None:
        return denied
    name = request.match_info["method"]
    node = _node(request)
    who = identity(request)
    method = METHODS.get(name)
    if method is None:
        return refused(f"no server API method {name[:64]!r}", 404)
    if request.content_type != "application/json":
        return refused("send the parameters as application/json", 415)
    limit = node.settings.http_api.max_body_size or 1 << 20
    body = await _read_body(request, limit)
    if body is None:
        return refused(f"request body over {limit} bytes", 413)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return refused("the body is not UTF-8", 400)
    about = targets(body)
    counted = name != "batch"  # a batch counts its own commands
    try:
        result = await method(node, body)
    except MalformedBody:
        audit_log.info("admin action %s by %s: %s -> malformed JSON", name, who, about)
        return refused("malformed JSON body", 400)
    except E.ClientError as err:
        if counted:
            node.metrics.api_command(name, str(err.code))
        audit_log.info("admin action %s by %s: %s -> error %d %s", name, who, about, err.code, err.message)
        return _json({"error": {"code": err.code, "message": err.message}})
    except Exception:
        if counted:
            node.metrics.api_command(name, "100")
        log_failure(audit_log, node.metrics, "admin action %s by %s failed", name, who)
        return _json({"error": {"code": 100, "message": "internal server error"}}, status=500)
    audit_log.info("admin action %s by %s: %s -> ok", name, who, about)
    if not counted:
        return _json(result)
    node.metrics.api_command(name, "ok")
    return _json({"result": result})
