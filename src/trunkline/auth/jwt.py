"""Verify Centrifugo connection and subscription JWTs (reference §3.2, §3.5, §4.2).

Key sources and the algorithms each allows:

* ``hmac_secret_key``: HS256/384/512;
* ``rsa_public_key`` (PEM public key or certificate): RS256/384/512, PS256/384/512;
* ``ecdsa_public_key`` (PEM): the ES256/384/512 matching the key's curve, or
  EdDSA if the PEM holds an Ed25519/Ed448 key;
* ``jwks_public_endpoint``: per key, the ``alg`` it declares, else the algorithms
  of its type (RSA: RS*/PS*, EC: ES* by curve, OKP: EdDSA).

The token header's ``alg`` picks the key; a key is only ever used with the
algorithms of its own type, so an ``HS*`` token can never be checked with a
public key as HMAC secret, and ``none`` is never accepted. An asymmetric token
with a ``kid`` header is verified against the JWKS when one is configured; any
other token against the static keys.

PyJWT parses the JWS structure and provides the algorithm implementations; the
time, audience and issuer checks are done here against the caller's ``now`` so
the node decides what time it is. Errors: an expired token raises
``TOKEN_EXPIRED`` (109); every other failure the 3500 ``INVALID_TOKEN``
disconnect with ``invalid token: <short reason>``. Reasons are fixed texts and
never echo token content.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWS, PyJWTError

from trunkline.auth.claims import (
    ConnectionClaims,
    SubscriptionClaims,
    invalid_token,
    parse_connection_claims,
    parse_subscription_claims,
)
from trunkline.auth.jwks import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    AlgKey,
    JwksClient,
    algorithms_for_public_key,
)
from trunkline.errors import TOKEN_EXPIRED, ConfigError

__all__ = ["TokenVerifier"]

log = logging.getLogger("trunkline.auth")

_JWS: Final = PyJWS()
_SUPPORTED: Final = frozenset((*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS))
_MIN_RSA_BITS: Final = 2048
_MIN_HMAC_BYTES: Final = 32
_HASHES: Final[dict[str, Callable[..., Any]]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}


class HmacKey:
    """HMAC (RFC 2104) with the keyed inner and outer hash states computed once.

    ``hmac.new``/``hmac.digest`` redo the key schedule for every message (3-5 µs here);
    copying two prepared states costs under 2 µs.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes, digest: Callable[..., Any]) -> None:
        block = digest().block_size
        if len(secret) > block:
            secret = digest(secret).digest()
        secret = secret.ljust(block, b"\0")
        self._inner = digest(bytes(b ^ 0x36 for b in secret))
        self._outer = digest(bytes(b ^ 0x5C for b in secret))

    def sign(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        mac: bytes = outer.digest()
        return mac


#: header fields the HMAC fast path understands; any other (``crit``, ``b64``...) takes PyJWT's path
_PLAIN_HEADER: Final = frozenset(("alg", "typ", "kid"))


#: a compact JWS of three base64url segments (PyJWT's alphabet check, all at once)
_COMPACT: Final = re.compile(rb"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)")
_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: the last character of a canonical segment of length 4k+2 / 4k+3 (its unused low bits zero)
_LAST: Final = {2: frozenset(_ALPHABET[::16]), 3: frozenset(_ALPHABET[::4])}
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")


def _b64url(segment: bytes) -> bytes:
    """A canonical, unpadded base64url segment (alphabet already checked) decoded; ``ValueError`` otherwise.

    As strict as PyJWT: no length 4k+1, no set bits past the data. Padded segments,
    which PyJWT also takes, do not match :data:`_COMPACT` and are left to PyJWT.
    """
    rem = len(segment) % 4
    if rem == 1 or (rem and segment[-1] not in _LAST[rem]):
        raise ValueError("not canonical base64url")
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + b"=" * (-rem % 4))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _load_public_key(pem: str, setting: str) -> object:
    """A public key from a PEM public key or X.509 certificate; ``ConfigError`` otherwise."""
    data = pem.strip().encode()
    try:
        return load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        return x509.load_pem_x509_certificate(data).public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(setting, "not a PEM public key or certificate") from None


def _str_setting(s: object, name: str) -> str:
    value = getattr(s, name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string")
    return value


class TokenVerifier:
    """Verify connection and subscription tokens with the configured keys."""

    def __init__(
        self,
        *,
        hmac_secret_key: str = "",
        rsa_public_key: str = "",
        ecdsa_public_key: str = "",
        jwks_public_endpoint: str = "",
        audience: str = "",
        issuer: str = "",
        user_id_claim: str = "",
        leeway: float = 1.0,
        jwks_cache_ttl: float = 300.0,
        jwks_timeout: float = 5.0,
        jwks_min_refetch_interval: float = 10.0,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.user_id_claim = user_id_claim
        self.leeway = leeway
        self._static: dict[str, AlgKey] = {}
        self._hmac: dict[str, HmacKey] = {}  # the HS* fast path: alg -> key

        if hmac_secret_key:
            if len(hmac_secret_key.encode()) < _MIN_HMAC_BYTES:
                log.warning("hmac_secret_key is shorter than %d bytes; use a longer random secret", _MIN_HMAC_BYTES)
            for name in HMAC_ALGORITHMS:
                algorithm = _JWS.get_algorithm_by_name(name)
                try:
                    self._static[name] = (algorithm, algorithm.prepare_key(hmac_secret_key))
                    self._hmac[name] = HmacKey(hmac_secret_key.encode(), _HASHES[name])
                except PyJWTError as exc:
                    # PyJWT refuses a PEM/JWK-looking secret: it is a public key by mistake.
                    raise ConfigError("hmac_secret_key", "looks like a key, not an HMAC secret") from exc

        if rsa_public_key:
            key = _load_public_key(rsa_public_key, "rsa_public_key")
            if not isinstance(key, rsa.RSAPublicKey):
                raise ConfigError("rsa_public_key", "not an RSA public key")
            if key.key_size < _MIN_RSA_BITS:
                log.warning("rsa_public_key has %d bits, fewer than %d", key.key_size, _MIN_RSA_BITS)
            self._static.update(algorithms_for_public_key(key))

        if ecdsa_public_key:
            key = _load_public_key(ecdsa_public_key, "ecdsa_public_key")
            if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                raise ConfigError("ecdsa_public_key", "not an EC (or Ed25519) public key")
            algorithms = algorithms_for_public_key(key)
            if not algorithms:
                raise ConfigError("ecdsa_public_key", "unsupported curve (use P-256, P-384 or P-521)")
            self._static.update(algorithms)

        self._jwks: JwksClient | None = None
        if jwks_public_endpoint:
            if not jwks_public_endpoint.startswith(("http://", "https://")):
                raise ConfigError("jwks_public_endpoint", "must be an http:// or https:// URL")
            self._jwks = JwksClient(
                jwks_public_endpoint,
                cache_ttl=jwks_cache_ttl,
                timeout=jwks_timeout,
                min_refetch_interval=jwks_min_refetch_interval,
            )

    @classmethod
    def from_settings(cls, s: object) -> TokenVerifier:
        """Build from any object with the token settings as attributes (missing or ``None``: unset)."""
        return cls(
            hmac_secret_key=_str_setting(s, "hmac_secret_key"),
            rsa_public_key=_str_setting(s, "rsa_public_key"),
            ecdsa_public_key=_str_setting(s, "ecdsa_public_key"),
            jwks_public_endpoint=_str_setting(s, "jwks_public_endpoint"),
            audience=_str_setting(s, "audience"),
            issuer=_str_setting(s, "issuer"),
            user_id_claim=_str_setting(s, "user_id_claim"),
        )

    @property
    def configured(self) -> bool:
        """Whether at least one key source is set."""
        return bool(self._static) or self._jwks is not None

    @property
    def jwks(self) -> JwksClient | None:
        """The JWKS client, if ``jwks_public_endpoint`` is set."""
        return self._jwks

    async def verify_connection(self, token: str, now: float) -> ConnectionClaims:
        """Verify a connection token (connect or refresh) at unix time ``now``."""
        payload = await self._verify(token, now)
        return parse_connection_claims(payload, user_id_claim=self.user_id_claim)

    async def verify_subscription(self, token: str, now: float) -> SubscriptionClaims:
        """Verify a subscription token at unix time ``now``."""
        payload = await self._verify(token, now)
        return parse_subscription_claims(payload, user_id_claim=self.user_id_claim)

    async def close(self) -> None:
        """Release the JWKS client, if any."""
        if self._jwks is not None:
            await self._jwks.close()

    async def _key_for(self, alg: str, header: dict[str, Any]) -> AlgKey:
        if alg not in _SUPPORTED:
            raise invalid_token("algorithm not allowed")
        kid = header.get("kid")  # PyJWT has checked it is a string if present
        if self._jwks is not None and kid is not None and alg in ASYMMETRIC_ALGORITHMS:
            found = (await self._jwks.get(kid)).get(alg)
            if found is None:
                raise invalid_token("algorithm not allowed")
            return found
        found = self._static.get(alg)
        if found is None:
            if self._jwks is not None and alg in ASYMMETRIC_ALGORITHMS:
                raise invalid_token("missing kid")
            raise invalid_token("algorithm not allowed")
        return found

    def _verify_hmac(self, raw: bytes) -> bytes | None:
        """The payload bytes of an HS256/384/512 token with a plain header, checked without PyJWT.

        PyJWT's generic parse (segments, base64url, header JSON, header checks) was most of
        the cost of a connect's token; for the common token (header ``alg``, ``typ``,
        ``kid`` only) this does the same steps directly. ``None``: anything else or anything
        odd (another algorithm, other header fields, a decoding error), for the general path,
        which gives the same answer it always gave. A bad signature is refused here.
        """
        match = _COMPACT.fullmatch(raw)
        if match is None:
            return None
        head, payload, crypto = match.groups()
        signing_input = raw[: match.end(2)]
        try:
            header = msgspec.json.decode(_b64url(head))
            data = _b64url(payload)
            signature = _b64url(crypto)
        except (msgspec.DecodeError, binascii.Error, ValueError):
            return None
        if type(header) is not dict or not header.keys() <= _PLAIN_HEADER:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        found = self._hmac.get(alg) if isinstance(alg, str) else None
        if found is None or not (kid is None or isinstance(kid, str)):
            return None
        if not hmac.compare_digest(found.sign(signing_input), signature):
            raise invalid_token("bad signature")
        return data

    async def _verify(self, token: str, now: float) -> dict[str, Any]:
        if not self.configured:
            raise invalid_token("no key configured")
        fast = None
        if self._hmac and token.isascii():
            fast = self._verify_hmac(token.encode("ascii"))
        if fast is not None:
            return self._payload(fast, now)
        try:
            raw = token.encode("ascii")
            # Structure, base64url, header JSON, "kid" type and "crit" only; the
            # signature is checked below with a key chosen for the header's alg.
            parts = _JWS.decode_complete(raw, options={"verify_signature": False})
        except (PyJWTError, ValueError, TypeError):
            raise invalid_token("malformed") from None
        header: dict[str, Any] = parts["header"]
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise invalid_token("algorithm not allowed")
        algorithm, key = await self._key_for(alg, header)
        signing_input = raw.rsplit(b".", 1)[0]
        if not algorithm.verify(signing_input, key, parts["signature"]):
            raise invalid_token("bad signature")

        return self._payload(parts["payload"], now)

    def _payload(self, data: bytes, now: float) -> dict[str, Any]:
        try:
            payload = msgspec.json.decode(data)
        except (msgspec.DecodeError, RecursionError):
            raise invalid_token("malformed payload") from None
        if not isinstance(payload, dict):
            raise invalid_token("malformed payload")
        self._check_registered(payload, now)
        return payload

    def _check_registered(self, payload: dict[str, Any], now: float) -> None:
        """Audience, issuer, not-before, then expiry (the only retryable failure) last."""
        for name in ("exp", "nbf", "iat"):
            value = payload.get(name)
            if value is not None and not _is_number(value):
                raise invalid_token(f"bad {name} claim")
        if self.audience:
            aud = payload.get("aud")
            if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
                raise invalid_token("audience mismatch")
        if self.issuer and payload.get("iss") != self.issuer:
            raise invalid_token("issuer mismatch")
        nbf = payload.get("nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise invalid_token("not yet valid")
        exp = payload.get("exp")
        if exp is not None and exp < now - self.leeway:
            # A fresh copy: raising the shared constant would grow its traceback.
            raise TOKEN_EXPIRED.with_message(TOKEN_EXPIRED.message)
