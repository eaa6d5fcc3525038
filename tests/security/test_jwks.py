"""JWKS end to end: a real JWKS endpoint on 127.0.0.1, Trunkline fetching it, real clients connecting."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.conftest import Running, free_port
from tests.security.conftest import Closed, RawClient, b64u, conn_token, hand_signed, sdk_client

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()

    def document(self) -> dict[str, Any]:
        def jwk(text: str, kid: str, **extra: Any) -> dict[str, Any]:
            data: dict[str, Any] = json.loads(text)
            return {**data, "kid": kid, "use": "sig", **extra}

        return {
            "keys": [
                jwk(RSAAlgorithm.to_jwk(self.rsa.public_key()), "rsa-1", alg="RS256"),
                jwk(ECAlgorithm.to_jwk(self.ec.public_key()), "ec-1"),
                jwk(OKPAlgorithm.to_jwk(self.ed.public_key()), "ed-1"),
                # A symmetric key must never be used, whatever a token header says.
                {"kty": "oct", "kid": "sym-1", "k": b64u(b"attacker-known-secret"), "alg": "HS256"},
            ]
        }


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


class JwksEndpoint:
    def __init__(self, keys: Keys) -> None:
        self.document = keys.document()
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.document)


@pytest.fixture
async def jwks(keys: Keys) -> AsyncIterator[JwksEndpoint]:
    endpoint = JwksEndpoint(keys)
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    endpoint.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


async def jwks_server(serve: Serve, url: str) -> Running:
    """A server whose only connection-token keys come from the JWKS endpoint."""
    return await serve({"client": {"token": {"hmac_secret_key": "", "jwks_public_endpoint": url}}})


async def outcome(raw: Raw, running: Running, token: str) -> dict[str, Any] | Closed:
    client = await raw(running.ws_url)
    return await client.connect(token)


async def test_jwks_connect_with_sdk(serve: Serve, jwks: JwksEndpoint, keys: Keys) -> None:
    running = await jwks_server(serve, jwks.url)
    token = conn_token("42", key=keys.rsa, alg="RS256", headers={"kid": "rsa-1"})
    async with sdk_client(running.ws_url, token) as (client, events):
        await client.connect()
        await client.ready(timeout=5)
        assert events.connected and events.connected[0].client
    assert jwks.hits == 1


async def test_jwks_ec_and_okp_keys(serve: Serve, raw: Raw, jwks: JwksEndpoint, keys: Keys) -> None:
    running = await jwks_server(serve, jwks.url)
    for token in (
        conn_token("42", key=keys.ec, alg="ES256", headers={"kid": "ec-1"}),
        conn_token("42", key=keys.ed, alg="EdDSA", headers={"kid": "ed-1"}),
    ):
        result = await outcome(raw, running, token)
        assert isinstance(result, dict) and "connect" in result, result
    assert jwks.hits == 1  # cached


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown kid", "invalid token: unknown kid"),
        ("other key, known kid", "invalid token: bad signature"),
        ("no kid", "invalid token: missing kid"),
        ("alg the key does not declare", "invalid token: algorithm not allowed"),
        ("key of another type", "invalid token: algorithm not allowed"),
        ("symmetric key from the set", "invalid token: algorithm not allowed"),
        ("public key as hmac secret", "invalid token: algorithm not allowed"),
    ],
)
async def test_jwks_refusals(serve: Serve, raw: Raw, jwks: JwksEndpoint, keys: Keys, *, case: str, reason: str) -> None:
    running = await jwks_server(serve, jwks.url)
    claims = {"sub": "42", "exp": int(time.time() + 3600)}
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = {
        "unknown kid": conn_token("42", key=keys.rsa, alg="RS256", headers={"kid": "rsa-9"}),
        "other key, known kid": conn_token("42", key=keys.rsa_other, alg="RS256", headers={"kid": "rsa-1"}),
        "no kid": conn_token("42", key=keys.rsa, alg="RS256"),
        "alg the key does not declare": conn_token("42", key=keys.rsa, alg="PS256", headers={"kid": "rsa-1"}),
        "key of another type": conn_token("42", key=keys.rsa, alg="RS256", headers={"kid": "ec-1"}),
        "symmetric key from the set": hand_signed(
            {"alg": "HS256", "typ": "JWT", "kid": "sym-1"}, claims, b"attacker-known-secret"
        ),
        "public key as hmac secret": hand_signed({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims, pem),
    }[case]
    assert await outcome(raw, running, token) == Closed(3500, reason)


async def test_jwks_unreachable_fails_closed(serve: Serve, raw: Raw, keys: Keys) -> None:
    """No keys, no entry: a token cannot be accepted when the JWKS endpoint is down."""
    running = await jwks_server(serve, f"http://127.0.0.1:{free_port()}/jwks.json")
    token = conn_token("42", key=keys.rsa, alg="RS256", headers={"kid": "rsa-1"})
    assert await outcome(raw, running, token) == Closed(3500, "invalid token: jwks unavailable")
