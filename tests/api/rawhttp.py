"""A hand-driven HTTP/1.1 client for the server API tests: exact bytes, bodies in segments.

``request(port, head, pieces, delay)`` writes the request head, then each body piece on
its own, waiting ``delay`` seconds between pieces (the way a real network hands a body to
the server in several reads), and returns the response (status, headers, body). Responses
must carry a ``Content-Length`` (every response of the server API does).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MSS = 1448  # a TCP segment's payload on a 1500-byte MTU path with timestamps


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def head(
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    content_length: int | None = None,
    extra: bytes = b"",
) -> bytes:
    """A request head; ``extra`` is one more header line as raw bytes (e.g. a non-UTF-8 value)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    raw = [line.encode() for line in lines] + ([extra] if extra else [])
    return b"\r\n".join(raw) + b"\r\n\r\n"


def segments(body: bytes, size: int = MSS) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def pieces_at(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``body`` cut at the given offsets (any order, duplicates and out-of-range ones ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(body)})
    bounds = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


async def read_response(reader: asyncio.StreamReader) -> Response:
    raw_head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    assert "content-length" in headers, f"no Content-Length in {headers}"
    body = await reader.readexactly(int(headers["content-length"]))
    return Response(status, headers, body)


async def request(
    port: int, request_head: bytes, pieces: Iterable[bytes] = (), delay: float = 0.0, timeout: float = 20.0
) -> Response:
    """Send ``request_head`` then each of ``pieces`` (``delay`` seconds apart) and read the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            writer.write(request_head)
            for piece in pieces:
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)  # network pacing, not synchronisation
                writer.write(piece)
            await writer.drain()
            return await read_response(reader)
    finally:
        writer.close()
