"""``GET /connection/poll``: short and long polls of a channel's history stream, over real HTTP.

An in-process server with ``poll.enabled`` and aiohttp as the client; publications go
through the node (and, in the cluster test, the server API of another node over Redis).
Hostile query strings are sent on raw sockets to a subprocess server (hypothesis).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Process, Running, eventually, token
from trunkline.config import Poll
from trunkline.transport.poll import MAX_OFFSET, PollQuery, Refused, parse_query, waiting

HISTORY = {"history_size": 100, "history_ttl": "300s"}
NAMESPACES: list[dict[str, Any]] = [
    {
        "name": "small",
        "history_size": 2,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_recovery": True,
    },
    {"name": "nohistory", "allow_subscribe_for_client": True},
    {"name": "closed", **HISTORY, "allow_recovery": True},
    {"name": "norecovery", **HISTORY, "allow_subscribe_for_client": True},
    {
        "name": "anon",
        **HISTORY,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "allow_recovery": True,
    },
    {"name": "limited", **HISTORY, "allow_user_limited_channels": True, "allow_recovery": True},
    {
        "name": "regex",
        **HISTORY,
        "allow_subscribe_for_client": True,
        "allow_recovery": True,
        "channel_regex": "^[a-z]+$",
    },
]
POLL: dict[str, Any] = {
    "poll": {"enabled": True, "max_wait": "10s", "max_limit": 50},
    "channel": {"namespaces": NAMESPACES},
}


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    running: Running = await start_server(POLL)
    return running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def poll(
    http: aiohttp.ClientSession,
    srv: Running,
    *,
    user: str | None = "42",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if user is not None:
        hdrs.setdefault("Authorization", f"Bearer {token(user)}")
    query = {k: str(v) for k, v in params.items()}
    async with http.get(f"{srv.http_url}/connection/poll", params=query, headers=hdrs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        return resp.status, await resp.json()


async def publish(srv: Running, channel: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await srv.server.node.publish(channel, json.dumps({"n": i}).encode())


def numbers(body: dict[str, Any]) -> list[int]:
    return [p["data"]["n"] for p in body["publications"]]


# ------------------------------------------------------------------------------ short polls


async def test_first_poll_gives_the_position_then_the_publications_after_it(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    await publish(srv, "news", 2)
    status, first = await poll(http, srv, channel="news")
    assert status == 200
    assert first["publications"] == [] and first["offset"] == 2 and first["epoch"]
    assert "recovered" not in first  # no position was given
    await publish(srv, "news", 3, start=2)
    status, body = await poll(http, srv, channel="news", since=first["offset"], epoch=first["epoch"])
    assert status == 200
    assert numbers(body) == [2, 3, 4]
    assert [p["offset"] for p in body["publications"]] == [3, 4, 5]
    assert body["offset"] == 5 and body["epoch"] == first["epoch"] and body["recovered"] is True
    assert "more" not in body
    status, again = await poll(http, srv, channel="news", since=5, epoch=first["epoch"])
    assert (status, again["publications"], again["offset"], again["recovered"]) == (200, [], 5, True)


async def test_since_zero_reads_the_whole_history(srv: Running, http: aiohttp.ClientSession) -> None:
    await publish(srv, "all", 4)
    status, body = await poll(http, srv, channel="all", since=0)
    assert status == 200 and numbers(body) == [0, 1, 2, 3] and body["recovered"] is True


async def test_limit_cuts_the_answer_and_says_more(srv: Running, http: aiohttp.ClientSession) -> None:
    await publish(srv, "lim", 5)
    status, body = await poll(http, srv, channel="lim", since=0, limit=2)
    assert status == 200 and numbers(body) == [0, 1] and body["more"] is True and body["offset"] == 2
    status, body = await poll(http, srv, channel="lim", since=2, epoch=body["epoch"], limit=2)
    assert numbers(body) == [2, 3] and body["more"] is True
    status, body = await poll(http, srv, channel="lim", since=4, epoch=body["epoch"], limit=2)
    assert numbers(body) == [4] and "more" not in body and body["recovered"] is True
    # poll.max_limit (50) caps any larger limit
    await publish(srv, "lim", 60, start=5)
    status, body = await poll(http, srv, channel="lim", since=0, limit=10**6)
    assert status == 200 and len(body["publications"]) == 50 and body["more"] is True


async def test_a_changed_epoch_says_the_client_missed_data(srv: Running, http: aiohttp.ClientSession) -> None:
    await publish(srv, "ep", 3)
    status, body = await poll(http, srv, channel="ep", since=1, epoch="not-the-epoch")
    assert status == 200
    assert body["recovered"] is False
    assert numbers(body) == [0, 1, 2]  # the new stream from its start
    assert body["epoch"] != "not-the-epoch" and body["offset"] == 3


async def test_a_position_older_than_the_history_says_the_client_missed_data(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    await publish(srv, "small:room", 5)  # the namespace keeps 2
    _, top = await poll(http, srv, channel="small:room")
    status, body = await poll(http, srv, channel="small:room", since=1, epoch=top["epoch"])
    assert status == 200 and body["recovered"] is False
    assert numbers(body) == [3, 4] and body["offset"] == 5  # what the history still holds
    status, body = await poll(http, srv, channel="small:room", since=3, epoch=top["epoch"])
    assert body["recovered"] is True and numbers(body) == [3, 4]


async def test_a_position_ahead_of_the_stream_is_not_recovered(srv: Running, http: aiohttp.ClientSession) -> None:
    await publish(srv, "ahead", 2)
    _, top = await poll(http, srv, channel="ahead")
    status, body = await poll(http, srv, channel="ahead", since=MAX_OFFSET, epoch=top["epoch"])
    assert (status, body["recovered"], body["publications"], body["offset"]) == (200, False, [], 2)


async def test_binary_data_travels_as_base64(srv: Running, http: aiohttp.ClientSession) -> None:
    await srv.server.node.publish("bin", b"\x00\xff binary")
    status, body = await poll(http, srv, channel="bin", since=0)
    assert status == 200
    assert [base64.b64decode(p["b64data"]) for p in body["publications"]] == [b"\x00\xff binary"]


# ------------------------------------------------------------------------------ long polls


async def test_long_poll_is_woken_by_the_next_publication(srv: Running, http: aiohttp.ClientSession) -> None:
    node = srv.server.node
    _, top = await poll(http, srv, channel="live")
    started = time.monotonic()
    request = asyncio.ensure_future(poll(http, srv, channel="live", since=top["offset"], epoch=top["epoch"], wait=8))
    await eventually(lambda: waiting(node) == 1)
    assert node.hub.num_subscriptions >= 1  # the waiting request is a subscriber on the engine
    await publish(srv, "live", 1, start=7)
    status, body = await asyncio.wait_for(request, 5)
    assert status == 200 and numbers(body) == [7] and body["recovered"] is True
    assert body["offset"] == top["offset"] + 1
    assert time.monotonic() - started < 5  # woken, not timed out
    await eventually(lambda: waiting(node) == 0 and node.hub.num_subscriptions == 0)


async def test_long_poll_from_the_top_without_a_position(srv: Running, http: aiohttp.ClientSession) -> None:
    node = srv.server.node
    request = asyncio.ensure_future(poll(http, srv, channel="fresh", wait=8))
    await eventually(lambda: waiting(node) == 1)
    await publish(srv, "fresh", 2)
    status, body = await asyncio.wait_for(request, 5)
    assert status == 200 and numbers(body)[0] == 0 and "recovered" not in body


async def test_long_poll_answers_at_once_when_something_is_new(srv: Running, http: aiohttp.ClientSession) -> None:
    await publish(srv, "ready", 2)
    started = time.monotonic()
    status, body = await poll(http, srv, channel="ready", since=0, wait=8)
    assert status == 200 and numbers(body) == [0, 1]
    assert time.monotonic() - started < 4


async def test_long_poll_times_out_with_an_empty_answer(srv: Running, http: aiohttp.ClientSession) -> None:
    _, top = await poll(http, srv, channel="quiet")
    started = time.monotonic()
    status, body = await poll(http, srv, channel="quiet", since=top["offset"], epoch=top["epoch"], wait=0.3)
    elapsed = time.monotonic() - started
    assert status == 200 and body["publications"] == [] and body["recovered"] is True
    assert body["offset"] == top["offset"]
    assert 0.25 <= elapsed < 4


async def test_wait_is_cut_to_max_wait(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv = await start_server({**POLL, "poll": {"enabled": True, "max_wait": "0.2s"}})
    started = time.monotonic()
    status, body = await poll(http, srv, channel="cut", since=0, wait=3600)
    assert status == 200 and body["publications"] == []
    assert time.monotonic() - started < 3


async def test_long_polls_are_bounded_per_node(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv = await start_server({**POLL, "poll": {"enabled": True, "max_waiting": 1}})
    node = srv.server.node
    first = asyncio.ensure_future(poll(http, srv, channel="busy", wait=8))
    await eventually(lambda: waiting(node) == 1)
    async with http.get(
        f"{srv.http_url}/connection/poll",
        params={"channel": "busy", "wait": "5"},
        headers={"Authorization": f"Bearer {token('42')}"},
    ) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert "too many long polls" in (await resp.json())["error"]
    # a short poll still works
    status, _ = await poll(http, srv, channel="busy")
    assert status == 200
    await publish(srv, "busy", 1)
    assert (await asyncio.wait_for(first, 5))[0] == 200


async def test_waiting_long_polls_count_in_the_connection_limit(
    start_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    srv = await start_server({**POLL, "client": {"connection_limit": 1}})
    node = srv.server.node
    first = asyncio.ensure_future(poll(http, srv, channel="full", wait=8))
    await eventually(lambda: waiting(node) == 1)
    status, body = await poll(http, srv, channel="full")
    assert status == 503 and body["error"] == "connection limit reached"
    await publish(srv, "full", 1)
    assert (await asyncio.wait_for(first, 5))[0] == 200
    status, _ = await poll(http, srv, channel="full")
    assert status == 200  # the limit is free again


async def test_long_poll_in_a_cluster_is_woken_by_a_publication_on_another_node(
    start_server: Callable[..., Any], http: aiohttp.ClientSession, redis_url: str
) -> None:
    engine = {"engine": {"type": "redis", "redis": {"address": redis_url, "prefix": f"poll{time.time_ns()}"}}}
    a = await start_server({**POLL, **engine})
    b = await start_server({**POLL, **engine})
    _, top = await poll(http, a, channel="cluster")
    request = asyncio.ensure_future(poll(http, a, channel="cluster", since=top["offset"], epoch=top["epoch"], wait=8))
    await eventually(lambda: waiting(a.server.node) == 1)
    await publish(b, "cluster", 1, start=3)
    status, body = await asyncio.wait_for(request, 5)
    assert status == 200 and numbers(body) == [3] and body["recovered"] is True


# ------------------------------------------------------------------------------ auth and permissions


async def test_tokens_in_the_header_or_the_query(srv: Running, http: aiohttp.ClientSession) -> None:
    status, _ = await poll(http, srv, user=None, channel="news", token=token("42"))
    assert status == 200
    status, body = await poll(http, srv, user=None, channel="news")
    assert status == 401 and "token is required" in body["error"] and body["code"] == 101
    status, body = await poll(http, srv, user=None, channel="news", token="not.a.jwt")
    assert status == 401 and body["code"] == 3500
    bad = token("42", secret="another-secret-of-enough-length")
    status, body = await poll(http, srv, user=None, headers={"Authorization": f"Bearer {bad}"}, channel="news")
    assert status == 401 and "bad signature" in body["error"]
    expired = token("42", ttl=-60)
    status, body = await poll(http, srv, user=None, headers={"Authorization": f"Bearer {expired}"}, channel="news")
    assert status == 401 and body["code"] == 109


async def test_anonymous_polls(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv = await start_server({**POLL, "client": {"allow_anonymous_connect_without_token": True}})
    status, _ = await poll(http, srv, user=None, channel="anon:room")
    assert status == 200
    status, body = await poll(http, srv, user=None, channel="news")  # no allow_subscribe_for_anonymous
    assert status == 403 and body["code"] == 103


async def test_namespace_permissions(srv: Running, http: aiohttp.ClientSession) -> None:
    status, body = await poll(http, srv, channel="closed:room")
    assert status == 403 and "subscribing is not allowed" in body["error"]
    status, body = await poll(http, srv, channel="norecovery:room")
    assert status == 403 and "allow_recovery" in body["error"]
    status, body = await poll(http, srv, channel="nohistory:room")
    assert status == 400 and body["code"] == 108
    status, body = await poll(http, srv, channel="nowhere:room")
    assert status == 404 and body["code"] == 102
    status, body = await poll(http, srv, channel="regex:UPPER")
    assert status == 404
    assert (await poll(http, srv, channel="regex:lower"))[0] == 200
    status, body = await poll(http, srv, channel="x" * 300)
    assert status == 400 and "too long" in body["error"]
    status, body = await poll(http, srv, channel="__trunkline:stats")
    assert status == 404


async def test_token_channels_grant_a_channel_the_namespace_closes(srv: Running, http: aiohttp.ClientSession) -> None:
    granted = token("42", channels=["closed:room"])
    status, _ = await poll(http, srv, user=None, headers={"Authorization": f"Bearer {granted}"}, channel="closed:room")
    assert status == 200


async def test_private_channels_need_a_subscription_token(srv: Running, http: aiohttp.ClientSession) -> None:
    status, body = await poll(http, srv, channel="$secret")
    assert status == 403 and "sub_token" in body["error"]
    sub = token("42", channel="$secret")
    status, _ = await poll(http, srv, channel="$secret", sub_token=sub)
    assert status == 200
    status, body = await poll(http, srv, channel="$secret", sub_token=token("43", channel="$secret"))
    assert status == 403 and "another user or channel" in body["error"]
    status, body = await poll(http, srv, channel="$secret", sub_token=token("42", channel="$other"))
    assert status == 403
    status, body = await poll(http, srv, channel="$secret", sub_token=token("42", channel="$secret", secret="x" * 40))
    assert status == 403 and "subscription token" in body["error"]


async def test_user_limited_channels(srv: Running, http: aiohttp.ClientSession) -> None:
    assert (await poll(http, srv, channel="limited:room#42"))[0] == 200
    status, body = await poll(http, srv, channel="limited:room#43")
    assert status == 403 and "other users" in body["error"]


async def test_a_subscribe_hook_needs_subscription_tokens(
    start_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    srv = await start_server(POLL)

    @srv.server.node.on_subscribe
    async def allow(event: Any) -> None:
        return None

    status, body = await poll(http, srv, channel="news")
    assert status == 403 and "subscribe hook" in body["error"]
    assert (await poll(http, srv, channel="news", sub_token=token("42", channel="news")))[0] == 200


# ------------------------------------------------------------------------------ HTTP


async def test_off_by_default(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv = await start_server()
    async with http.get(f"{srv.http_url}/connection/poll", params={"channel": "news"}) as resp:
        assert resp.status == 404


async def test_methods_origins_and_cors(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    srv = await start_server({**POLL, "client": {"allowed_origins": ["https://app.example"]}})
    url = f"{srv.http_url}/connection/poll"
    async with http.post(url, params={"channel": "news"}) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET, OPTIONS"
        assert "method not allowed" in (await resp.json())["error"]
    async with http.get(url, params={"channel": "news"}, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "origin not allowed"
    status, _ = await poll(http, srv, headers={"Origin": "https://app.example"}, channel="news")
    assert status == 200
    async with http.get(
        url,
        params={"channel": "news"},
        headers={"Origin": "https://app.example", "Authorization": f"Bearer {token('42')}"},
    ) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Headers": "authorization"}
    async with http.options(url, headers=preflight) as resp:
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Headers"] == "authorization"


async def test_malformed_queries_are_400(srv: Running, http: aiohttp.ClientSession) -> None:
    for params, words in [
        ({}, "channel required"),
        ({"channel": "news", "since": "-1"}, "since must be an integer"),
        ({"channel": "news", "since": str(MAX_OFFSET + 1)}, "since must be an integer"),
        ({"channel": "news", "limit": "0"}, "at least 1"),
        ({"channel": "news", "wait": "nan"}, "wait must be a number"),
        ({"channel": "news", "wait": "1e3"}, "wait must be a number"),
        ({"channel": "news", "epoch": "e" * 300}, "epoch over"),
    ]:
        status, body = await poll(http, srv, **params)
        assert status == 400 and words in body["error"], (params, body)
    async with http.get(
        f"{srv.http_url}/connection/poll?channel=a&channel=b", headers={"Authorization": f"Bearer {token('42')}"}
    ) as resp:
        assert resp.status == 400 and "given twice" in (await resp.json())["error"]


# ------------------------------------------------------------------------------ hypothesis

_POLL_SETTINGS = Poll(enabled=True, max_wait=10, max_limit=50)
_KEYS = st.sampled_from(["channel", "since", "epoch", "limit", "wait", "token", "sub_token", "x", ""])
_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "0", "1", "news", "$secret", "closed:room", "__trunkline:x", "1.5", " 1", "+1", "0x10"]),
)
_ITEMS = st.lists(st.tuples(_KEYS, _VALUES), max_size=8)


@given(_ITEMS)
def test_parse_query_answers_every_input_with_a_query_or_400(items: list[tuple[str, str]]) -> None:
    try:
        query = parse_query(items, _POLL_SETTINGS)
    except Refused as refused:
        assert refused.status == 400 and refused.reason.startswith("bad request")
        return
    assert isinstance(query, PollQuery) and query.channel
    assert 1 <= query.limit <= 50 and 0 <= query.wait <= 10
    assert query.since is None or 0 <= query.since <= MAX_OFFSET


def _raw_get(port: int, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


_RAW_VALUE = st.one_of(
    _VALUES.map(lambda v: urllib.parse.quote(v, safe="")),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#&="), max_size=30),
    st.binary(max_size=20).map(lambda b: "".join(f"%{x:02X}" for x in b)),
)


@pytest.fixture(scope="module")
def poll_process(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import BASE_CONFIG, deep_merge, free_port

    port = free_port()
    path = tmp_path_factory.mktemp("poll") / "trunkline.json"
    # through deep_merge, not config["client"][...] = ...: that would change BASE_CONFIG's own
    # "client" table for every later test
    overrides = {**POLL, "poll": {"enabled": True, "max_wait": "0.05s"}}
    config = deep_merge(deep_merge(BASE_CONFIG, overrides), {"client": {"allow_anonymous_connect_without_token": True}})
    path.write_text(json.dumps(config))
    proc = Process(port=port, config_path=path, log_path=path.parent / "server.log")
    proc.start()
    yield proc
    proc.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_KEYS, _RAW_VALUE), max_size=8), st.booleans())
def test_hostile_query_strings_get_json_answers_never_500(
    poll_process: Process, pairs: list[tuple[str, str]], with_token: bool
) -> None:
    query = "&".join(f"{k}={v}" for k, v in pairs)
    if with_token:
        query += "&token=" + token("42")
    status, body = _raw_get(poll_process.port, "/connection/poll?" + query)
    assert status in {200, 400, 401, 403, 404}, (status, body)
    answer = json.loads(body)
    if status == 200:
        assert isinstance(answer["publications"], list) and isinstance(answer["offset"], int)
    else:
        assert isinstance(answer["error"], str) and answer["error"]
    assert poll_process.proc is not None and poll_process.proc.poll() is None


def test_the_hostile_run_logged_no_server_error(poll_process: Process) -> None:
    status, _ = _raw_get(poll_process.port, f"/connection/poll?channel=news&token={token('42')}")
    assert status == 200
    log = poll_process.output()
    assert "Traceback" not in log and "Error handling request" not in log, log[-2000:]


def test_poll_settings_are_validated() -> None:
    from trunkline.config import settings_from_mapping
    from trunkline.errors import ConfigError

    assert settings_from_mapping({}).poll == Poll()
    assert Poll().enabled is False
    for poll_section, key in [
        ({"max_limit": 0}, "poll.max_limit"),
        ({"max_waiting": 0}, "poll.max_waiting"),
        ({"handler_prefix": "poll"}, "poll.handler_prefix"),
        ({"handler_prefix": "/connection/websocket"}, "poll.handler_prefix"),
    ]:
        with pytest.raises(ConfigError) as info:
            settings_from_mapping({"poll": poll_section})
        assert info.value.key == key, (poll_section, info.value)
    with pytest.raises(ConfigError):
        settings_from_mapping({"poll": {"max_wait": "-1s"}})
