"""Verification keys: which algorithms a public key may verify, and a JWKS cache.

A verification key is held as a mapping ``alg -> (Algorithm, prepared key)``.
Only the algorithms that suit the key's type are present, so a token header can
never make an RSA or EC public key act as an HMAC secret (algorithm confusion):
an ``HS*`` token simply finds no entry. ``none`` is never present.

:class:`JwksClient` fetches a JSON Web Key Set with aiohttp, parses each key
with :class:`jwt.PyJWK`, caches the keys by ``kid`` for ``cache_ttl`` seconds and,
when a token names an unknown ``kid`` (key rotation), fetches again at most
once per ``min_refetch_interval`` seconds. A fetch never takes longer than
``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK, PyJWTError
from jwt.algorithms import Algorithm, get_default_algorithms

from trunkline.auth.claims import invalid_token

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "AlgKey",
    "JwksClient",
    "KeyAlgorithms",
    "algorithms_for_public_key",
    "parse_jwks",
]

log = logging.getLogger("trunkline.auth")

#: One algorithm implementation from PyJWT with the key prepared for it.
AlgKey = tuple[Algorithm, Any]
#: Everything one key may verify: ``alg`` header value -> (algorithm, key).
KeyAlgorithms = Mapping[str, AlgKey]

_ALGORITHMS: Final[dict[str, Algorithm]] = get_default_algorithms()

HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EDDSA_ALGORITHMS: Final = ("EdDSA",)
_EC_ALGORITHM_BY_CURVE: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC_ALGORITHMS: Final = frozenset((*RSA_ALGORITHMS, *_EC_ALGORITHM_BY_CURVE.values(), *EDDSA_ALGORITHMS))

#: A JWKS document larger than this is refused.
MAX_JWKS_BYTES: Final = 1 << 20


def _prepare(names: tuple[str, ...] | list[str], key: object) -> dict[str, AlgKey]:
    out: dict[str, AlgKey] = {}
    for name in names:
        algorithm = _ALGORITHMS[name]
        # PyJWT checks the key family (and the curve for ES*) here.
        out[name] = (algorithm, algorithm.prepare_key(key))
    return out


def algorithms_for_public_key(key: object) -> dict[str, AlgKey]:
    """The asymmetric algorithms ``key`` may verify; empty if its type is not supported.

    RSA -> RS256/384/512 and PS256/384/512; EC -> the one ES* matching its curve
    (P-256, P-384, P-521); Ed25519/Ed448 -> EdDSA. A private key is reduced to its
    public half.
    """
    if isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        key = key.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return _prepare(RSA_ALGORITHMS, key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _EC_ALGORITHM_BY_CURVE.get(key.curve.name)
        return _prepare([name], key) if name else {}
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _prepare(EDDSA_ALGORITHMS, key)
    return {}


def parse_jwks(document: object) -> dict[str, dict[str, AlgKey]]:
    """``kid -> algorithms`` for every usable signature key of a JWKS document.

    Keys without ``kid``, symmetric (``oct``) keys, keys whose ``use`` is not
    ``sig`` and keys PyJWT cannot load are skipped. A key that declares ``alg``
    verifies only that algorithm; otherwise every algorithm of its type.
    Raises ``ValueError`` if the document holds no usable key.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, dict[str, AlgKey]] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        declared = entry.get("alg")
        if declared is not None and not isinstance(declared, str):
            continue
        try:
            jwk = PyJWK(entry)
            algorithms = algorithms_for_public_key(jwk.key)
        except (PyJWTError, ValueError, TypeError):
            log.debug("jwks: skipping unusable key %r", kid)
            continue
        if declared is not None:
            algorithms = {declared: algorithms[declared]} if declared in algorithms else {}
        if algorithms:
            keys[kid] = algorithms
    if not keys:
        raise ValueError("no usable keys")
    return keys


class JwksClient:
    """Fetch and cache a JWKS document; look keys up by ``kid``."""

    def __init__(
        self,
        url: str,
        *,
        cache_ttl: float = 300.0,
        timeout: float = 5.0,
        min_refetch_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._keys: dict[str, dict[str, AlgKey]] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._last_failed = False
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False
        self.fetches = 0  # attempts made, for metrics and tests

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self.cache_ttl

    async def get(self, kid: str) -> KeyAlgorithms:
        """The algorithms the key ``kid`` may verify, fetching the JWKS if needed.

        Raises the 3500 disconnect ``invalid token: jwks unavailable`` if the keys
        cannot be fetched, ``invalid token: unknown kid`` if the set lacks ``kid``.
        Concurrent callers share one fetch; a caller that is cancelled while
        waiting does not cancel the fetch the others wait for.
        """
        now = self._clock()
        if self._fresh(now) and kid in self._keys:
            return self._keys[kid]
        if self._closed:
            raise invalid_token("jwks unavailable")
        task = self._inflight
        if task is None or task.done():
            task = None
            if self._attempted_at is None or now - self._attempted_at >= self.min_refetch_interval:
                self._attempted_at = now
                task = self._inflight = asyncio.get_running_loop().create_task(self._refresh(now))
        if task is not None:
            await asyncio.shield(task)
        found = self._keys.get(kid)
        # After a failed fetch the previous (stale) keys still serve.
        if found is not None:
            return found
        if self._last_failed or self._closed:
            raise invalid_token("jwks unavailable")
        raise invalid_token("unknown kid")

    async def _refresh(self, started: float) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.timeout):
                document = await self._fetch()
            keys = parse_jwks(document)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RecursionError) as exc:
            # ValueError covers msgspec.DecodeError and an unusable document.
            self._last_failed = True
            log.warning("jwks: fetching %s failed: %s", self.url, type(exc).__name__)
            return
        except Exception:
            # Whatever else goes wrong in I/O or a third-party parser: keys unavailable.
            self._last_failed = True
            log.warning("jwks: fetching %s failed", self.url, exc_info=True)
            return
        self._keys = keys
        self._fetched_at = started
        self._last_failed = False

    async def _fetch(self) -> object:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info, response.history, status=response.status, message="unexpected status"
                )
            if (response.content_length or 0) > MAX_JWKS_BYTES:
                raise ValueError("jwks document too large")
            body = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("jwks document too large")
        return msgspec.json.decode(bytes(body))

    async def close(self) -> None:
        """Stop fetching and cancel a fetch in flight (each fetch has its own HTTP session)."""
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
