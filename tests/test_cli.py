"""The trunkline command: serve, gentoken, checkconfig, version; errors are one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

import trunkline
from trunkline.cli import main
from trunkline.config import Settings

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings of the machine running the tests must not leak in."""
    for name in list(os.environ):
        if name.startswith("TRUNKLINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """Replace trunkline.app with a stub whose run() records the settings."""
    calls: list[Settings] = []
    app = types.ModuleType("trunkline.app")
    app.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trunkline.app", app)
    yield calls


def config_file(tmp_path: Path, text: str, name: str = "trunkline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- version --------------------------------------------------------------------------------------


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version"])
    assert (result.exit_code, result.output) == (0, f"trunkline {trunkline.__version__}\n")
    assert runner.invoke(main, ["--version"]).output == f"trunkline {trunkline.__version__}\n"


# --- serve ----------------------------------------------------------------------------------------------


def test_serve_passes_settings_to_app(runner: CliRunner, served: list[Settings], tmp_path: Path) -> None:
    path = config_file(tmp_path, "[http_server]\nport = 9000\n[log]\nlevel = 'debug'\n")
    result = runner.invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.http_server.port == 9000 and settings.log.level == "debug"


def test_serve_without_config_uses_defaults(runner: CliRunner, served: list[Settings]) -> None:
    assert runner.invoke(main, ["serve"]).exit_code == 0
    assert served == [Settings()]


def test_precedence_file_env_flags(runner: CliRunner, served: list[Settings], tmp_path: Path) -> None:
    path = config_file(tmp_path, "[http_server]\naddress = '10.0.0.1'\nport = 9000\n[node]\nname = 'file'\n")
    env = {
        "TRUNKLINE_HTTP_SERVER_PORT": "9100",
        "TRUNKLINE_HTTP_SERVER_ADDRESS": "10.0.0.2",
        "TRUNKLINE_CONFIG": str(path),
    }
    result = runner.invoke(main, ["serve", "--port", "9200"], env=env)
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert (settings.http_server.address, settings.http_server.port, settings.node.name) == ("10.0.0.2", 9200, "file")
    served.clear()
    assert runner.invoke(main, ["serve", "--host", "0.0.0.0"], env=env).exit_code == 0
    assert (served[0].http_server.address, served[0].http_server.port) == ("0.0.0.0", 9100)


def test_serve_bad_flag_value_is_a_config_error(runner: CliRunner, served: list[Settings]) -> None:
    result = runner.invoke(main, ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert result.stderr == "error: http_server.port: must be between 1 and 65535, got 70000 in overrides\n"
    assert served == []


def test_serve_config_error_from_env(runner: CliRunner, served: list[Settings]) -> None:
    result = runner.invoke(main, ["serve"], env={"TRUNKLINE_LOG_LEVEL": "loud"})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: log.level: must be one of")
    assert result.stderr.endswith("in environment variable TRUNKLINE_LOG_LEVEL\n")
    assert result.stderr.count("\n") == 1


def test_config_error_raised_by_the_app_is_one_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from trunkline.errors import ConfigError

    def run(settings: Settings) -> None:
        raise ConfigError("http_server.tls.cert_pem_file", "cannot read /x.pem", "trunkline.toml")

    app = types.ModuleType("trunkline.app")
    app.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trunkline.app", app)
    result = runner.invoke(main, ["serve"])
    assert result.exit_code == 2
    assert result.stderr == "error: http_server.tls.cert_pem_file: cannot read /x.pem in trunkline.toml\n"


# --- checkconfig ------------------------------------------------------------------------------------------


def test_checkconfig_prints_masked_settings(runner: CliRunner, tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        f"[client.token]\nhmac_secret_key = '{SECRET}'\n[[channel.namespaces]]\nname = 'chat'\npresence = true\n",
    )
    result = runner.invoke(main, ["checkconfig", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["client"]["token"]["hmac_secret_key"] == "***"
    assert data["channel"]["namespaces"][0] == {
        **data["channel"]["without_namespace"],
        "name": "chat",
        "presence": True,
    }
    assert SECRET not in result.output


def test_checkconfig_json_file(runner: CliRunner, tmp_path: Path) -> None:
    path = config_file(tmp_path, json.dumps({"http_server": {"port": 1234}}), "c.json")
    result = runner.invoke(main, ["checkconfig", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["http_server"]["port"] == 1234


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[http_server]\nport = 0\n", "error: http_server.port: must be between 1 and 65535, got 0 in {path}"),
        (
            "[http_server]\nprot = 80\n",
            "error: http_server.prot: unknown key; did you mean 'http_server.port'? in {path}",
        ),
        (
            "[[channel.namespaces]]\nname = 'ok'\n[[channel.namespaces]]\nname = 'x2'\nhistory_size = 5\n",
            "error: channel.namespaces[1].history_size: history_size > 0 requires history_ttl > 0 in {path}",
        ),
        (
            "[http_server\n",
            "error: {path}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 13)",
        ),
    ],
)
def test_checkconfig_invalid(runner: CliRunner, tmp_path: Path, text: str, line: str) -> None:
    path = config_file(tmp_path, text)
    result = runner.invoke(main, ["checkconfig", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == line.format(path=path) + "\n"


def test_checkconfig_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["checkconfig", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nope.toml'}: cannot read config file")


# --- gentoken ---------------------------------------------------------------------------------------------


def decode(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, SECRET, algorithms=["HS256"])
    return claims


def test_gentoken(runner: CliRunner, tmp_path: Path) -> None:
    path = config_file(tmp_path, f"[client.token]\nhmac_secret_key = '{SECRET}'\n")
    before = int(time.time())
    result = runner.invoke(main, ["gentoken", "--user", "42", "--info", '{"name": "Ann"}', "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    claims = decode(result.stdout.strip())
    assert claims["sub"] == "42" and claims["info"] == {"name": "Ann"}
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert before <= claims["iat"] and claims["exp"] - claims["iat"] == 3600


def test_gentoken_ttl_and_env_secret(runner: CliRunner) -> None:
    env = {"TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": SECRET}
    result = runner.invoke(main, ["gentoken", "--user", "7", "--ttl", "60"], env=env)
    claims = decode(result.stdout.strip())
    assert claims["exp"] == claims["iat"] + 60  # type: ignore[operator]
    assert "info" not in claims
    forever = decode(runner.invoke(main, ["gentoken", "--user", "7", "--ttl", "0"], env=env).stdout.strip())
    assert "exp" not in forever and forever["sub"] == "7"


def test_gentoken_without_secret(runner: CliRunner) -> None:
    result = runner.invoke(main, ["gentoken", "--user", "42"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: client.token.hmac_secret_key: is empty;")
    assert result.stdout == ""


def test_gentoken_invalid_info(runner: CliRunner) -> None:
    env = {"TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": SECRET}
    result = runner.invoke(main, ["gentoken", "--user", "42", "--info", "{name: Ann}"], env=env)
    assert result.exit_code == 2
    assert "Invalid value for '--info': not valid JSON" in result.stderr
    assert result.stdout == ""


def test_gentoken_negative_ttl_and_missing_user(runner: CliRunner) -> None:
    assert runner.invoke(main, ["gentoken", "--user", "1", "--ttl", "-1"]).exit_code == 2
    assert runner.invoke(main, ["gentoken"]).exit_code == 2


def test_gentoken_short_secret_warns_on_stderr(runner: CliRunner) -> None:
    result = runner.invoke(main, ["gentoken", "--user", "1"], env={"TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": "short"})
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: The HMAC key is 5 bytes long")
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        assert jwt.decode(result.stdout.strip(), "short", algorithms=["HS256"])["sub"] == "1"


# --- real processes ----------------------------------------------------------------------------------------


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "trunkline", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_python_m_trunkline_version() -> None:
    proc = run_module("version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"trunkline {trunkline.__version__}\n", "")


def test_python_m_trunkline_checkconfig_bad_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[client]\nping_interval = 'often'\n")
    proc = run_module("checkconfig", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: client.ping_interval: expected a duration")
    assert proc.stderr.endswith(f" in {path}\n") and proc.stderr.count("\n") == 1
