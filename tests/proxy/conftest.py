"""The backend process the proxy tests talk to, and Trunkline's proxy configuration for it."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backend_process import backend_process

BACKEND = Path(__file__).with_name("backend.py")


@dataclass
class Backend:
    url: str
    process: subprocess.Popen[bytes]

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/requests", timeout=5) as resp:
            found: list[dict[str, Any]] = json.loads(resp.read())
        return [r for r in found if path is None or r["path"] == path]


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with backend_process(BACKEND, "the proxy backend") as (url, process):
        yield Backend(url, process)


def proxy_config(url: str, *, connect_ttl: int = 0) -> dict[str, Any]:
    """Connect/refresh proxies, channel proxies per namespace, RPC proxies, misbehaving named proxies."""

    def ns(name: str, proxy: str = "", **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "subscribe_proxy_enabled": True,
            "subscribe_proxy_name": proxy,
            "publish_proxy_enabled": True,
            "publish_proxy_name": proxy,
            "history_size": 10,
            "history_ttl": "60s",
            **extra,
        }

    connect = f"{url}/connect" + (f"?ttl={connect_ttl}" if connect_ttl else "")
    return {
        "client": {
            "proxy": {
                "connect": {"enabled": True, "endpoint": connect, "http_headers": ["Cookie", "X-Test"]},
                "refresh": {"enabled": True, "endpoint": f"{url}/refresh", "include_connection_meta": True},
            }
        },
        "proxies": [
            {"name": "slow", "endpoint": f"{url}/slow", "timeout": "300ms", "max_concurrent_requests": 4},
            {"name": "fail", "endpoint": f"{url}/fail"},
            {"name": "garbage", "endpoint": f"{url}/garbage"},
            {
                "name": "with-meta",
                "endpoint": f"{url}/subscribe",
                "include_connection_meta": True,
                "http": {"static_headers": {"X-Static": "yes"}},
            },
        ],
        "channel": {
            "proxy": {
                "subscribe": {"endpoint": f"{url}/subscribe"},
                "publish": {"endpoint": f"{url}/publish"},
                "sub_refresh": {"endpoint": f"{url}/sub_refresh"},
            },
            "namespaces": [
                ns("chat"),
                ns("news"),
                ns("slow", "slow"),
                ns("fail", "fail"),
                ns("garbage", "garbage"),
                {"name": "meta", "subscribe_proxy_enabled": True, "subscribe_proxy_name": "with-meta"},
                {"name": "exp", "subscribe_proxy_enabled": True, "sub_refresh_proxy_enabled": True},
            ],
        },
        "rpc": {
            "proxy": {"endpoint": f"{url}/rpc", "include_connection_meta": True},
            "without_namespace": {"proxy_enabled": True},
            "namespaces": [
                {"name": "slow", "proxy_enabled": True, "proxy_name": "slow"},
                {"name": "fail", "proxy_enabled": True, "proxy_name": "fail"},
            ],
        },
    }
