"""docs/deploy/trunkline.service: what can be checked without running systemd as init here.

- ``systemd-analyze verify`` on the unit (with ExecStart's program and the config and env file
  paths pointed at this checkout), with no warning at all;
- ``systemd-analyze security --offline`` scores its hardening (exposure at most 1.5 of 10);
- the hardening keys the deployment guide promises are present, and TimeoutStopSec leaves room
  for the graceful shutdown trunkline.toml configures;
- ExecStart's command line, executed with the unit's environment file, serves /ready and exits
  0 on the unit's KillSignal within TimeoutStopSec.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy.conftest import DEPLOY, node_env, wait_for_port
from trunkline.config import load_settings
from trunkline.durations import parse_duration

UNIT = DEPLOY / "trunkline.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
VENV_TRUNKLINE = Path(sys.executable).parent / "trunkline"
MAX_EXPOSURE = 15  # systemd-analyze's threshold unit is a tenth: 1.5 of 10


def directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (every value of a repeated key, in order)."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(found: dict[str, list[str]], key: str) -> str:
    values = found.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def rendered_unit(tmp_path: Path) -> tuple[Path, Path]:
    """The unit with ExecStart's program, the config and the environment file in this checkout."""
    env_file = tmp_path / "trunkline.env"
    env = node_env(free_port(), "https://127.0.0.1")
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items() if k.endswith(("KEY", "PASSWORD", "SECRET"))))
    text = UNIT.read_text()
    for old, new in (
        ("/opt/trunkline/bin/trunkline", str(VENV_TRUNKLINE)),
        ("/etc/trunkline/trunkline.toml", str(DEPLOY / "trunkline.toml")),
        ("/etc/trunkline/trunkline.env", str(env_file)),
    ):
        assert old in text, old
        text = text.replace(old, new)
    unit = tmp_path / "trunkline.service"
    unit.write_text(text)
    return unit, env_file


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="no systemd-analyze here; test_hardening_keys still checks the unit"
)
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit, _ = rendered_unit(tmp_path)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr.strip() == "" and result.stdout.strip() == "", result


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="no systemd-analyze here; test_hardening_keys still checks the unit"
)
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit, _ = rendered_unit(tmp_path)
    argv = [SYSTEMD_ANALYZE, "security", "--offline=true", f"--threshold={MAX_EXPOSURE}", str(unit)]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "Overall exposure level" in result.stdout


def test_hardening_keys() -> None:
    found = directives(UNIT.read_text())
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "KillSignal": "SIGTERM",
        "CapabilityBoundingSet": "",
        "Type": "exec",
    }
    for key, value in expected.items():
        assert one(found, key) == value, key
    assert one(found, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert int(one(found, "LimitNOFILE")) >= 65536
    assert "@system-service" in found["SystemCallFilter"]
    assert "ExecReload" not in found  # Trunkline has no reload: a restart is a graceful shutdown
    # TimeoutStopSec must cover the drain trunkline.toml configures (ready_delay, then timeout).
    settings = load_settings(DEPLOY / "trunkline.toml", env=node_env(free_port(), "https://127.0.0.1"))
    drain = settings.shutdown.ready_delay + settings.shutdown.timeout
    assert parse_duration(one(found, "TimeoutStopSec") + "s", "TimeoutStopSec") > drain + 5


def test_exec_start_serves_and_stops_on_the_kill_signal(tmp_path: Path) -> None:
    unit, _ = rendered_unit(tmp_path)
    found = directives(unit.read_text())
    argv = shlex.split(one(found, "ExecStart"))
    assert argv[:2] == [str(VENV_TRUNKLINE), "serve"] and "--config" in argv
    assert VENV_TRUNKLINE.exists()
    # What systemd would pass: the environment file; plus this test's free ports.
    env = dict(os.environ)
    for line in Path(one(found, "EnvironmentFile")).read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    port, internal = free_port(), free_port()
    env.update({"TRUNKLINE_HTTP_SERVER_PORT": str(port), "TRUNKLINE_HTTP_SERVER_INTERNAL_PORT": str(internal)})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_for_port(internal, lambda: proc.poll() is None, log.read_text)
        wait_for_port(port, lambda: proc.poll() is None, log.read_text)
        with urllib.request.urlopen(f"http://127.0.0.1:{internal}/ready", timeout=5) as r:
            assert r.status == 200
        stop_timeout = parse_duration(one(found, "TimeoutStopSec") + "s", "TimeoutStopSec")
        started = time.monotonic()
        proc.send_signal(getattr(signal, one(found, "KillSignal")))
        assert proc.wait(stop_timeout) == 0, log.read_text()
        # ready_delay (5 s in trunkline.toml) is spent before the listeners close.
        assert time.monotonic() - started < stop_timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
