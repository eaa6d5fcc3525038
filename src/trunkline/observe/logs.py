"""Logging setup: human-readable by default, JSON lines as an option; safe against hostile input.

Log records never carry tokens, API keys or payloads: the code logs client ids,
users and codes only.

Values that come from clients (a token's ``sub``, a client name, a channel, a close
reason, a header) can hold newlines and terminal escapes, so neither format lets them
forge a line:

- text: :class:`TextFormatter` escapes control characters (``\\n``, ``\\x1b``, ``\\u2028``,
  lone surrogates…) in the message and every string field of a record; the lines of a
  traceback or stack follow the record's first line indented, so every line that starts
  at column 0 is a record of its own;
- JSON: one object per line; what ``json`` leaves raw but a line splitter or terminal
  might act on (C1 controls, ``\\u2028``/``\\u2029``, lone surrogates) is escaped too.

Log lines that anyone can cause over and over are rate-limited (:class:`LogLimiter`,
a token bucket per key): malformed HTTP requests, which aiohttp logs with a traceback
each (:class:`HttpServerLogger` makes them one line), and failures that repeat during an
outage (:func:`log_failure`). Lines over the limit are counted
(``trunkline_log_suppressed_total``) and the next line that passes says how many were
left out.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final

from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    from .metrics import Metrics

CONNECTION_FIELDS = ("client", "user")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Lines per key allowed at once, and per second after that (``LogLimiter`` defaults).
LOG_BURST: Final = 10
LOG_RATE: Final = 1.0
#: Keys a limiter tracks before it forgets the idle ones (keys come from code, this is a backstop).
_MAX_KEYS: Final = 1024
_SUMMARY_CLIP: Final = 200

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators, lone surrogates
# (undecodable header bytes arrive as surrogates and would fail to encode on output).
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# What json.dumps(ensure_ascii=False) leaves unescaped of the above.
_JSON_RAW: Final = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Record attributes rendered by the formatter itself.
_OWN_FIELDS: Final = frozenset({"msg", "args", "message", "exc_text", "stack_info", "asctime"})
_INDENT: Final = "  "


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``, ``\\u2028``), one line."""
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def summary(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, whitespace collapsed, at most 200 characters."""
    text = exc.message if isinstance(exc, HttpProcessingError) and exc.message else str(exc)
    line = f"{type(exc).__name__}: {' '.join(text.split())}" if text else type(exc).__name__
    return line if len(line) <= _SUMMARY_CLIP else line[:_SUMMARY_CLIP] + "..."


def _indented(text: str) -> str:
    return "\n".join(_INDENT + escape(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, with every client-controlled character made harmless."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        clean = copy.copy(record)  # other handlers see the record as it was
        for key, value in vars(record).items():
            if isinstance(value, str) and key not in _OWN_FIELDS:
                setattr(clean, key, escape(value))
        clean.msg = escape(record.getMessage())
        clean.args = None
        if record.exc_info:
            clean.exc_text = None  # formatted again, indented, by formatException
        elif record.exc_text:
            clean.exc_text = _indented(record.exc_text)
        return super().format(clean)

    def formatException(
        self, ei: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
    ) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(stack_info)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONNECTION_FIELDS:  # lines about a connection: searchable client id and user
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, ensure_ascii=False)
        return _JSON_RAW.sub(_json_escape, line) if _JSON_RAW.search(line) else line


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------ rate limits


class LogLimiter:
    """A token bucket per key: ``burst`` lines at once, then ``rate`` per second.

    :meth:`allow` answers whether a line of ``key`` may be written now and, when it may,
    how many lines of that key were refused since the last one written (so that line can
    say so). Keys are chosen by the code (a message format, a kind of failure), never
    taken from a client; past ``_MAX_KEYS`` the idle ones are forgotten.
    """

    __slots__ = ("_buckets", "_clock", "burst", "rate")

    def __init__(
        self, rate: float = LOG_RATE, burst: int = LOG_BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill, refused since last line]

    def allow(self, key: str) -> tuple[bool, int]:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._forget_idle(now)
            bucket = self._buckets[key] = [float(self.burst), now, 0.0]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += 1
            return False, 0
        bucket[0] = tokens - 1.0
        refused, bucket[2] = int(bucket[2]), 0.0
        return True, refused

    def _forget_idle(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b[0] + (now - b[1]) * self.rate >= self.burst and not b[2]]
        for key in full or list(self._buckets)[: _MAX_KEYS // 2]:
            del self._buckets[key]


def _with_refused(msg: str, refused: int) -> str:
    return f"{msg} ({refused} similar lines suppressed)" if refused else msg


class HttpServerLogger(logging.Logger):
    """The ``logger`` of aiohttp's request handlers (``AppRunner(..., logger=...)``).

    aiohttp logs every malformed request (bad request line, header too long, not HTTP at
    all) at ERROR with a traceback: about 540 bytes that anyone can cause without
    authenticating. Through this logger such a request is one INFO line
    (``Error handling request from 1.2.3.4: BadStatusLine: Invalid method encountered…``),
    counted (``trunkline_http_malformed_requests_total``, also the ones below the log
    level) and rate-limited. Other failures of aiohttp's server keep their level and
    traceback (a bug to fix) but are rate-limited too. Records go on to ``trunkline.http``,
    whose level and handlers apply.
    """

    def __init__(
        self, metrics: Metrics | None = None, limiter: LogLimiter | None = None, target: logging.Logger | None = None
    ) -> None:
        self._target = target or logging.getLogger("trunkline.http")
        super().__init__(self._target.name)
        self._metrics = metrics
        self._limiter = limiter or LogLimiter()

    # Every record is looked at (malformed requests are counted at any level); the target's
    # level decides what is written.
    def isEnabledFor(self, level: int) -> bool:
        return True

    def getEffectiveLevel(self) -> int:
        return self._target.getEffectiveLevel()

    def handle(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            if self._metrics is not None:
                self._metrics.malformed_request()
            record.msg = f"{record.getMessage()}: {summary(exc)}"
            record.args = None
            if record.levelno > logging.INFO:  # aiohttp logs traffic that is not HTTP at all at DEBUG: keep it
                record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
            key = "malformed request"
        else:
            key = f"level {record.levelno}"
        if not self._target.isEnabledFor(record.levelno):
            return
        allowed, refused = self._limiter.allow(key)
        if not allowed:
            if self._metrics is not None:
                self._metrics.log_suppressed(self._target.name)
            return
        if refused:
            record.msg = _with_refused(record.getMessage(), refused)
            record.args = None
        self._target.handle(record)


_LIMITERS: dict[str, LogLimiter] = {}


def log_failure(logger: logging.Logger, metrics: Metrics | None, msg: str, *args: object) -> None:
    """Log the exception being handled as one rate-limited ERROR line: ``msg % args: Type: message``.

    For failures that repeat while a dependency is down (every API publish during a Redis
    outage): instead of a traceback each, one line each up to :data:`LOG_BURST` at once and
    :data:`LOG_RATE` per second per ``msg``, the rest counted in
    ``trunkline_log_suppressed_total``. At DEBUG level the line carries the traceback. Call
    it where ``logger.exception`` would be called::

        except Exception:
            log_failure(log, node.metrics, "server API method %s failed", name)
    """
    if not logger.isEnabledFor(logging.ERROR):
        return
    limiter = _LIMITERS.get(logger.name)
    if limiter is None:
        limiter = _LIMITERS[logger.name] = LogLimiter()
    allowed, refused = limiter.allow(msg)
    if not allowed:
        if metrics is not None:
            metrics.log_suppressed(logger.name)
        return
    exc = sys.exc_info()[1]
    text = msg % args if args else msg
    if exc is not None:
        text = f"{text}: {summary(exc)}"
    debug = logger.isEnabledFor(logging.DEBUG) and exc is not None
    logger.error("%s", _with_refused(text, refused), exc_info=exc if debug else None, stacklevel=2)
