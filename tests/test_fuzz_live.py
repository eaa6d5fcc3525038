"""Hypothesis against a live server: hostile frames never hang it, crash it or hurt other clients.

One in-process server (``start_server``), real aiohttp WebSocket clients. Every
generated case opens a fresh connection, optionally connects with a valid token,
sends its frames, then a probe ``{"id":PROBE,"ping":{}}``. The case must end
within 3 s either with the probe answered (every error reply on the way carrying a
protocol code) or with a close frame whose code the reference allows (§7.3) and a
reason. Meanwhile a healthy centrifuge-python client subscribed to a channel must
receive every publication the server API sends during the whole run, without ever
being disconnected; afterwards the server accepts new connections, holds no
leftover sessions or subscriptions, logged no errors, and its RSS grew < 50 MB.

Hypothesis runs in a worker thread and hands each case to the test's event loop, so
the server, the healthy client and the API publisher keep running in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import WSMsgType
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    ClientEventHandler,
    DisconnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.conftest import API_KEY, Running, eventually, token
from trunkline.protocol import messages

T = TypeVar("T")

HEALTHY = "healthy"
PROBE = 4_000_000_000
CASE_TIMEOUT = 3.0
SIZE_LIMIT = 65536  # websocket.message_size_limit default
MAX_RSS_GROWTH = 50 * 1024 * 1024

# Close codes a hostile client may legitimately get (reference §7.3): too many requests,
# invalid token, bad request, channel limit. 1007/1009 are the RFC 6455 codes aiohttp
# itself sends for invalid UTF-8 text and oversized messages; they are allowed per case.
PROTOCOL_CLOSES = {3013, 3500, 3501, 3505}
# Reply error codes a hostile client may legitimately get (reference §7.1); never 100.
PROTOCOL_ERRORS = set(range(101, 113))


# ---------------------------------------------------------------- cases


@dataclass(frozen=True, repr=False)
class Case:
    connect: bool
    frames: tuple[tuple[str, bytes], ...]  # ("text" | "binary", payload)

    @property
    def invalid_text(self) -> bool:
        return any(kind == "text" and not _is_utf8(data) for kind, data in self.frames)

    @property
    def oversized(self) -> bool:
        return any(len(data) > SIZE_LIMIT for _, data in self.frames)

    def __repr__(self) -> str:
        shown = ", ".join(f"({kind!r}, {_clip(data)})" for kind, data in self.frames)
        return f"Case(connect={self.connect}, frames=({shown},))"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))  # hypothesis prints failing examples with this


def _clip(data: bytes, keep: int = 300) -> str:
    if len(data) <= keep:
        return repr(data)
    return f"{data[: keep // 2]!r} + <{len(data) - keep} bytes> + {data[-keep // 2 :]!r}"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def text(*lines: Any) -> tuple[str, bytes]:
    return ("text", b"\n".join(line if isinstance(line, bytes) else dumps(line) for line in lines))


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
ids: st.SearchStrategy[Any] = st.one_of(
    st.integers(1, 1000),
    st.sampled_from([0, -1, 2**32, 2**63, 2**64, 10**30, 1.5, "1", None, True, [], {}]),
)
channels = st.one_of(
    st.sampled_from(
        [
            HEALTHY,
            "fuzz",
            "",
            "unknown:x",
            "$private",
            "$smallhistory:x",
            "smallhistory:x",
            "nohistory:x",
            "news#42",
            "#fuzz",
            ":x",
            "x" * 300,
            "\u0000",
            "é🙂",
        ]
    ),
    st.text(max_size=20),
    json_values,
)
METHODS = list(messages.METHODS)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "data": json_values,
    "token": st.one_of(st.text(max_size=30), st.just("a.b.c"), st.just(token("42")), json_values),
    "recover": st.one_of(st.booleans(), json_values),
    "offset": st.one_of(st.integers(-5, 2**64), json_values),
    "epoch": st.one_of(st.text(max_size=8), json_values),
    "limit": st.one_of(st.integers(-(2**31) - 1, 2**31), json_values),
    "since": st.one_of(
        st.fixed_dictionaries({"offset": st.integers(0, 50), "epoch": st.text(max_size=8)}), json_values
    ),
    "reverse": st.one_of(st.booleans(), json_values),
    "flag": st.one_of(st.integers(-1, 2**40), json_values),
    "type": st.one_of(st.integers(-1, 5), json_values),
    "delta": st.one_of(st.sampled_from(["fossil", "", "x"]), json_values),
    "positioned": st.booleans(),
    "recoverable": st.booleans(),
    "join_leave": st.booleans(),
    "method": st.one_of(st.text(max_size=8), json_values),
    "subs": st.one_of(st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({}), max_size=3), json_values),
    "name": st.text(max_size=20),
    "tf": json_values,
}
params = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={"channel": channels, **field_values},
    ),
    json_values,
)
commands = st.one_of(
    # A request object with maybe-wrong ids, fields and types.
    st.builds(
        lambda cid, method, p, extra: {**({} if cid is None else {"id": cid}), method: p, **extra},
        st.none() | ids,
        st.sampled_from([*METHODS, "bogus", "method", "params"]),
        params,
        st.dictionaries(st.sampled_from([*METHODS, "flag", "headers"]), json_values, max_size=2),
    ),
    # Objects made of the protocol's own keys.
    st.dictionaries(st.sampled_from(["id", *METHODS]), json_values, max_size=3),
    # Any JSON value at all (arrays, strings, numbers...).
    json_values,
)

# Well-typed commands with wrong values: these get past the decoder into the handlers.
channel_names = st.one_of(channels.filter(lambda c: isinstance(c, str)), st.text(max_size=20))
uint63 = st.integers(0, 2**63 - 1)
typed_params: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "connect": st.fixed_dictionaries(
        {}, optional={"token": field_values["token"].filter(lambda t: isinstance(t, str)), "data": json_values}
    ),
    "subscribe": st.fixed_dictionaries(
        {"channel": channel_names},
        optional={
            "token": st.text(max_size=30),
            "recover": st.booleans(),
            "offset": uint63,
            "epoch": st.text(max_size=8),
            "positioned": st.booleans(),
            "recoverable": st.booleans(),
            "join_leave": st.booleans(),
            "delta": st.sampled_from(["fossil", "", "x"]),
            "flag": st.integers(0, 3),
            "type": st.integers(0, 2),
            "data": json_values,
        },
    ),
    "unsubscribe": st.fixed_dictionaries({"channel": channel_names}),
    "publish": st.fixed_dictionaries({"channel": channel_names}, optional={"data": json_values}),
    "presence": st.fixed_dictionaries({"channel": channel_names}),
    "presence_stats": st.fixed_dictionaries({"channel": channel_names}),
    "history": st.fixed_dictionaries(
        {"channel": channel_names},
        optional={
            "limit": st.integers(-(2**31), 2**31 - 1),
            "since": st.fixed_dictionaries({"offset": st.integers(0, 100), "epoch": st.text(max_size=8)}),
            "reverse": st.booleans(),
        },
    ),
    "ping": st.just({}),
    "send": st.fixed_dictionaries({}, optional={"data": json_values}),
    "rpc": st.fixed_dictionaries({"method": st.text(max_size=8)}, optional={"data": json_values}),
    "refresh": st.fixed_dictionaries({"token": st.text(max_size=30)}),
    "sub_refresh": st.fixed_dictionaries({"channel": channel_names, "token": st.text(max_size=30)}),
}
typed_commands = st.sampled_from(METHODS[1:]).flatmap(
    lambda method: st.builds(lambda cid, p: {"id": cid, method: p}, st.integers(1, 1000), typed_params[method])
)


@st.composite
def json_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = draw(st.lists(typed_commands | commands, min_size=1, max_size=5))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    body = sep.join(dumps(line) for line in lines)
    if draw(st.booleans()):
        body += sep
    return (draw(st.sampled_from(["text", "binary"])), body)


random_bytes = st.tuples(st.sampled_from(["text", "binary"]), st.binary(max_size=200))
random_text = st.text(max_size=200).map(lambda s: ("text", s.encode()))
many_commands = st.integers(990, 1010).map(
    lambda n: text(*({"id": i + 1, "ping": {}} for i in range(n))),
)
oversized = st.integers(SIZE_LIMIT - 100, SIZE_LIMIT + 5000).map(
    lambda n: text({"id": 1, "publish": {"channel": HEALTHY, "data": "x" * n}}),
)
# Poison pills: valid-looking commands whose payload is nested too deeply or is not UTF-8
# (binary frames are not UTF-8-checked by the WebSocket layer), aimed at the healthy channel.
deep = st.builds(
    lambda depth, nest: (
        "text",
        b'{"id":3,"publish":{"channel":"healthy","data":' + nest[0] * depth + nest[1] + nest[2] * depth + b"}}",
    ),
    st.sampled_from([999, 1000, 1500, 5000, 12_000, 20_000]) | st.integers(500, 20_000),
    st.sampled_from([(b"[", b"", b"]"), (b'{"a":', b"1", b"}")]),
)
not_utf8 = st.builds(
    lambda junk, kind: (
        kind,
        b'{"id":2,"subscribe":{"channel":"healthy"}}\n{"id":3,"publish":{"channel":"healthy","data":"' + junk + b'"}}',
    ),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"\xf4\x90\x80\x80"]),
    st.sampled_from(["binary", "text"]),
)
special = st.sampled_from(
    [
        text({}),  # a pong without a ping
        text({"id": 1, "connect": {}}),  # a second connect (or one without credentials)
        ("text", b""),
        ("text", b"\n \r\n"),
        text({"id": 1, "ping": {}}, {"id": 1, "ping": {}}),  # duplicate ids are fine
        text({"send": {"data": 1}}),
        text({"id": 5, "refresh": {"token": "garbage"}}),
        text({"id": 5, "subscribe": {"channel": HEALTHY, "recover": True, "offset": 10**9, "epoch": "x"}}),
        text({"id": 5, "subscribe": {"channel": HEALTHY, "recover": True, "offset": 10**9, "flag": 2}}),
        text(*({"id": i + 1, "subscribe": {"channel": f"c{i}"}} for i in range(140))),  # channel limit
    ]
)
typed_frames = st.lists(typed_commands, min_size=1, max_size=4).map(lambda lines: text(*lines))
hostile_frames = st.one_of(json_frames(), random_bytes, random_text, special, many_commands, oversized)
# Half of the frames are well-typed, so that cases get past the decoder into the handlers.
frames = st.one_of(typed_frames, typed_frames, hostile_frames, deep | not_utf8)
cases = st.builds(
    lambda connect, fs: Case(connect, tuple(fs)),
    st.sampled_from([True, True, True, False]),
    st.lists(frames, min_size=1, max_size=2),
)


# ---------------------------------------------------------------- running one case


@dataclass
class Outcome:
    messages: list[Any] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    probe_answered: bool = False


async def run_case(http: aiohttp.ClientSession, url: str, case: Case) -> Outcome:
    out = Outcome()
    async with http.ws_connect(url, max_msg_size=0, heartbeat=None) as ws:
        if case.connect:
            await ws.send_str(json.dumps({"id": PROBE - 1, "connect": {"token": token("fuzz", ttl=600)}}))
            reply = await ws.receive_str()
            assert json.loads(reply)["connect"]["client"], reply
        with contextlib.suppress(ConnectionError):
            for kind, data in case.frames:
                await ws.send_frame(data, WSMsgType.TEXT if kind == "text" else WSMsgType.BINARY)
            await ws.send_str(json.dumps({"id": PROBE, "ping": {}}))
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                for line in msg.data.split("\n"):
                    decoded = json.loads(line)  # every server message is one valid JSON object per line
                    assert isinstance(decoded, dict), line
                    out.messages.append(decoded)
                    if decoded.get("id") == PROBE:
                        # A ping reply, or an error the checks below judge (111 after a flood).
                        assert decoded == {"id": PROBE, "ping": {}} or set(decoded) == {"id", "error"}, line
                        out.probe_answered = True
                if out.probe_answered:
                    return out
            elif msg.type is WSMsgType.CLOSE:
                out.close_code, out.close_reason = int(msg.data), str(msg.extra or "")
                return out
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                out.close_code = ws.close_code
                return out
            else:
                raise AssertionError(f"unexpected {msg.type} from the server: {msg.data!r}")


def check(case: Case, out: Outcome) -> None:
    for message in out.messages:
        error = message.get("error")
        if error is not None:
            assert error["code"] in PROTOCOL_ERRORS, message
            assert isinstance(error["message"], str)
            assert error["message"], message
            assert not error.get("temporary", False) or error["code"] == 111, message
        if "id" in message:
            assert message["id"] > 0, message
    if out.probe_answered:
        return
    code = out.close_code
    allowed = set(PROTOCOL_CLOSES)
    if case.invalid_text:
        allowed.add(1007)
    if case.oversized:
        allowed.add(1009)
    assert code in allowed, f"closed with {code} {out.close_reason!r}"
    assert out.close_reason, f"close {code} without a reason"
    assert len(out.close_reason.encode()) <= 123


# ---------------------------------------------------------------- the healthy client


@dataclass
class Healthy(SubscriptionEventHandler):  # type: ignore[misc]
    """The well-behaved subscriber: records API publications and anything that disturbs it."""

    seqs: list[int] = field(default_factory=list)
    subscribed: list[SubscribedContext] = field(default_factory=list)
    unsubscribed: list[UnsubscribedContext] = field(default_factory=list)
    disconnected: list[DisconnectedContext] = field(default_factory=list)

    async def on_publication(self, ctx: PublicationContext) -> None:
        data = ctx.pub.data
        if isinstance(data, dict) and "api_seq" in data:
            self.seqs.append(data["api_seq"])

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)


@dataclass
class HealthyConnection(ClientEventHandler):  # type: ignore[misc]
    healthy: Healthy

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.healthy.disconnected.append(ctx)


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Live:
    running: Running
    http: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop
    healthy: Healthy
    errors: ErrorLog
    published: list[int] = field(default_factory=list)
    cases_run: int = 0
    endings: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the test's event loop from the hypothesis thread."""
        assert threading.current_thread() is not threading.main_thread()
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def case(self, case: Case) -> Outcome:
        self.cases_run += 1
        try:
            return await asyncio.wait_for(run_case(self.http, self.running.ws_url, case), CASE_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"the server did not answer or close within {CASE_TIMEOUT}s") from None

    def fuzz(self, case: Case) -> None:
        out = self.run(self.case(case), CASE_TIMEOUT + 2)
        check(case, out)
        self.endings["answered" if out.probe_answered else f"close {out.close_code}"] += 1
        if out.close_reason:
            self.reasons[out.close_reason] += 1
        if any("error" in m for m in out.messages):
            self.endings["error replies"] += 1


@pytest.fixture
async def live(start_server: Callable[..., Any]) -> AsyncIterator[Live]:
    running: Running = await start_server()
    errors = ErrorLog()
    logging.getLogger("trunkline").addHandler(errors)
    healthy = Healthy()
    client = Client(running.ws_url, events=HealthyConnection(healthy), token=token("healthy", ttl=600), proxy=None)
    sub = client.new_subscription(HEALTHY, healthy)
    async with aiohttp.ClientSession() as http:
        try:
            await client.connect()
            await sub.subscribe()
            await eventually(lambda: healthy.subscribed)
            yield Live(running, http, asyncio.get_running_loop(), healthy, errors)
        finally:
            await client.disconnect()
            logging.getLogger("trunkline").removeHandler(errors)


async def publisher(live: Live, stop: asyncio.Event) -> None:
    """Publish numbered messages into the healthy channel through the server API until stopped."""
    url = live.running.api_url + "/publish"
    n = 0
    while not stop.is_set():
        n += 1
        async with live.http.post(
            url, json={"channel": HEALTHY, "data": {"api_seq": n}}, headers={"X-API-Key": API_KEY}
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert "error" not in body, body
        live.published.append(n)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


# ---------------------------------------------------------------- the run


EXPLICIT = [
    Case(False, (text({"id": 1, "subscribe": {"channel": HEALTHY}}),)),  # a command before connect
    Case(False, (text({"id": 1, "connect": {"token": "not.a.jwt"}}),)),
    Case(True, (text({}),)),  # a pong without a ping
    Case(True, (text({"ping": {}}),)),  # a command without id
    Case(True, (text({"id": 2**32, "ping": {}}),)),  # an id beyond uint32
    Case(True, (text({"id": 2, "subscribe": {"channel": 5}}),)),  # a wrong type
    Case(True, (text({"id": 2, "subscribe": {"channel": "unknown:x"}}),)),  # an unknown namespace -> 102
    Case(True, (text({"id": 2, "subscribe": {}}),)),  # a missing channel
    Case(True, (text(*({"id": i + 1, "ping": {}} for i in range(1001))),)),  # too many commands
    Case(True, (("text", b'{"id":2,"ping":{}}\xff'),)),  # invalid UTF-8 in a text frame
    Case(True, (("binary", b"\x00\x01\x02"),)),
    Case(True, (text({"id": 2, "publish": {"channel": HEALTHY, "data": "x" * SIZE_LIMIT}}),)),  # 1009
    Case(True, (text({"id": 2, "publish": {"channel": HEALTHY, "data": {"fuzz": True}}}),)),
    Case(True, (text({"id": 2, "subscribe": {"channel": HEALTHY}}, {"id": 3, "publish": {"channel": HEALTHY}}),)),
    Case(True, (text({"id": 2, "history": {"channel": HEALTHY, "limit": -1, "since": {"offset": 1, "epoch": "x"}}}),)),
    Case(True, (text({"id": 2, "rpc": {"method": "x"}}, {"send": {"data": 1}}, {"id": 3, "presence": {}}),)),
    # Poison pills aimed at the healthy channel.
    Case(True, (("text", b'{"id":2,"publish":{"channel":"healthy","data":' + b"[" * 5000 + b"]" * 5000 + b"}}"),)),
    Case(True, (("binary", b'{"id":2,"connect":{"data":' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}}"),)),
    Case(
        True,
        (
            (
                "binary",
                b'{"id":2,"subscribe":{"channel":"healthy"}}\n{"id":3,"publish":{"channel":"healthy","data":"\xff"}}',
            ),
        ),
    ),
    Case(True, (("text", b'{"id":3,"publish":{"channel":"healthy","data":"\xed\xa0\x80"}}'),)),
]


def explicit_examples(test: Callable[..., None]) -> Callable[..., None]:
    for case in reversed(EXPLICIT):
        test = example(case)(test)
    return test


async def test_hostile_frames_never_hang_crash_or_hurt_others(live: Live) -> None:
    stop = asyncio.Event()
    pub_task = asyncio.create_task(publisher(live, stop))

    # Warm up (imports, first-use caches) before the memory baseline.
    await live.case(Case(True, (text({"id": 2, "ping": {}}),)))
    await eventually(lambda: live.healthy.seqs)
    rss_before = rss_bytes()
    started = time.monotonic()

    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @explicit_examples
    @given(cases)
    def fuzz(case: Case) -> None:
        live.fuzz(case)

    try:
        await asyncio.to_thread(fuzz)
    finally:
        stop.set()
        await pub_task
    elapsed = time.monotonic() - started
    # The run was not vacuous: every kind of ending happened.
    endings = live.endings
    for ending in ("answered", "error replies", "close 3501", "close 1009", "close 1007", "close 3500"):
        assert endings[ending] > 0, f"no {ending!r} in {dict(endings)}; close reasons {dict(live.reasons)}"

    # The healthy client received every API publication and was never disturbed.
    published = list(live.published)
    assert len(published) > 20, "the publisher did not run alongside the fuzzing"
    await eventually(lambda: set(published) <= set(live.healthy.seqs), timeout=10)
    assert live.healthy.seqs == sorted(set(live.healthy.seqs)), "duplicates or reordering"
    assert live.healthy.disconnected == []
    assert live.healthy.unsubscribed == []
    assert len(live.healthy.subscribed) == 1

    # Nothing is left of the hostile connections.
    hub = live.running.server.node.hub
    await eventually(lambda: hub.num_clients == 1)
    assert hub.channels() == {HEALTHY: 1}
    members = await eventually(lambda: _single_presence(live))
    assert len(members) == 1

    # The server still accepts new connections and serves them.
    after = text({"id": 2, "subscribe": {"channel": "after"}}, {"id": 3, "publish": {"channel": "after", "data": 1}})
    fresh = await live.case(Case(True, (after,)))
    assert fresh.probe_answered
    assert [m.get("id") for m in fresh.messages if "id" in m][:2] == [2, 3]

    growth = rss_bytes() - rss_before
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB over {live.cases_run} cases"
    assert live.errors.records == [], [r.getMessage() for r in live.errors.records]
    assert elapsed < 60, f"fuzzing took {elapsed:.0f}s"


async def _single_presence(live: Live) -> dict[str, bytes] | None:
    members = await live.running.server.node.presence(HEALTHY)
    return members if len(members) == 1 else None


# ---------------------------------------------------------------- regressions (found by this fuzzing)


async def test_deeply_nested_frame_closes_with_3501(live: Live) -> None:
    depth = 5000
    frame = b'{"id":2,"publish":{"channel":"healthy","data":' + b"[" * depth + b"]" * depth + b"}}"
    out = await live.case(Case(True, (("text", frame),)))
    assert (out.close_code, out.close_reason) == (3501, "bad request")
    assert live.errors.records == []


async def test_invalid_utf8_in_a_binary_frame_never_reaches_subscribers(live: Live) -> None:
    frame = b'{"id":2,"subscribe":{"channel":"healthy"}}\n{"id":3,"publish":{"channel":"healthy","data":"\xff\xfe"}}'
    out = await live.case(Case(True, (("binary", frame),)))
    assert out.close_code == 3501
    # The healthy client is still connected and still receives publications.
    await live.running.server.node.publish(HEALTHY, b'{"api_seq":1}')
    await eventually(lambda: live.healthy.seqs == [1], timeout=3)
    assert live.healthy.disconnected == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/publish", b'{"channel":"healthy","data":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("/publish", b'{"channel":"healthy","data":"\xff\xfe"}'),
        ("", b'{"method":"publish","params":{"channel":"healthy","data":' + b"[" * 5000 + b"]" * 5000 + b"}}"),
        ("", b'{"method":"publish","params":{"channel":"healthy","data":"\xff\xfe"}}'),
    ],
    ids=["nested", "utf8", "legacy-nested", "legacy-utf8"],
)
async def test_api_rejects_hostile_bodies_with_400(live: Live, path: str, body: bytes) -> None:
    async with live.http.post(live.running.api_url + path, data=body, headers={"X-API-Key": API_KEY}) as resp:
        assert resp.status == 400
    assert live.errors.records == []


async def test_a_message_of_exactly_the_size_limit_is_accepted(live: Live) -> None:
    head, tail = b'{"id":2,"ping":{},"pad":"', b'"}'
    frame = head + b"x" * (SIZE_LIMIT - len(head) - len(tail)) + tail
    assert len(frame) == SIZE_LIMIT
    out = await live.case(Case(True, (("text", frame),)))
    assert out.close_code is None
    assert out.messages[0] == {"id": 2, "ping": {}}
