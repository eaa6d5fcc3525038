"""TokenVerifier: algorithms, keys, time checks, claims and hostile input."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trunkline.auth import ConnectionClaims, Override, SubOptions, SubscriptionClaims, TokenVerifier
from trunkline.errors import TOKEN_EXPIRED, ClientError, ConfigError, Disconnect

NOW = 1_700_000_000.0
SECRET = "a-test-secret-long-enough-for-hs512-" + "x" * 32  # PyJWT warns below the digest size
OTHER_SECRET = "another-secret-long-enough-for-hs512-" + "y" * 32


# --------------------------------------------------------------------------- helpers


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def hs_token(
    payload: object, secret: str | bytes = SECRET, alg: str = "HS256", header: dict[str, Any] | None = None
) -> str:
    """An HMAC token signed by hand (PyJWT refuses PEM secrets and warns on short ones)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    head = b64u(compact({"alg": alg, "typ": "JWT", **(header or {})}))
    body = b64u(payload if isinstance(payload, bytes) else compact(payload))
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64u(hmac.new(key, signing_input, digest).digest())}"


def public_pem(key: Any) -> str:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def invalid(reason: str) -> Disconnect:
    return Disconnect(3500, f"invalid token: {reason}")


async def refused(verify: Callable[[str, float], Any], token: str, now: float = NOW) -> Disconnect:
    with pytest.raises(Disconnect) as info:
        await verify(token, now)
    exc = info.value
    assert exc.code == 3500
    assert not exc.reconnect
    assert exc.reason.startswith("invalid token")
    assert len(exc.reason.encode()) <= 123
    assert token not in exc.reason or len(token) < 16
    return exc


# --------------------------------------------------------------------------- keys


@pytest.fixture
def hs() -> TokenVerifier:
    return TokenVerifier(hmac_secret_key=SECRET)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(NOW) + 3600, **extra}


# --------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms(hs: TokenVerifier, alg: str) -> None:
    token = jwt.encode(claims(), SECRET, algorithm=alg)
    result = await hs.verify_connection(token, NOW)
    assert result == ConnectionClaims(user="alice", expire_at=int(NOW) + 3600)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
async def test_rsa_algorithms(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    verifier = TokenVerifier(rsa_public_key=public_pem(rsa_key))
    token = jwt.encode(claims(), rsa_key, algorithm=alg)
    assert (await verifier.verify_connection(token, NOW)).user == "alice"


async def test_rsa_certificate_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trunkline test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(rsa_key, hashes.SHA256())
    )
    verifier = TokenVerifier(rsa_public_key=cert.public_bytes(serialization.Encoding.PEM).decode())
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await verifier.verify_connection(token, NOW)).user == "alice"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
async def test_ecdsa_algorithms(ec_keys: dict[str, ec.EllipticCurvePrivateKey], alg: str) -> None:
    verifier = TokenVerifier(ecdsa_public_key=public_pem(ec_keys[alg]))
    token = jwt.encode(claims(), ec_keys[alg], algorithm=alg)
    assert (await verifier.verify_connection(token, NOW)).user == "alice"


async def test_ecdsa_key_only_allows_its_curve(ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    verifier = TokenVerifier(ecdsa_public_key=public_pem(ec_keys["ES256"]))
    token = jwt.encode(claims(), ec_keys["ES384"], algorithm="ES384")
    assert await refused(verifier.verify_connection, token) == invalid("algorithm not allowed")


async def test_eddsa_with_ed25519_pem(ed_key: ed25519.Ed25519PrivateKey) -> None:
    verifier = TokenVerifier(ecdsa_public_key=public_pem(ed_key))
    token = jwt.encode(claims(), ed_key, algorithm="EdDSA")
    assert (await verifier.verify_connection(token, NOW)).user == "alice"


async def test_all_sources_together(rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    verifier = TokenVerifier(
        hmac_secret_key=SECRET, rsa_public_key=public_pem(rsa_key), ecdsa_public_key=public_pem(ec_keys["ES256"])
    )
    for key, alg in ((SECRET, "HS256"), (rsa_key, "RS256"), (rsa_key, "PS512"), (ec_keys["ES256"], "ES256")):
        assert (await verifier.verify_connection(jwt.encode(claims(), key, algorithm=alg), NOW)).user == "alice"


async def test_family_not_configured_is_refused(
    hs: TokenVerifier, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]
) -> None:
    rsa_only = TokenVerifier(rsa_public_key=public_pem(rsa_key))
    ec_only = TokenVerifier(ecdsa_public_key=public_pem(ec_keys["ES256"]))
    cases = [
        (hs, jwt.encode(claims(), rsa_key, algorithm="RS256")),
        (hs, jwt.encode(claims(), ec_keys["ES256"], algorithm="ES256")),
        (rsa_only, jwt.encode(claims(), SECRET, algorithm="HS256")),
        (rsa_only, jwt.encode(claims(), ec_keys["ES256"], algorithm="ES256")),
        (ec_only, jwt.encode(claims(), rsa_key, algorithm="RS256")),
        (ec_only, jwt.encode(claims(), SECRET, algorithm="HS256")),
    ]
    for verifier, token in cases:
        assert await refused(verifier.verify_connection, token) == invalid("algorithm not allowed")


async def test_short_secret_verifies_without_warnings() -> None:
    # Centrifugo's SDK test suites use the secret "secret"; PyJWT would warn on every check.
    verifier = TokenVerifier(hmac_secret_key="secret")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await verifier.verify_connection(hs_token(claims(), secret="secret"), NOW)
    assert result.user == "alice"
    assert caught == []


# --------------------------------------------------------------------------- hostile tokens


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_alg_none_refused(hs: TokenVerifier, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    token = f"{b64u(compact({'alg': alg, 'typ': 'JWT'}))}.{b64u(compact(claims()))}."
    assert await refused(hs.verify_connection, token) == invalid("algorithm not allowed")
    rsa_verifier = TokenVerifier(rsa_public_key=public_pem(rsa_key))
    assert await refused(rsa_verifier.verify_connection, token) == invalid("algorithm not allowed")


async def test_missing_alg_refused(hs: TokenVerifier) -> None:
    token = f"{b64u(compact({'typ': 'JWT'}))}.{b64u(compact(claims()))}.{b64u(b'x')}"
    assert await refused(hs.verify_connection, token) == invalid("algorithm not allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_algorithm_confusion_rsa_pem_as_hmac_secret(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    pem = public_pem(rsa_key)
    forged = hs_token(claims(sub="admin"), secret=pem, alg=alg)
    rsa_only = TokenVerifier(rsa_public_key=pem)
    assert await refused(rsa_only.verify_connection, forged) == invalid("algorithm not allowed")
    # With an HMAC secret configured too, the HS token is checked with that secret only.
    both = TokenVerifier(rsa_public_key=pem, hmac_secret_key=SECRET)
    assert await refused(both.verify_connection, forged) == invalid("bad signature")
    # Variants of the same PEM text (no trailing newline, DER bytes) do not help either.
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem.strip(), der):
        assert await refused(rsa_only.verify_connection, hs_token(claims(), secret=secret, alg=alg))


async def test_algorithm_confusion_ec_pem_as_hmac_secret(ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    pem = public_pem(ec_keys["ES256"])
    verifier = TokenVerifier(ecdsa_public_key=pem)
    forged = hs_token(claims(), secret=pem)
    assert await refused(verifier.verify_connection, forged) == invalid("algorithm not allowed")


async def test_rsa_token_cannot_use_ecdsa_slot(rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]) -> None:
    # An ES256 header on an RSA signature: picks the EC key, signature fails.
    verifier = TokenVerifier(ecdsa_public_key=public_pem(ec_keys["ES256"]), rsa_public_key=public_pem(rsa_key))
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256")
    _, body, sig = rs.split(".")
    swapped = f"{b64u(compact({'alg': 'ES256', 'typ': 'JWT'}))}.{body}.{sig}"
    assert await refused(verifier.verify_connection, swapped) == invalid("bad signature")


async def test_wrong_key(hs: TokenVerifier, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    assert await refused(hs.verify_connection, token) == invalid("bad signature")
    verifier = TokenVerifier(rsa_public_key=public_pem(rsa_key))
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256")
    assert await refused(verifier.verify_connection, token) == invalid("bad signature")


async def test_tampered_payload(hs: TokenVerifier) -> None:
    head, _, sig = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    token = f"{head}.{b64u(compact(claims(sub='admin')))}.{sig}"
    assert await refused(hs.verify_connection, token) == invalid("bad signature")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "!!!.!!!.!!!",
        "é.é.é",
        f"{b64u(b'not json')}.{b64u(b'{}')}.{b64u(b'sig')}",
        f"{b64u(b'[1,2]')}.{b64u(b'{}')}.{b64u(b'sig')}",
        f"{b64u(compact({'alg': 'HS256', 'kid': 5}))}.{b64u(b'{}')}.{b64u(b'sig')}",
        f"{b64u(compact({'alg': 'HS256', 'crit': ['exp'], 'exp': 1}))}.{b64u(b'{}')}.{b64u(b'sig')}",
        f"{b64u(compact({'alg': 'HS256', 'b64': False, 'crit': ['b64']}))}..{b64u(b'sig')}",
        f"{b64u(compact({'alg': 'HS256'}))}.{b64u(b'{}')}====.{b64u(b'sig')}",
    ],
)
async def test_malformed(hs: TokenVerifier, token: str) -> None:
    assert await refused(hs.verify_connection, token) == invalid("malformed")


async def test_empty_signature(hs: TokenVerifier) -> None:
    head, body, _ = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    for token in (f"{head}.{body}.", f"{head}..", f"{head}.{body}.{b64u(b'x' * 32)}"):
        assert await refused(hs.verify_connection, token) == invalid("bad signature")


@pytest.mark.parametrize("payload", [b"not json", b"[1,2,3]", b'"sub"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
async def test_signed_but_malformed_payload(hs: TokenVerifier, payload: bytes) -> None:
    assert await refused(hs.verify_connection, hs_token(payload)) == invalid("malformed payload")


async def test_no_key_configured() -> None:
    verifier = TokenVerifier()
    assert not verifier.configured
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert await refused(verifier.verify_connection, token) == invalid("no key configured")
    assert await refused(verifier.verify_subscription, token) == invalid("no key configured")


# --------------------------------------------------------------------------- time


async def test_expired_is_109(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(exp=int(NOW) - 60), SECRET, algorithm="HS256")
    with pytest.raises(ClientError) as info:
        await hs.verify_connection(token, NOW)
    assert info.value == TOKEN_EXPIRED
    assert info.value is not TOKEN_EXPIRED  # a fresh instance every time
    with pytest.raises(ClientError) as info:
        await hs.verify_subscription(jwt.encode(claims(exp=int(NOW) - 60, channel="$c"), SECRET), NOW)
    assert info.value.code == 109


async def test_expired_with_bad_signature_is_invalid(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(exp=int(NOW) - 60), OTHER_SECRET, algorithm="HS256")
    assert await refused(hs.verify_connection, token) == invalid("bad signature")


async def test_leeway_on_exp() -> None:
    default = TokenVerifier(hmac_secret_key=SECRET)  # leeway 1 s
    strict = TokenVerifier(hmac_secret_key=SECRET, leeway=0)
    wide = TokenVerifier(hmac_secret_key=SECRET, leeway=30)
    token = jwt.encode(claims(exp=int(NOW) - 1), SECRET, algorithm="HS256")
    assert (await default.verify_connection(token, NOW)).expire_at == int(NOW) - 1
    with pytest.raises(ClientError):
        await default.verify_connection(token, NOW + 0.5)
    with pytest.raises(ClientError):
        await strict.verify_connection(token, NOW)
    assert (await strict.verify_connection(token, NOW - 1)).user == "alice"
    token = jwt.encode(claims(exp=int(NOW) - 20), SECRET, algorithm="HS256")
    assert (await wide.verify_connection(token, NOW)).user == "alice"
    with pytest.raises(ClientError):
        await default.verify_connection(token, NOW)


async def test_nbf(hs: TokenVerifier) -> None:
    future = jwt.encode(claims(nbf=int(NOW) + 60), SECRET, algorithm="HS256")
    assert await refused(hs.verify_connection, future) == invalid("not yet valid")
    assert (await hs.verify_connection(future, NOW + 60)).user == "alice"
    within_leeway = jwt.encode(claims(nbf=NOW + 0.5), SECRET, algorithm="HS256")
    assert (await hs.verify_connection(within_leeway, NOW)).user == "alice"
    strict = TokenVerifier(hmac_secret_key=SECRET, leeway=0)
    assert await refused(strict.verify_connection, within_leeway) == invalid("not yet valid")


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", True, [1], {"a": 1}])
async def test_bad_time_claims(hs: TokenVerifier, name: str, value: object) -> None:
    token = jwt.encode({"sub": "alice", name: value}, SECRET, algorithm="HS256")
    assert await refused(hs.verify_connection, token) == invalid(f"bad {name} claim")


async def test_expire_at(hs: TokenVerifier) -> None:
    exp = int(NOW) + 3600

    async def expire_at(**payload: Any) -> int | None:
        return (await hs.verify_connection(jwt.encode(payload, SECRET, algorithm="HS256"), NOW)).expire_at

    assert await expire_at(sub="u", exp=exp) == exp
    assert await expire_at(sub="u", exp=exp, expire_at=exp - 100) == exp - 100
    assert await expire_at(sub="u", exp=exp, expire_at=exp + 100) == exp + 100
    assert await expire_at(sub="u", exp=exp, expire_at=0) is None  # 0: never, even with exp
    assert await expire_at(sub="u", exp=exp, expire_at=None) == exp
    assert await expire_at(sub="u") is None
    assert await expire_at(sub="u", exp=NOW + 10.75) == int(NOW) + 10
    # An expire_at in the past is returned as is: the node answers 110 (reference §3.2).
    assert await expire_at(sub="u", exp=exp, expire_at=int(NOW) - 5) == int(NOW) - 5
    for bad in (-1, "tomorrow", True):
        token = jwt.encode({"sub": "u", "expire_at": bad}, SECRET, algorithm="HS256")
        assert await refused(hs.verify_connection, token) == invalid("bad expire_at claim")


async def test_expire_at_on_subscription(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(channel="$c", expire_at=0), SECRET, algorithm="HS256")
    assert (await hs.verify_subscription(token, NOW)).expire_at is None
    token = jwt.encode({"sub": "u", "channel": "$c"}, SECRET, algorithm="HS256")
    assert (await hs.verify_subscription(token, NOW)).expire_at is None


# --------------------------------------------------------------------------- aud / iss


async def test_audience() -> None:
    verifier = TokenVerifier(hmac_secret_key=SECRET, audience="app")
    ok = [claims(aud="app"), claims(aud=["other", "app"])]
    for payload in ok:
        assert (await verifier.verify_connection(jwt.encode(payload, SECRET), NOW)).user == "alice"
    bad = [claims(aud="other"), claims(aud=["other"]), claims(), claims(aud=None), claims(aud=1), claims(aud="APP")]
    for payload in bad:
        token = jwt.encode(payload, SECRET)
        assert await refused(verifier.verify_connection, token) == invalid("audience mismatch")
        assert await refused(verifier.verify_subscription, jwt.encode({**payload, "channel": "c"}, SECRET))


async def test_issuer() -> None:
    verifier = TokenVerifier(hmac_secret_key=SECRET, issuer="https://issuer.example")
    token = jwt.encode(claims(iss="https://issuer.example"), SECRET)
    assert (await verifier.verify_connection(token, NOW)).user == "alice"
    for payload in (claims(iss="https://evil.example"), claims()):
        assert await refused(verifier.verify_connection, jwt.encode(payload, SECRET)) == invalid("issuer mismatch")


async def test_aud_iss_ignored_when_not_configured(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(aud=["x", "y"], iss="anyone"), SECRET)
    assert (await hs.verify_connection(token, NOW)).user == "alice"


# --------------------------------------------------------------------------- claims


async def test_connection_claims_full(hs: TokenVerifier) -> None:
    payload = claims(
        info={"name": "Alice", "tags": [1, 2.5, None, True]},
        channels=["news", "$private"],
        meta={"tenant": 7},
        iat=int(NOW),
        jti="id-1",
        subs={
            "a": {"info": {"x": 1}, "data": [1, 2]},
            "b": {"b64info": base64.b64encode(b"\x00\x01").decode(), "b64data": base64.b64encode(b"raw").decode()},
            "c": {"override": {"presence": {"value": True}, "join_leave": {"value": False}, "force_recovery": {}}},
            "d": {},
            "e": None,
        },
    )
    result = await hs.verify_connection(jwt.encode(payload, SECRET), NOW)
    assert result.user == "alice"
    assert result.info == b'{"name":"Alice","tags":[1,2.5,null,true]}'
    assert result.channels == ("news", "$private")
    assert result.meta == {"tenant": 7}
    assert dict(result.subs) == {
        "a": SubOptions(info=b'{"x":1}', data=b"[1,2]"),
        "b": SubOptions(info=b"\x00\x01", data=b"raw"),
        "c": SubOptions(override=Override(presence=True, join_leave=False, force_recovery=False)),
        "d": SubOptions(),
        "e": SubOptions(),
    }
    with pytest.raises(TypeError):
        result.subs["z"] = SubOptions()  # type: ignore[index]


async def test_connection_claims_minimal(hs: TokenVerifier) -> None:
    result = await hs.verify_connection(jwt.encode({}, SECRET), NOW)
    assert result == ConnectionClaims(user="", expire_at=None, info=None, channels=(), subs={}, meta=None)


@pytest.mark.parametrize("info", ["a string", 42, [1, {"k": "v"}], {"nested": {"deep": [True]}}, False])
async def test_info_any_json(hs: TokenVerifier, info: object) -> None:
    result = await hs.verify_connection(jwt.encode(claims(info=info), SECRET), NOW)
    assert result.info == compact(info)


async def test_b64info(hs: TokenVerifier) -> None:
    raw = b"\x89PNG binary \xff"
    encoded = base64.b64encode(raw).decode()
    result = await hs.verify_connection(jwt.encode(claims(b64info=encoded), SECRET), NOW)
    assert result.info == raw
    # b64info wins over info, as in Centrifugo; an empty b64info is ignored.
    result = await hs.verify_connection(jwt.encode(claims(b64info=encoded, info={"a": 1}), SECRET), NOW)
    assert result.info == raw
    result = await hs.verify_connection(jwt.encode(claims(b64info="", info={"a": 1}), SECRET), NOW)
    assert result.info == b'{"a":1}'
    for bad in ("not base64!", "YWJ", "YW=J", 5):
        token = jwt.encode(claims(b64info=bad), SECRET)
        assert await refused(hs.verify_connection, token) == invalid("bad b64info claim")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"sub": 5}, "bad sub claim"),
        ({"sub": None, "channels": "news"}, "bad channels claim"),
        ({"channels": ["a", 1]}, "bad channels claim"),
        ({"subs": ["a"]}, "bad subs claim"),
        ({"subs": {"a": "x"}}, "bad subs claim"),
        ({"subs": {"a": {"b64data": "%%"}}}, "bad b64data claim"),
        ({"subs": {"a": {"override": {"presence": True}}}}, "bad override claim"),
        ({"subs": {"a": {"override": []}}}, "bad override claim"),
    ],
)
async def test_bad_connection_claims(hs: TokenVerifier, extra: dict[str, Any], reason: str) -> None:
    assert await refused(hs.verify_connection, jwt.encode(claims(**extra), SECRET)) == invalid(reason)


async def test_user_id_claim() -> None:
    verifier = TokenVerifier(hmac_secret_key=SECRET, user_id_claim="user_id")
    result = await verifier.verify_connection(jwt.encode(claims(user_id="bob"), SECRET), NOW)
    assert result.user == "bob"
    assert (await verifier.verify_connection(jwt.encode(claims(), SECRET), NOW)).user == ""
    token = jwt.encode(claims(user_id=12), SECRET)
    assert await refused(verifier.verify_connection, token) == invalid("bad user id claim")
    sub_token = jwt.encode(claims(user_id="bob", channel="$c"), SECRET)
    assert (await verifier.verify_subscription(sub_token, NOW)).user == "bob"


async def test_connection_token_with_channel_refused(hs: TokenVerifier) -> None:
    for channel in ("$private", ""):
        token = jwt.encode(claims(channel=channel), SECRET)
        assert await refused(hs.verify_connection, token) == invalid("channel claim in connection token")


async def test_subscription_claims(hs: TokenVerifier) -> None:
    payload = claims(
        channel="$chat:1",
        info={"role": "mod"},
        b64data=base64.b64encode(b"hello").decode(),
        override={
            "presence": {"value": False},
            "join_leave": {"value": True},
            "force_push_join_leave": {"value": True},
            "force_recovery": {"value": True},
            "force_positioning": {"value": False},
            "unknown_option": {"value": "ignored"},
        },
    )
    result = await hs.verify_subscription(jwt.encode(payload, SECRET), NOW)
    assert result == SubscriptionClaims(
        user="alice",
        channel="$chat:1",
        expire_at=int(NOW) + 3600,
        info=b'{"role":"mod"}',
        data=b"hello",
        override=Override(
            presence=False, join_leave=True, force_push_join_leave=True, force_recovery=True, force_positioning=False
        ),
    )
    plain = await hs.verify_subscription(jwt.encode(claims(channel="c", data={"k": 1}), SECRET), NOW)
    assert plain.data == b'{"k":1}'
    assert plain.override == Override()
    assert plain.info is None


async def test_subscription_token_requires_channel(hs: TokenVerifier) -> None:
    for payload in (claims(), claims(channel=""), claims(channel=None)):
        assert await refused(hs.verify_subscription, jwt.encode(payload, SECRET)) == invalid("missing channel")
    token = jwt.encode(claims(channel=["a"]), SECRET)
    assert await refused(hs.verify_subscription, token) == invalid("bad channel claim")


@pytest.mark.parametrize(
    "override",
    [
        "yes",
        {"presence": {"value": "true"}},
        {"join_leave": {"value": 1}},
        {"force_recovery": True},
        {"force_positioning": [{"value": True}]},
    ],
)
async def test_bad_override(hs: TokenVerifier, override: object) -> None:
    token = jwt.encode(claims(channel="c", override=override), SECRET)
    assert await refused(hs.verify_subscription, token) == invalid("bad override claim")


# --------------------------------------------------------------------------- configuration


async def test_from_settings(rsa_key: rsa.RSAPrivateKey) -> None:
    s = SimpleNamespace(
        hmac_secret_key=SECRET,
        rsa_public_key=public_pem(rsa_key),
        ecdsa_public_key="",
        jwks_public_endpoint=None,
        audience="app",
        issuer="",
        user_id_claim="uid",
    )
    verifier = TokenVerifier.from_settings(s)
    assert verifier.configured
    assert verifier.jwks is None
    token = jwt.encode(claims(uid="carol", aud="app"), rsa_key, algorithm="RS256")
    assert (await verifier.verify_connection(token, NOW)).user == "carol"
    assert not TokenVerifier.from_settings(SimpleNamespace()).configured
    with pytest.raises(ConfigError) as info:
        TokenVerifier.from_settings(SimpleNamespace(hmac_secret_key=b"bytes"))
    assert info.value.key == "hmac_secret_key"


def test_bad_key_configuration(rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]) -> None:
    rsa_pem = public_pem(rsa_key)
    ec_pem = public_pem(ec_keys["ES256"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rsa_public_key": "not a pem"}, "rsa_public_key"),
        ({"rsa_public_key": ec_pem}, "rsa_public_key"),
        ({"ecdsa_public_key": rsa_pem}, "ecdsa_public_key"),
        ({"ecdsa_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, "ecdsa_public_key"),
        ({"hmac_secret_key": rsa_pem}, "hmac_secret_key"),
        ({"jwks_public_endpoint": "file:///etc/keys.json"}, "jwks_public_endpoint"),
    ]
    for kwargs, key in cases:
        with pytest.raises(ConfigError) as info:
            TokenVerifier(**kwargs)
        assert info.value.key == key


def test_secp256k1_key_refused() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ConfigError, match="curve"):
        TokenVerifier(ecdsa_public_key=public_pem(key))


async def test_close_without_jwks(hs: TokenVerifier) -> None:
    await hs.close()


# --------------------------------------------------------------------------- fuzzing

_B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_CLAIM_NAMES = st.sampled_from(
    [
        "sub",
        "exp",
        "nbf",
        "iat",
        "aud",
        "iss",
        "expire_at",
        "info",
        "b64info",
        "channels",
        "subs",
        "meta",
        "channel",
        "override",
        "data",
        "b64data",
        "uid",
    ]
)
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["HS256", "HS512", "RS256", "ES256", "EdDSA", "none", "PS256"]) | st.text(max_size=8),
        "typ": _JSON,
        "kid": _JSON,
        "crit": _JSON,
        "b64": _JSON,
    },
)


def _json_segment(value: object) -> str:
    return b64u(json.dumps(value).encode())


_JWT_SHAPED = st.builds(
    lambda h, p, s: f"{h}.{p}.{s}",
    st.one_of(_HEADERS.map(_json_segment), _JSON.map(_json_segment), _B64URL),
    st.one_of(_JSON.map(_json_segment), st.dictionaries(_CLAIM_NAMES, _JSON).map(_json_segment), _B64URL),
    _B64URL,
)
_SIGNED = st.builds(
    lambda payload, alg: hs_token(payload, alg=alg),
    st.dictionaries(_CLAIM_NAMES, _JSON | st.integers(int(NOW) - 100, int(NOW) + 100)),
    st.sampled_from(["HS256", "HS384", "HS512"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.one_of(st.text(max_size=200), _JWT_SHAPED, _SIGNED), subscription=st.booleans())
async def test_fuzz_only_109_or_3500(token: str, subscription: bool) -> None:
    verifier = TokenVerifier(hmac_secret_key=SECRET, audience="", user_id_claim="")
    verify = verifier.verify_subscription if subscription else verifier.verify_connection
    try:
        result = await verify(token, NOW)
    except ClientError as exc:
        event("109")
        assert exc == TOKEN_EXPIRED
    except Disconnect as exc:
        event(exc.reason)
        assert exc.code == 3500
        assert exc.reason.startswith("invalid token: ")
        assert len(exc.reason.encode()) <= 123
        assert len(token) < 16 or token not in exc.reason
    else:
        event("accepted")
        assert isinstance(result, SubscriptionClaims if subscription else ConnectionClaims)
