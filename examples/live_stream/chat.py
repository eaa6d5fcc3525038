"""The live room's rules, free of I/O: what a viewer may publish, and slow mode.

``run.py`` calls these from its ``on_publish`` hook; ``tests/examples/test_live_stream.py``
runs hypothesis against them. Every function takes bytes off the wire and either returns
clean values or raises ``ValueError`` with a message fit to show the viewer.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

MAX_TEXT = 200  # characters in one chat message
MAX_NAME = 24
REACTIONS = ("❤️", "🔥", "😂", "👏", "😮")
ROLES = ("viewer", "moderator")


def _object(data: bytes | None, what: str) -> dict[str, object]:
    if not data or len(data) > 4096:
        raise ValueError(f"{what}: expected a small JSON object")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object")
    return value


def clean_text(text: str, limit: int) -> str:
    """``text`` without control characters (newlines become spaces), trimmed, at most ``limit`` characters."""
    kept = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(kept.split())[:limit]


def parse_chat(data: bytes | None) -> str:
    """The text of a viewer's chat publication ``{"text": "..."}``."""
    text = _object(data, "chat message").get("text")
    if not isinstance(text, str):
        raise ValueError('chat message: expected {"text": "..."}')
    cleaned = clean_text(text, MAX_TEXT)
    if not cleaned:
        raise ValueError("chat message: empty")
    return cleaned


def parse_reaction(data: bytes | None) -> str:
    """The emoji of a reaction publication ``{"emoji": "🔥"}``; only the room's five."""
    emoji = _object(data, "reaction").get("emoji")
    if emoji not in REACTIONS:
        raise ValueError(f"reaction: one of {' '.join(REACTIONS)}")
    assert isinstance(emoji, str)
    return emoji


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a connection is, from its token's ``info`` (conn info bytes on the hook's event)."""

    name: str
    role: str

    @property
    def moderator(self) -> bool:
        return self.role == "moderator"


def viewer(info: bytes | None, user: str) -> Viewer:
    """The viewer behind a connection; a missing or odd ``info`` makes a plain viewer named after its user."""
    try:
        value = json.loads(info) if info else {}
    except (ValueError, UnicodeDecodeError):
        value = {}
    if not isinstance(value, dict):
        value = {}
    name = value.get("name")
    role = value.get("role")
    return Viewer(
        name=clean_text(name, MAX_NAME) if isinstance(name, str) and clean_text(name, MAX_NAME) else user,
        role=role if role in ROLES else "viewer",
    )


class SlowMode:
    """A token bucket per user: ``burst`` messages at once, then one every ``interval`` seconds.

    ``check(user)`` takes a token and returns 0.0, or returns how many seconds remain until
    the next token (and takes nothing). Only users with a partly empty bucket are kept, and
    at most ``max_users`` of them (the oldest go first), so memory stays bounded.
    """

    def __init__(
        self,
        interval: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
    ) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("slow mode needs interval > 0 and burst >= 1")
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self.max_users = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, user: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.pop(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) / self.interval)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) * self.interval
        if tokens < self.burst:
            self._buckets[user] = (tokens, now)  # re-inserted: the dict stays in order of last use
            while len(self._buckets) > self.max_users:
                del self._buckets[next(iter(self._buckets))]
        return wait
