"""Logs of a real server process: JSON lines or text, the configured level, and no secrets or payloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.http_exceptions import HttpProcessingError
from cent import AsyncClient, DisconnectRequest, PublishRequest
from centrifuge import ClientState

from tests.conftest import Process, eventually, token
from trunkline.observe.logs import (
    LOG_BURST,
    LOG_RATE,
    HttpServerLogger,
    JsonFormatter,
    LogLimiter,
    TextFormatter,
    escape,
    log_failure,
)
from trunkline.observe.metrics import Metrics

from . import connect, scrape, subscribe, value

API_KEY = "api-key-do-not-log-4f0c9e2b7a"
PAYLOAD = "payload-do-not-log-8d3e1f"
USER = "user-logged-5521"


def _config(level: str, fmt: str) -> dict[str, Any]:
    return {"log": {"level": level, "format": fmt}, "http_api": {"key": API_KEY}}


async def _traffic(proc: Process) -> tuple[str, list[str]]:
    """Connect with a token, publish from the client and the API, then disconnect through the API."""
    jwt = token(USER, info={"note": PAYLOAD})
    client = await connect(proc.ws_url, jwt)
    client_id = client.client_id
    try:
        _, received = await subscribe(client, "news")
        await client.publish("news", {"text": PAYLOAD})
        async with AsyncClient(f"{proc.http_url}/api", API_KEY) as cent:
            await cent.publish(PublishRequest(channel="news", data={"text": PAYLOAD}))
            await received.wait_for(2)
            await cent.disconnect(DisconnectRequest(user=USER))
        await eventually(lambda: client.state == ClientState.DISCONNECTED)
    finally:
        await client.disconnect()
    # refused attempts: a forged token and a wrong API key
    forged = token(USER, secret="not-the-secret-0123456789abcdef0123")
    bad = await _refused_connect(proc, forged)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{proc.http_url}/api/publish",
            json={"channel": "news", "data": {"text": PAYLOAD}},
            headers={"X-API-Key": "wrong-key-do-not-log-77e1"},
        ) as resp,
    ):
        assert resp.status == 401
    return client_id, [jwt, bad]


async def _refused_connect(proc: Process, jwt: str) -> str:
    from centrifuge import Client

    client = Client(proc.ws_url, token=jwt, proxy=None, max_reconnect_delay=0.5)
    try:
        await client.connect()
        await eventually(lambda: client.state == ClientState.DISCONNECTED, timeout=5)
    finally:
        await client.disconnect()
    return jwt


def _assert_no_secrets(output: str, *secrets: str) -> None:
    for secret in (*secrets, API_KEY, PAYLOAD, "wrong-key-do-not-log-77e1"):
        assert secret not in output, f"{secret[:12]}... appears in the log"
        if secret.count(".") == 2:  # a JWT: no part of it either (header excepted: it is generic)
            for part in secret.split(".")[1:]:
                assert part not in output


async def test_json_logs_at_debug_carry_ids_and_no_secrets(server_process: Callable[..., Process]) -> None:
    proc = server_process(_config("debug", "json"))
    client_id, tokens = await _traffic(proc)
    assert proc.stop(signal.SIGTERM) == 0
    output = proc.output()

    entries = []
    for line in output.splitlines():
        if line.strip():
            entry = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= entry.keys()
            entries.append(entry)
    assert any(e["level"] == "debug" for e in entries) or any(e["level"] == "info" for e in entries)
    # the line about the disconnected connection names its client id and user
    about = [e for e in entries if client_id in e["message"]]
    assert about, "no log line names the client id"
    assert any(f"user={USER}" in e["message"] for e in about)
    # and carries them as fields, so a log search can filter on them
    assert any(e.get("client") == client_id and e.get("user") == USER for e in about)
    _assert_no_secrets(output, *tokens)


async def test_text_logs_by_default_and_level_from_config(server_process: Callable[..., Process]) -> None:
    proc = server_process(_config("info", "text"))
    client_id, tokens = await _traffic(proc)
    assert proc.stop(signal.SIGTERM) == 0
    output = proc.output()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert not line.startswith("{")
    assert any(" INFO trunkline" in line and client_id in line for line in lines)
    assert not any(" DEBUG " in line for line in lines)
    _assert_no_secrets(output, *tokens)

    quiet = server_process(_config("warning", "json"))
    await _traffic(quiet)
    assert quiet.stop(signal.SIGTERM) == 0
    levels = {json.loads(line)["level"] for line in quiet.output().splitlines() if line.strip()}
    assert levels <= {"warning", "error"}


# ------------------------------------------------------------------------------------ hostile input

LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def _records(output: str) -> list[str]:
    """The text log's lines; each must be a record's first line or an indented continuation."""
    lines = [line for line in output.split("\n") if line]
    for line in lines:
        assert LINE_START.match(line) or line.startswith("  "), f"not a log record: {line!r}"
    return lines


async def test_forged_user_cannot_forge_a_text_log_line(server_process: Callable[..., Process]) -> None:
    """A token ``sub`` with a newline and a terminal escape stays inside its own, escaped, line."""
    proc = server_process(_config("info", "text"))
    forged = "a\nFORGED line\x1b[2J\u2028x"
    async with aiohttp.ClientSession() as http, http.ws_connect(proc.ws_url) as ws:
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": token(forged), "name": "n\r\nFAKE"}}))
        reply = json.loads((await ws.receive(timeout=5)).data)
        assert reply["connect"]["client"]
        await ws.send_str("not json")  # logged with the user: "bad frame from client=... user=..."
        closed = await ws.receive(timeout=5)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 3501
    assert proc.stop(signal.SIGTERM) == 0
    lines = _records(proc.output())
    about = [line for line in lines if "FORGED" in line]
    assert len(about) >= 2, about  # the bad frame and the disconnect
    for line in about:
        assert LINE_START.match(line), line
        assert "user=a\\nFORGED line\\x1b[2J\\u2028x" in line
    assert "\x1b" not in proc.output() and "\u2028" not in proc.output()


BAD_REQUESTS = (
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",  # aiohttp: ERROR + traceback
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Forged: \x1b[31m\r\n\r\n",
    b"GARBAGE\r\n\r\n",  # not HTTP at all: aiohttp logs it at DEBUG
)


async def _bad_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(64), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_malformed_requests_log_one_rate_limited_line_each(server_process: Callable[..., Process]) -> None:
    """200 malformed requests (unauthenticated) give a bounded number of one-line records, all counted."""
    proc = server_process(_config("info", "text"))
    started = time.monotonic()
    answers = [await _bad_request(proc.port, BAD_REQUESTS[i % 3]) for i in range(200)]
    elapsed = time.monotonic() - started
    assert all(answer.startswith(b"HTTP/1.0 400") for answer in answers), {a[:20] for a in answers}
    samples = await scrape(f"{proc.http_url}/metrics")
    assert proc.stop(signal.SIGTERM) == 0
    output = proc.output()
    assert "Traceback" not in output and "\x1b" not in output
    lines = _records(output)
    assert all(LINE_START.match(line) for line in lines)  # no continuation lines at all
    logged = [line for line in lines if "Error handling request" in line]
    logged_errors = sum(1 for i in range(200) if i % 3 != 2)  # those aiohttp logs above DEBUG
    assert 1 <= len(logged) <= LOG_BURST + elapsed * LOG_RATE + 1, (len(logged), elapsed)
    assert all(" INFO trunkline.http: " in line for line in logged)
    assert value(samples, "trunkline_http_malformed_requests_total") == 200
    suppressed = value(samples, "trunkline_log_suppressed_total", logger="trunkline.http")
    assert suppressed == logged_errors - len(logged)


# ------------------------------------------------------------------------------------ formatters


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("trunkline.test", logging.INFO, __file__, 1, msg, args, None)
    for key, val in extra.items():
        setattr(record, key, val)
    return record


def test_text_formatter_escapes_message_args_and_fields() -> None:
    fmt = TextFormatter("%(name)s %(client)s %(user)s: %(message)s")
    record = _record(
        "user=%s reason=%s\tend", "u\nFORGED", "r\x1b[0m\x00\x7f\x85\u2029\udcff", client="c\r\nX", user="u\n"
    )
    line = fmt.format(record)
    assert "\n" not in line and "\r" not in line
    assert line == ("trunkline.test c\\r\\nX u\\n: user=u\\nFORGED reason=r\\x1b[0m\\x00\\x7f\\x85\\u2029\\udcff\\tend")
    assert record.user == "u\n" and record.args == ("u\nFORGED", "r\x1b[0m\x00\x7f\x85\u2029\udcff")  # untouched
    assert escape("plain: ünïcödé ✓") == "plain: ünïcödé ✓"


def test_text_formatter_indents_tracebacks() -> None:
    fmt = TextFormatter()
    try:
        raise ValueError("bad\n2030-01-01 00:00:00,000 INFO trunkline: FORGED")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed %s", ("x\ny",), sys.exc_info())
    first, *rest = fmt.format(record).split("\n")
    assert LINE_START.match(first) and first.endswith("failed x\\ny")
    assert rest and all(line.startswith("  ") for line in rest)
    assert "  2030-01-01 00:00:00,000 INFO trunkline: FORGED" in rest


def test_json_formatter_escapes_what_json_leaves_raw() -> None:
    line = JsonFormatter().format(_record("%s", "a\nb\x85c\u2028d\u2029e\udcff\x1b ü"))
    assert line.splitlines() == [line]  # str.splitlines also splits at \x85 and \u2028
    line.encode("utf-8")  # no lone surrogate left
    assert json.loads(line)["message"] == "a\nb\x85c\u2028d\u2029e\udcff\x1b ü"


# ------------------------------------------------------------------------------------ rate limits


def test_log_limiter_is_a_token_bucket_per_key() -> None:
    now = [100.0]
    limiter = LogLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert limiter.allow("b") == (True, 0)  # another key has its own bucket
    now[0] += 0.5  # one token back
    assert limiter.allow("a") == (True, 2)  # ...and the line says how many were left out
    assert limiter.allow("a") == (False, 0)
    now[0] += 60  # refills up to the burst only
    assert [limiter.allow("a")[0] for _ in range(4)] == [True, True, True, False]


def test_log_limiter_keys_are_bounded() -> None:
    limiter = LogLimiter()
    for i in range(5000):
        limiter.allow(f"k{i}")
    assert len(limiter._buckets) <= 1024


def test_log_failure_is_one_line_each_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("trunkline.test.failure")
    metrics = Metrics()
    caplog.set_level(logging.INFO, logger=logger.name)
    for i in range(100):
        try:
            raise ConnectionError(f"redis down\nattempt {i}")
        except ConnectionError:
            log_failure(logger, metrics, "server API method %s failed", "publish")
    records = [r for r in caplog.records if r.name == logger.name]
    assert 1 <= len(records) <= LOG_BURST + 1
    for record in records:
        assert record.levelno == logging.ERROR and record.exc_info is None
        assert record.getMessage().startswith("server API method publish failed: ConnectionError: redis down attempt")
    suppressed = metrics.logs_suppressed.labels(logger.name)._value.get()
    assert suppressed == 100 - len(records)


def test_log_failure_keeps_the_traceback_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("trunkline.test.failure.debug")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    try:
        raise KeyError("k")
    except KeyError:
        log_failure(logger, None, "step failed")
    (record,) = [r for r in caplog.records if r.name == logger.name]
    assert record.exc_info is not None and record.getMessage() == "step failed: KeyError: 'k'"


def test_http_server_logger_counts_below_the_level_and_keeps_other_errors() -> None:
    target = logging.getLogger("trunkline.test.http")
    target.setLevel(logging.WARNING)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    target.addHandler(handler)
    target.propagate = False
    metrics = Metrics()
    http = HttpServerLogger(metrics, target=target)
    try:
        try:
            raise HttpProcessingError(code=400, message="Invalid header token:\n\n  b'x'\n   ^")
        except HttpProcessingError as exc:
            http.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)  # INFO < WARNING
        try:
            raise RuntimeError("handler bug")
        except RuntimeError as exc:
            http.exception("Unhandled exception", exc_info=exc)
    finally:
        target.removeHandler(handler)
    assert metrics.malformed_requests._value.get() == 1
    (record,) = seen  # the malformed request was counted, not written; the bug is written with its traceback
    assert record.levelno == logging.ERROR and record.exc_info is not None
