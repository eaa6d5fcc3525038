"""Connection tokens end to end: forgery, ``alg: none``, algorithm confusion, time and audience checks.

The verifier is unit-tested in ``tests/auth``; here every case goes through a live
server and a real client, and asserts what the client sees: 3500 ``invalid token:
<reason>`` (terminal), or error 109 (the SDK fetches a new token and retries).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import Running, eventually
from tests.security.conftest import (
    SECRET,
    Closed,
    RawClient,
    b64u,
    conn_token,
    hand_signed,
    sdk_client,
    sub_token,
)

Raw = Callable[..., Awaitable[RawClient]]
Serve = Callable[..., Awaitable[Running]]


def public_pem(key: Any) -> str:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


async def refused(raw: Raw, running: Running, token: str) -> Closed:
    client = await raw(running.ws_url)
    result = await client.connect(token)
    assert isinstance(result, Closed), f"token accepted: {result}"
    return result


async def accepted(raw: Raw, running: Running, token: str) -> dict[str, Any]:
    client = await raw(running.ws_url)
    result = await client.connect(token)
    assert isinstance(result, dict) and "connect" in result, result
    return result


# ----------------------------------------------------------------------------------- good tokens


async def test_valid_token_connects_with_sdk(serve: Serve) -> None:
    running = await serve()
    async with sdk_client(running.ws_url, conn_token("42")) as (client, events):
        await client.connect()
        await client.ready(timeout=5)
        assert events.connected and events.connected[0].client


@pytest.mark.parametrize(
    "alg",
    [
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    ],
)
async def test_every_algorithm_connects(
    serve: Serve, raw: Raw, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey], alg: str
) -> None:
    """Each supported algorithm verifies with a key of its own type (and only that)."""
    key: Any = SECRET
    token_settings: dict[str, str] = {}
    if alg.startswith(("RS", "PS")):
        key, token_settings = rsa_key, {"rsa_public_key": public_pem(rsa_key)}
    elif alg.startswith("ES"):
        key, token_settings = ec_keys[alg], {"ecdsa_public_key": public_pem(ec_keys[alg])}
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        token_settings = {"ecdsa_public_key": public_pem(key)}
    running = await serve({"client": {"token": token_settings}})
    reply = await accepted(raw, running, conn_token("42", key=key, alg=alg))
    assert reply["connect"]["client"]


# ----------------------------------------------------------------------------------- forgery


async def test_forged_signature_is_3500_for_the_sdk(serve: Serve) -> None:
    """A token signed with another secret: centrifuge-python gets the terminal 3500 and stops."""
    running = await serve()
    forged = conn_token("42", key="attacker-secret-" + "x" * 40)
    async with sdk_client(running.ws_url, forged) as (client, events):
        await client.connect()
        await eventually(lambda: events.disconnected, timeout=5)
        assert events.disconnected[0].code == 3500
        assert events.disconnected[0].reason == "invalid token: bad signature"
        assert not events.connected


async def test_tampered_payload_is_3500(serve: Serve, raw: Raw) -> None:
    """Changing the user id of a genuine token breaks its signature."""
    running = await serve()
    head, _, signature = conn_token("42").split(".")
    forged_body = b64u(b'{"sub":"1","exp":%d}' % int(time.time() + 3600))
    closed = await refused(raw, running, f"{head}.{forged_body}.{signature}")
    assert closed == Closed(3500, "invalid token: bad signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_3500(serve: Serve, raw: Raw, alg: str) -> None:
    running = await serve()
    token = hand_signed({"alg": alg, "typ": "JWT"}, {"sub": "42", "exp": int(time.time() + 3600)}, None)
    assert await refused(raw, running, token) == Closed(3500, "invalid token: algorithm not allowed")


async def test_algorithm_confusion_public_key_as_hmac_secret_is_3500(
    serve: Serve, raw: Raw, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The RSA public key is public: an HS256 token "signed" with it must not verify.

    Without an HMAC secret the alg is simply not allowed; with one, the HS256 token
    is checked against that secret (never the public key) and fails."""
    pem = public_pem(rsa_key)
    claims = {"sub": "admin", "exp": int(time.time() + 3600)}
    for variant in (pem, pem.strip()):
        token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims, variant.encode())
        rsa_only = await serve({"client": {"token": {"hmac_secret_key": "", "rsa_public_key": pem}}})
        assert await refused(raw, rsa_only, token) == Closed(3500, "invalid token: algorithm not allowed")
        both = await serve({"client": {"token": {"rsa_public_key": pem}}})
        assert await refused(raw, both, token) == Closed(3500, "invalid token: bad signature")


async def test_asymmetric_token_without_its_key_is_3500(serve: Serve, raw: Raw, rsa_key: rsa.RSAPrivateKey) -> None:
    """An RS256 token against a server that only has an HMAC secret."""
    running = await serve()
    token = conn_token("42", key=rsa_key, alg="RS256")
    assert await refused(raw, running, token) == Closed(3500, "invalid token: algorithm not allowed")


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "e30.e30.", "...", "Bearer abc", "\u00e9\u00e9.\u00e9.\u00e9"])
async def test_garbage_tokens(serve: Serve, raw: Raw, token: str) -> None:
    """Garbage is never accepted; an empty token counts as no token (3501 credentials not found)."""
    running = await serve()
    closed = await refused(raw, running, token)
    if token:
        assert closed.code == 3500 and closed.reason.startswith("invalid token: ")
    else:
        assert closed == Closed(3501, "bad request: credentials not found")


async def test_subscription_token_is_not_a_connection_token(serve: Serve, raw: Raw) -> None:
    running = await serve()
    token = sub_token("42", "news")
    assert await refused(raw, running, token) == Closed(3500, "invalid token: channel claim in connection token")


async def test_no_token_without_anonymous_access_is_3501(serve: Serve, raw: Raw) -> None:
    running = await serve()
    client = await raw(running.ws_url)
    assert await client.connect() == Closed(3501, "bad request: credentials not found")


async def test_anonymous_token_refused_when_disallowed(serve: Serve, raw: Raw) -> None:
    running = await serve({"client": {"disallow_anonymous_connection_tokens": True}})
    assert await refused(raw, running, conn_token("")) == Closed(3507, "permission denied")


# ----------------------------------------------------------------------------------- time


async def test_expired_token_is_109_and_sdk_gets_a_new_one(serve: Serve, raw: Raw) -> None:
    """An expired token gets the retryable 109; the connection may retry with a fresh token."""
    running = await serve()
    client = await raw(running.ws_url)
    result = await client.connect(conn_token("42", ttl=-60))
    assert isinstance(result, dict)
    assert (result["error"]["code"], result["error"]["message"]) == (109, "token expired")
    retry = await client.connect(conn_token("42"))
    assert isinstance(retry, dict) and retry["connect"]["client"]

    calls: list[float] = []

    async def get_token() -> str:
        calls.append(time.time())
        return conn_token("42")

    async with sdk_client(running.ws_url, conn_token("42", ttl=-60), get_token=get_token) as (sdk, events):
        await sdk.connect()
        await sdk.ready(timeout=5)
        assert len(calls) == 1
        assert events.connected and not events.disconnected


async def test_expire_at_in_the_past_is_110(serve: Serve, raw: Raw) -> None:
    running = await serve()
    client = await raw(running.ws_url)
    result = await client.connect(conn_token("42", ttl=None, expire_at=int(time.time()) - 10))
    assert isinstance(result, dict)
    assert (result["error"]["code"], result["error"]["message"]) == (110, "expired")


async def test_not_yet_valid_token_is_3500(serve: Serve, raw: Raw) -> None:
    running = await serve()
    token = conn_token("42", nbf=int(time.time() + 3600))
    assert await refused(raw, running, token) == Closed(3500, "invalid token: not yet valid")


async def test_expired_connection_is_closed(serve: Serve, raw: Raw) -> None:
    """A connection whose token expires and is not refreshed is closed with 3005."""
    running = await serve({"client": {"expired_close_delay": "0s"}})
    client = await raw(running.ws_url)
    result = await client.connect(conn_token("42", ttl=1.5))
    assert isinstance(result, dict) and result["connect"]["expires"] is True
    assert await client.closed(timeout=5) == Closed(3005, "connection expired")


# ----------------------------------------------------------------------------------- audience / issuer


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "trunkline", "iss": "https://auth.example.com"}, None),
        ({"aud": ["other", "trunkline"], "iss": "https://auth.example.com"}, None),
        ({"aud": "someone-else", "iss": "https://auth.example.com"}, "invalid token: audience mismatch"),
        ({"iss": "https://auth.example.com"}, "invalid token: audience mismatch"),
        ({"aud": "trunkline", "iss": "https://evil.example.com"}, "invalid token: issuer mismatch"),
        ({"aud": "trunkline"}, "invalid token: issuer mismatch"),
    ],
)
async def test_audience_and_issuer(serve: Serve, raw: Raw, claims: dict[str, Any], reason: str | None) -> None:
    running = await serve({"client": {"token": {"audience": "trunkline", "issuer": "https://auth.example.com"}}})
    token = conn_token("42", **claims)
    if reason is None:
        await accepted(raw, running, token)
    else:
        assert await refused(raw, running, token) == Closed(3500, reason)


async def test_refresh_with_another_users_token_is_3500(serve: Serve, raw: Raw) -> None:
    """``refresh`` re-verifies: a valid token of another user cannot take over a connection."""
    running = await serve()
    client = await raw(running.ws_url)
    await client.connect(conn_token("42"))
    result = await client.attempt("refresh", {"token": conn_token("43")})
    assert result == Closed(3500, "invalid token: user mismatch")


async def test_refused_connection_does_not_disturb_others(serve: Serve, raw: Raw) -> None:
    """Forged tokens close only their own connection."""
    running = await serve()
    bystander = await raw(running.ws_url)
    await bystander.connect(conn_token("7"))
    await bystander.call("subscribe", {"channel": "lobby"})
    await asyncio.gather(*(refused(raw, running, conn_token("7", key="wrong-" + "w" * 40)) for _ in range(10)))
    reply = await bystander.call("presence_stats", {"channel": "lobby"})
    assert reply["presence_stats"] == {"num_clients": 1, "num_users": 1}
