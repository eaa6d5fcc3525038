"""Centrifugo v6 configuration that Trunkline does not implement, by key, with the feature's name.

Trunkline reads Centrifugo's option names, so a Centrifugo config mostly carries over. A key listed
here is a real Centrifugo option: the config loader answers "not supported by Trunkline (<feature>)"
instead of "unknown key", and ``docs/migrating-from-centrifugo.md`` lists the same entries (a test
keeps the two in step). A key under a listed section is covered by the section's entry.
"""

from __future__ import annotations

import re
from typing import Final

UNSUPPORTED: Final[dict[str, str]] = {
    # top-level sections
    "presence_manager": "separate presence manager selection (use engine.type)",
    "map_broker.postgres": "the PostgreSQL map broker (use memory or redis)",
    "map_broker.idempotent_result_ttl": "a separate map idempotency window (channel.idempotent_result_ttl applies)",
    "grpc_api": "the gRPC server API",
    "consumers": "Kafka / PostgreSQL outbox consumers",
    "webtransport": "the WebTransport transport",
    "uni_grpc": "the unidirectional gRPC transport",
    "swagger": "Swagger UI for the server API",
    "debug": "Go profiling endpoints",
    "dev": "the development page",
    "init": "the connection init endpoint",
    "opentelemetry": "OpenTelemetry tracing",
    "graphite": "Graphite metrics export (use Prometheus)",
    "usage_stats": "usage statistics",
    "pid_file": "a PID file (use your process manager)",
    "enable_unreleased_features": "unreleased features",
    # keys inside sections Trunkline has
    "http_server.tls_autocert": "automatic TLS certificates (ACME)",
    "http_server.http3": "HTTP/3",
    "http_server.tls_external": "TLS for external endpoints only",
    "log.file": "logging to a file (logs go to stderr)",
    "client.connect_proxy_name": "a named connect proxy (use client.proxy.connect)",
    "client.refresh_proxy_name": "a named refresh proxy (use client.proxy.refresh)",
    "client.connect_code_to_unidirectional_disconnect": "custom unidirectional disconnect codes",
    "broker.nats.raw_mode": "NATS raw mode",
    "broker.nats.allow_wildcards": "NATS wildcard subscriptions",
    "broker.nats.tls": "TLS client settings for NATS (a tls:// URL with the system CAs works)",
    "admin.external": "serving the admin UI on the external port only (use http_server.internal_port)",
    "http_api.external": "serving the API on the external port only (use http_server.internal_port)",
    "prometheus.instrument_http_handlers": "per-handler HTTP instrumentation",
    "channel.proxy.subscribe_stream": "subscription streams from the backend",
    "channel.namespaces.subscribe_stream_proxy_enabled": "subscription streams from the backend",
    "channel.namespaces.subscribe_stream_proxy_name": "subscription streams from the backend",
    "channel.namespaces.subscribe_stream_bidirectional": "subscription streams from the backend",
    "channel.without_namespace.subscribe_stream_proxy_enabled": "subscription streams from the backend",
    "channel.without_namespace.subscribe_stream_proxy_name": "subscription streams from the backend",
    "channel.without_namespace.subscribe_stream_bidirectional": "subscription streams from the backend",
    "channel.namespaces.map.publish_proxy_enabled": "the map publish proxy",
    "channel.namespaces.map.publish_proxy_name": "the map publish proxy",
    "channel.namespaces.map.remove_proxy_enabled": "the map remove proxy",
    "channel.namespaces.map.remove_proxy_name": "the map remove proxy",
    "channel.namespaces.map.external_state": "map external state",
    "channel.without_namespace.map.publish_proxy_enabled": "the map publish proxy",
    "channel.without_namespace.map.publish_proxy_name": "the map publish proxy",
    "channel.without_namespace.map.remove_proxy_enabled": "the map remove proxy",
    "channel.without_namespace.map.remove_proxy_name": "the map remove proxy",
    "channel.without_namespace.map.external_state": "map external state",
    "rpc.ping": "the built-in RPC ping method",
    "rpc.ping_method": "the built-in RPC ping method",
    # inside every proxy object (client.proxy.connect, channel.proxy.publish, rpc.proxy, proxies[i], ...)
    "proxies.grpc": "gRPC proxies (use an http:// endpoint)",
    "proxies.grpc_metadata": "gRPC proxies (use an http:// endpoint)",
    "proxies.emulated_headers": "headers emulation (forward real headers with http_headers)",
    "proxies.http.tls": "client TLS certificates for the proxy (https:// with the system CAs works)",
}

#: Paths of Centrifugo's proxy configuration objects: a key below one of them is looked up as ``proxies.<key>``.
_PROXY_OBJECT = re.compile(
    r"^(client\.proxy\.(connect|refresh)|channel\.proxy\.(subscribe|publish|sub_refresh)|rpc\.proxy)\."
)

#: Centrifugo spellings that mean the same as Trunkline's, by key: {value as Centrifugo writes it: ours}.
SPELLINGS: Final[dict[str, dict[str, str]]] = {
    "log.level": {"warn": "warning"},
}


def unsupported(key: str) -> str | None:
    """The feature name if ``key`` (dotted) or a section above it is a Centrifugo option Trunkline lacks."""
    key = _PROXY_OBJECT.sub("proxies.", re.sub(r"\[\d+\]", "", key), count=1)
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        feature = UNSUPPORTED.get(".".join(parts[:end]))
        if feature is not None:
            return feature
    return None
