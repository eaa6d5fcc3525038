"""docs/deploy/nginx.conf and docs/deploy/haproxy.cfg, each in the real proxy in front of a real Trunkline.

nginx 1.22 and HAProxy 2.6 (Debian 12) get the shipped file rendered with free ports and the test
CA's certificate (nothing else changes; without root, HAProxy's chroot/user/group lines go) and
run in the foreground. Every check of ``tests/deploy/checks.py`` runs through each proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Browser

from tests.deploy import checks
from tests.deploy.conftest import DEPLOY, Node, Proxy, Tls, free_port


def _upstreams(proxy: str, node: Node) -> list[tuple[str, str]]:
    """The lines of the shipped file that name the Trunkline node, and what they become."""
    if proxy == "nginx":
        return [
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{node.port};"),
            ("server 127.0.0.1:9000;", f"server 127.0.0.1:{node.internal_port};"),
        ]
    return [
        ("server node1 127.0.0.1:8000", f"server node1 127.0.0.1:{node.port}"),
        ("server node1 127.0.0.1:9000", f"server node1 127.0.0.1:{node.internal_port}"),
        ("check port 9000", f"check port {node.internal_port}"),
    ]


@pytest.fixture(params=["nginx", "haproxy"])
def stack(request: pytest.FixtureRequest, node_factory: Callable[..., Node]) -> tuple[Proxy, Node]:
    # The node needs the proxy's origin (allowed_origins) and the proxy the node's ports: pick the proxy's first.
    name: str = request.param
    https_port = free_port()
    node = node_factory(f"https://127.0.0.1:{https_port}")
    conf = DEPLOY / ("nginx.conf" if name == "nginx" else "haproxy.cfg")
    factory: Callable[..., Proxy] = request.getfixturevalue(f"{name}_factory")
    return factory(conf.read_text(), _upstreams(name, node), https_port=https_port), node


async def test_python_sdk_over_wss(stack: tuple[Proxy, Node], tls: Tls) -> None:
    await checks.sdk_receives_over_wss(*stack, tls)


async def test_chromium_over_websocket_http_stream_and_sse(
    stack: tuple[Proxy, Node], chromium: Callable[..., Awaitable[Browser]]
) -> None:
    await checks.browser_chats(*stack, chromium)


async def test_streams_are_not_buffered(stack: tuple[Proxy, Node], tls: Tls) -> None:
    await checks.streams_pass_unbuffered(*stack, tls)


async def test_the_client_address_is_the_real_one(stack: tuple[Proxy, Node], tls: Tls) -> None:
    await checks.client_address_is_the_real_one(*stack, tls)


async def test_dashboard_cookie_is_secure_behind_tls(stack: tuple[Proxy, Node], tls: Tls) -> None:
    await checks.dashboard_cookie_is_secure_over_https(*stack, tls)


async def test_plain_http_redirects_and_admin_routes_stay_internal(stack: tuple[Proxy, Node], tls: Tls) -> None:
    await checks.plain_http_redirects_to_https(stack[0])
    await checks.admin_routes_stay_internal(stack[0], tls)
