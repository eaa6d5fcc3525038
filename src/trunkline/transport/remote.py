"""Who the client is behind a reverse proxy: its address and whether it used HTTPS.

A proxy in ``http_server.trusted_proxies`` tells us the client's address in ``X-Forwarded-For``
(each hop appends the address it saw) or ``X-Real-IP``, and the scheme in ``X-Forwarded-Proto``.
Those headers are believed only when the peer of the TCP connection is such a proxy; from anyone
else they are ignored, so a client cannot pick its own address. In ``X-Forwarded-For`` the
client is the right-most address that is not itself a trusted proxy: entries to its left were
written by the client or by untrusted hops and prove nothing. An entry that is not an address
ends the walk at the trusted hop that wrote it.

The functions are pure (no I/O, never raise on header content); ``request_client`` and
``request_is_https`` read them off an aiohttp request.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from aiohttp import web

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "Networks",
    "client_address",
    "client_ip",
    "forwarded_https",
    "is_https",
    "parse_address",
    "parse_networks",
    "request_client",
    "request_is_https",
]

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks: TypeAlias = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

MAX_HOPS: Final = 32  # X-Forwarded-For entries looked at, right to left
_MAX_ENTRY: Final = 64  # characters of one entry; an address with port and brackets is shorter


@functools.lru_cache(maxsize=32)
def parse_networks(entries: tuple[str, ...]) -> Networks:
    """``("127.0.0.1/32", "::1")`` as networks; entries that are no address or network are skipped.

    ``config`` has refused those already; skipping keeps this total for settings built in code.
    """
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80``)."""
    text = text.strip().strip('"').strip()
    if not text or len(text) > _MAX_ENTRY:
        return None
    if text.startswith("["):
        host, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, networks: Networks) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None and _trusted(mapped, networks):
        return True
    return any(address in network for network in networks)


def client_address(peer: str, forwarded_for: Sequence[str], real_ip: str | None, networks: Networks) -> str:
    """The client's address: ``peer`` unless ``peer`` is a trusted proxy that says otherwise.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value (in order), ``real_ip`` the
    ``X-Real-IP`` value. Addresses taken from headers come back normalized (``str(ip_address)``).
    """
    if not networks:
        return peer
    last = parse_address(peer)
    if last is None or not _trusted(last, networks):
        return peer
    entries = [entry for value in forwarded_for for entry in value.split(",")]
    if entries:
        for entry in reversed(entries[-MAX_HOPS:]):
            address = parse_address(entry)
            if address is None:
                return str(last)  # garbage: believe no further than the trusted hop that wrote it
            if not _trusted(address, networks):
                return str(address)
            last = address
        return str(last)  # every hop is a trusted address: the left-most one looked at
    if real_ip is not None:
        address = parse_address(real_ip)
        if address is not None:
            return str(address)
    return peer


def forwarded_https(peer: str, forwarded_proto: Sequence[str], networks: Networks) -> bool:
    """Whether a trusted proxy at ``peer`` says the client spoke HTTPS (``X-Forwarded-Proto: https``).

    With several values (``https, http``: one per hop) the first is the client-facing one.
    """
    if not networks or not forwarded_proto:
        return False
    address = parse_address(peer)
    if address is None or not _trusted(address, networks):
        return False
    first = forwarded_proto[0].split(",", 1)[0]
    return first.strip().lower() == "https"


def trusted_client(
    peer: str, forwarded_for: Sequence[str], real_ip: str | None, trusted_proxies: tuple[str, ...]
) -> str:
    """:func:`client_address` under ``http_server.trusted_proxies`` (no proxies: the peer, nothing parsed)."""
    if not trusted_proxies:
        return peer
    return client_address(peer, forwarded_for, real_ip, parse_networks(trusted_proxies))


def request_client(request: web.BaseRequest, trusted_proxies: tuple[str, ...]) -> str:
    """The client address of ``request`` (``http_server.trusted_proxies`` as ``trusted_proxies``)."""
    peer = request.remote or ""
    if not trusted_proxies:
        return peer
    headers = request.headers
    return trusted_client(peer, headers.getall("X-Forwarded-For", ()), headers.get("X-Real-IP"), trusted_proxies)


def request_is_https(request: web.BaseRequest, trusted_proxies: tuple[str, ...]) -> bool:
    """Whether the client reached us over HTTPS: directly, or through a trusted TLS-terminating proxy."""
    if request.secure:
        return True
    if not trusted_proxies:
        return False
    proto = request.headers.getall("X-Forwarded-Proto", ())
    return forwarded_https(request.remote or "", proto, parse_networks(trusted_proxies))


def client_ip(request: web.BaseRequest, settings: Settings) -> str:
    """The client address of ``request`` under ``settings.http_server.trusted_proxies`` (for call sites)."""
    return request_client(request, settings.http_server.trusted_proxies)


def is_https(request: web.BaseRequest, settings: Settings) -> bool:
    """Whether ``request`` came over HTTPS under ``settings.http_server.trusted_proxies`` (for call sites)."""
    return request_is_https(request, settings.http_server.trusted_proxies)
