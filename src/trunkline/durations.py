"""Durations as Centrifugo writes them: ``"300s"``, ``"1m30s"``, ``"720h"``, ``"500ms"``.

The grammar is Go's ``time.ParseDuration`` (Centrifugo is written in Go): one or
more ``<number><unit>`` parts, units ``ns``, ``us`` (``µs``), ``ms``, ``s``,
``m``, ``h``; ``"0"`` alone is allowed. A plain number — ``25`` or ``"25"`` or
``1.5`` — is taken as seconds. Negative durations are refused: every duration
in the configuration is a timeout, an interval or a lifetime.

The result is always ``float`` seconds.
"""

from __future__ import annotations

import math
import re
from typing import Final

from trunkline.errors import ConfigError

__all__ = ["MAX_SECONDS", "parse_duration"]

_UNITS: Final[dict[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PART: Final = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
_DURATION: Final = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h))+")
_SECONDS: Final = re.compile(_NUMBER)

# Go's time.Duration is an int64 of nanoseconds: about 292 years.
MAX_SECONDS: Final = (2**63 - 1) / 1e9

_HINT: Final = 'expected a duration such as "300s", "1m30s", "720h", "500ms" or a number of seconds'


def parse_duration(value: object, key: str = "", source: str = "") -> float:
    """Return ``value`` as seconds, or raise :class:`ConfigError` for ``key`` in ``source``.

    Accepts a non-negative ``int``/``float`` (seconds) or a string in Go duration
    syntax. Booleans and every other type are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"{_HINT}, got {type(value).__name__}", source)
    seconds = _parse_text(value, key, source) if isinstance(value, str) else float(value)
    if math.isnan(seconds):
        raise ConfigError(key, f"{_HINT}, got {value!r}", source)
    if seconds < 0:
        raise ConfigError(key, f"must not be negative, got {value!r}", source)
    if seconds > MAX_SECONDS:
        raise ConfigError(key, f"is too large ({_short(value)}); the maximum is about 292 years", source)
    return seconds


def _parse_text(text: str, key: str, source: str) -> float:
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] == "+" else stripped
    if body[:1] == "-":
        raise ConfigError(key, f"must not be negative, got {_short(text)!r}", source)
    if _SECONDS.fullmatch(body):
        return float(body)
    if not _DURATION.fullmatch(body):
        raise ConfigError(key, f"{_HINT}, got {_short(text)!r}", source)
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(body))


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
