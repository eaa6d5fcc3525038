"""docs/deploy/docker-compose.yml without Docker: its services' commands, run here.

Docker is not available where the tests run, so the file is parsed (PyYAML, merge keys and
``${VAR:?}`` interpolation as Compose does them) and each service is executed as a process:

- ``redis``: the service's command line (plus a free port and a temp directory);
- ``trunkline1`` and ``trunkline2``: the service's command with its environment (secrets from a
  test ``.env``), the config file its volume mounts, and host addresses where the compose
  network has service names (``redis`` → 127.0.0.1:<port>, nginx's fixed address → 127.0.0.1);
- ``nginx``: Debian's nginx with the file the service mounts (``compose/nginx.conf``), the
  upstream service names as 127.0.0.1 ports.

Through nginx, streams from several client addresses land on both nodes (the upstream hash),
and one server API publication on one node reaches every client, also those of the other node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import API_KEY, ROOT, SECRET, eventually, free_port, token
from tests.deploy import checks
from tests.deploy.conftest import (
    ADMIN_PASSWORD,
    ADMIN_SECRET,
    DEPLOY,
    Daemon,
    Proxy,
    Tls,
    wait_for_port,
)
from tests.sdk.helpers import Recorder, new_client, subscribe_ready
from trunkline.config import load_settings

COMPOSE = DEPLOY / "docker-compose.yml"
REDIS_SERVER = shutil.which("redis-server")
DOTENV = {
    "TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": SECRET,
    "TRUNKLINE_HTTP_API_KEY": API_KEY,
    "TRUNKLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "TRUNKLINE_ADMIN_SECRET": ADMIN_SECRET,
}
_REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def interpolate(value: str, dotenv: Mapping[str, str]) -> str:
    """``${VAR:?message}`` as Compose does it: the variable's value, or an error naming it."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in dotenv, f"compose would refuse to start: {name} is not set"
        return dotenv[name]

    return _REQUIRED.sub(sub, value)


def mounted(service: Mapping[str, Any], target: str) -> Path:
    """The host file a service's volume mounts at ``target`` (relative to the compose file)."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (COMPOSE.parent / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def test_the_file_parses_into_two_nodes_redis_and_nginx() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"redis", "trunkline1", "trunkline2", "nginx"}
    for name in ("trunkline1", "trunkline2"):
        node = services[name]
        assert node["command"][:2] == ["trunkline", "serve"]
        assert node["environment"]["TRUNKLINE_ENGINE_TYPE"] == "redis"
        assert node["environment"]["TRUNKLINE_NODE_NAME"] == name
        assert node["stop_signal"] == "SIGTERM"
        assert mounted(node, "/etc/trunkline/trunkline.toml") == DEPLOY / "trunkline.toml"
        assert (COMPOSE.parent / node["build"]["context"]).resolve() == ROOT
        assert (COMPOSE.parent / node["build"]["context"] / node["build"]["dockerfile"]).resolve().exists()
        assert "ports" not in node  # reached through nginx only
    nginx = services["nginx"]
    assert mounted(nginx, "/etc/nginx/conf.d/default.conf").exists()
    fixed = nginx["networks"]["backend"]["ipv4_address"]
    assert json.loads(services["trunkline1"]["environment"]["TRUNKLINE_HTTP_SERVER_TRUSTED_PROXIES"]) == [f"{fixed}/32"]
    # Each node's settings validate: the file's config, the service's environment, the .env secrets.
    for name in ("trunkline1", "trunkline2"):
        env = {k: interpolate(str(v), DOTENV) for k, v in services[name]["environment"].items()}
        settings = load_settings(mounted(services[name], "/etc/trunkline/trunkline.toml"), env=env)
        assert settings.engine.type == "redis" and settings.http_server.trusted_proxies == (f"{fixed}/32",)
    with pytest.raises(AssertionError, match="TRUNKLINE_HTTP_API_KEY is not set"):
        interpolate(services["trunkline1"]["environment"]["TRUNKLINE_HTTP_API_KEY"], {})


def test_compose_nginx_conf_is_nginx_conf_but_for_the_upstream_servers() -> None:
    def body(path: Path) -> list[str]:
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        return [line for line in lines if not re.match(r"\s*(server \S+:\d+;|hash \$remote_addr)", line)]

    mounted_conf = mounted(compose()["services"]["nginx"], "/etc/nginx/conf.d/default.conf")
    assert body(mounted_conf) == body(DEPLOY / "nginx.conf")


# ------------------------------------------------------------------------------ running it


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(name: str, argv: list[str], ports: list[int], env: Mapping[str, str] | None = None) -> Daemon:
        daemon = Daemon(name, argv, tmp_path / f"{name}.log")
        started.append(daemon)
        if env is None:
            daemon.start(ports)
        else:
            with daemon.log_path.open("ab") as log:
                daemon.proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=tmp_path, start_new_session=True
                )
            for port in ports:
                wait_for_port(port, lambda: daemon.proc is not None and daemon.proc.poll() is None, daemon.output)
        return daemon

    yield start
    for daemon in reversed(started):
        with contextlib.suppress(Exception):
            daemon.stop(timeout=20)


@pytest.fixture
def cluster(
    processes: Callable[..., Daemon], nginx_factory: Callable[..., Proxy], tmp_path: Path
) -> tuple[Proxy, list[_NodeView]]:
    assert REDIS_SERVER is not None, "needs redis-server: run `make system-deps`"
    services = compose()["services"]
    redis_port = free_port()
    redis_cmd = [REDIS_SERVER if a == "redis-server" else a for a in services["redis"]["command"]]
    processes(
        "redis", [*redis_cmd, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp_path)], [redis_port]
    )

    https_port = free_port()
    origin = f"https://127.0.0.1:{https_port}"
    fixed = services["nginx"]["networks"]["backend"]["ipv4_address"]
    ports: dict[str, tuple[int, int]] = {}
    nodes: list[_NodeView] = []
    for name in ("trunkline1", "trunkline2"):
        service = services[name]
        config = mounted(service, "/etc/trunkline/trunkline.toml")
        argv = [str(Path(sys.executable).parent / "trunkline"), *service["command"][1:]]
        argv = [str(config) if a == "/etc/trunkline/trunkline.toml" else a for a in argv]
        env = {k: interpolate(str(v), DOTENV) for k, v in service["environment"].items()}
        # The compose network's names and addresses, as this host has them.
        env["TRUNKLINE_ENGINE_REDIS_ADDRESS"] = env["TRUNKLINE_ENGINE_REDIS_ADDRESS"].replace(
            "redis:6379", f"127.0.0.1:{redis_port}"
        )
        env["TRUNKLINE_HTTP_SERVER_TRUSTED_PROXIES"] = env["TRUNKLINE_HTTP_SERVER_TRUSTED_PROXIES"].replace(
            fixed, "127.0.0.1"
        )
        env["TRUNKLINE_HTTP_SERVER_ADDRESS"] = env["TRUNKLINE_HTTP_SERVER_INTERNAL_ADDRESS"] = "127.0.0.1"
        env["TRUNKLINE_CLIENT_ALLOWED_ORIGINS"] = json.dumps([origin])
        port, internal = free_port(), free_port()
        env["TRUNKLINE_HTTP_SERVER_PORT"], env["TRUNKLINE_HTTP_SERVER_INTERNAL_PORT"] = str(port), str(internal)
        env["TRUNKLINE_SHUTDOWN_READY_DELAY"] = "0s"  # faster teardown; the drain itself is tested elsewhere
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
        daemon = processes(name, argv, [port, internal], env={**base, **env})
        ports[name] = (port, internal)
        nodes.append(_NodeView(daemon, port, internal))

    conf = mounted(services["nginx"], "/etc/nginx/conf.d/default.conf").read_text()
    pairs = [
        (f"server {name}:{p};", f"server 127.0.0.1:{ports[name][i]};")
        for name in ports
        for i, p in ((0, 8000), (1, 9000))
    ]
    proxy = nginx_factory(conf, pairs, https_port=https_port)
    return proxy, nodes


class _NodeView:
    """A node started from the compose service (the shape the shared checks use)."""

    def __init__(self, daemon: Daemon, port: int, internal_port: int) -> None:
        self.daemon, self.port, self.internal_port = daemon, port, internal_port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}/api"

    def output(self) -> str:
        return self.daemon.output()


async def _open_stream(http: aiohttp.ClientSession, proxy: Proxy, user: str) -> tuple[aiohttp.ClientResponse, str]:
    body = json.dumps({"id": 1, "connect": {"token": token(user, channels=["chat:cluster"])}})
    headers = {"Content-Type": "application/json", "Origin": proxy.origin}
    response = await http.post(f"{proxy.origin}/connection/http_stream", data=body, headers=headers)
    assert response.status == 200, await response.text()
    reply = await checks._json_line(response)
    return response, reply["connect"]["node"]


async def test_a_publication_on_one_node_reaches_clients_of_both_through_nginx(
    cluster: tuple[Proxy, list[_NodeView]], tls: Tls
) -> None:
    proxy, nodes = cluster
    # Streams from client addresses 127.0.0.2, .3, ...: nginx's hash spreads them over both nodes.
    opened: list[tuple[aiohttp.ClientSession, aiohttp.ClientResponse, str]] = []
    try:
        for last in range(2, 40):
            http = checks.session(tls, f"127.0.0.{last}")
            response, node_id = await _open_stream(http, proxy, f"u{last}")
            opened.append((http, response, node_id))
            if len({n for _, _, n in opened}) == 2 and len(opened) >= 4:
                break
        assert len({n for _, _, n in opened}) == 2, "nginx sent every client address to one node"

        sdk = new_client(proxy.wss_url, token=token("py"), ssl_context=tls.client_context())
        rec = Recorder()
        await sdk.connect()
        conn = sdk._conn
        try:
            await subscribe_ready(sdk.new_subscription("chat:cluster", rec))
            await checks.publish(nodes[0], "chat:cluster", {"text": "from node 1"})
            for _, response, _ in opened:
                line = await checks._json_line(response)
                assert line["push"]["pub"]["data"] == {"text": "from node 1"}
            await eventually(lambda: rec.publications, timeout=checks.TIMEOUT)
            assert rec.publications[0][1] == {"text": "from node 1"}
        finally:
            await sdk.disconnect()
            if conn is not None:
                await asyncio.wait_for(conn.wait_closed(), checks.TIMEOUT)
    finally:
        for http, response, _ in opened:
            checks._abort(response)
            await http.close()


def test_services_stop_on_their_stop_signal(processes: Callable[..., Daemon]) -> None:
    """The stop_signal of a node lets ``trunkline serve`` exit 0 within stop_grace_period."""
    service = compose()["services"]["trunkline1"]
    grace = int(str(service["stop_grace_period"]).removesuffix("s"))
    config = mounted(service, "/etc/trunkline/trunkline.toml")
    port, internal = free_port(), free_port()
    env = {k: interpolate(str(v), DOTENV) for k, v in service["environment"].items()}
    env.update(
        TRUNKLINE_ENGINE_TYPE="memory",  # no Redis needed to test the signal
        TRUNKLINE_HTTP_SERVER_ADDRESS="127.0.0.1",
        TRUNKLINE_HTTP_SERVER_INTERNAL_ADDRESS="127.0.0.1",
        TRUNKLINE_HTTP_SERVER_PORT=str(port),
        TRUNKLINE_HTTP_SERVER_INTERNAL_PORT=str(internal),
    )
    argv = [str(Path(sys.executable).parent / "trunkline"), *service["command"][1:]]
    argv = [str(config) if a == "/etc/trunkline/trunkline.toml" else a for a in argv]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    daemon = processes("stop", argv, [port, internal], env={**base, **env})
    assert daemon.proc is not None
    daemon.proc.send_signal(getattr(signal, service["stop_signal"]))
    assert daemon.proc.wait(grace) == 0, daemon.output()
