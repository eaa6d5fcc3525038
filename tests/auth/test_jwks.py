"""JWKS: a real JWKS document served over HTTP from 127.0.0.1, caching, rotation, outages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from trunkline.auth import JwksClient, TokenVerifier
from trunkline.auth.jwks import parse_jwks
from trunkline.errors import ClientError, Disconnect

NOW = 1_700_000_000.0


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(NOW) + 3600, **extra}


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


def ed_jwk(key: ed25519.Ed25519PrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def invalid(reason: str) -> Disconnect:
    return Disconnect(3500, f"invalid token: {reason}")


@pytest.fixture(scope="module")
def key_a() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_b() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def key_ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# --------------------------------------------------------------------------- the JWKS server


@dataclass
class JwksServer:
    url: str = ""
    document: Any = field(default_factory=dict)
    status: int = 200
    body: bytes | None = None  # served instead of the JSON document when set
    hang: bool = False
    fetches: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        self.entered.set()
        if self.hang:
            await self.release.wait()
        if self.body is not None:
            return web.Response(body=self.body, status=self.status, content_type="application/json")
        return web.json_response(self.document, status=self.status)


@pytest.fixture
async def server(key_a: rsa.RSAPrivateKey) -> AsyncIterator[JwksServer]:
    state = JwksServer(document={"keys": [rsa_jwk(key_a, "a")]})
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/.well-known/jwks.json"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture
async def verifier(server: JwksServer) -> AsyncIterator[TokenVerifier]:
    v = TokenVerifier(jwks_public_endpoint=server.url, jwks_timeout=2.0)
    try:
        yield v
    finally:
        await v.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- verification


async def test_verify_with_kid(server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    assert verifier.configured
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):  # no "alg" in the JWK: the RSA family
        token = jwt.encode(claims(), key_a, algorithm=alg, headers={"kid": "a"})
        assert (await verifier.verify_connection(token, NOW)).user == "alice"
    sub = jwt.encode(claims(channel="$c"), key_a, algorithm="RS256", headers={"kid": "a"})
    assert (await verifier.verify_subscription(sub, NOW)).channel == "$c"
    assert server.fetches == 1


async def test_ec_and_okp_keys(
    server: JwksServer, verifier: TokenVerifier, key_ec: ec.EllipticCurvePrivateKey, key_ed: ed25519.Ed25519PrivateKey
) -> None:
    server.document = {"keys": [ec_jwk(key_ec, "ec"), ed_jwk(key_ed, "ed", alg="EdDSA")]}
    token = jwt.encode(claims(), key_ec, algorithm="ES256", headers={"kid": "ec"})
    assert (await verifier.verify_connection(token, NOW)).user == "alice"
    token = jwt.encode(claims(), key_ed, algorithm="EdDSA", headers={"kid": "ed"})
    assert (await verifier.verify_connection(token, NOW)).user == "alice"
    # The EC key's curve is P-256: ES384 with that kid is not allowed.
    forged = jwt.encode(claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384", headers={"kid": "ec"})
    with pytest.raises(Disconnect) as info:
        await verifier.verify_connection(forged, NOW)
    assert info.value == invalid("algorithm not allowed")


async def test_declared_alg_restricts(server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    server.document = {"keys": [rsa_jwk(key_a, "a", alg="PS256")]}
    ok = jwt.encode(claims(), key_a, algorithm="PS256", headers={"kid": "a"})
    assert (await verifier.verify_connection(ok, NOW)).user == "alice"
    other = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
    with pytest.raises(Disconnect) as info:
        await verifier.verify_connection(other, NOW)
    assert info.value == invalid("algorithm not allowed")


async def test_wrong_key_for_kid(server: JwksServer, verifier: TokenVerifier, key_b: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), key_b, algorithm="RS256", headers={"kid": "a"})
    with pytest.raises(Disconnect) as info:
        await verifier.verify_connection(token, NOW)
    assert info.value == invalid("bad signature")


async def test_expired_is_109(verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(exp=int(NOW) - 10), key_a, algorithm="RS256", headers={"kid": "a"})
    with pytest.raises(ClientError) as info:
        await verifier.verify_connection(token, NOW)
    assert info.value.code == 109


async def test_missing_kid(server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), key_a, algorithm="RS256")
    with pytest.raises(Disconnect) as info:
        await verifier.verify_connection(token, NOW)
    assert info.value == invalid("missing kid")
    assert server.fetches == 0


async def test_hmac_never_served_by_jwks(server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    secret = b"jwks-oct-secret-" * 4
    server.document = {"keys": [rsa_jwk(key_a, "a"), {"kty": "oct", "k": b64u(secret), "kid": "h", "alg": "HS256"}]}
    # An HS256 token naming the oct key, and one "signed" with the RSA modulus as secret (confusion).
    hs = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "h"})
    n = server.document["keys"][0]["n"].encode()
    head = b64u(json.dumps({"alg": "HS256", "kid": "a"}).encode())
    body = b64u(json.dumps(claims()).encode())
    confused = f"{head}.{body}.{b64u(hmac.new(n, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    for token in (hs, confused):
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("algorithm not allowed")
    # The oct key is not loaded at all: an RS256 token naming it finds no key.
    rs = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "h"})
    with pytest.raises(Disconnect) as info:
        await verifier.verify_connection(rs, NOW)
    assert info.value == invalid("unknown kid")


async def test_static_keys_alongside_jwks(server: JwksServer, key_a: rsa.RSAPrivateKey) -> None:
    secret = "static-hmac-secret-" * 4
    verifier = TokenVerifier(hmac_secret_key=secret, jwks_public_endpoint=server.url)
    try:
        assert (await verifier.verify_connection(jwt.encode(claims(), secret, algorithm="HS256"), NOW)).user == "alice"
        token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
        assert (await verifier.verify_connection(token, NOW)).user == "alice"
    finally:
        await verifier.close()


# --------------------------------------------------------------------------- caching and rotation


async def test_cache_bounds_fetches(server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    good = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
    for _ in range(50):
        await verifier.verify_connection(good, NOW)
    assert server.fetches == 1
    # Unknown kids may trigger one refetch per 10 s, not one per token.
    for i in range(50):
        token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": f"unknown-{i}"})
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("unknown kid")
    assert server.fetches == 1


async def test_concurrent_cold_cache_fetches_once(
    server: JwksServer, verifier: TokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
    results = await asyncio.gather(*(verifier.verify_connection(token, NOW) for _ in range(30)))
    assert {r.user for r in results} == {"alice"}
    assert server.fetches == 1


async def test_rotation_end_to_end(server: JwksServer, key_a: rsa.RSAPrivateKey, key_b: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(jwks_public_endpoint=server.url, jwks_min_refetch_interval=0.0)
    try:
        old = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
        new = jwt.encode(claims(sub="bob"), key_b, algorithm="RS256", headers={"kid": "b"})
        assert (await verifier.verify_connection(old, NOW)).user == "alice"
        server.document = {"keys": [rsa_jwk(key_b, "b")]}
        assert (await verifier.verify_connection(new, NOW)).user == "bob"  # unknown kid: refetch
        assert server.fetches == 2
        with pytest.raises(Disconnect) as info:  # "a" was retired
            await verifier.verify_connection(old, NOW)
        assert info.value == invalid("unknown kid")
        assert server.fetches == 3
    finally:
        await verifier.close()


async def test_rotation_refetch_is_rate_limited(
    server: JwksServer, key_a: rsa.RSAPrivateKey, key_b: rsa.RSAPrivateKey
) -> None:
    clock = FakeClock()
    client = JwksClient(server.url, clock=clock)
    assert "RS256" in await client.get("a")
    server.document = {"keys": [rsa_jwk(key_a, "a"), rsa_jwk(key_b, "b")]}
    clock.now += 5
    with pytest.raises(Disconnect) as info:
        await client.get("b")
    assert info.value == invalid("unknown kid")
    assert server.fetches == 1  # within 10 s of the last fetch: no refetch
    clock.now += 5
    assert "PS256" in await client.get("b")
    assert server.fetches == 2
    assert client.fetches == 2
    await client.close()


async def test_cache_ttl(server: JwksServer) -> None:
    clock = FakeClock()
    client = JwksClient(server.url, cache_ttl=300, clock=clock)
    await client.get("a")
    clock.now += 299
    await client.get("a")
    assert server.fetches == 1
    clock.now += 2
    await client.get("a")
    assert server.fetches == 2


async def test_stale_keys_serve_while_endpoint_fails(server: JwksServer) -> None:
    clock = FakeClock()
    client = JwksClient(server.url, cache_ttl=300, clock=clock)
    await client.get("a")
    server.status = 500
    clock.now += 400
    assert "RS256" in await client.get("a")  # refetch failed; the known key still verifies
    assert server.fetches == 2
    with pytest.raises(Disconnect) as info:
        await client.get("other")
    assert info.value == invalid("jwks unavailable")
    assert server.fetches == 2  # failures are rate-limited too


# --------------------------------------------------------------------------- outages


async def test_unreachable_endpoint_fails_fast(key_a: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(jwks_public_endpoint=closed_port_url(), jwks_timeout=1.0)
    token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
    try:
        start = time.monotonic()
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("jwks unavailable")
        assert time.monotonic() - start < 1.5
        # Within the refetch interval the failure is answered without another attempt.
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("jwks unavailable")
        assert verifier.jwks is not None
        assert verifier.jwks.fetches == 1
    finally:
        await verifier.close()


async def test_hanging_endpoint_times_out(server: JwksServer, key_a: rsa.RSAPrivateKey) -> None:
    server.hang = True
    verifier = TokenVerifier(jwks_public_endpoint=server.url, jwks_timeout=0.3)
    token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
    try:
        start = time.monotonic()
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("jwks unavailable")
        assert time.monotonic() - start < 1.5
    finally:
        await verifier.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (404, None),
        (200, b"not json"),
        (200, b'{"keys": "nope"}'),
        (200, b'{"keys": []}'),
        (200, b'{"keys": [{"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}]}'),
        (200, b"[" * 10000 + b"]" * 10000),
        (200, b'{"keys": [' + b'{"kty": "oct", "k": "AAAA", "kid": "x"},' * 100_000 + b"{}]}"),  # too large
    ],
)
async def test_bad_responses_are_unavailable(
    server: JwksServer, key_a: rsa.RSAPrivateKey, status: int, body: bytes | None
) -> None:
    server.status = status
    server.body = body
    verifier = TokenVerifier(jwks_public_endpoint=server.url)
    try:
        token = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "a"})
        with pytest.raises(Disconnect) as info:
            await verifier.verify_connection(token, NOW)
        assert info.value == invalid("jwks unavailable")
    finally:
        await verifier.close()


async def test_cancelled_waiter_does_not_cancel_the_fetch(server: JwksServer) -> None:
    server.hang = True
    client = JwksClient(server.url)
    first = asyncio.create_task(client.get("a"))
    second = asyncio.create_task(client.get("a"))
    await server.entered.wait()
    first.cancel()
    await asyncio.wait({first})
    server.release.set()
    assert "RS256" in await second
    assert server.fetches == 1
    assert first.cancelled()


async def test_close_cancels_fetch_in_flight(server: JwksServer) -> None:
    server.hang = True
    client = JwksClient(server.url, timeout=30)
    waiter = asyncio.create_task(client.get("a"))
    await server.entered.wait()
    start = time.monotonic()
    await client.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert time.monotonic() - start < 1


async def test_closed_client(server: JwksServer) -> None:
    client = JwksClient(server.url)
    await client.close()
    with pytest.raises(Disconnect) as info:
        await client.get("a")
    assert info.value == invalid("jwks unavailable")
    assert server.fetches == 0


# --------------------------------------------------------------------------- parsing


def test_parse_jwks_skips_unusable_keys(
    key_a: rsa.RSAPrivateKey, key_ec: ec.EllipticCurvePrivateKey, key_ed: ed25519.Ed25519PrivateKey
) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = {
        "keys": [
            rsa_jwk(key_a, "rsa"),
            rsa_jwk(key_a, "enc", use="enc"),
            {k: v for k, v in rsa_jwk(key_a, "x").items() if k != "kid"},
            rsa_jwk(key_a, "weird-alg", alg="RSA-OAEP"),
            rsa_jwk(key_a, "list-alg", alg=["RS256"]),
            rsa_jwk(key_a, "rs-as-es", alg="ES256"),
            ec_jwk(p384, "p384-as-es256", alg="ES256"),
            ec_jwk(p384, "p384"),
            ec_jwk(key_ec, "p256", alg="ES256"),
            ed_jwk(key_ed, "ed"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
            {"kty": "nope", "kid": "nope"},
            "not an object",
        ]
    }
    keys = parse_jwks(document)
    assert {kid: sorted(algs) for kid, algs in keys.items()} == {
        "rsa": ["PS256", "PS384", "PS512", "RS256", "RS384", "RS512"],
        "p384": ["ES384"],
        "p256": ["ES256"],
        "ed": ["EdDSA"],
    }
    with pytest.raises(ValueError, match="no usable keys"):
        parse_jwks({"keys": [document["keys"][1]]})
    with pytest.raises(ValueError, match="not a JWK set"):
        parse_jwks([])
