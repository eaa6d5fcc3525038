"""Coming from Centrifugo: its spellings are accepted, its options Trunkline lacks are named as such,
and a config with several errors reports all of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from trunkline.compat import UNSUPPORTED, unsupported
from trunkline.config import load_settings, setting_keys
from trunkline.errors import ConfigError, ConfigErrors


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(str(path), env={})


def test_log_level_warn_is_warning(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[log]\nlevel = "warn"\n')
    assert settings.log.level == "warning"  # type: ignore[attr-defined]
    env = load_settings(None, env={"TRUNKLINE_LOG_LEVEL": "warn"})
    assert env.log.level == "warning"


@pytest.mark.parametrize(
    ("text", "key", "feature"),
    [
        ("[grpc_api]\nenabled = true\n", "grpc_api", "gRPC"),
        ("[http_server.tls_autocert]\nenabled = true\n", "http_server.tls_autocert", "ACME"),
        ("[http_server.http3]\nenabled = true\n", "http_server.http3", "HTTP/3"),
        ("[[consumers]]\nname = 'k'\n", "consumers", "Kafka"),
        ('pid_file = "/run/c.pid"\n', "pid_file", "PID"),
    ],
)
def test_centrifugo_option_trunkline_lacks_is_named(tmp_path: Path, text: str, key: str, feature: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
    assert info.value.message.startswith("not supported by Trunkline (") and feature in info.value.message
    assert "did you mean" not in info.value.message


def test_a_typo_still_gets_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[client]\nping_intervall = "5s"\n')
    assert "did you mean 'client.ping_interval'" in info.value.message


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = '[grpc_api]\nenabled = true\n[client]\nping_intervall = "5s"\nchannel_limit = "many"\n[log]\nlevel = 3\n'
    with pytest.raises(ConfigErrors) as info:
        _load(tmp_path, text)
    keys = [e.key for e in info.value.errors]
    assert keys == ["grpc_api", "client.ping_intervall", "client.channel_limit", "log.level"]
    assert all(e.source.endswith("c.toml") for e in info.value.errors)


def test_cli_prints_every_error_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[client]\nping_intervall = "5s"\nchannel_limit = "many"\n')
    result = subprocess.run(
        [sys.executable, "-m", "trunkline", "checkconfig", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: client.") for line in lines), result.stderr


def test_no_unsupported_key_is_a_trunkline_setting() -> None:
    ours = set(setting_keys())
    for key in UNSUPPORTED:
        assert not any(k == key or k.startswith(key + ".") for k in ours), f"{key} is supported now"
        assert unsupported(key + ".anything") == UNSUPPORTED[key]


MIGRATING = ROOT / "docs" / "migrating-from-centrifugo.md"


def _matrix() -> list[tuple[str, str]]:
    """(option, status) of every row of the configuration table."""
    text = MIGRATING.read_text()
    table = text.split("## Configuration, section by section", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows.append((cells[0].strip("`"), cells[1]))
    return rows


def test_migration_matrix_matches_the_schema() -> None:
    rows = _matrix()
    assert len(rows) > 50
    ours = set(setting_keys())
    for option, status in rows:
        present = any(k == option or k.startswith(option + ".") for k in ours)
        if status == "supported":
            assert present, f"{option} is marked supported but is not a setting"
        elif status == "not supported":
            assert not present, f"{option} is marked not supported but is a setting"
            assert unsupported(option) is not None, f"{option}: the loader would call it an unknown key"
        else:
            raise AssertionError(f"{option}: unknown status {status!r}")


def test_every_unsupported_option_is_in_the_matrix() -> None:
    listed = {option for option, status in _matrix() if status == "not supported"}
    assert set(UNSUPPORTED) <= listed, sorted(set(UNSUPPORTED) - listed)
