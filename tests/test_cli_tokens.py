"""``trunkline genconfig``, ``gensubtoken`` and ``checktoken``: Centrifugo's daily CLI tools."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from trunkline.cli import main
from trunkline.config import load_settings

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
SUB_SECRET = "another-secret-for-subscriptions-32-bytes!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRUNKLINE_"):
            monkeypatch.delenv(name)


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "trunkline.toml"
    path.write_text(f'[client.token]\nhmac_secret_key = "{SECRET}"\n{extra}')
    return path


def test_genconfig_prints_a_config_that_loads_with_fresh_secrets(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["genconfig"])
    second = runner.invoke(main, ["genconfig"])
    assert first.exit_code == 0 and second.exit_code == 0
    path = tmp_path / "gen.toml"
    path.write_text(first.output)
    settings = load_settings(str(path))
    other = tmp_path / "gen2.toml"
    other.write_text(second.output)
    assert len(settings.client.token.hmac_secret_key) >= 32
    assert settings.client.token.hmac_secret_key != load_settings(str(other)).client.token.hmac_secret_key
    assert settings.namespace("chat") is not None


def test_genconfig_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "new.toml"
    assert runner.invoke(main, ["genconfig", str(path)]).exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_text()
    refused = runner.invoke(main, ["genconfig", str(path)])
    assert refused.exit_code == 1 and "exists" in refused.output
    assert path.read_text() == before
    assert runner.invoke(main, ["genconfig", str(path), "--force"]).exit_code == 0
    assert path.read_text() != before


def test_gensubtoken_signs_with_the_key_the_server_uses(tmp_path: Path) -> None:
    runner = CliRunner()
    plain = _config(tmp_path)
    result = runner.invoke(main, ["gensubtoken", "--user", "42", "--channel", "$private:x", "--config", str(plain)])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channel"]) == ("42", "$private:x")
    assert 3590 <= claims["exp"] - time.time() <= 3610

    separate = _config(tmp_path, f'[client.subscription_token]\nenabled = true\nhmac_secret_key = "{SUB_SECRET}"\n')
    args = ["gensubtoken", "--user", "", "--channel", "c", "--ttl", "0", "--config", str(separate)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SUB_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "" and "exp" not in claims


def test_checktoken_prints_claims_of_a_valid_token(tmp_path: Path) -> None:
    path = _config(tmp_path)
    token = jwt.encode({"sub": "7", "info": {"name": "Ann"}, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    result = CliRunner().invoke(main, ["checktoken", token, "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert '"sub": "7"' in result.output and '"name": "Ann"' in result.output


@pytest.mark.parametrize(
    ("claims", "key", "reason"),
    [
        ({"sub": "7"}, "the-wrong-secret-of-at-least-32-bytes!", "bad signature"),
        ({"sub": "7", "exp": int(time.time()) - 10}, SECRET, "expired"),
        ({"sub": 7}, SECRET, "sub"),
    ],
)
def test_checktoken_refuses_with_one_line_and_exit_1(
    tmp_path: Path, claims: dict[str, object], key: str, reason: str
) -> None:
    path = _config(tmp_path)
    token = jwt.encode(claims, key, algorithm="HS256")
    result = CliRunner().invoke(main, ["checktoken", token, "--config", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: token: ") and reason in lines[0], result.output


def test_checktoken_garbage(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["checktoken", "not.a.token", "--config", str(_config(tmp_path))])
    assert result.exit_code == 1 and "malformed" in result.output
