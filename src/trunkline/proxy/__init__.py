"""The proxy to the application backend (Centrifugo's HTTP proxy).

``wire`` builds request bodies and parses answers (no I/O), ``endpoint`` posts them with a
timeout, a bound on requests in flight and metrics, ``registry`` maps events and namespaces to
endpoints, and ``calls`` (a layer above: it knows the session) asks the backend on behalf of a
client command. See docs/proxy.md.
"""

from __future__ import annotations

from .endpoint import Endpoint, ProxyFailure
from .registry import Proxies

__all__ = ["Endpoint", "Proxies", "ProxyFailure"]
