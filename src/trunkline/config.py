"""Settings: typed, frozen, validated; loaded from a file, the environment and flags.

Keys and sections are Centrifugo v6's (``http_server.port``, ``client.token.hmac_secret_key``,
``channel.namespaces``); every attribute path of :class:`Settings` equals its config key.
Layers, lowest first::

    defaults  <  file (TOML or JSON)  <  TRUNKLINE_* environment variables  <  overrides (CLI flags)

Every problem raises :class:`~trunkline.errors.ConfigError` naming the full dotted key
(``channel.namespaces[1].history_size``) and where the value came from (the file, or
``environment variable TRUNKLINE_X``). Unknown keys are errors, never ignored.

``Settings()`` is a valid default configuration; code and tests may build settings
directly (such settings are not validated, so a test may use ``port=0``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from trunkline.compat import SPELLINGS, unsupported
from trunkline.durations import parse_duration
from trunkline.errors import ConfigError, ConfigErrors

__all__ = [
    "ENV_PREFIX",
    "Admin",
    "Channel",
    "ChannelProxy",
    "Client",
    "ClientProxy",
    "ClientProxyEvent",
    "Engine",
    "Health",
    "HttpApi",
    "HttpServer",
    "Log",
    "MapBrokerSettings",
    "MapNamespace",
    "Mqtt",
    "NamedProxy",
    "Namespace",
    "NamespaceOptions",
    "Node",
    "PersonalChannel",
    "Prometheus",
    "ProxyHttp",
    "ProxyOptions",
    "ProxyStatusTransform",
    "RedisSettings",
    "Rpc",
    "RpcNamespace",
    "RpcOptions",
    "Settings",
    "SharedPollNamespace",
    "SharedPollSettings",
    "Shutdown",
    "StringMap",
    "SubscriptionTokenSettings",
    "Tls",
    "TokenSettings",
    "WebSocket",
    "env_var_for",
    "load_settings",
    "parse_bool",
    "setting_keys",
    "settings_from_mapping",
]


# ---------------------------------------------------------------------------------------------
# Schema. Field types drive parsing: bool, int (never negative), float (a duration, seconds),
# str, tuple[str, ...], tuple[Namespace, ...] and nested sections.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    enabled: bool = False
    cert_pem_file: str = ""
    key_pem_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpServer:
    address: str = "127.0.0.1"
    port: int = 8000
    internal_address: str = ""
    internal_port: int = 0  # 0: no separate internal listener
    tls: Tls = field(default_factory=Tls)
    # Peers (addresses or CIDR networks) whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSettings:
    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    jwks_public_endpoint: str = ""
    audience: str = ""
    issuer: str = ""
    user_id_claim: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionTokenSettings(TokenSettings):
    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonalChannel:
    enabled: bool = False
    personal_channel_namespace: str = ""
    single_connection: bool = False


class StringMap(Mapping[str, str]):
    """A frozen, hashable table of strings (a config value such as ``http.static_headers``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"StringMap({self._items!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyErrorTransform:
    code: int = 0  # an error reply code (Centrifugo: 400-1999); 0: not this kind
    message: str = ""
    temporary: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyDisconnectTransform:
    code: int = 0  # a close code (4000-4999); 0: not this kind
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyStatusTransform:
    """What a non-200 answer of the backend becomes: an error reply or a disconnect."""

    status_code: int = 0
    to_error: ProxyErrorTransform = field(default_factory=ProxyErrorTransform)
    to_disconnect: ProxyDisconnectTransform = field(default_factory=ProxyDisconnectTransform)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHttp:
    static_headers: StringMap = field(default_factory=StringMap)  # added to every request (lowest priority)
    status_to_code_transforms: tuple[ProxyStatusTransform, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyOptions:
    """Centrifugo's proxy configuration object: where and how to ask the application backend."""

    endpoint: str = ""  # http:// or https:// URL
    timeout: float = 1.0
    http_headers: tuple[str, ...] = ()  # headers of the client's connection request to forward
    include_connection_meta: bool = False  # send the connection's meta (from connect) with every request
    binary_encoding: bool = False  # payloads as base64 (b64data) instead of JSON
    http: ProxyHttp = field(default_factory=ProxyHttp)
    max_concurrent_requests: int = 256  # requests in flight to this proxy; more get error 100 at once


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientProxyEvent(ProxyOptions):
    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientProxy:
    connect: ClientProxyEvent = field(default_factory=ClientProxyEvent)
    refresh: ClientProxyEvent = field(default_factory=ClientProxyEvent)


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedProxy(ProxyOptions):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelProxy:
    subscribe: ProxyOptions = field(default_factory=ProxyOptions)
    publish: ProxyOptions = field(default_factory=ProxyOptions)
    sub_refresh: ProxyOptions = field(default_factory=ProxyOptions)
    shared_poll_refresh: ProxyOptions = field(default_factory=ProxyOptions)  # shared-poll namespaces' default


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcOptions:
    proxy_enabled: bool = False
    proxy_name: str = ""  # a name from ``proxies``; "": rpc.proxy


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcNamespace(RpcOptions):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rpc:
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    without_namespace: RpcOptions = field(default_factory=RpcOptions)
    namespaces: tuple[RpcNamespace, ...] = ()
    namespace_boundary: str = ":"

    def options(self, method: str) -> RpcOptions | None:
        """The RPC namespace options of ``method`` (``ns:method``); None for an unknown namespace."""
        namespace, sep, _ = method.partition(self.namespace_boundary)
        if not sep:
            return self.without_namespace
        for ns in self.namespaces:
            if ns.name == namespace:
                return ns
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    token: TokenSettings = field(default_factory=TokenSettings)
    subscription_token: SubscriptionTokenSettings = field(default_factory=SubscriptionTokenSettings)
    allowed_origins: tuple[str, ...] = ()
    insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    disallow_anonymous_connection_tokens: bool = False
    ping_interval: float = 25.0
    pong_timeout: float = 8.0
    stale_close_delay: float = 10.0
    expired_close_delay: float = 25.0
    expired_sub_close_delay: float = 25.0
    channel_limit: int = 128
    user_connection_limit: int = 0  # 0: unlimited
    connection_limit: int = 100000  # total on this node; 0: unlimited
    queue_max_size: int = 1048576  # bytes of outbound data per connection
    write_delay: float = 0.0  # wait this long before writing, so more messages share one frame
    presence_update_interval: float = 27.0  # refresh of presence entries in a shared store (Redis)
    history_max_publication_limit: int = 300
    recovery_max_publication_limit: int = 300
    command_rate_limit: int = 500  # commands per second per connection; 0: off
    command_rate_burst: int = 1000  # room for a reconnect that resubscribes every channel; 0: = rate
    subscribe_to_user_personal_channel: PersonalChannel = field(default_factory=PersonalChannel)
    presence_max_size: int = 0  # bytes of one encoded presence reply; 0: half of queue_max_size
    proxy: ClientProxy = field(default_factory=ClientProxy)  # connect and refresh proxies to the backend


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocket:
    message_size_limit: int = 65536
    compression: bool = False
    handshake_timeout: float = 10.0
    write_timeout: float = 5.0


# HTTP-streaming, SSE and unidirectional transports (Centrifugo v6 names); all off by default.


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpStream:
    enabled: bool = False
    handler_prefix: str = "/connection/http_stream"
    max_request_body_size: int = 65536  # bytes of the connect request body; over it: 413


@dataclass(frozen=True, slots=True, kw_only=True)
class Sse:
    enabled: bool = False
    handler_prefix: str = "/connection/sse"
    max_request_body_size: int = 65536  # bytes of a POST connect body; over it: 413


@dataclass(frozen=True, slots=True, kw_only=True)
class Emulation:
    """``POST /emulation``: the commands of HTTP-streaming and SSE connections (on when either is)."""

    handler_prefix: str = "/emulation"
    max_request_body_size: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class UniWebSocket:
    enabled: bool = False
    handler_prefix: str = "/connection/uni_websocket"
    message_size_limit: int = 65536  # bytes of the one message a client sends (its connect request); 0: none
    compression: bool = False
    join_push_messages: bool = False  # several pushes per frame, newline-joined (default: one per frame)


@dataclass(frozen=True, slots=True, kw_only=True)
class UniSse:
    enabled: bool = False
    handler_prefix: str = "/connection/uni_sse"
    max_request_body_size: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class UniHttpStream:
    enabled: bool = False
    handler_prefix: str = "/connection/uni_http_stream"
    max_request_body_size: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """``GET /connection/poll``: a channel's history stream by offset over plain HTTP (off by default)."""

    enabled: bool = False
    handler_prefix: str = "/connection/poll"
    max_wait: float = 30.0  # longest long poll (``wait=``); a longer wait is cut to this; 0: short polls only
    max_limit: int = 1000  # most publications in one answer (``limit=`` is cut to this)
    max_waiting: int = 10000  # long polls held open at once on this node; more get 503


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpApi:
    key: str = ""
    insecure: bool = False
    handler_prefix: str = "/api"
    error_mode: str = ""  # "" or "transport"
    max_body_size: int = 1048576


#: ``subscription_type`` values: what a subscriber of a namespace's channels receives
SUBSCRIPTION_TYPES: Final = ("stream", "map", "map_clients", "map_users", "shared_poll")
#: the subscription types that keep a keyed state in the map broker
MAP_SUBSCRIPTION_TYPES: Final = ("map", "map_clients", "map_users")
#: ``map.mode`` values (``"recoverable"`` is read as ``"durable"``)
MAP_MODES: Final = ("ephemeral", "durable", "persistent")


@dataclass(frozen=True, slots=True, kw_only=True)
class MapNamespace:
    """The ``map`` block of a namespace whose ``subscription_type`` is a map type (docs/map.md)."""

    mode: str = ""  # "ephemeral", "durable" or "persistent"; required for map types
    key_ttl: float = 0.0  # required for ephemeral/durable maps; map_clients/map_users: 0 means 60s
    ordered: bool = False  # entries sorted by score (descending unless the reader asks asc)
    stream_size: int = 0  # 0: derived (100 for durable/persistent, none for ephemeral)
    stream_ttl: float = 0.0  # 0: derived (1m for durable/persistent)
    meta_ttl: float = 0.0  # 0: derived (channel.history_meta_ttl)
    max_keys: int = 100000  # keys per channel; a new key into a full channel gets error 106; 0: unlimited
    allow_publish_for_client: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_anonymous: bool = False
    allow_remove_for_client: bool = False
    allow_remove_for_subscriber: bool = False
    allow_remove_for_anonymous: bool = False
    client_key: str = ""  # "", "client_id" or "user_id": the server sets the key of client writes
    remove_client_on_unsubscribe: bool = False  # the entry keyed by the client id goes when it leaves
    default_page_size: int = 100  # state entries per page when the client asks for none
    min_page_size: int = 100  # a smaller asked page is raised to this
    max_page_size: int = 1000  # a larger asked page is cut to this
    live_transition_max_publication_limit: int = 0  # stream entries a client may catch up; 0: max_page_size
    subscribe_catch_up_timeout: float = 5.0  # the state -> stream -> live phases must end within this

    def __post_init__(self) -> None:
        if self.mode == "recoverable":  # the name issue 14 uses for durable
            object.__setattr__(self, "mode", "durable")


#: ``shared_poll.mode`` values ("" is versionless)
SHARED_POLL_MODES: Final = ("", "versionless", "versioned")


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedPollNamespace:
    """The ``shared_poll`` block of a namespace whose ``subscription_type`` is ``shared_poll`` (docs/shared-poll.md)."""

    proxy_name: str = ""  # a name from ``proxies``; "" or "default": channel.proxy.shared_poll_refresh
    refresh_interval: float = 10.0  # the backend is asked for every tracked key once per interval
    refresh_batch_size: int = 1000  # keys per refresh call; the calls of a cycle are spread over the interval
    max_keys_per_connection: int = 5000  # a track past it gets error 106
    mode: str = "versionless"  # "versionless" (changes found by content) or "versioned" (by the backend's version)
    channel_shutdown_delay: float = 1.0  # a channel nobody subscribes to stops polling after this
    track_expired_extra_delay: float = 25.0  # keys of a signature expired this long ago are untracked
    publish_enabled: bool = False  # accepted; direct publish (shared_poll_publish) reaches this node's clients
    max_keys_per_channel: int = 100000  # Trunkline's own: distinct keys tracked per channel; past it 106; 0: none


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedPollSettings:
    """The top-level ``shared_poll`` section: the track signatures' secrets, the backend-call bound."""

    hmac_secret_key: str = ""  # required by shared-poll namespaces
    hmac_previous_secret_key: str = ""  # accepted too during a key rotation
    hmac_previous_secret_key_valid_until: int = 0  # Unix seconds after which the previous key is refused; 0: never
    concurrency_limit: int = 64  # refresh calls in flight across all shared-poll channels


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceOptions:
    subscription_type: str = "stream"  # one of SUBSCRIPTION_TYPES
    map: MapNamespace = field(default_factory=MapNamespace)
    shared_poll: SharedPollNamespace = field(default_factory=SharedPollNamespace)
    map_clients_presence_channel_prefix: str = ""  # "": off; else each subscriber is a key of prefix+channel
    map_users_presence_channel_prefix: str = ""  # "": off; else each subscriber's user is a key of prefix+channel
    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: float = 0.0
    force_recovery: bool = False
    allow_recovery: bool = False
    force_positioning: bool = False
    allow_positioning: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_anonymous: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_client: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    channel_regex: str = ""
    allowed_delta_types: tuple[str, ...] = ()
    delta_publish: bool = False
    publication_data_format: str = ""
    subscribe_proxy_enabled: bool = False
    subscribe_proxy_name: str = ""  # a name from ``proxies``; "": channel.proxy.subscribe
    publish_proxy_enabled: bool = False
    publish_proxy_name: str = ""
    sub_refresh_proxy_enabled: bool = False
    sub_refresh_proxy_name: str = ""

    @property
    def is_map(self) -> bool:
        """Channels of this namespace keep a keyed state (``map``, ``map_clients``, ``map_users``)."""
        return self.subscription_type in MAP_SUBSCRIPTION_TYPES

    @property
    def history_enabled(self) -> bool:
        """History is kept only when both ``history_size`` and ``history_ttl`` are above zero."""
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace(NamespaceOptions):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    max_length: int = 255
    private_prefix: str = "$"
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","
    history_meta_ttl: float = 2592000.0  # 720h
    position_check_interval: float = 40.0  # compare positioned channels with their stream top
    idempotent_result_ttl: float = 300.0  # how long a publish idempotency_key is remembered
    without_namespace: NamespaceOptions = field(default_factory=NamespaceOptions)
    namespaces: tuple[Namespace, ...] = ()
    proxy: ChannelProxy = field(default_factory=ChannelProxy)  # default subscribe/publish/sub_refresh proxies
    # Lookup table by name, derived from ``namespaces``; not a setting.
    _by_name: Mapping[str, Namespace] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", tuple(self.namespaces))
        object.__setattr__(self, "_by_name", {ns.name: ns for ns in self.namespaces})

    def namespace(self, name: str) -> NamespaceOptions | None:
        """Options for namespace ``name``; ``""`` gives ``without_namespace``; unknown gives ``None``."""
        if name == "":
            return self.without_namespace
        return self._by_name.get(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    # one URL, or several (a TOML/JSON list or comma-separated): consistent sharding over them
    address: str = "redis://127.0.0.1:6379"
    prefix: str = "trunkline"
    connect_timeout: float = 5.0
    io_timeout: float = 4.0
    # one entry per shard (a cluster's seeds / a master's sentinels, host:port comma-separated), as in Centrifugo;
    # several entries: consistent sharding over them. Credentials (and the master's db) come from address.
    cluster_address: tuple[str, ...] = ()
    sentinel_address: tuple[str, ...] = ()
    sentinel_master_name: str = ""
    sentinel_user: str = ""
    sentinel_password: str = ""

    @property
    def addresses(self) -> tuple[str, ...]:
        """The URLs of ``address``: one server, or the consistent shards."""
        return tuple(part.strip() for part in self.address.split(",") if part.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSettings:
    url: str = "nats://127.0.0.1:4222"
    prefix: str = "trunkline"
    dial_timeout: float = 1.0
    write_timeout: float = 1.0
    history: str = ""  # "" (none: history, recovery and presence answer 108) or "redis" (engine.redis)


@dataclass(frozen=True, slots=True, kw_only=True)
class Engine:
    type: str = "memory"  # "memory", "redis" or "nats"
    redis: RedisSettings = field(default_factory=RedisSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)


def _no_redis_address() -> RedisSettings:
    return RedisSettings(address="")


@dataclass(frozen=True, slots=True, kw_only=True)
class MapBrokerSettings:
    """Where map subscriptions keep their state and stream (``map_broker``)."""

    type: str = "memory"  # "memory" or "redis"
    redis: RedisSettings = field(default_factory=_no_redis_address)  # address "": engine.redis
    cleanup_interval: float = 1.0  # how often expired keys are removed (and the removals delivered)
    cleanup_batch_size: int = 100  # most keys one cleanup removes per channel


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    enabled: bool = False
    password: str = ""
    secret: str = ""
    insecure: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Prometheus:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    level: str = "info"  # debug, info, warning, error
    format: str = "text"  # text or json


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    timeout: float = 10.0  # drain period on SIGTERM
    ready_delay: float = 0.0  # /ready answers 503 this long before the listeners close


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str = ""  # "": the host name, resolved at run time


@dataclass(frozen=True, slots=True, kw_only=True)
class Demo:
    enabled: bool = False  # serve POST /demo/token (mints tokens for any name: demos only)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttWebSocket:
    enabled: bool = False
    path: str = "/mqtt"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttTcp:
    enabled: bool = False
    address: str = "127.0.0.1:1883"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttTls:
    enabled: bool = False
    address: str = "127.0.0.1:8883"
    cert_pem_file: str = ""
    key_pem_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttRetained:
    enabled: bool = True
    max_messages: int = 100000  # retained topics kept on this node (memory) or cluster (Redis); 0: unlimited
    max_bytes: int = 67108864  # payload bytes of every retained message together; 0: unlimited
    max_payload_size: int = 262144  # bytes of one retained payload; 0: mqtt.max_packet_size
    map_channel_prefix: str = ""  # "": off; "retained:": namespace N's retained topics are keys of map retained:N


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttTopicMapping:
    mode: str = "namespace"  # "namespace": the first topic level names the namespace; "prefix": one namespace
    prefix: str = ""  # the namespace of every MQTT topic when mode = "prefix"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mqtt:
    websocket: MqttWebSocket = field(default_factory=MqttWebSocket)
    tcp: MqttTcp = field(default_factory=MqttTcp)
    tls: MqttTls = field(default_factory=MqttTls)
    allow_anonymous: bool = False  # CONNECT without a token in the password
    max_packet_size: int = 1048576  # bytes of one MQTT packet, both directions
    receive_maximum: int = 64  # unacknowledged QoS 1/2 PUBLISH a client may send
    max_inflight: int = 64  # unacknowledged QoS 1/2 PUBLISH the server sends one client
    max_subscriptions: int = 128  # topic filters per connection; 0: unlimited
    max_keepalive: float = 600.0  # a longer (or zero) client keepalive is lowered to this (MQTT 5)
    session_expiry_max: float = 86400.0  # a longer session expiry interval is lowered to this
    max_queued_messages: int = 1000  # QoS 1/2 messages waiting for the in-flight window, per session
    max_stored_sessions: int = 10000  # persistent sessions of absent clients kept on this node; 0: unlimited
    retained: MqttRetained = field(default_factory=MqttRetained)
    topic_mapping: MqttTopicMapping = field(default_factory=MqttTopicMapping)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    http_server: HttpServer = field(default_factory=HttpServer)
    client: Client = field(default_factory=Client)
    websocket: WebSocket = field(default_factory=WebSocket)
    http_stream: HttpStream = field(default_factory=HttpStream)
    sse: Sse = field(default_factory=Sse)
    emulation: Emulation = field(default_factory=Emulation)
    uni_websocket: UniWebSocket = field(default_factory=UniWebSocket)
    uni_sse: UniSse = field(default_factory=UniSse)
    uni_http_stream: UniHttpStream = field(default_factory=UniHttpStream)
    poll: Poll = field(default_factory=Poll)
    http_api: HttpApi = field(default_factory=HttpApi)
    channel: Channel = field(default_factory=Channel)
    engine: Engine = field(default_factory=Engine)
    map_broker: MapBrokerSettings = field(default_factory=MapBrokerSettings)
    admin: Admin = field(default_factory=Admin)
    prometheus: Prometheus = field(default_factory=Prometheus)
    health: Health = field(default_factory=Health)
    log: Log = field(default_factory=Log)
    shutdown: Shutdown = field(default_factory=Shutdown)
    node: Node = field(default_factory=Node)
    demo: Demo = field(default_factory=Demo)
    mqtt: Mqtt = field(default_factory=Mqtt)
    rpc: Rpc = field(default_factory=Rpc)
    proxies: tuple[NamedProxy, ...] = ()  # named proxies, referenced by *_proxy_name
    shared_poll: SharedPollSettings = field(default_factory=SharedPollSettings)

    @property
    def tls(self) -> Tls:
        """Same as ``http_server.tls`` (a file may also write the section as top-level ``tls``)."""
        return self.http_server.tls

    def namespace(self, name: str) -> NamespaceOptions | None:
        """Options for namespace ``name``; ``""`` gives ``channel.without_namespace``; unknown gives ``None``."""
        return self.channel.namespace(name)

    @property
    def map_broker_redis(self) -> RedisSettings:
        """The Redis of the map broker: ``map_broker.redis`` when it names a server (an address, a
        cluster or sentinels), else ``engine.redis``."""
        own = self.map_broker.redis
        return own if own.address or own.cluster_address or own.sentinel_address else self.engine.redis

    def masked_dict(self) -> dict[str, Any]:
        """The effective settings as plain JSON-ready data, secrets replaced by ``"***"``."""
        data = _to_plain(self, "")
        assert isinstance(data, dict)
        return data


# ---------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------

ENV_PREFIX: Final = "TRUNKLINE_"
# TRUNKLINE_* names that are not settings: the CLI's config file path and worker count, and test infrastructure.
_ENV_RESERVED: Final = frozenset({"TRUNKLINE_CONFIG", "TRUNKLINE_WORKERS"})
_ENV_RESERVED_PREFIXES: Final = ("TRUNKLINE_TEST_",)

_SECRETS: Final = frozenset(
    {
        "client.token.hmac_secret_key",
        "client.subscription_token.hmac_secret_key",
        "shared_poll.hmac_secret_key",
        "shared_poll.hmac_previous_secret_key",
        "http_api.key",
        "admin.password",
        "admin.secret",
        "engine.redis.sentinel_password",
        "map_broker.redis.sentinel_password",
    }
)
_URLS_WITH_PASSWORD: Final = frozenset({"engine.redis.address", "map_broker.redis.address"})
_MASK: Final = "***"

_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def parse_bool(text: str, key: str = "", source: str = "") -> bool:
    """Parse an environment value: true/false, 1/0, yes/no (any case)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(key, f"expected true/false, 1/0 or yes/no, got {_clip(text)!r}", source)


def env_var_for(key: str) -> str:
    """The environment variable of a dotted key: ``http_server.port`` → ``TRUNKLINE_HTTP_SERVER_PORT``."""
    return ENV_PREFIX + key.upper().replace(".", "_")


def setting_keys() -> tuple[str, ...]:
    """Every settable dotted key, in schema order (lists such as ``channel.namespaces`` are one key)."""
    return tuple(key for key, _ in _leaves(Settings, ""))


def settings_from_mapping(data: Mapping[str, Any], source: str = "<dict>") -> Settings:
    """Validate plain data (as parsed from TOML/JSON) into :class:`Settings`."""
    where = _Sources(source)
    raw = _apply_aliases(_copy_tree(data, "", where), where)
    return _build(raw, where)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Defaults, then the file at ``path`` (``.toml`` or ``.json``; ``None`` or ``""``: no file), then
    ``TRUNKLINE_*`` variables from ``env`` (default ``os.environ``), then ``overrides`` (dotted keys,
    e.g. ``{"http_server.port": 9000}``; a section key such as ``"client.token"`` takes a mapping).
    """
    file_name = os.fspath(path) if path is not None else ""
    where = _Sources(file_name)
    raw: dict[str, Any] = {}
    if file_name:
        raw = _apply_aliases(_copy_tree(_read_file(Path(file_name)), "", where), where)
    _apply_env(raw, os.environ if env is None else env, where)
    for key, value in (overrides or {}).items():
        _set_path(raw, _resolve_key(key, "overrides"), value, where, "overrides")
    return _build(raw, where)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class _Sources:
    """Where each value came from: the default (the file) unless a key was set by env or overrides."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.by_key: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        best, found = -1, self.default
        for prefix, source in self.by_key.items():
            if len(prefix) > best and (key == prefix or key.startswith((prefix + ".", prefix + "["))):
                best, found = len(prefix), source
        return found


def _read_file(path: Path) -> Mapping[str, Any]:
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(name, f"unsupported config file type {path.suffix or '(none)'!r}; use .toml or .json")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, f"cannot read config file: {exc.strerror or exc}") from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(name, f"config file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(name, f"invalid TOML: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(name, f"invalid JSON: {exc}") from None
    except _DuplicateKey as exc:
        raise ConfigError(name, f"invalid JSON: duplicate key {exc.args[0]!r}") from None
    if not isinstance(data, dict):
        raise ConfigError(name, f"the top level must be a JSON object, got {_describe(data)}")
    return data


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _copy_tree(data: Mapping[str, Any], key: str, where: _Sources) -> dict[str, Any]:
    """Copy nested mappings into fresh dicts (leaves and lists are kept), so layers can be merged."""
    result: dict[str, Any] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConfigError(_join(key, str(name)), "keys must be strings", where(key))
        result[name] = _copy_tree(value, _join(key, name), where) if isinstance(value, Mapping) else value
    return result


def _apply_aliases(raw: dict[str, Any], where: _Sources) -> dict[str, Any]:
    """A top-level ``tls`` section is ``http_server.tls``; Centrifugo's ``broker`` section (NATS) is ``engine.nats``."""
    if "broker" in raw:
        _broker_alias(raw, where)
    _redis_address_list(raw)
    if "tls" not in raw:
        return raw
    tls = raw.pop("tls")
    http = raw.setdefault("http_server", {})
    if not isinstance(http, dict):
        raise ConfigError("http_server", f"expected a table, got {_describe(http)}", where("http_server"))
    if "tls" in http:
        raise ConfigError("tls", "set both as top-level tls and as http_server.tls; keep one", where("tls"))
    http["tls"] = tls
    return raw


def _redis_address_list(raw: dict[str, Any]) -> None:
    """Centrifugo's ``engine.redis.address`` may be a list (consistent shards): kept comma-separated."""
    engine = raw.get("engine")
    redis = engine.get("redis") if isinstance(engine, dict) else None
    address = redis.get("address") if isinstance(redis, dict) else None
    if isinstance(redis, dict) and isinstance(address, list) and all(isinstance(item, str) for item in address):
        redis["address"] = ",".join(address)


_BROKER_NATS_KEYS: Final = ("url", "prefix", "dial_timeout", "write_timeout")


def _broker_alias(raw: dict[str, Any], where: _Sources) -> None:
    """Centrifugo v6's ``broker`` (``enabled``, ``type = "nats"``, ``nats.*``) read as ``engine.type = "nats"``.

    Next to ``engine.type = "redis"`` (Centrifugo: Redis presence, NATS fan-out) the Redis
    engine also keeps history (``engine.nats.history = "redis"``).
    """
    broker = raw.pop("broker")
    if not isinstance(broker, dict):
        raise ConfigError("broker", f"expected a table, got {_describe(broker)}", where("broker"))
    for name in broker:
        if name not in ("enabled", "type", "nats"):
            raise ConfigError(f"broker.{name}", "unknown key (Trunkline reads enabled, type and nats)", where("broker"))
    if broker.get("enabled") is not True:
        return  # Centrifugo ignores a broker section that is not enabled
    if broker.get("type") != "nats":
        got = _describe(broker.get("type"))
        raise ConfigError("broker.type", f'only "nats" is supported (Redis: engine.type = "redis"), got {got}')
    nats = broker.get("nats", {})
    if not isinstance(nats, dict):
        raise ConfigError("broker.nats", f"expected a table, got {_describe(nats)}", where("broker"))
    engine = raw.setdefault("engine", {})
    if not isinstance(engine, dict):
        raise ConfigError("engine", f"expected a table, got {_describe(engine)}", where("engine"))
    target = engine.setdefault("nats", {})
    if not isinstance(target, dict):
        raise ConfigError("engine.nats", f"expected a table, got {_describe(target)}", where("engine.nats"))
    for name, value in nats.items():
        key = f"broker.nats.{name}"
        if name not in _BROKER_NATS_KEYS:
            feature = unsupported(key)
            problem = f"not supported by Trunkline ({feature})" if feature else "unknown key"
            raise ConfigError(key, f"{problem}; see docs/migrating-from-centrifugo.md", where("broker"))
        if name in target:
            raise ConfigError(key, f"set both as {key} and engine.nats.{name}; keep one", where("broker"))
        target[name] = value
    if engine.get("type") == "redis":
        target.setdefault("history", "redis")
    engine["type"] = "nats"


def _set_path(raw: dict[str, Any], key: str, value: object, where: _Sources, source: str) -> None:
    """Set dotted ``key`` in the raw tree, merging into a section when ``value`` is a mapping."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(prefix, f"expected a table, got {_describe(child)}", where(prefix))
        node = child
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for name, item in _copy_tree(value, key, where).items():
            _set_path(raw, f"{key}.{name}", item, where, source)
        return
    node[last] = _copy_tree(value, key, where) if isinstance(value, Mapping) else value
    where.by_key[key] = source


def _resolve_key(key: str, source: str) -> str:
    """Check an override's dotted key against the schema; return its canonical form."""
    parts = key.split(".")
    if parts[0] == "tls":
        parts = ["http_server", *parts]
    tp: Any = Settings
    for depth, part in enumerate(parts):
        fields = _schema(tp) if _is_section(tp) else {}
        if part not in fields:
            known = ".".join(parts[:depth])
            raise ConfigError(key, _unknown("setting", part, fields, known), source)
        tp = fields[part]
    return ".".join(parts)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], where: _Sources) -> None:
    table = _env_table()
    seen: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in _ENV_RESERVED or name.startswith(_ENV_RESERVED_PREFIXES):
            continue
        source = f"environment variable {name}"
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(name, f"unknown environment variable{hint}", "environment")
        key, tp = table[name]
        if key in seen:
            raise ConfigError(key, f"set by both {seen[key]} and {name}; keep one", source)
        seen[key] = name
        _set_path(raw, key, _parse_env_value(tp, env[name], key, source), where, source)


def _parse_env_value(tp: Any, text: str, key: str, source: str) -> object:
    if tp is bool:
        return parse_bool(text, key, source)
    if tp is int:
        try:
            if re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
                return int(text)
        except ValueError:  # more digits than int() accepts
            pass
        raise ConfigError(key, f"expected an integer, got {_clip(text)!r}", source)
    if typing.get_origin(tp) is tuple:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(key, f'expected a JSON array, e.g. ["..."]: {exc}', source) from None
    if tp is StringMap:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(key, f'expected a JSON object, e.g. {{"X-Name": "value"}}: {exc}', source) from None
    return text  # str, and durations (parsed by the schema walk)


@functools.cache
def _env_table() -> dict[str, tuple[str, Any]]:
    """Environment variable name → (dotted key, type), by walking the schema (``TRUNKLINE_TLS_*`` included)."""
    table: dict[str, tuple[str, Any]] = {}
    for key, tp in _leaves(Settings, ""):
        spellings = [key]
        if key.startswith("http_server.tls."):
            spellings.append(key.removeprefix("http_server."))
        for spelled in spellings:
            name = env_var_for(spelled)
            if name in table:  # pragma: no cover - a schema bug, caught by the tests
                raise RuntimeError(f"{name} would name both {table[name][0]} and {key}")
            table[name] = (key, tp)
    return table


# ---------------------------------------------------------------------------------------------
# Schema walk: raw data → typed settings
# ---------------------------------------------------------------------------------------------


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _leaves(cls: type, key: str) -> Iterator[tuple[str, Any]]:
    for name, tp in _schema(cls).items():
        sub = _join(key, name)
        if _is_section(tp):
            yield from _leaves(tp, sub)
        else:
            yield sub, tp


def _build(raw: Mapping[str, Any], where: _Sources) -> Settings:
    settings = _convert(Settings, raw, "", where)
    assert isinstance(settings, Settings)
    _validate(settings, where)
    return settings


def _convert(tp: Any, value: object, key: str, where: _Sources) -> Any:
    if _is_section(tp):
        return _convert_section(tp, value, key, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected a boolean (true or false), got {_describe(value)}", where(key))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {_describe(value)}", where(key))
        if value < 0:
            raise ConfigError(key, f"must not be negative, got {value}", where(key))
        return value
    if tp is float:
        return parse_duration(value, key, where(key))
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_describe(value)}", where(key))
        return value
    if typing.get_origin(tp) is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected an array, got {_describe(value)}", where(key))
        return tuple(_convert(item_type, item, f"{key}[{i}]", where) for i, item in enumerate(value))
    if tp is StringMap:  # a table of strings (HTTP headers)
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table of strings, got {_describe(value)}", where(key))
        for name, item in value.items():
            if not isinstance(item, str):
                raise ConfigError(f"{key}.{name}", f"expected a string, got {_describe(item)}", where(key))
        return StringMap(value)
    raise TypeError(f"unsupported settings type {tp!r} for {key}")  # pragma: no cover - a schema bug


def _convert_section(cls: type, value: object, key: str, where: _Sources) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(key or "(top level)", f"expected a table, got {_describe(value)}", where(key))
    fields = _schema(cls)
    kwargs: dict[str, Any] = {}
    errors: list[ConfigError] = []  # every bad key of the section (and below), not just the first
    for name, item in value.items():
        sub = _join(key, str(name))
        try:
            if name not in fields:
                raise ConfigError(sub, _unknown("key", str(name), fields, key), where(sub))
            kwargs[name] = _convert(fields[name], _respell(sub, item), sub, where)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
    for f in dataclasses.fields(cls):
        required = f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs and not any(e.key.startswith(_join(key, f.name)) for e in errors):
            sub = _join(key, f.name)
            errors.append(ConfigError(sub, "is required", where(key)))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
    return cls(**kwargs)


def _respell(key: str, value: object) -> object:
    """Centrifugo's spelling of a value where it differs from ours only in spelling (``warn``)."""
    spellings = SPELLINGS.get(key)
    if spellings is not None and isinstance(value, str):
        return spellings.get(value, value)
    return value


def _unknown(what: str, name: str, fields: Mapping[str, Any], section: str) -> str:
    feature = unsupported(_join(section, name))
    if feature is not None:
        return f"not supported by Trunkline ({feature}); see docs/migrating-from-centrifugo.md"
    close = difflib.get_close_matches(name, list(fields), n=1)
    hint = f"; did you mean {_join(section, close[0])!r}?" if close else ""
    return f"unknown {what}{hint}"


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {_clip(value)!r}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------
# Validation of values and of relations between values
# ---------------------------------------------------------------------------------------------

_NAMESPACE_NAME: Final = re.compile(r"[-a-zA-Z0-9_]{2,}")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_LOG_FORMATS: Final = ("text", "json")
_ENGINES: Final = ("memory", "redis", "nats")
_NATS_HISTORY: Final = ("", "redis")
_NATS_SCHEMES: Final = ("nats", "tls")
_ERROR_MODES: Final = ("", "transport")
_DATA_FORMATS: Final = ("", "json", "json_object", "binary")
_DELTA_TYPES: Final = ("fossil",)
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


def _nats_tokens(prefix: str) -> bool:
    """Whether ``prefix`` is dot-separated, non-empty NATS subject tokens (printable ASCII, no wildcards)."""
    return all(token and all("!" <= c <= "~" and c not in "*>" for c in token) for token in prefix.split("."))


def _validate(s: Settings, where: Callable[[str], str]) -> None:
    def fail(key: str, message: str) -> typing.NoReturn:
        raise ConfigError(key, message, where(key))

    def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            fail(key, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")

    if not 1 <= s.http_server.port <= 65535:
        fail("http_server.port", f"must be between 1 and 65535, got {s.http_server.port}")
    if s.http_server.internal_port > 65535:
        fail("http_server.internal_port", f"must be between 0 and 65535, got {s.http_server.internal_port}")
    tls = s.http_server.tls
    if tls.enabled:
        missing = [name for name in ("cert_pem_file", "key_pem_file") if not getattr(tls, name)]
        if missing:
            fail("http_server.tls.enabled", f"TLS needs {' and '.join('http_server.tls.' + m for m in missing)}")
    for i, network in enumerate(s.http_server.trusted_proxies):
        try:
            ipaddress.ip_network(network.strip(), strict=False)
        except ValueError:
            fail(f"http_server.trusted_proxies[{i}]", f"must be an IP address or CIDR network, got {network!r}")

    client = s.client
    if client.ping_interval > 0 and client.pong_timeout >= client.ping_interval:
        fail("client.pong_timeout", "must be less than client.ping_interval")
    for i, origin in enumerate(client.allowed_origins):
        if not origin.strip():
            fail(f"client.allowed_origins[{i}]", "must not be empty")
    for section in ("token", "subscription_token"):
        endpoint = getattr(client, section).jwks_public_endpoint
        if endpoint and not endpoint.startswith(("http://", "https://")):
            fail(f"client.{section}.jwks_public_endpoint", "must be an http:// or https:// URL")

    _validate_transports(s, fail)
    if s.poll.max_wait < 0:
        fail("poll.max_wait", "must be 0 or more (seconds)")
    for name in ("max_limit", "max_waiting"):
        if getattr(s.poll, name) < 1:
            fail(f"poll.{name}", "must be at least 1")

    choice("http_api.error_mode", s.http_api.error_mode, _ERROR_MODES)
    if not s.http_api.handler_prefix.startswith("/"):
        fail("http_api.handler_prefix", f"must start with '/', got {s.http_api.handler_prefix!r}")

    channel = s.channel
    for name in ("private_prefix", "namespace_boundary", "user_boundary", "user_separator"):
        if not getattr(channel, name):
            fail(f"channel.{name}", "must not be empty")
    _validate_options(channel.without_namespace, "channel.without_namespace", fail)
    first_index: dict[str, int] = {}
    for i, ns in enumerate(channel.namespaces):
        prefix = f"channel.namespaces[{i}]"
        if not _NAMESPACE_NAME.fullmatch(ns.name):
            fail(f"{prefix}.name", f"{ns.name!r} must match ^[-a-zA-Z0-9_]{{2,}}$")
        if ns.name in first_index:
            fail(f"{prefix}.name", f"duplicate namespace {ns.name!r} (also channel.namespaces[{first_index[ns.name]}])")
        first_index[ns.name] = i
        _validate_options(ns, prefix, fail)
    spaces = [("channel.without_namespace", channel.without_namespace)]
    spaces += [(f"channel.namespaces[{i}]", ns) for i, ns in enumerate(channel.namespaces)]
    for prefix, opts in spaces:
        _validate_presence_prefixes(s, opts, prefix, fail)

    personal = client.subscribe_to_user_personal_channel
    key = "client.subscribe_to_user_personal_channel"
    if personal.personal_channel_namespace and s.namespace(personal.personal_channel_namespace) is None:
        fail(f"{key}.personal_channel_namespace", f"no namespace named {personal.personal_channel_namespace!r}")
    options = s.namespace(personal.personal_channel_namespace)
    if personal.enabled and personal.single_connection and options is not None and not options.presence:
        fail(f"{key}.single_connection", "needs presence enabled in the personal channel's namespace")

    choice("engine.type", s.engine.type, _ENGINES)
    _validate_redis(s, fail)
    _validate_map_broker(s, fail)
    nats_url = s.engine.nats.url
    try:
        nats_scheme = urlsplit(nats_url).scheme
    except ValueError as exc:
        fail("engine.nats.url", f"is not a valid URL: {exc}")
    if nats_scheme not in _NATS_SCHEMES:
        fail("engine.nats.url", "must be a nats:// or tls:// URL")
    if not _nats_tokens(s.engine.nats.prefix):
        fail("engine.nats.prefix", "must be non-empty NATS subject tokens (ASCII, no spaces, '*' or '>')")
    choice("engine.nats.history", s.engine.nats.history, _NATS_HISTORY)
    if s.engine.type == "nats" and not s.engine.nats.history and personal.enabled and personal.single_connection:
        fail(f"{key}.single_connection", 'needs presence, which NATS alone lacks (engine.nats.history = "redis")')
    for key in ("dial_timeout", "write_timeout"):
        if getattr(s.engine.nats, key) <= 0:
            fail(f"engine.nats.{key}", "must be above 0")

    if s.client.presence_update_interval <= 0:
        fail("client.presence_update_interval", "must be above 0")
    if s.channel.position_check_interval <= 0:
        fail("channel.position_check_interval", "must be above 0")

    admin = s.admin
    if admin.enabled and not admin.insecure and not (admin.password and admin.secret):
        fail("admin.enabled", "needs admin.password and admin.secret (or admin.insecure = true)")
    if admin.secret and admin.secret == s.client.token.hmac_secret_key:
        fail("admin.secret", "must differ from client.token.hmac_secret_key (client tokens would sign admin ones)")

    choice("log.level", s.log.level, _LOG_LEVELS)
    choice("log.format", s.log.format, _LOG_FORMATS)
    _validate_mqtt(s, fail)
    _validate_proxies(s, fail)
    _validate_shared_poll_proxies(s, fail)


def _validate_shared_poll_proxies(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """Shared-poll namespaces need the HMAC secret and a refresh proxy (named, or the default)."""
    sp = s.shared_poll
    if sp.concurrency_limit < 1:
        fail("shared_poll.concurrency_limit", "must be at least 1")
    if sp.hmac_previous_secret_key_valid_until < 0:
        fail("shared_poll.hmac_previous_secret_key_valid_until", "must be 0 or a Unix time")
    channel = s.channel
    refresh = channel.proxy.shared_poll_refresh
    for name in ("http_headers", "include_connection_meta", "binary_encoding"):
        if getattr(refresh, name):
            fail(
                f"channel.proxy.shared_poll_refresh.{name}",
                "a refresh call serves every connection tracking the keys, not one connection: not applicable",
            )
    spaces = [("channel.without_namespace", channel.without_namespace)]
    spaces += [(f"channel.namespaces[{i}]", ns) for i, ns in enumerate(channel.namespaces)]
    names = {p.name for p in s.proxies}
    for prefix, o in spaces:
        if o.subscription_type != "shared_poll":
            continue
        if not sp.hmac_secret_key:
            fail("shared_poll.hmac_secret_key", f"is required by {prefix} (subscription_type = 'shared_poll')")
        name = o.shared_poll.proxy_name
        if name and name != "default":
            if name not in names:
                fail(f"{prefix}.shared_poll.proxy_name", f"no proxy named {name!r} in proxies")
        elif not channel.proxy.shared_poll_refresh.endpoint:
            fail(f"{prefix}.shared_poll.proxy_name", "needs channel.proxy.shared_poll_refresh.endpoint or a proxy name")
        else:
            _validate_proxy(channel.proxy.shared_poll_refresh, "channel.proxy.shared_poll_refresh", fail)


_MQTT_MODES: Final = ("namespace", "prefix")
_MAX_PACKET: Final = 268435455  # the largest remaining length MQTT can encode, plus headers


def _address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``) with a port 0-65535, or None."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host.strip("[]"), int(port)


def _validate_redis(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """One server, consistent shards (several addresses), a cluster or Sentinel: one of them."""
    r = s.engine.redis
    urls = r.addresses
    if not urls:
        fail("engine.redis.address", "must be a redis://, rediss:// or unix:// URL")
    for address in urls:
        try:
            scheme = urlsplit(address).scheme
        except ValueError as exc:
            fail("engine.redis.address", f"is not a valid URL: {exc}")
        if scheme not in _REDIS_SCHEMES:
            fail("engine.redis.address", "must be a redis://, rediss:// or unix:// URL (or a list of them: shards)")
    for key, shards in (("cluster_address", r.cluster_address), ("sentinel_address", r.sentinel_address)):
        for shard in shards:  # one shard per entry (Centrifugo): its nodes comma-separated
            for node in shard.split(","):
                if not _REDIS_NODE.fullmatch(node.strip()):
                    fail(f"engine.redis.{key}", f"entries are host:port lists (comma-separated), got {shard!r}")
    if r.cluster_address and r.sentinel_address:
        fail("engine.redis.sentinel_address", "set either cluster_address or sentinel_address, not both")
    if (r.cluster_address or r.sentinel_address) and len(urls) > 1:
        fail("engine.redis.address", "several addresses (shards) cannot go with cluster_address or sentinel_address")
    if r.sentinel_address and not r.sentinel_master_name:
        fail("engine.redis.sentinel_master_name", "is required with sentinel_address")
    uses_redis = s.engine.type == "redis" or (s.engine.type == "nats" and s.engine.nats.history == "redis")
    if s.engine.type == "nats" and uses_redis and (len(urls) > 1 or r.cluster_address or r.sentinel_address):
        fail("engine.nats.history", "keeps history in one Redis server: engine.redis.address must be one URL")


_REDIS_NODE: Final = re.compile(r"(rediss?://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}/?")


def _validate_mqtt(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    m = s.mqtt
    if not m.websocket.path.startswith("/"):
        fail("mqtt.websocket.path", f"must start with '/', got {m.websocket.path!r}")
    if m.websocket.path.startswith("/connection/") or m.websocket.path == "/":
        fail("mqtt.websocket.path", f"{m.websocket.path!r} is taken by another endpoint")
    for key, value in (("mqtt.tcp.address", m.tcp.address), ("mqtt.tls.address", m.tls.address)):
        if _address(value) is None:
            fail(key, f"must be host:port with a port from 0 to 65535, got {value!r}")
    if m.tls.enabled:
        missing = [name for name in ("cert_pem_file", "key_pem_file") if not getattr(m.tls, name)]
        if missing:
            fail("mqtt.tls.enabled", f"TLS needs {' and '.join('mqtt.tls.' + n for n in missing)}")
    if not 16 <= m.max_packet_size <= _MAX_PACKET:
        fail("mqtt.max_packet_size", f"must be between 16 and {_MAX_PACKET}, got {m.max_packet_size}")
    for name in ("receive_maximum", "max_inflight"):
        if not 1 <= getattr(m, name) <= 65535:
            fail(f"mqtt.{name}", f"must be between 1 and 65535, got {getattr(m, name)}")
    if m.max_stored_sessions < 0:
        fail("mqtt.max_stored_sessions", f"must be 0 (unlimited) or more, got {m.max_stored_sessions}")
    if not 1 <= m.max_keepalive <= 65535:
        fail("mqtt.max_keepalive", f"must be between 1s and 65535s, got {m.max_keepalive}")
    if m.session_expiry_max > 4294967295:
        fail("mqtt.session_expiry_max", "must be at most 4294967295s (MQTT's limit)")
    choice = m.topic_mapping.mode
    if choice not in _MQTT_MODES:
        fail("mqtt.topic_mapping.mode", f"must be one of {', '.join(repr(a) for a in _MQTT_MODES)}, got {choice!r}")
    if choice == "prefix" and s.namespace(m.topic_mapping.prefix) is None:
        fail("mqtt.topic_mapping.prefix", f"no namespace named {m.topic_mapping.prefix!r}")
    if m.retained.map_channel_prefix:
        value = m.retained.map_channel_prefix
        ns_name, sep, _ = value.partition(s.channel.namespace_boundary)
        target = s.namespace(ns_name) if sep and ns_name else None
        if target is None or target.subscription_type != "map":
            fail(
                "mqtt.retained.map_channel_prefix",
                f"must start with the name of a namespace of subscription_type 'map' and"
                f" {s.channel.namespace_boundary!r} (like 'retained{s.channel.namespace_boundary}'), got {value!r}",
            )
    if m.websocket.enabled or m.tcp.enabled or m.tls.enabled:
        # The topic <-> channel mapping (trunkline.mqtt.topics) needs one punctuation character for each
        # boundary, distinct from '/' (MQTT levels) and from the escape and wildcard characters.
        for name in ("namespace_boundary", "user_boundary"):
            value = getattr(s.channel, name)
            banned = "%*&+/" + ("#" if name == "namespace_boundary" else "")
            if len(value) != 1 or not value.isascii() or value.isalnum() or value.isspace() or value in banned:
                fail(
                    f"channel.{name}",
                    f"with MQTT enabled must be one ASCII punctuation character, not in {banned!r}; got {value!r}",
                )
        if s.channel.namespace_boundary == s.channel.user_boundary:
            fail("channel.user_boundary", "must differ from channel.namespace_boundary when MQTT is enabled")


_HTTP_TRANSPORTS: Final = ("http_stream", "sse", "emulation", "uni_websocket", "uni_sse", "uni_http_stream", "poll")


def _validate_transports(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """Handler paths of the HTTP transports start with '/' and differ; request bodies are bounded."""
    seen: dict[str, str] = {"/connection/websocket": "the WebSocket endpoint"}
    for section in _HTTP_TRANSPORTS:
        opts = getattr(s, section)
        prefix = opts.handler_prefix
        if not prefix.startswith("/"):
            fail(f"{section}.handler_prefix", f"must start with '/', got {prefix!r}")
        if prefix in seen:
            fail(f"{section}.handler_prefix", f"{prefix!r} is already {seen[prefix]}")
        seen[prefix] = f"{section}.handler_prefix"
        if hasattr(opts, "max_request_body_size") and opts.max_request_body_size <= 0:
            fail(f"{section}.max_request_body_size", "must be above 0 (bytes)")


def _validate_options(opts: NamespaceOptions, prefix: str, fail: Callable[[str, str], typing.NoReturn]) -> None:
    if opts.history_size > 0 and opts.history_ttl <= 0:
        fail(f"{prefix}.history_size", "history_size > 0 requires history_ttl > 0")
    if opts.history_ttl > 0 and opts.history_size <= 0:
        fail(f"{prefix}.history_ttl", "history_ttl > 0 requires history_size > 0")
    for name in ("force_recovery", "allow_recovery", "force_positioning", "allow_positioning"):
        if getattr(opts, name) and not opts.history_enabled:
            fail(f"{prefix}.{name}", "needs history (history_size > 0 and history_ttl > 0)")
    if opts.channel_regex:
        try:
            re.compile(opts.channel_regex)
        except re.error as exc:
            fail(f"{prefix}.channel_regex", f"does not compile: {exc}")
    if opts.publication_data_format not in _DATA_FORMATS:
        allowed = ", ".join(repr(a) for a in _DATA_FORMATS)
        fail(f"{prefix}.publication_data_format", f"must be one of {allowed}, got {opts.publication_data_format!r}")
    for i, delta in enumerate(opts.allowed_delta_types):
        if delta not in _DELTA_TYPES:
            fail(f"{prefix}.allowed_delta_types[{i}]", f"unknown delta type {delta!r}; known: fossil")
    _validate_map(opts, prefix, fail)
    _validate_shared_poll(opts, prefix, fail)


_MAP_BROKERS: Final = ("memory", "redis")
_CLIENT_KEYS: Final = ("", "client_id", "user_id")


def _validate_map_broker(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    mb = s.map_broker
    if mb.type == "postgres":
        fail("map_broker.type", 'the PostgreSQL map broker is not supported by Trunkline; use "memory" or "redis"')
    if mb.type not in _MAP_BROKERS:
        fail("map_broker.type", f"must be one of {', '.join(repr(a) for a in _MAP_BROKERS)}, got {mb.type!r}")
    if mb.redis.address:
        try:
            scheme = urlsplit(mb.redis.address).scheme
        except ValueError as exc:
            fail("map_broker.redis.address", f"is not a valid URL: {exc}")
        if scheme not in _REDIS_SCHEMES:
            fail("map_broker.redis.address", "must be a redis://, rediss:// or unix:// URL (or empty: engine.redis)")
    if mb.cleanup_interval <= 0:
        fail("map_broker.cleanup_interval", "must be above 0")
    if mb.cleanup_batch_size < 1:
        fail("map_broker.cleanup_batch_size", "must be at least 1")


def _validate_shared_poll(opts: NamespaceOptions, prefix: str, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """The ``shared_poll`` block: only in shared-poll namespaces, with sane bounds, nothing stream-only."""
    sp = opts.shared_poll
    key = f"{prefix}.shared_poll"
    if opts.subscription_type != "shared_poll":
        if sp != SharedPollNamespace():
            fail(key, "is only read in a namespace with subscription_type = 'shared_poll'")
        return
    if sp.mode not in SHARED_POLL_MODES:
        allowed = ", ".join(repr(a) for a in SHARED_POLL_MODES)
        fail(f"{key}.mode", f"must be one of {allowed}, got {sp.mode!r}")
    if sp.refresh_interval <= 0:
        fail(f"{key}.refresh_interval", "must be above 0")
    for name in ("refresh_batch_size", "max_keys_per_connection"):
        if getattr(sp, name) < 1:
            fail(f"{key}.{name}", "must be at least 1")
    for name in ("channel_shutdown_delay", "track_expired_extra_delay"):
        if getattr(sp, name) < 0:
            fail(f"{key}.{name}", "must be 0 or more (seconds)")
    if sp.max_keys_per_channel < 0:
        fail(f"{key}.max_keys_per_channel", "must be 0 (no limit) or more")
    for name in ("history_size", "presence", "join_leave", "force_recovery", "force_positioning", "delta_publish"):
        if getattr(opts, name):
            fail(f"{prefix}.{name}", "a shared-poll namespace has no stream, presence or recovery")


def _validate_map(opts: NamespaceOptions, prefix: str, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """The ``map`` block of a namespace: required mode and TTL, sane page sizes, nothing stream-only."""
    m = opts.map
    key = f"{prefix}.map"
    if opts.subscription_type not in SUBSCRIPTION_TYPES:
        allowed = ", ".join(repr(a) for a in SUBSCRIPTION_TYPES)
        fail(f"{prefix}.subscription_type", f"must be one of {allowed}, got {opts.subscription_type!r}")
    if m.client_key not in _CLIENT_KEYS:
        allowed = ", ".join(repr(a) for a in _CLIENT_KEYS)
        fail(f"{key}.client_key", f"must be one of {allowed}, got {m.client_key!r}")
    if not opts.is_map:
        if m != MapNamespace():
            fail(
                f"{key}.mode" if m.mode else key,
                f"needs subscription_type 'map', 'map_clients' or 'map_users' (is {opts.subscription_type!r})",
            )
        return
    if not m.mode:
        fail(
            f"{key}.mode",
            f"is required when subscription_type is {opts.subscription_type!r} (ephemeral, durable or persistent)",
        )
    if m.mode not in MAP_MODES:
        allowed = ", ".join(repr(a) for a in MAP_MODES)
        fail(f"{key}.mode", f"must be one of {allowed} (or 'recoverable' for durable), got {m.mode!r}")
    if opts.subscription_type == "map" and m.mode != "persistent" and m.key_ttl <= 0:
        fail(f"{key}.key_ttl", f"is required for the {m.mode} mode (keys expire); or use mode 'persistent'")
    if m.mode == "ephemeral" and m.stream_size > 0:
        fail(f"{key}.stream_size", "the ephemeral mode keeps no stream; use mode 'durable' or 'persistent'")
    if opts.history_size or opts.history_ttl:
        name = "history_size" if opts.history_size else "history_ttl"
        fail(f"{prefix}.{name}", "a map namespace keeps no history; its stream is map.stream_size and map.stream_ttl")
    if opts.delta_publish or opts.allowed_delta_types:
        name = "delta_publish" if opts.delta_publish else "allowed_delta_types"
        fail(f"{prefix}.{name}", "delta compression is not supported for map subscriptions in Trunkline")
    if m.min_page_size < 1:
        fail(f"{key}.min_page_size", "must be at least 1")
    if m.max_page_size < m.min_page_size:
        fail(f"{key}.max_page_size", f"must be at least map.min_page_size ({m.min_page_size})")
    if not m.min_page_size <= m.default_page_size <= m.max_page_size:
        fail(
            f"{key}.default_page_size",
            f"must be between map.min_page_size and map.max_page_size ({m.min_page_size}-{m.max_page_size})",
        )
    if m.subscribe_catch_up_timeout <= 0:
        fail(f"{key}.subscribe_catch_up_timeout", "must be above 0")


def _validate_presence_prefixes(
    s: Settings, opts: NamespaceOptions, prefix: str, fail: Callable[[str, str], typing.NoReturn]
) -> None:
    """A presence prefix that names a namespace (``clients:``) names one of the matching map type."""
    boundary = s.channel.namespace_boundary
    for name, wanted in (
        ("map_clients_presence_channel_prefix", "map_clients"),
        ("map_users_presence_channel_prefix", "map_users"),
    ):
        value = getattr(opts, name)
        if not value:
            continue
        if opts.subscription_type in ("map_clients", "map_users"):
            fail(f"{prefix}.{name}", "a presence namespace cannot itself publish presence")
        ns_name, sep, _ = value.partition(boundary)
        target = s.namespace(ns_name) if sep else None
        if sep and target is None:
            fail(f"{prefix}.{name}", f"{value!r} names namespace {ns_name!r}, which does not exist")
        if target is not None and target.subscription_type != wanted:
            fail(
                f"{prefix}.{name}",
                f"{value!r} names namespace {ns_name!r}, whose subscription_type must be {wanted!r}"
                f" (is {target.subscription_type!r})",
            )


_PROXY_NAME: Final = re.compile(r"[-a-zA-Z0-9_.]{2,}")


def _validate_proxy(p: ProxyOptions, prefix: str, fail: Callable[[str, str], typing.NoReturn]) -> None:
    if p.endpoint.startswith("grpc://"):
        fail(f"{prefix}.endpoint", "gRPC proxies are not supported by Trunkline; use an http:// or https:// URL")
    if not p.endpoint.startswith(("http://", "https://")):
        fail(f"{prefix}.endpoint", f"must be an http:// or https:// URL, got {p.endpoint!r}")
    if p.timeout <= 0:
        fail(f"{prefix}.timeout", "must be above 0")
    if p.max_concurrent_requests < 1:
        fail(f"{prefix}.max_concurrent_requests", "must be at least 1")
    for i, header in enumerate(p.http_headers):
        if not header.strip():
            fail(f"{prefix}.http_headers[{i}]", "must not be empty")
    for i, t in enumerate(p.http.status_to_code_transforms):
        key = f"{prefix}.http.status_to_code_transforms[{i}]"
        if not 100 <= t.status_code <= 599:
            fail(f"{key}.status_code", f"must be an HTTP status (100-599), got {t.status_code}")
        if (t.to_error.code > 0) == (t.to_disconnect.code > 0):
            fail(key, "needs exactly one of to_error.code and to_disconnect.code")
        if t.to_disconnect.code and not 3000 <= t.to_disconnect.code <= 4999:
            fail(f"{key}.to_disconnect.code", f"must be between 3000 and 4999, got {t.to_disconnect.code}")


def _validate_proxies(s: Settings, fail: Callable[[str, str], typing.NoReturn]) -> None:
    """Enabled proxies have an http(s) endpoint; every proxy name used is defined once."""
    names: dict[str, int] = {}
    for i, named in enumerate(s.proxies):
        if not _PROXY_NAME.fullmatch(named.name):
            fail(f"proxies[{i}].name", f"{named.name!r} must match ^[-a-zA-Z0-9_.]{{2,}}$")
        if named.name in names:
            fail(f"proxies[{i}].name", f"duplicate proxy {named.name!r} (also proxies[{names[named.name]}])")
        names[named.name] = i
        _validate_proxy(named, f"proxies[{i}]", fail)
    for event in ("connect", "refresh"):
        opts = getattr(s.client.proxy, event)
        if opts.enabled:
            _validate_proxy(opts, f"client.proxy.{event}", fail)
    if s.client.proxy.connect.include_connection_meta:
        fail(
            "client.proxy.connect.include_connection_meta",
            "a connection has no meta before its connect proxy answers (the answer sets it); "
            "set it on the refresh, subscribe, publish, sub_refresh or rpc proxies",
        )

    def check(enabled: bool, name: str, key: str, default: ProxyOptions, default_key: str) -> None:
        if not enabled:
            return
        if name:
            if name not in names:
                fail(key, f"no proxy named {name!r} in proxies")
        elif not default.endpoint:
            fail(key.rpartition("_name")[0] + "_enabled", f"needs {default_key}.endpoint or a proxy name")
        else:
            _validate_proxy(default, default_key, fail)

    channel = s.channel
    spaces = [("channel.without_namespace", channel.without_namespace)]
    spaces += [(f"channel.namespaces[{i}]", ns) for i, ns in enumerate(channel.namespaces)]
    for prefix, o in spaces:
        for event in ("subscribe", "publish", "sub_refresh"):
            check(
                getattr(o, f"{event}_proxy_enabled"),
                getattr(o, f"{event}_proxy_name"),
                f"{prefix}.{event}_proxy_name",
                getattr(channel.proxy, event),
                f"channel.proxy.{event}",
            )
    rpc = s.rpc
    if not rpc.namespace_boundary:
        fail("rpc.namespace_boundary", "must not be empty")
    rpc_spaces = [("rpc.without_namespace", rpc.without_namespace)]
    seen: dict[str, int] = {}
    for i, rns in enumerate(rpc.namespaces):
        if not _PROXY_NAME.fullmatch(rns.name):
            fail(f"rpc.namespaces[{i}].name", f"{rns.name!r} must match ^[-a-zA-Z0-9_.]{{2,}}$")
        if rns.name in seen:
            fail(
                f"rpc.namespaces[{i}].name",
                f"duplicate RPC namespace {rns.name!r} (also rpc.namespaces[{seen[rns.name]}])",
            )
        seen[rns.name] = i
        rpc_spaces.append((f"rpc.namespaces[{i}]", rns))
    for prefix, r in rpc_spaces:
        check(r.proxy_enabled, r.proxy_name, f"{prefix}.proxy_name", rpc.proxy, "rpc.proxy")


# ---------------------------------------------------------------------------------------------
# Masked plain view
# ---------------------------------------------------------------------------------------------


def _to_plain(value: object, key: str) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value) if f.init]
        if "name" in fields:  # a namespace reads best with its name first
            fields.remove("name")
            fields.insert(0, "name")
        return {name: _to_plain(getattr(value, name), _join(key, name)) for name in fields}
    if isinstance(value, StringMap):  # static proxy headers: values may be credentials
        return {name: _MASK if item else item for name, item in value.items()}
    if isinstance(value, tuple):
        return [_to_plain(item, f"{key}[]") for item in value]
    if isinstance(value, str) and value:
        if key in _SECRETS:
            return _MASK
        if key in _URLS_WITH_PASSWORD:
            return ",".join(_mask_url_password(part) for part in value.split(","))
    return value


def _mask_url_password(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host``; also a ``password=`` query parameter."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password:
        url = parts._replace(netloc=f"{user}:{_MASK}@{host}").geturl()
    return re.sub(r"([?&]password=)[^&#]+", rf"\1{_MASK}", url)
