"""Hostile input against a live ``trunkline serve``: hypothesis-generated tokens.

Random strings and JWT-shaped garbage (any header, any claims, sometimes even a
genuine signature over nonsense claims) go into ``connect`` and ``subscribe``. Every
answer must be one the protocol defines, the server must stay up, log no traceback
and no token, and a bystander connected throughout must not notice anything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Process, deep_merge
from tests.security.conftest import API_KEY, SEC_CONFIG, SECRET, conn_token

CONFIG = deep_merge(
    SEC_CONFIG,
    {
        "log": {"level": "info"},
        "client": {"ping_interval": "120s", "pong_timeout": "10s"},
        "websocket": {"message_size_limit": 65536},
    },
)
HYPOTHESIS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# What a client may see: a reply (success or one of these errors) or one of these closes.
CONNECT_ERRORS = {109, 110}
CONNECT_CLOSES = {3500, 3501, 1009}
SUBSCRIBE_ERRORS = {102, 103, 105, 107, 109}
SUBSCRIBE_CLOSES = {3500, 3501, 1009}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
claim_values = st.one_of(
    json_values,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(min_value=-1e12, max_value=1e12),
    st.just(int(time.time()) + 3600),
    st.just(int(time.time()) - 3600),
)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "HS512", "RS256", "ES256", "EdDSA", "none", "None", "", "HS1"]) | st.text()},
    optional={"typ": st.text(max_size=5), "kid": json_values, "crit": json_values, "jku": st.text(max_size=30)},
)
claims = st.dictionaries(
    st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "channel", "info", "b64info", "channels", "subs"])
    | st.text(max_size=6),
    claim_values,
    max_size=8,
)


@st.composite
def jwt_shaped(draw: st.DrawFn) -> str:
    header = draw(headers)
    payload = draw(claims)
    head = b64u(json.dumps(header).encode())
    body = b64u(json.dumps(payload).encode()) if draw(st.booleans()) else draw(st.text(max_size=40))
    signing_input = f"{head}.{body}".encode()
    signature = draw(
        st.one_of(
            st.just(b64u(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())),  # genuine
            st.binary(max_size=80).map(b64u),
            st.text(max_size=40),
            st.just(""),
        )
    )
    return draw(st.sampled_from([f"{head}.{body}.{signature}", f"{head}.{body}", f"{head}..{signature}"]))


tokens = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.=", min_size=1, max_size=400),
    jwt_shaped(),
    # Over websocket.message_size_limit once wrapped in a command: 1009.
    st.tuples(st.text(min_size=1, max_size=8), st.integers(66_000, 80_000)).map(lambda p: (p[0] * p[1])[: p[1]]),
)


def outcome(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any] | tuple[int, str]:
    """The reply to command 1... of this connection, or (code, reason) of the close."""
    try:
        while True:
            for line in str(ws.recv(timeout=timeout)).strip().split("\n"):
                item = json.loads(line)
                if item.get("id"):
                    return dict(item)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason


def send(ws: ClientConnection, cmd_id: int, method: str, params: dict[str, Any]) -> dict[str, Any] | tuple[int, str]:
    with contextlib.suppress(ConnectionClosed):  # closed already: the close frame is the answer
        ws.send(json.dumps({"id": cmd_id, method: params}))
    return outcome(ws)


def check(
    result: dict[str, Any] | tuple[int, str], ok: str, errors: set[int], closes: set[int], seen: Counter[object]
) -> None:
    seen[result[0] if isinstance(result, tuple) else result["error"]["code"] if "error" in result else ok] += 1
    if isinstance(result, tuple):
        code, reason = result
        assert code in closes, result
        assert reason, f"close {code} without a reason"
        return
    if "error" in result:
        assert result["error"]["code"] in errors, result
        assert result["error"]["message"]
        return
    assert ok in result, result


def test_hostile_tokens_against_a_live_server(server_process: Callable[..., Process]) -> None:
    proc = server_process(CONFIG)
    url = proc.ws_url
    sent: list[str] = []

    with connect(url, open_timeout=5, max_size=None) as bystander:
        run_with_bystander(proc, bystander, sent)


def run_with_bystander(proc: Process, bystander: ClientConnection, sent: list[str]) -> None:
    url = proc.ws_url
    seen: Counter[object] = Counter()
    bystander.send(json.dumps({"id": 1, "connect": {"token": conn_token("bystander")}}))
    assert "connect" in outcome(bystander)
    bystander.send(json.dumps({"id": 2, "subscribe": {"channel": "lobby"}}))
    assert "subscribe" in outcome(bystander)

    @HYPOTHESIS
    @given(token=tokens)
    def hostile_connect(token: str) -> None:
        sent.append(token)
        with connect(url, open_timeout=5, max_size=None) as ws:
            check(send(ws, 1, "connect", {"token": token}), "connect", CONNECT_ERRORS, CONNECT_CLOSES, seen)

    @HYPOTHESIS
    @given(token=tokens, channel=st.sampled_from(["$private", "news", "$" + "x" * 300, ""]) | st.text(max_size=30))
    def hostile_subscribe(token: str, channel: str) -> None:
        sent.append(token)
        with connect(url, open_timeout=5, max_size=None) as ws:
            assert "connect" in send(ws, 1, "connect", {"token": conn_token("42")})
            result = send(ws, 2, "subscribe", {"channel": channel, "token": token})
            check(result, "subscribe", SUBSCRIBE_ERRORS, SUBSCRIBE_CLOSES, seen)

    started = time.monotonic()
    hostile_connect()
    hostile_subscribe()
    assert time.monotonic() - started < 40
    assert seen[3500] and seen[103] and seen[1009], seen  # verification, refusal and size paths all ran

    # Still up, still serving the bystander, nothing alarming or secret in the log.
    assert proc.proc is not None and proc.proc.poll() is None
    request = urllib.request.Request(
        proc.http_url + "/api/publish",
        data=json.dumps({"channel": "lobby", "data": {"still": "here"}}).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    push = json.loads(str(bystander.recv(timeout=5)))
    assert push["push"]["pub"]["data"] == {"still": "here"}
    proc.stop()
    log = proc.output()
    for alarm in ("Traceback", "ERROR", "failed", "Exception"):
        assert alarm not in log, log[-3000:]
    long_tokens = {t for t in sent if len(t) >= 24 and t.strip()}
    assert not [t for t in long_tokens if t in log]
