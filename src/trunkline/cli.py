"""The ``trunkline`` command: ``serve``, ``gentoken``, ``checkconfig``, ``version``.

The CLI holds no logic: it parses arguments, loads settings through :mod:`trunkline.config`
and hands them to :func:`trunkline.app.run`. A :class:`~trunkline.errors.ConfigError` from any
command becomes one line on stderr, ``error: <key>: <message> in <source>``, and exit code 2;
a :class:`~trunkline.errors.StartupError` (port in use, unreadable TLS file, broker unreachable
at start) becomes ``error: <setting>: <cause>`` and exit code 1.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import click
import jwt

from trunkline import __version__
from trunkline.config import Settings, load_settings
from trunkline.errors import ConfigError, StartupError

__all__ = ["main"]

CONFIG_ENV_VAR = "TRUNKLINE_CONFIG"
EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_ERROR = 1


class _Group(click.Group):
    """A group that turns a ConfigError (exit code 2) or a StartupError (exit code 1) into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
def serve(config_path: str | None, host: str | None, port: int | None) -> None:
    """Run the server."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["http_server.address"] = host
    if port is not None:
        overrides["http_server.port"] = port
    settings = load_settings(config_path, overrides=overrides)
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


@main.command(short_help="Validate a config file; print the effective settings.")
@click.argument("file", metavar="FILE")
def checkconfig(file: str) -> None:
    """Validate FILE (plus TRUNKLINE_* variables) and print the effective settings, secrets masked."""
    if not file:
        raise click.BadParameter("must not be empty", param_hint="FILE")
    settings: Settings = load_settings(file)
    click.echo(json.dumps(settings.masked_dict(), indent=2))


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"trunkline {__version__}")
