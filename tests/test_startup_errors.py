"""A server that cannot start says why in one line naming the setting, and exits with code 1.

Each case runs the real ``trunkline serve`` in a subprocess and provokes the failure for real:
a port held by another socket, a TLS file that does not exist or is not a certificate, a Redis
address where nothing listens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _serve(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "trunkline.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "trunkline", "serve", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


BASE = """
[client]
insecure = true
"""


def test_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = _one_line(_serve(tmp_path, BASE, "--port", str(busy_port)))
    assert line.startswith("error: http_server.port: cannot listen on 127.0.0.1:"), line
    assert str(busy_port) in line
    assert "in use" in line


def test_internal_port_in_use(tmp_path: Path, busy_port: int) -> None:
    config = BASE + f"\n[http_server]\nport = {_free_port()}\ninternal_port = {busy_port}\n"
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith("error: http_server.internal_port: cannot listen on 127.0.0.1:"), line


def test_missing_tls_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "missing-cert.pem", tmp_path / "missing-key.pem"
    config = (
        BASE
        + f"\n[http_server]\nport = {_free_port()}\n[http_server.tls]\nenabled = true\n"
        + f'cert_pem_file = "{cert}"\nkey_pem_file = "{key}"\n'
    )
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith("error: http_server.tls.cert_pem_file: cannot read "), line
    assert str(cert) in line


def test_tls_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    config = (
        BASE
        + f"\n[http_server]\nport = {_free_port()}\n[http_server.tls]\nenabled = true\n"
        + f'cert_pem_file = "{cert}"\nkey_pem_file = "{key}"\n'
    )
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith("error: http_server.tls.cert_pem_file: cannot load the certificate "), line


def test_redis_unreachable(tmp_path: Path) -> None:
    nobody = _free_port()  # nothing listens here
    config = (
        BASE
        + f'\n[http_server]\nport = {_free_port()}\n[engine]\ntype = "redis"\n'
        + f'[engine.redis]\naddress = "redis://127.0.0.1:{nobody}"\nconnect_timeout = "1s"\n'
    )
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith(f"error: engine.redis.address: cannot reach redis://127.0.0.1:{nobody}: "), line


def test_mqtt_tcp_port_in_use(tmp_path: Path, busy_port: int) -> None:
    mqtt = f'[mqtt.tcp]\nenabled = true\naddress = "127.0.0.1:{busy_port}"\n'
    config = BASE + f"\n[http_server]\nport = {_free_port()}\n" + mqtt
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith(f"error: mqtt.tcp.address: cannot listen on 127.0.0.1:{busy_port}: "), line


def test_mqtt_tls_file_missing(tmp_path: Path) -> None:
    cert, key = tmp_path / "no-cert.pem", tmp_path / "no-key.pem"
    config = (
        BASE
        + f'\n[http_server]\nport = {_free_port()}\n[mqtt.tls]\nenabled = true\naddress = "127.0.0.1:{_free_port()}"\n'
        + f'cert_pem_file = "{cert}"\nkey_pem_file = "{key}"\n'
    )
    line = _one_line(_serve(tmp_path, config))
    assert line.startswith(f"error: mqtt.tls.cert_pem_file: cannot read {cert}"), line
