"""The HS256/384/512 fast path of TokenVerifier answers exactly as the general (PyJWT) path.

Every token, well-formed or mangled, gets the same claims or the same error (type, code
and reason) from a verifier with the fast path and from one forced onto the general path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jwt import PyJWS
from jwt.exceptions import DecodeError

from trunkline.auth import TokenVerifier
from trunkline.auth.jwt import HmacKey, _b64url
from trunkline.errors import ClientError, Disconnect
from trunkline.session import new_client_id

from .test_jwt import NOW, SECRET, b64u, compact, hs_token

ALGS = ("HS256", "HS384", "HS512")


def _general() -> TokenVerifier:
    verifier = TokenVerifier(hmac_secret_key=SECRET)
    verifier._hmac.clear()  # every token takes PyJWT's path
    return verifier


FAST, GENERAL = TokenVerifier(hmac_secret_key=SECRET), _general()


def _outcome(verifier: TokenVerifier, token: str) -> tuple[Any, ...]:
    try:
        claims = asyncio.run(verifier.verify_connection(token, NOW))
    except (ClientError, Disconnect) as exc:
        return (type(exc).__name__, exc.code, getattr(exc, "reason", getattr(exc, "message", "")))
    return ("ok", claims)


def _same(token: str) -> tuple[Any, ...]:
    fast = _outcome(FAST, token)
    assert fast == _outcome(GENERAL, token), token
    return fast


def test_a_valid_token_is_accepted_by_both_paths_with_the_same_claims() -> None:
    for alg in ALGS:
        token = hs_token({"sub": "u1", "exp": NOW + 60, "info": {"a": 1}, "channels": ["c"]}, alg=alg)
        outcome = _same(token)
        assert outcome[0] == "ok"
        assert outcome[1].user == "u1"


def test_the_fast_path_refuses_a_bad_signature_and_an_expired_token_like_pyjwt() -> None:
    good = hs_token({"sub": "u1"})
    head, body, _ = good.split(".")
    forged = f"{head}.{body}.{b64u(hmac.new(b'other-secret', f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    assert _same(forged)[0] == "Disconnect"
    assert _same(hs_token({"sub": "u1", "exp": NOW - 60}))[0] == "ClientError"


def test_odd_headers_and_segments_give_the_general_paths_answer() -> None:
    cases = [
        hs_token({"sub": "u"}, header={"crit": ["exp"]}),
        hs_token({"sub": "u"}, header={"kid": 5}),
        hs_token({"sub": "u"}, header={"b64": False}),
        hs_token({"sub": "u"}, header={"alg": ["HS256"]}),
        hs_token({"sub": "u"}, header={"alg": "none"}),
        hs_token(b"not json"),
        hs_token(b"[1,2]"),
        "a.b",
        "a.b.c.d",
        "..",
        hs_token({"sub": "u"}) + "=",
        hs_token({"sub": "u"}).replace(".", "=.", 1),
    ]
    for token in cases:
        _same(token)


@settings(max_examples=300, deadline=None)
@given(
    alg=st.sampled_from(ALGS),
    sub=st.text(max_size=8),
    cut=st.integers(min_value=0, max_value=400),
    junk=st.text(alphabet="AZaz09-_=.!+/ \u00e9", max_size=4),
    mode=st.sampled_from(["keep", "insert", "replace", "truncate"]),
)
def test_mangled_tokens_get_the_same_answer_on_both_paths(alg: str, sub: str, cut: int, junk: str, mode: str) -> None:
    token = hs_token({"sub": sub, "exp": NOW + 60, "client": new_client_id()}, alg=alg)
    at = cut % (len(token) + 1)
    if mode == "insert":
        token = token[:at] + junk + token[at:]
    elif mode == "replace":
        token = token[:at] + junk + token[at + len(junk) :]
    elif mode == "truncate":
        token = token[:at]
    _same(token)


def test_header_fields_as_pyjwt_writes_them_take_the_fast_path() -> None:
    token = hs_token({"sub": "u2"}, header={"kid": "k1"})
    assert FAST._verify_hmac(token.encode()) == compact({"sub": "u2"})


@settings(max_examples=200, deadline=None)
@given(secret=st.binary(max_size=300), message=st.binary(max_size=300), alg=st.sampled_from(ALGS))
def test_the_prepared_hmac_key_signs_as_the_hmac_module(secret: bytes, message: bytes, alg: str) -> None:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    assert HmacKey(secret, digest).sign(message) == hmac.new(secret, message, digest).digest()


@settings(max_examples=500, deadline=None)
@given(segment=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=12))
def test_a_segment_the_fast_path_decodes_is_one_pyjwt_decodes_the_same(segment: str) -> None:
    raw = segment.encode()
    try:
        ours: bytes | None = _b64url(raw)
    except ValueError:
        ours = None
    try:
        theirs: bytes | None = PyJWS._decode_base64url_segment(raw, "payload")
    except DecodeError:
        theirs = None
    assert ours == theirs
