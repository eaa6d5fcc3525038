"""The client's address and scheme behind trusted proxies (trunkline.transport.remote)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from trunkline.transport.remote import (
    MAX_HOPS,
    client_address,
    forwarded_https,
    parse_address,
    parse_networks,
    request_client,
    request_is_https,
)

LOCAL = parse_networks(("127.0.0.1/32", "::1"))
PROXIES = parse_networks(("10.0.0.0/8",))


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ('"1.2.3.4"', "1.2.3.4"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:1.2.3.4", str(ipaddress.ip_address("::ffff:1.2.3.4"))),  # spelled differently by 3.13
    ],
)
def test_parse_address(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "unknown", "1.2.3", "1.2.3.4.5", "[::1", "host:80", "_hidden", "1.2.3.4:x:y", "a" * 99]
)
def test_parse_address_refuses_what_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None


def test_parse_networks_skips_bad_entries_and_accepts_host_bits() -> None:
    assert parse_networks(("10.1.2.3/8", "nope", " ::1 ")) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


# --------------------------------------------------------------------------- the client address


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.0.0.5", ["6.6.6.6"], "7.7.7.7", ()) == "10.0.0.5"


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    assert client_address("203.0.113.9", ["6.6.6.6"], "7.7.7.7", PROXIES) == "203.0.113.9"


def test_a_trusted_peer_names_the_client_in_x_forwarded_for() -> None:
    assert client_address("10.0.0.5", ["198.51.100.7"], None, PROXIES) == "198.51.100.7"


def test_the_right_most_untrusted_entry_wins_over_what_the_client_wrote() -> None:
    # the client sent "X-Forwarded-For: 6.6.6.6"; the proxy appended the address it saw
    assert client_address("10.0.0.5", ["6.6.6.6, 198.51.100.7"], None, PROXIES) == "198.51.100.7"


def test_trusted_hops_are_skipped() -> None:
    assert client_address("10.0.0.5", ["198.51.100.7, 10.1.1.1", "10.2.2.2"], None, PROXIES) == "198.51.100.7"


def test_garbage_stops_at_the_trusted_hop_that_wrote_it() -> None:
    assert client_address("10.0.0.5", ["198.51.100.7, nonsense, 10.1.1.1"], None, PROXIES) == "10.1.1.1"
    assert client_address("10.0.0.5", ["unknown"], "198.51.100.7", PROXIES) == "10.0.0.5"


def test_only_trusted_hops_give_the_left_most() -> None:
    assert client_address("127.0.0.1", ["127.0.0.1"], None, LOCAL) == "127.0.0.1"
    assert client_address("10.0.0.5", ["10.9.9.9, 10.1.1.1"], None, PROXIES) == "10.9.9.9"


def test_x_real_ip_when_there_is_no_x_forwarded_for() -> None:
    assert client_address("10.0.0.5", [], "198.51.100.7", PROXIES) == "198.51.100.7"
    assert client_address("10.0.0.5", [], "not an ip", PROXIES) == "10.0.0.5"


def test_an_ipv4_mapped_peer_matches_an_ipv4_network() -> None:
    assert client_address("::ffff:10.0.0.5", ["198.51.100.7"], None, PROXIES) == "198.51.100.7"


def test_ipv6_peer_and_entries() -> None:
    assert client_address("::1", ["2001:db8::7, [::1]:55"], None, LOCAL) == "2001:db8::7"


def test_a_long_chain_is_looked_at_only_so_far() -> None:
    chain = ["198.51.100.7"] + ["10.0.0.1"] * (MAX_HOPS + 5)
    assert client_address("10.0.0.5", [", ".join(chain)], None, PROXIES) == "10.0.0.1"


def test_an_unparseable_peer_is_returned_as_is() -> None:
    assert client_address("", ["198.51.100.7"], None, PROXIES) == ""
    assert client_address("/run/trunkline.sock", ["198.51.100.7"], None, PROXIES) == "/run/trunkline.sock"


# --------------------------------------------------------------------------- the scheme


def test_forwarded_https() -> None:
    assert forwarded_https("10.0.0.5", ["https"], PROXIES)
    assert forwarded_https("10.0.0.5", ["HTTPS , http"], PROXIES)
    assert not forwarded_https("10.0.0.5", ["http"], PROXIES)
    assert not forwarded_https("10.0.0.5", [], PROXIES)
    assert not forwarded_https("203.0.113.9", ["https"], PROXIES)
    assert not forwarded_https("10.0.0.5", ["https"], ())


# --------------------------------------------------------------------------- hypothesis

header_text = st.text(st.characters(codec="latin-1"), max_size=200)
ips = st.ip_addresses().map(str)
entry = st.one_of(ips, header_text, ips.map(lambda ip: f"[{ip}]:80"))


@given(peer=st.one_of(ips, header_text), xff=st.lists(header_text, max_size=4), real=st.none() | header_text)
def test_garbage_never_crashes(peer: str, xff: list[str], real: str | None) -> None:
    for networks in ((), LOCAL, PROXIES, parse_networks(("0.0.0.0/0", "::/0"))):
        result = client_address(peer, xff, real, networks)
        assert isinstance(result, str)
        assert result == peer or parse_address(result) is not None
        assert isinstance(forwarded_https(peer, xff, networks), bool)


@given(peer=ips, xff=st.lists(st.lists(entry, max_size=6).map(", ".join), max_size=3), real=st.none() | entry)
def test_spoofed_headers_from_untrusted_peers_are_ignored(peer: str, xff: list[str], real: str | None) -> None:
    networks = parse_networks(("10.0.0.0/8", "fd00::/8"))
    address = ipaddress.ip_address(peer)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if any(address in n or (mapped is not None and mapped in n) for n in networks):
        return
    assert client_address(peer, xff, real, networks) == peer
    assert not forwarded_https(peer, ["https"], networks)


@given(
    client=ips,
    spoofed=st.lists(entry, max_size=5),
    hops=st.lists(st.sampled_from(["10.0.0.1", "10.3.2.1"]), max_size=5),
)
def test_the_client_a_trusted_chain_saw_is_found_whatever_came_before(
    client: str, spoofed: list[str], hops: list[str]
) -> None:
    address = ipaddress.ip_address(client)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if address in PROXIES[0] or (mapped is not None and mapped in PROXIES[0]):
        return
    chain = ", ".join([*spoofed, client, *hops])
    assert client_address("10.0.0.5", [chain], None, PROXIES) == str(address)


# --------------------------------------------------------------------------- over real sockets


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 that answers with what request_client/request_is_https say."""

    async def handler(request: web.Request) -> web.Response:
        trusted = tuple(request.query.getall("trusted", []))
        return web.json_response(
            {"client": request_client(request, trusted), "https": request_is_https(request, trusted)}
        )

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def _ask(url: str, local: str, params: list[tuple[str, str]], headers: dict[str, str]) -> dict[str, object]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url, params=params, headers=headers) as r:
        assert r.status == 200
        body: dict[str, object] = await r.json()
        return body


async def test_over_a_socket_a_trusted_peer_is_believed_and_another_is_not(echo_server: str) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7", "X-Forwarded-Proto": "https"}
    trusted = [("trusted", "127.0.0.1/32")]
    assert await _ask(echo_server, "127.0.0.1", trusted, spoof) == {"client": "198.51.100.7", "https": True}
    assert await _ask(echo_server, "127.0.0.2", trusted, spoof) == {"client": "127.0.0.2", "https": False}
    assert await _ask(echo_server, "127.0.0.1", [], spoof) == {"client": "127.0.0.1", "https": False}
