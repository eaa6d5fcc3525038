"""hypothesis against the request parsers of the HTTP transports: clear 4xx, never a crash or a hang.

Offline: the emulation body parsers (JSON and binary ``EmulationRequest``, the latter
checked against centrifuge-python's generated ``client_pb2``) and the unidirectional
connect request (``cf_connect`` / bodies) either parse or raise ``ProtocolError``, in
time linear in their size. Live: hypothesis bodies and ``cf_connect`` values sent to a
real server (run in a thread, so hypothesis drives plain blocking HTTP) get an answer
from the documented set, with a JSON body on every refusal; never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from centrifuge.protocol import client_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_settings
from trunkline.app import Server
from trunkline.protocol.codec import ProtocolError, UniJsonCodec
from trunkline.transport.emulation import parse

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["session", "node", "data", "token", "subs", "name", "version", "x"])
objects = st.dictionaries(field_names, json_values, max_size=5)


# ------------------------------------------------------------------------------ offline


@given(st.binary(max_size=2000), st.booleans())
def test_emulation_parse_never_crashes(body: bytes, protobuf: bool) -> None:
    try:
        node, session, data = parse(body, protobuf)
    except ProtocolError:
        return
    assert isinstance(node, str) and isinstance(session, str) and isinstance(data, bytes)


@given(objects)
def test_emulation_json_fields_are_typed(obj: dict[str, object]) -> None:
    body = json.dumps(obj).encode()
    typed = all(isinstance(obj.get(k, ""), str) for k in ("session", "node", "data"))
    try:
        node, session, data = parse(body, protobuf=False)
    except ProtocolError:
        assert not typed
        return
    assert typed and (node, session, data) == (
        obj.get("node", ""),
        obj.get("session", ""),
        str(obj.get("data", "")).encode(),
    )


@given(st.text(max_size=50), st.text(max_size=50), st.binary(max_size=300))
def test_emulation_protobuf_matches_the_reference(node: str, session: str, data: bytes) -> None:
    body = client_pb2.EmulationRequest(node=node, session=session, data=data).SerializeToString()
    assert parse(body, protobuf=True) == (node, session, data)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_emulation_protobuf_garbage_around_a_request(prefix: bytes, suffix: bytes) -> None:
    body = prefix + client_pb2.EmulationRequest(node="n", session="s", data=b"d").SerializeToString() + suffix
    reference = client_pb2.EmulationRequest()
    try:
        reference.ParseFromString(body)
        ok = True
    except Exception:
        ok = False
    try:
        got = parse(body, protobuf=True)
    except ProtocolError:
        return  # stricter than upb is allowed (wrong wire types of known fields); looser is not
    assert ok, body
    assert got == (reference.node, reference.session, reference.data)


@given(st.binary(max_size=2000) | objects.map(lambda o: json.dumps(o).encode()))
def test_uni_connect_request_never_crashes(data: bytes) -> None:
    try:
        (command,) = UniJsonCodec().decode_commands(data)
    except ProtocolError:
        return
    assert command.id == 1 and command.connect is not None


def test_parsers_are_linear_in_size() -> None:
    nested = b"[" * 50_000 + b"]" * 50_000
    started = time.perf_counter()
    for body in (nested, b'{"data":"' + b"x" * 60_000 + b'"}', b"\x1a\xff\xff\xff\xff\x0f" + b"x" * 100):
        for protobuf in (False, True):
            with contextlib.suppress(ProtocolError):
                parse(body, protobuf)
    with pytest.raises(ProtocolError):
        UniJsonCodec().decode_commands(nested)
    assert time.perf_counter() - started < 2.0


# ------------------------------------------------------------------------------ live


class Threaded:
    """A real server on its own event loop in a thread (hypothesis drives blocking HTTP)."""

    def __init__(self) -> None:
        self.settings = make_settings(
            {
                "http_stream": {"enabled": True},
                "sse": {"enabled": True},
                "uni_sse": {"enabled": True},
                "uni_http_stream": {"enabled": True},
                "log": {"level": "error"},
            }
        )
        self.loop = asyncio.new_event_loop()
        self.server = Server(self.settings)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Threaded:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(timeout=2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            if resp.status == 200:  # a stream: its start is enough; hang up
                return 200, resp.read1(65536)  # type: ignore[attr-defined]
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Threaded]:
    with Threaded() as server:
        yield server


def assert_clear(status: int, body: bytes, allowed: set[int]) -> None:
    assert status in allowed, (status, body)
    if status >= 400:
        assert "error" in json.loads(body), body


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=500) | objects.map(lambda o: json.dumps(o).encode()), st.booleans())
def test_live_emulation_bodies(live: Threaded, body: bytes, protobuf: bool) -> None:
    ctype = "application/octet-stream" if protobuf else "application/json"
    status, answer = live.request("POST", "/emulation", body, ctype)
    assert_clear(status, answer, {400, 404})


@FUZZ
@given(st.text(max_size=300) | objects.map(json.dumps))
def test_live_cf_connect(live: Threaded, value: str) -> None:
    for path in ("/connection/uni_sse", "/connection/sse"):
        query = urllib.parse.urlencode({"cf_connect": value}) if value else ""
        status, answer = live.request("GET", f"{path}?{query}")
        assert_clear(status, answer, {200, 400})
    assert live.server.node.hub.num_clients <= 1000


@FUZZ
@given(st.binary(max_size=500) | objects.map(lambda o: json.dumps(o).encode()), st.booleans())
def test_live_stream_bodies(live: Threaded, body: bytes, protobuf: bool) -> None:
    ctype = "application/octet-stream" if protobuf else "application/json"
    for path in ("/connection/http_stream", "/connection/uni_http_stream"):
        status, answer = live.request("POST", path, body, ctype)
        assert_clear(status, answer, {200, 400})
