"""Settings: file formats, layers, validation messages, durations, masking."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.config import (
    Channel,
    Namespace,
    NamespaceOptions,
    Settings,
    SubscriptionTokenSettings,
    TokenSettings,
    env_var_for,
    load_settings,
    parse_bool,
    setting_keys,
    settings_from_mapping,
)
from trunkline.durations import parse_duration
from trunkline.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

FULL_TOML = """
[http_server]
address = "0.0.0.0"
port = 9000

[http_server.tls]
enabled = true
cert_pem_file = "/etc/trunkline/cert.pem"
key_pem_file = "/etc/trunkline/key.pem"

[client]
allowed_origins = ["https://example.com"]
ping_interval = "20s"
pong_timeout = "5s"
channel_limit = 64

[client.token]
hmac_secret_key = "a-secret-that-is-long-enough-for-hs256!!"

[client.subscribe_to_user_personal_channel]
enabled = true
personal_channel_namespace = "personal"
single_connection = true

[channel]
history_meta_ttl = "1h"

[channel.without_namespace]
presence = true

[[channel.namespaces]]
name = "chat"
history_size = 100
history_ttl = "300s"
allow_recovery = true
channel_regex = "^[a-z0-9]+$"
allowed_delta_types = ["fossil"]

[[channel.namespaces]]
name = "personal"
presence = true

[engine]
type = "redis"

[engine.redis]
address = "redis://:hunter2@redis.internal:6379/0"

[admin]
enabled = true
password = "admin-password"
secret = "admin-secret"

[log]
level = "debug"
format = "json"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, source="test.toml")
    return info.value


# --- defaults and the schema ---------------------------------------------------------------


def test_defaults_are_valid_and_match_the_contract() -> None:
    s = Settings()
    assert settings_from_mapping({}) == s
    assert load_settings(env={}) == s
    assert (s.http_server.address, s.http_server.port, s.http_server.internal_port) == ("127.0.0.1", 8000, 0)
    assert s.tls is s.http_server.tls and s.tls.enabled is False
    assert (s.client.ping_interval, s.client.pong_timeout) == (25.0, 8.0)
    assert s.client.channel_limit == 128 and s.client.queue_max_size == 1048576
    assert s.client.allowed_origins == ()
    assert s.websocket.message_size_limit == 65536
    assert s.http_api.handler_prefix == "/api"
    assert s.channel.history_meta_ttl == 2592000.0
    assert s.channel.namespaces == ()
    assert s.engine.type == "memory" and s.engine.redis.address == "redis://127.0.0.1:6379"
    assert s.prometheus.enabled and s.health.enabled
    assert (s.log.level, s.log.format) == ("info", "text")
    assert s.shutdown.timeout == 10.0 and s.node.name == ""
    assert isinstance(s.client.subscription_token, TokenSettings)


def test_settings_are_frozen_and_hashable() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.http_server.port = 1  # type: ignore[misc]
    assert hash(s) == hash(Settings())
    assert not hasattr(s, "__dict__")  # slotted


def test_namespace_lookup() -> None:
    chat = Namespace(name="chat", presence=True)
    s = Settings(channel=Channel(namespaces=(chat,), without_namespace=NamespaceOptions(join_leave=True)))
    assert s.namespace("chat") is chat
    assert s.namespace("") is s.channel.without_namespace
    assert s.namespace("missing") is None
    replaced = dataclasses.replace(s.channel, namespaces=(Namespace(name="news"),))
    assert replaced.namespace("news") is not None and replaced.namespace("chat") is None


def test_history_enabled_needs_size_and_ttl() -> None:
    assert not NamespaceOptions(history_size=10).history_enabled
    assert not NamespaceOptions(history_ttl=60).history_enabled
    assert NamespaceOptions(history_size=10, history_ttl=60).history_enabled


def test_every_key_has_an_environment_variable_and_is_documented() -> None:
    docs = DOCS.read_text()
    keys = setting_keys()
    assert "channel.namespaces" in keys and "client.token.hmac_secret_key" in keys
    assert len({env_var_for(k) for k in keys}) == len(keys)
    missing = [k for k in keys if f"`{k}`" not in docs or env_var_for(k) not in docs]
    assert missing == []
    for option in (f.name for f in dataclasses.fields(Namespace)):
        assert f"`{option}`" in docs


# --- files ---------------------------------------------------------------------------------


def test_load_full_toml(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "trunkline.toml", FULL_TOML), env={})
    assert (s.http_server.address, s.http_server.port) == ("0.0.0.0", 9000)
    assert s.tls.enabled and s.tls.cert_pem_file == "/etc/trunkline/cert.pem"
    assert s.client.allowed_origins == ("https://example.com",)
    assert (s.client.ping_interval, s.client.pong_timeout, s.client.channel_limit) == (20.0, 5.0, 64)
    assert s.channel.history_meta_ttl == 3600.0
    assert s.channel.without_namespace.presence
    chat = s.namespace("chat")
    assert isinstance(chat, Namespace)
    assert (chat.history_size, chat.history_ttl, chat.history_enabled) == (100, 300.0, True)
    assert chat.allowed_delta_types == ("fossil",)
    assert s.engine.type == "redis"
    assert (s.log.level, s.log.format) == ("debug", "json")


def test_json_file_equals_toml_file(tmp_path: Path) -> None:
    toml_settings = load_settings(write(tmp_path, "a.toml", FULL_TOML), env={})
    as_json = json.dumps(dataclass_to_data(toml_settings))
    assert load_settings(write(tmp_path, "a.json", as_json), env={}) == toml_settings


def dataclass_to_data(s: Settings) -> dict[str, Any]:
    data = s.masked_dict()
    data["client"]["token"]["hmac_secret_key"] = s.client.token.hmac_secret_key
    data["admin"]["password"] = s.admin.password
    data["admin"]["secret"] = s.admin.secret
    data["engine"]["redis"]["address"] = s.engine.redis.address
    return data


def test_masked_dict_without_secrets_round_trips() -> None:
    s = settings_from_mapping({"channel": {"namespaces": [{"name": "chat", "history_size": 5, "history_ttl": "1m"}]}})
    assert settings_from_mapping(json.loads(json.dumps(s.masked_dict()))) == s
    assert next(iter(s.masked_dict()["channel"]["namespaces"][0])) == "name"


def test_top_level_tls_is_http_server_tls(tmp_path: Path) -> None:
    text = '[tls]\nenabled = true\ncert_pem_file = "c.pem"\nkey_pem_file = "k.pem"\n'
    s = load_settings(write(tmp_path, "t.toml", text), env={})
    assert s.http_server.tls.enabled and s.http_server.tls.key_pem_file == "k.pem"
    assert "tls" not in s.masked_dict()


def test_tls_given_twice_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", "[tls]\nenabled = false\n[http_server.tls]\nenabled = false\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert (info.value.key, info.value.source) == ("tls", str(path))


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("c.yaml", "port: 1", "unsupported config file type '.yaml'"),
        ("c", "", "unsupported config file type '(none)'"),
        ("c.toml", "[http_server\n", "invalid TOML"),
        ("c.json", "{", "invalid JSON"),
        ("c.json", "[1, 2]", "top level must be a JSON object"),
        ("c.json", '{"log": {"level": "info", "level": "debug"}}', "duplicate key 'level'"),
        ("c.toml", b"\xff\xfe".decode("latin-1"), "not UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.key == str(path)
    assert fragment in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"


# --- unknown keys and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"http": {}}, "http"),
        ({"http_server": {"prot": 80}}, "http_server.prot"),
        ({"client": {"token": {"secret": "x"}}}, "client.token.secret"),
        ({"channel": {"without_namespace": {"name": "x"}}}, "channel.without_namespace.name"),
        (
            {"channel": {"namespaces": [{"name": "ok"}, {"name": "chat", "histroy_size": 1}]}},
            "channel.namespaces[1].histroy_size",
        ),
    ],
)
def test_unknown_keys_are_rejected(data: dict[str, Any], key: str) -> None:
    err = error_of(data)
    assert (err.key, err.source) == (key, "test.toml")
    assert err.message.startswith("unknown key")


def test_unknown_key_suggests_the_closest() -> None:
    assert "did you mean 'http_server.port'?" in error_of({"http_server": {"prot": 80}}).message


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"http_server": {"port": "80"}}, "http_server.port", "expected an integer, got string '80'"),
        ({"http_server": {"port": True}}, "http_server.port", "expected an integer, got boolean true"),
        ({"http_server": {"port": 80.0}}, "http_server.port", "expected an integer, got number 80.0"),
        ({"http_server": 5}, "http_server", "expected a table"),
        ({"client": {"insecure": "yes"}}, "client.insecure", "expected a boolean"),
        ({"client": {"allowed_origins": "https://a"}}, "client.allowed_origins", "expected an array"),
        ({"client": {"allowed_origins": ["https://a", 3]}}, "client.allowed_origins[1]", "expected a string"),
        ({"client": {"ping_interval": True}}, "client.ping_interval", "expected a duration"),
        ({"client": {"ping_interval": "soon"}}, "client.ping_interval", "expected a duration"),
        ({"log": {"level": None}}, "log.level", "got null"),
        ({"channel": {"namespaces": [{"presence": True}]}}, "channel.namespaces[0].name", "is required"),
        ({"channel": {"namespaces": {"name": "chat"}}}, "channel.namespaces", "expected an array"),
        ({"channel": {"namespaces": ["chat"]}}, "channel.namespaces[0]", "expected a table"),
    ],
)
def test_wrong_types_name_the_key(data: dict[str, Any], key: str, fragment: str) -> None:
    err = error_of(data)
    assert (err.key, err.source) == (key, "test.toml")
    assert fragment in err.message


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"http_server": {"port": 0}}, "http_server.port", "between 1 and 65535"),
        ({"http_server": {"port": 65536}}, "http_server.port", "between 1 and 65535"),
        ({"http_server": {"internal_port": 70000}}, "http_server.internal_port", "between 0 and 65535"),
        ({"websocket": {"message_size_limit": -1}}, "websocket.message_size_limit", "must not be negative"),
        ({"client": {"channel_limit": -5}}, "client.channel_limit", "must not be negative"),
        ({"client": {"stale_close_delay": "-1s"}}, "client.stale_close_delay", "must not be negative"),
        ({"client": {"pong_timeout": "30s"}}, "client.pong_timeout", "less than client.ping_interval"),
        ({"client": {"allowed_origins": [" "]}}, "client.allowed_origins[0]", "must not be empty"),
        (
            {"client": {"token": {"jwks_public_endpoint": "ftp://x"}}},
            "client.token.jwks_public_endpoint",
            "http:// or https://",
        ),
        ({"http_server": {"tls": {"enabled": True}}}, "http_server.tls.enabled", "cert_pem_file and"),
        (
            {"http_server": {"tls": {"enabled": True, "cert_pem_file": "c"}}},
            "http_server.tls.enabled",
            "needs http_server.tls.key_pem_file",
        ),
        ({"engine": {"type": "kafka"}}, "engine.type", "must be one of 'memory', 'redis', 'nats'"),
        ({"engine": {"redis": {"address": "127.0.0.1:6379"}}}, "engine.redis.address", "redis://"),
        ({"log": {"level": "verbose"}}, "log.level", "'debug', 'info', 'warning', 'error'"),
        ({"log": {"format": "xml"}}, "log.format", "'text', 'json'"),
        ({"http_api": {"error_mode": "loud"}}, "http_api.error_mode", "'transport'"),
        ({"http_api": {"handler_prefix": "api"}}, "http_api.handler_prefix", "start with '/'"),
        ({"channel": {"namespace_boundary": ""}}, "channel.namespace_boundary", "must not be empty"),
        ({"admin": {"enabled": True}}, "admin.enabled", "admin.password and admin.secret"),
        (
            {"channel": {"without_namespace": {"history_size": 10}}},
            "channel.without_namespace.history_size",
            "history_size > 0 requires history_ttl > 0",
        ),
        (
            {"channel": {"namespaces": [{"name": "ok"}, {"name": "chat", "history_size": 10}]}},
            "channel.namespaces[1].history_size",
            "requires history_ttl > 0",
        ),
        (
            {"channel": {"namespaces": [{"name": "chat", "history_ttl": "5m"}]}},
            "channel.namespaces[0].history_ttl",
            "history_ttl > 0 requires history_size > 0",
        ),
        (
            {"channel": {"namespaces": [{"name": "chat", "force_recovery": True}]}},
            "channel.namespaces[0].force_recovery",
            "needs history",
        ),
        ({"channel": {"namespaces": [{"name": "x"}]}}, "channel.namespaces[0].name", "must match"),
        ({"channel": {"namespaces": [{"name": "a:b"}]}}, "channel.namespaces[0].name", "must match"),
        (
            {"channel": {"namespaces": [{"name": "chat"}, {"name": "news"}, {"name": "chat"}]}},
            "channel.namespaces[2].name",
            "duplicate namespace 'chat' (also channel.namespaces[0])",
        ),
        (
            {"channel": {"namespaces": [{"name": "chat", "channel_regex": "[a-"}]}},
            "channel.namespaces[0].channel_regex",
            "does not compile",
        ),
        (
            {"channel": {"without_namespace": {"publication_data_format": "xml"}}},
            "channel.without_namespace.publication_data_format",
            "'json_object'",
        ),
        (
            {"channel": {"without_namespace": {"allowed_delta_types": ["fossil", "xdelta"]}}},
            "channel.without_namespace.allowed_delta_types[1]",
            "unknown delta type 'xdelta'",
        ),
        (
            {"client": {"subscribe_to_user_personal_channel": {"personal_channel_namespace": "me"}}},
            "client.subscribe_to_user_personal_channel.personal_channel_namespace",
            "no namespace named 'me'",
        ),
        (
            {"client": {"subscribe_to_user_personal_channel": {"enabled": True, "single_connection": True}}},
            "client.subscribe_to_user_personal_channel.single_connection",
            "needs presence",
        ),
    ],
)
def test_invalid_values_name_key_and_file(data: dict[str, Any], key: str, fragment: str) -> None:
    err = error_of(data)
    assert (err.key, err.source) == (key, "test.toml")
    assert fragment in err.message
    assert str(err).startswith(f"{key}: ") and str(err).endswith(" in test.toml")


def test_validation_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", '[[channel.namespaces]]\nname = "a"\n[[channel.namespaces]]\nname = "b c"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value) == f"channel.namespaces[0].name: 'a' must match ^[-a-zA-Z0-9_]{{2,}}$ in {path}"


def test_valid_edge_values() -> None:
    s = settings_from_mapping(
        {
            "http_server": {"port": 65535, "internal_port": 9001},
            "admin": {"enabled": True, "insecure": True},
            "client": {"ping_interval": 0},
            "engine": {"redis": {"address": "unix:///run/redis.sock"}},
            "channel": {"namespaces": [{"name": "my-ns_2", "channel_regex": r"^\d+$"}]},
        }
    )
    assert s.http_server.port == 65535 and s.namespace("my-ns_2") is not None


# --- environment and precedence ------------------------------------------------------------------


def test_env_overrides_file_and_overrides_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[http_server]\nport = 9000\naddress = '10.0.0.1'\n[log]\nlevel = 'error'\n")
    env = {"TRUNKLINE_HTTP_SERVER_PORT": "9100", "TRUNKLINE_LOG_LEVEL": "warning"}
    s = load_settings(path, env=env, overrides={"http_server.port": 9200})
    assert (s.http_server.address, s.http_server.port, s.log.level) == ("10.0.0.1", 9200, "warning")
    assert load_settings(path, env=env).http_server.port == 9100
    assert load_settings(path, env={}).http_server.port == 9000


def test_env_value_types() -> None:
    env = {
        "TRUNKLINE_CLIENT_TOKEN_HMAC_SECRET_KEY": "s3cret",
        "TRUNKLINE_CLIENT_INSECURE": "Yes",
        "TRUNKLINE_PROMETHEUS_ENABLED": "0",
        "TRUNKLINE_CLIENT_PING_INTERVAL": "1m30s",
        "TRUNKLINE_CLIENT_PONG_TIMEOUT": "10",
        "TRUNKLINE_CLIENT_CHANNEL_LIMIT": " 7 ",
        "TRUNKLINE_CLIENT_ALLOWED_ORIGINS": '["https://a.example", "https://b.example"]',
        "TRUNKLINE_CHANNEL_NAMESPACES": '[{"name": "chat", "history_size": 10, "history_ttl": "5m"}]',
        "TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_PRESENCE": "true",
        "TRUNKLINE_TLS_ENABLED": "no",
        "TRUNKLINE_CONFIG": "/not/read/by/load_settings.toml",
        "TRUNKLINE_TEST_REDIS_URL": "redis://127.0.0.1:6379/15",
        "PATH": "/usr/bin",
    }
    s = load_settings(env=env)
    assert s.client.token.hmac_secret_key == "s3cret"
    assert s.client.insecure is True and s.prometheus.enabled is False
    assert (s.client.ping_interval, s.client.pong_timeout, s.client.channel_limit) == (90.0, 10.0, 7)
    assert s.client.allowed_origins == ("https://a.example", "https://b.example")
    chat = s.namespace("chat")
    assert chat is not None and chat.history_ttl == 300.0
    assert s.channel.without_namespace.presence and not s.tls.enabled


def test_env_merges_into_file_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[client.token]\naudience = 'app'\n")
    s = load_settings(path, env={"TRUNKLINE_CLIENT_TOKEN_ISSUER": "me"})
    assert (s.client.token.audience, s.client.token.issuer) == ("app", "me")


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"TRUNKLINE_HTTP_SERVER_PORT": "eighty"}, "http_server.port", "expected an integer, got 'eighty'"),
        ({"TRUNKLINE_HTTP_SERVER_PORT": "0"}, "http_server.port", "between 1 and 65535"),
        ({"TRUNKLINE_CLIENT_CHANNEL_LIMIT": "-1"}, "client.channel_limit", "must not be negative"),
        ({"TRUNKLINE_CLIENT_INSECURE": "maybe"}, "client.insecure", "true/false"),
        ({"TRUNKLINE_CLIENT_PING_INTERVAL": "1d"}, "client.ping_interval", "expected a duration"),
        ({"TRUNKLINE_CLIENT_ALLOWED_ORIGINS": "https://a"}, "client.allowed_origins", "JSON array"),
        ({"TRUNKLINE_CLIENT_ALLOWED_ORIGINS": '{"a": 1}'}, "client.allowed_origins", "expected an array"),
        ({"TRUNKLINE_HTTP_SERVER_TLS_ENABLED": "1"}, "http_server.tls.enabled", "TLS needs"),
        (
            {"TRUNKLINE_CHANNEL_NAMESPACES": '[{"name": "ab"}, {"name": "cd", "history_size": 3}]'},
            "channel.namespaces[1].history_size",
            "requires history_ttl",
        ),
        (
            {"TRUNKLINE_CHANNEL_NAMESPACES": '[{"name": "ab", "nope": 1}]'},
            "channel.namespaces[0].nope",
            "unknown key",
        ),
    ],
)
def test_env_errors_name_key_and_variable(env: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    (name,) = env
    assert (info.value.key, info.value.source) == (key, f"environment variable {name}")
    assert fragment in info.value.message


def test_env_error_blames_env_not_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[channel.without_namespace]\nhistory_size = 10\nhistory_ttl = '1m'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_HISTORY_TTL": "0"})
    assert info.value.key == "channel.without_namespace.history_size"
    assert info.value.source == str(path)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_HISTORY_SIZE": "0"})
    assert info.value.key == "channel.without_namespace.history_ttl"
    assert info.value.source == str(path)


def test_unknown_env_var_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"TRUNKLINE_HTTP_SERVER_PROT": "80"})
    assert info.value.key == "TRUNKLINE_HTTP_SERVER_PROT"
    assert "did you mean TRUNKLINE_HTTP_SERVER_PORT?" in info.value.message


def test_env_alias_and_canonical_name_conflict() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"TRUNKLINE_TLS_ENABLED": "0", "TRUNKLINE_HTTP_SERVER_TLS_ENABLED": "0"})
    assert info.value.key == "http_server.tls.enabled"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUNKLINE_NODE_NAME", "node-7")
    assert load_settings().node.name == "node-7"


def test_overrides() -> None:
    s = load_settings(
        env={},
        overrides={
            "http_server.address": "0.0.0.0",
            "tls.enabled": False,
            "client.token": {"issuer": "me"},
            "channel.namespaces": [{"name": "chat"}],
            "shutdown.timeout": "30s",
        },
    )
    assert s.http_server.address == "0.0.0.0" and s.client.token.issuer == "me"
    assert s.namespace("chat") is not None and s.shutdown.timeout == 30.0


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"http_server.prot": 1}, "http_server.prot", "unknown setting"),
        ({"http_server.port.x": 1}, "http_server.port.x", "unknown setting"),
        ({"http_server.port": 0}, "http_server.port", "between 1 and 65535"),
        ({"http_server.port": "9000"}, "http_server.port", "expected an integer"),
    ],
)
def test_override_errors(overrides: dict[str, object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, overrides=overrides)
    assert (info.value.key, info.value.source) == (key, "overrides")
    assert fragment in info.value.message


# --- durations and booleans -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("300s", 300.0),
        ("1m30s", 90.0),
        ("720h", 2592000.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h2m3s4ms", 3723.004),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("250μs", 0.00025),
        ("100ns", 1e-7),
        ("0", 0.0),
        ("+5s", 5.0),
        ("25", 25.0),
        ("2.5", 2.5),
        (" 10s ", 10.0),
        (25, 25.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value", ["", "s", "1d", "5 s", "5S", "-5s", "-1", "1h-5m", "5sec", "nan", "inf", True, None, [1], float("nan")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "client.ping_interval", "x.toml")
    assert (info.value.key, info.value.source) == ("client.ping_interval", "x.toml")


def test_parse_duration_too_large() -> None:
    with pytest.raises(ConfigError, match="too large"):
        parse_duration("9" * 500 + "h")
    with pytest.raises(ConfigError, match="too large"):
        parse_duration(float("inf"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("No", False)],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@given(st.one_of(st.text(), st.text(alphabet="0123456789.+-hmsunµμ ", max_size=30)))
def test_parse_duration_never_raises_anything_else(text: str) -> None:
    try:
        seconds = parse_duration(text, "k", "s")
    except ConfigError as exc:
        assert (exc.key, exc.source) == ("k", "s")
    else:
        assert isinstance(seconds, float) and seconds >= 0


@given(st.one_of(st.text(), st.sampled_from(["true", "no", "YES", " 1 ", "0"])))
def test_parse_bool_never_raises_anything_else(text: str) -> None:
    try:
        value = parse_bool(text, "k", "s")
    except ConfigError as exc:
        assert exc.key == "k"
    else:
        assert isinstance(value, bool)


# --- masking ----------------------------------------------------------------------------------------


def test_masked_dict_hides_secrets(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "c.toml", FULL_TOML), env={"TRUNKLINE_HTTP_API_KEY": "api-key"})
    data = s.masked_dict()
    text = json.dumps(data)
    for secret in ("a-secret-that-is-long-enough", "admin-password", "admin-secret", "api-key", "hunter2"):
        assert secret not in text
    assert data["client"]["token"]["hmac_secret_key"] == "***"
    assert data["http_api"]["key"] == "***"
    assert data["admin"]["password"] == "***" and data["admin"]["secret"] == "***"
    assert data["engine"]["redis"]["address"] == "redis://:***@redis.internal:6379/0"
    assert data["client"]["subscription_token"]["hmac_secret_key"] == ""  # empty stays empty
    assert data["client"]["allowed_origins"] == ["https://example.com"]
    assert data["channel"]["namespaces"][0]["name"] == "chat"


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://user:pw@host:6379/1", "redis://user:***@host:6379/1"),
        ("rediss://user@host", "rediss://user@host"),
        ("redis://host/0?password=pw&db=1", "redis://host/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
    ],
)
def test_masked_redis_address(address: str, shown: str) -> None:
    s = settings_from_mapping({"engine": {"redis": {"address": address}}})
    assert s.masked_dict()["engine"]["redis"]["address"] == shown


def test_subscription_token_settings_share_token_fields() -> None:
    names = {f.name for f in dataclasses.fields(SubscriptionTokenSettings)}
    assert names == {f.name for f in dataclasses.fields(TokenSettings)} | {"enabled"}


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[log]\nlevel = '''\nmulti\nline'''\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "\n" not in str(info.value).replace("\\n", "")
    assert re.match(r"log\.level: must be one of", str(info.value))


def test_documented_examples_load(tmp_path: Path) -> None:
    docs = DOCS.read_text()
    blocks = re.findall(r"```(toml|json)\n(.*?)```", docs, flags=re.DOTALL)
    assert [kind for kind, _ in blocks] == ["toml", "json", "toml"]
    for i, (kind, text) in enumerate(blocks):
        s = load_settings(write(tmp_path, f"example{i}.{kind}", text), env={})
        assert s != Settings()


def test_admin_secret_must_differ_from_the_client_token_secret() -> None:
    from trunkline.config import settings_from_mapping
    from trunkline.errors import ConfigError

    data = {
        "client": {"token": {"hmac_secret_key": "same-secret"}},
        "admin": {"enabled": True, "password": "pw", "secret": "same-secret"},
    }
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data, source="x.toml")
    assert err.value.key == "admin.secret" and "x.toml" in str(err.value)


def test_single_connection_needs_presence_so_nats_alone_refuses_it() -> None:
    personal = {"subscribe_to_user_personal_channel": {"enabled": True, "single_connection": True}}
    ns = {"without_namespace": {"presence": True}}
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"engine": {"type": "nats"}, "client": personal, "channel": ns})
    assert err.value.key == "client.subscribe_to_user_personal_channel.single_connection"
    engine = {"type": "nats", "nats": {"history": "redis"}}
    assert settings_from_mapping({"engine": engine, "client": personal, "channel": ns}).engine.type == "nats"
