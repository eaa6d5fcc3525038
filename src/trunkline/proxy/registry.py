"""Which endpoint answers which event: built once from the settings, owned by the node.

Connect and refresh use ``client.proxy.connect`` / ``client.proxy.refresh`` when enabled. A
namespace with ``subscribe_proxy_enabled`` (``publish_…``, ``sub_refresh_…``) uses the named
proxy of ``subscribe_proxy_name`` from ``proxies``, or ``channel.proxy.subscribe`` when the name is
empty; a shared-poll namespace uses its ``shared_poll.proxy_name`` or
``channel.proxy.shared_poll_refresh``; an RPC method's namespace (``rpc.namespaces``,
``ns:method``) uses ``proxy_name`` or ``rpc.proxy``. A named proxy referenced from several places
is one endpoint: one bound on its requests in flight, one set of metrics. The settings loader has
already checked every name.
"""

from __future__ import annotations

from ..config import NamespaceOptions, ProxyOptions, Settings
from .endpoint import Endpoint, ProxyMetrics

__all__ = ["Proxies"]


class Proxies:
    def __init__(self, settings: Settings, metrics: ProxyMetrics) -> None:
        self._rpc_settings = settings.rpc
        self._named = {p.name: Endpoint(p.name, f"proxies[name={p.name}]", p, metrics) for p in settings.proxies}
        client = settings.client.proxy
        self.connect = (
            Endpoint("default", "client.proxy.connect", client.connect, metrics) if client.connect.enabled else None
        )
        self.refresh = (
            Endpoint("default", "client.proxy.refresh", client.refresh, metrics) if client.refresh.enabled else None
        )
        channel = settings.channel.proxy
        self._subscribe = _default(channel.subscribe, "channel.proxy.subscribe", metrics)
        self._publish = _default(channel.publish, "channel.proxy.publish", metrics)
        self._sub_refresh = _default(channel.sub_refresh, "channel.proxy.sub_refresh", metrics)
        self._rpc = _default(settings.rpc.proxy, "rpc.proxy", metrics)
        self._shared_poll_refresh = _default(channel.shared_poll_refresh, "channel.proxy.shared_poll_refresh", metrics)

    def _pick(self, enabled: bool, name: str, default: Endpoint | None) -> Endpoint | None:
        if not enabled:
            return None
        return self._named.get(name) if name else default

    def subscribe(self, opts: NamespaceOptions) -> Endpoint | None:
        return self._pick(opts.subscribe_proxy_enabled, opts.subscribe_proxy_name, self._subscribe)

    def publish(self, opts: NamespaceOptions) -> Endpoint | None:
        return self._pick(opts.publish_proxy_enabled, opts.publish_proxy_name, self._publish)

    def sub_refresh(self, opts: NamespaceOptions) -> Endpoint | None:
        return self._pick(opts.sub_refresh_proxy_enabled, opts.sub_refresh_proxy_name, self._sub_refresh)

    def shared_poll_refresh(self, proxy_name: str) -> Endpoint | None:
        """A shared-poll namespace's refresh proxy: ``proxy_name`` from ``proxies``, else the default."""
        if proxy_name and proxy_name != "default":
            return self._named.get(proxy_name)
        return self._shared_poll_refresh

    def rpc(self, method: str) -> Endpoint | None:
        opts = self._rpc_settings.options(method)
        if opts is None:
            return None
        return self._pick(opts.proxy_enabled, opts.proxy_name, self._rpc)

    def endpoints(self) -> list[Endpoint]:
        found = [
            self.connect,
            self.refresh,
            self._subscribe,
            self._publish,
            self._sub_refresh,
            self._rpc,
            self._shared_poll_refresh,
        ]
        return [e for e in found if e is not None] + list(self._named.values())

    async def close(self) -> None:
        for endpoint in self.endpoints():
            await endpoint.close()


def _default(opts: ProxyOptions, where: str, metrics: ProxyMetrics) -> Endpoint | None:
    return Endpoint("default", where, opts, metrics) if opts.endpoint else None
