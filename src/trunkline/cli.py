"""The ``trunkline`` command: ``serve``, ``genconfig``, ``gentoken``, ``gensubtoken``, ``checktoken``,
``checkconfig``, ``compare``, ``version``.

The CLI holds no logic: it parses arguments, loads settings through :mod:`trunkline.config`
and hands them to :func:`trunkline.app.run`. A :class:`~trunkline.errors.ConfigError` from any
command becomes one line on stderr, ``error: <key>: <message> in <source>``, and exit code 2;
a :class:`~trunkline.errors.StartupError` (port in use, unreadable TLS file, broker unreachable
at start) becomes ``error: <setting>: <cause>`` and exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import click
import jwt

from trunkline import __version__
from trunkline.config import Settings, load_settings
from trunkline.errors import ClientError, ConfigError, ConfigErrors, Disconnect, StartupError

__all__ = ["main"]

CONFIG_ENV_VAR = "TRUNKLINE_CONFIG"
EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_ERROR = 1
EXIT_BAD_TOKEN = 1


class _Group(click.Group):
    """A group that turns a ConfigError (exit code 2) or a StartupError (exit code 1) into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigErrors as exc:
            for error in exc.errors:
                click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_CONFIG_ERROR)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_CONFIG_ERROR)
        except StartupError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_STARTUP_ERROR)


_config_option = click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar=CONFIG_ENV_VAR,
    show_envvar=True,
    help="Configuration file (.toml or .json).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="trunkline", message="%(prog)s %(version)s")
def main() -> None:
    """Trunkline: a real-time messaging server speaking the Centrifugo protocol."""


@main.command()
@_config_option
@click.option("--host", help="Listen address (overrides http_server.address).")
@click.option("--port", type=int, help="Listen port (overrides http_server.port).")
@click.option(
    "--workers",
    default="1",
    show_default=True,
    envvar="TRUNKLINE_WORKERS",
    show_envvar=True,
    metavar="N|auto",
    help="Worker processes on the one port (auto: one per core); more than 1 needs engine.type redis.",
)
@click.option("--worker-id", type=int, hidden=True)  # set by the supervisor for each worker it starts
@click.option("--worker-dir", hidden=True)
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    *,
    workers: str,
    worker_id: int | None,
    worker_dir: str | None,
) -> None:
    """Run the server."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["http_server.address"] = host
    if port is not None:
        overrides["http_server.port"] = port
    settings = load_settings(config_path, overrides=overrides)
    if worker_id is not None:
        from trunkline.workers import run_worker

        run_worker(settings, worker_id, worker_dir or "")
        return
    from trunkline.workers import parse_workers, supervise, validate

    try:
        count = parse_workers(workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--workers'") from None
    validate(settings, count, config_path or "")
    if count > 1:
        args = ["--port", str(settings.http_server.port), "--host", settings.http_server.address]
        if config_path is not None:
            args[:0] = ["--config", str(Path(config_path).resolve())]
        raise SystemExit(supervise(settings, count, args))
    from trunkline.app import run  # type: ignore[import-not-found, unused-ignore]

    run(settings)


@main.command(short_help="Print a connection token (HS256 JWT).")
@click.option("--user", "user", required=True, help="User ID (the token's sub claim).")
@click.option(
    "--ttl",
    type=click.IntRange(min=0),
    default=3600,
    show_default=True,
    help="Lifetime in seconds; 0 for a token without expiry.",
)
@click.option("--info", "info", metavar="JSON", help="Connection info, a JSON value (the info claim).")
@_config_option
def gentoken(user: str, ttl: int, info: str | None, config_path: str | None) -> None:
    """Print an HS256 connection token signed with client.token.hmac_secret_key."""
    claims: dict[str, Any] = {"sub": user}
    if info is not None:
        try:
            claims["info"] = json.loads(info)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'--info'") from None
    settings = load_settings(config_path)
    secret = settings.client.token.hmac_secret_key
    if not secret:
        raise ConfigError(
            "client.token.hmac_secret_key",
            "is empty; set it in the config file or TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY to sign tokens",
            config_path or "",
        )
    click.echo(_sign(claims, secret, ttl))


def _sign(claims: dict[str, Any], secret: str, ttl: int) -> str:
    now = int(time.time())
    claims = {**claims, "iat": now}
    if ttl > 0:
        claims["exp"] = now + ttl
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        token = jwt.encode(claims, secret, algorithm="HS256")
    for warning in caught:  # e.g. PyJWT's InsecureKeyLengthWarning for a short secret
        click.echo(f"warning: {warning.message}", err=True)
    return token


@main.command(short_help="Print a subscription token (HS256 JWT) for one channel.")
@click.option("--user", "user", required=True, help='User ID (the token\'s sub claim; may be empty: "").')
@click.option("--channel", "channel", required=True, help="The channel the token grants.")
@click.option(
    "--ttl",
    type=click.IntRange(min=0),
    default=3600,
    show_default=True,
    help="Lifetime in seconds; 0 for a token without expiry.",
)
@_config_option
def gensubtoken(user: str, channel: str, ttl: int, config_path: str | None) -> None:
    """Print an HS256 subscription token, signed with client.subscription_token.hmac_secret_key when
    client.subscription_token.enabled is set, else with client.token.hmac_secret_key (as the server
    verifies it)."""
    if not channel:
        raise click.BadParameter("must not be empty", param_hint="'--channel'")
    settings = load_settings(config_path)
    sub = settings.client.subscription_token
    key, secret = (
        ("client.subscription_token.hmac_secret_key", sub.hmac_secret_key)
        if sub.enabled
        else ("client.token.hmac_secret_key", settings.client.token.hmac_secret_key)
    )
    if not secret:
        raise ConfigError(key, "is empty; set it to sign subscription tokens", config_path or "")
    click.echo(_sign({"sub": user, "channel": channel}, secret, ttl))


@main.command(short_help="Verify a token with the configured keys; print its claims.")
@click.argument("token", metavar="TOKEN")
@click.option("--subscription", is_flag=True, help="Verify as a subscription token (its keys and claims).")
@_config_option
def checktoken(token: str, subscription: bool, config_path: str | None) -> None:
    """Verify TOKEN as the server would (keys, algorithm, audience, issuer, expiry, claims) and print
    its claims as JSON. Exit code 1 and one line with the reason when it is not valid."""
    from trunkline.auth.jwt import TokenVerifier

    settings = load_settings(config_path)
    client = settings.client
    use_sub = subscription and client.subscription_token.enabled
    verifier = TokenVerifier.from_settings(client.subscription_token if use_sub else client.token)

    async def verify() -> None:
        try:
            if subscription:
                await verifier.verify_subscription(token, time.time())
            else:
                await verifier.verify_connection(token, time.time())
        finally:
            await verifier.close()

    try:
        asyncio.run(verify())
    except Disconnect as exc:
        click.echo(f"error: token: {exc.reason}", err=True)
        raise SystemExit(EXIT_BAD_TOKEN) from None
    except ClientError as exc:
        click.echo(f"error: token: {exc.message}", err=True)
        raise SystemExit(EXIT_BAD_TOKEN) from None
    claims = jwt.decode(token, options={"verify_signature": False})
    click.echo(json.dumps(claims, indent=2, sort_keys=True))


_STARTER = """\
# Trunkline configuration, made by `trunkline genconfig`. Every option: docs/configuration.md.
# Option names follow Centrifugo v6. Durations are strings such as "25s", "5m".
# The secrets below are random and new: keep this file private (or move them to
# TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY, TRUNKLINE_HTTP_API_KEY, ... environment variables).

[http_server]
address = "127.0.0.1"     # "0.0.0.0" to listen on every interface
port = 8000

[client]
# Pages allowed to open connections (the browser's Origin header); empty: same host only.
allowed_origins = []

[client.token]
# Connection tokens (JWT, HS256) are signed by your backend with this secret.
hmac_secret_key = "{hmac}"

[http_api]
# The server API (POST /api/<method>) wants this key in X-API-Key.
key = "{api_key}"

[admin]
# The live dashboard at /dashboard.
enabled = false
password = "{password}"
secret = "{admin_secret}"

[engine]
type = "memory"            # "redis" to share channels between several processes or hosts
# [engine.redis]
# address = "redis://127.0.0.1:6379"

[log]
level = "info"

# Channels "chat:<room>": presence, join/leave, 100 messages of history for 5 minutes,
# recovery after a reconnect, subscribe and publish for every connected client.
[[channel.namespaces]]
name = "chat"
presence = true
join_leave = true
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
"""


@main.command(short_help="Write a commented starter config with fresh random secrets.")
@click.argument("file", metavar="[FILE]", required=False)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def genconfig(file: str | None, force: bool) -> None:
    """Write a starter configuration to FILE (default: print it), with new random secrets."""
    text = _STARTER.format(
        hmac=secrets.token_urlsafe(32),
        api_key=secrets.token_urlsafe(24),
        password=secrets.token_urlsafe(12),
        admin_secret=secrets.token_urlsafe(32),
    )
    if file is None:
        click.echo(text, nl=False)
        return
    path = Path(file)
    if path.exists() and not force:
        raise click.ClickException(f"{file} exists; use --force to overwrite it")
    path.write_text(text)
    path.chmod(0o600)
    click.echo(f"wrote {file}", err=True)


@main.command(short_help="Validate a config file; print the effective settings.")
@click.argument("file", metavar="FILE")
def checkconfig(file: str) -> None:
    """Validate FILE (plus TRUNKLINE_* variables) and print the effective settings, secrets masked."""
    if not file:
        raise click.BadParameter("must not be empty", param_hint="FILE")
    settings: Settings = load_settings(file)
    click.echo(json.dumps(settings.masked_dict(), indent=2))


@main.command(short_help="Measure short polling, long polling, SSE and WebSocket on this machine.")
@click.option("--clients", type=click.IntRange(1, 100000), help="Clients per mode (default 100; --quick 5).")
@click.option("--rate", type=click.FloatRange(0.1, 100000), help="Publications per second (default 10).")
@click.option("--seconds", type=click.FloatRange(0.5, 3600), help="Seconds of publishing per mode (default 10).")
@click.option("--payload", type=click.IntRange(16, 1048576), metavar="BYTES", help="Bytes of data (default 100).")
@click.option("--interval", type=click.FloatRange(0.05, 3600), help="Short-poll interval in seconds (default 1).")
@click.option("--wait", type=click.FloatRange(0.1, 60), help="Long-poll wait in seconds (default 25).")
@click.option("--modes", default="short-poll,long-poll,sse,websocket", show_default=True, help="Modes to run.")
@click.option(
    "--sweep", multiple=True, metavar="NAME=V1,V2", help="Repeat for each value: rate=1,10,100 or clients=10,100,1000."
)
@click.option("--sweep-seconds", type=click.FloatRange(0.5, 3600), help="Seconds per sweep point (default --seconds).")
@click.option(
    "--out", default="compare-results", show_default=True, metavar="DIR", help="Where results.json and report.html go."
)
@click.option("--quick", is_flag=True, help="Small and short: 5 clients, 10/s for 2 s, 0.5 s interval.")
@click.option("--url", metavar="URL", help="Measure a running server instead of starting one.")
@click.option("--api-key", default="", envvar="TRUNKLINE_HTTP_API_KEY", help="With --url: its http_api.key.")
@click.option(
    "--secret", default="", envvar="TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY", help="With --url: its HMAC token key."
)
@click.option("--server-pid", type=int, help="With --url: the server's process id, to measure its CPU.")
@click.option("--channel-prefix", default="compare:", show_default=True, help="With --url: a namespace with history.")
def compare(**options: Any) -> None:
    """Drive the same workload through each delivery mode and report latency, bytes, requests and CPU."""
    from trunkline.tools.compare.main import from_cli, run

    try:
        parsed = from_cli(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run(parsed)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"trunkline {__version__}")
