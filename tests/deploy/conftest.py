"""Real reverse proxies in front of real Trunkline processes, configured by the files in docs/deploy/.

- ``tls``: a test CA (trustme) and a certificate for 127.0.0.1/localhost, as the PEM files nginx
  (cert + key) and HAProxy (one combined file) read.
- ``render(text, pairs)``: the shipped file with ports and paths replaced; every replaced text
  must occur exactly once, so a change to the documented file cannot slip past the tests.
- ``node_factory``: ``trunkline serve --config docs/deploy/trunkline.toml`` in a subprocess, with
  ports, secrets and the page origin from the environment (as trunkline.env would set them).
- ``nginx_factory`` / ``haproxy_factory``: ``nginx -p <dir> -c <conf> -g 'daemon off;'`` and
  ``haproxy -f <cfg> -db``, non-daemon processes on free 127.0.0.1 ports with their own
  config, pid and log files, stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from tests.conftest import API_KEY, ROOT, SECRET, Process, free_port

DEPLOY = ROOT / "docs" / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
ADMIN_PASSWORD = "test-admin-password"
ADMIN_SECRET = "test-admin-secret-different-from-the-client-one"
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Tls:
    ca_file: Path  # the CA certificate clients trust
    cert_file: Path  # the server certificate chain
    key_file: Path
    combined_file: Path  # chain + key in one file (HAProxy's crt)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    paths = Tls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    ca.cert_pem.write_to_path(str(paths.ca_file))
    cert.private_key_pem.write_to_path(str(paths.key_file))
    with paths.cert_file.open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    paths.combined_file.write_bytes(paths.cert_file.read_bytes() + paths.key_file.read_bytes())
    return paths


def render(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``text`` with each ``old`` replaced by ``new``; each ``old`` must occur exactly once."""
    for old, new in pairs:
        count = text.count(old)
        assert count == 1, f"{old!r} occurs {count} times in the shipped file; update the test's rendering"
        text = text.replace(old, new)
    return text


def wait_for_port(
    port: int, alive: Callable[[], bool], describe: Callable[[], str], timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"exited early:\n{describe()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s:\n{describe()}")


@dataclass
class Daemon:
    """A proxy process in the foreground, its log in ``log_path``."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, ports: Sequence[int]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for port in ports:
            wait_for_port(port, lambda: self.proc is not None and self.proc.poll() is None, self.output)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM to the process (its own PID), then SIGKILL to its group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


@dataclass
class Node:
    """One Trunkline process running docs/deploy/trunkline.toml."""

    process: Process
    internal_port: int

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}/api"

    def output(self) -> str:
        return self.process.output()


def node_env(internal_port: int, origin: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What trunkline.env holds in a deployment (secrets, the page origin) plus the test's ports."""
    return {
        "TRUNKLINE_HTTP_SERVER_INTERNAL_PORT": str(internal_port),
        "TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": SECRET,
        "TRUNKLINE_HTTP_API_KEY": API_KEY,
        "TRUNKLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TRUNKLINE_ADMIN_SECRET": ADMIN_SECRET,
        "TRUNKLINE_CLIENT_ALLOWED_ORIGINS": json.dumps([origin]),
        "TRUNKLINE_SHUTDOWN_READY_DELAY": "0s",
        "TRUNKLINE_LOG_LEVEL": "info",
        **(extra or {}),
    }


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``node_factory(origin, config=..., env=...)``: a started Trunkline process."""
    nodes: list[Node] = []

    def start(origin: str, *, config: Path = DEPLOY / "trunkline.toml", env: Mapping[str, str] | None = None) -> Node:
        port, internal = free_port(), free_port()
        proc = Process(
            port=port,
            config_path=config,
            log_path=tmp_path / f"trunkline-{port}.log",
            extra_env=node_env(internal, origin, env),
        )
        node = Node(proc, internal)
        nodes.append(node)
        proc.start(timeout=START_TIMEOUT)
        assert proc.proc is not None
        wait_for_port(internal, lambda: proc.proc is not None and proc.proc.poll() is None, proc.output)
        return node

    yield start
    for node in nodes:
        with contextlib.suppress(Exception):
            node.process.stop(signal.SIGTERM, timeout=10)


@dataclass
class Proxy:
    """A proxy listening on 127.0.0.1: HTTPS (TLS terminated) and plain HTTP (redirects)."""

    daemon: Daemon
    https_port: int
    http_port: int
    directory: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/connection/websocket"


# A main configuration around the shipped http{}-level file, as the distribution's nginx.conf is.
# Harness only: files under the test's directory, one worker (as root, workers run as root too so
# they may write the temp paths under pytest's private tmp directory).
NGINX_MAIN = """\
{user}worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/trunkline.conf;
}}
"""


def nginx_pairs(https_port: int, http_port: int, tls: Tls) -> list[tuple[str, str]]:
    """Ports and certificate paths of docs/deploy/nginx.conf (and compose/nginx.conf) for a test."""
    return [
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", f"listen [::1]:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", f"listen [::1]:{https_port} ssl http2;"),
        ("/etc/nginx/tls/trunkline.crt", str(tls.cert_file)),
        ("/etc/nginx/tls/trunkline.key", str(tls.key_file)),
    ]


@pytest.fixture
def nginx_factory(tmp_path: Path, tls: Tls) -> Iterator[Callable[..., Proxy]]:
    """``nginx_factory(text_of_conf, pairs)``: nginx serving the rendered http{}-level file."""
    daemons: list[Daemon] = []

    def start(conf: str, pairs: Sequence[tuple[str, str]], *, https_port: int = 0) -> Proxy:
        https_port, http_port = https_port or free_port(), free_port()
        directory = tmp_path / f"nginx-{https_port}"
        directory.mkdir()
        rendered = render(conf, [*nginx_pairs(https_port, http_port, tls), *pairs])
        (directory / "trunkline.conf").write_text(rendered)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(NGINX_MAIN.format(dir=directory, user=user))
        argv = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"]
        check = subprocess.run([*argv[:5], "-t"], check=False, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        daemon = Daemon("nginx", argv, directory / "nginx.out")
        daemons.append(daemon)
        daemon.start([https_port, http_port])
        pid_file = directory / "nginx.pid"
        assert pid_file.exists() and int(pid_file.read_text()) == daemon.pid
        return Proxy(daemon, https_port, http_port, directory)

    yield start
    for daemon in daemons:
        daemon.stop()


def haproxy_pairs(https_port: int, http_port: int, tls: Tls) -> list[tuple[str, str]]:
    return [
        ("bind :80", f"bind 127.0.0.1:{http_port}"),
        (
            "bind :443 ssl crt /etc/haproxy/tls/trunkline.pem",
            f"bind 127.0.0.1:{https_port} ssl crt {tls.combined_file}",
        ),
    ]


@pytest.fixture
def haproxy_factory(tmp_path: Path, tls: Tls) -> Iterator[Callable[..., Proxy]]:
    """``haproxy_factory(text_of_cfg, pairs)``: HAProxy in the foreground (``-db``) with the rendered file."""
    daemons: list[Daemon] = []

    def start(cfg: str, pairs: Sequence[tuple[str, str]], *, https_port: int = 0) -> Proxy:
        https_port, http_port = https_port or free_port(), free_port()
        directory = tmp_path / f"haproxy-{https_port}"
        directory.mkdir()
        rendered = render(cfg, [*haproxy_pairs(https_port, http_port, tls), *pairs])
        if os.geteuid() != 0:  # chroot and user switching need root; the rest is the same
            rendered = "\n".join(
                line for line in rendered.splitlines() if line.split()[:1] not in (["chroot"], ["user"], ["group"])
            )
        path = directory / "haproxy.cfg"
        path.write_text(rendered)
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(path)], check=False, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        daemon = Daemon("haproxy", [HAPROXY, "-f", str(path), "-db"], directory / "haproxy.out")
        daemons.append(daemon)
        daemon.start([https_port, http_port])
        return Proxy(daemon, https_port, http_port, directory)

    yield start
    for daemon in daemons:
        daemon.stop()
