"""Clients for the HTTP transports, by hand over aiohttp: a stream reader and the emulation sender.

:class:`Stream` opens ``POST /connection/http_stream`` (JSON lines or varint-delimited
Protobuf), ``/connection/sse`` (``data:`` events) or a unidirectional endpoint and
reads whole messages with a deadline, so a missing message fails the test instead of
hanging it. :meth:`Stream.send` posts commands to ``/emulation`` with the session and
node of the connect result, as centrifuge-js does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from centrifuge.protocol import client_pb2

READ_TIMEOUT = 5.0


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def delimited(*messages: Any) -> bytes:
    """Protobuf messages, each prefixed by its length (the wire of centrifuge-protobuf)."""
    out = b""
    for m in messages:
        body = m.SerializeToString()
        out += uvarint(len(body)) + body
    return out


class Stream:
    """One streaming response and the emulation requests of its connection."""

    def __init__(self, http: aiohttp.ClientSession, base: str, response: aiohttp.ClientResponse, kind: str) -> None:
        self.http = http
        self.base = base
        self.response = response
        self.kind = kind  # "json", "sse" or "protobuf"
        self.session = ""
        self.node = ""
        self._buf = b""

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        base: str,
        path: str = "/connection/http_stream",
        body: bytes | str | None = None,
        *,
        kind: str = "json",
        method: str = "POST",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Stream:
        hdrs = {"Content-Type": "application/octet-stream" if kind == "protobuf" else "application/json"}
        hdrs.update(headers or {})
        response = await http.request(method, base + path, data=body, params=params, headers=hdrs)
        return cls(http, base, response, kind)

    async def _more(self) -> bool:
        chunk = await asyncio.wait_for(self.response.content.readany(), READ_TIMEOUT)
        self._buf += chunk
        return bool(chunk)

    async def raw_message(self) -> bytes | None:
        """The next message's bytes (None at the end of the stream)."""
        for _ in range(10_000):  # bounded: each turn reads a chunk or returns
            if self.kind == "protobuf":
                size, pos, ok = _varint(self._buf)
                if ok and len(self._buf) >= pos + size:
                    msg, self._buf = self._buf[pos : pos + size], self._buf[pos + size :]
                    return msg
            else:
                sep = b"\n\n" if self.kind == "sse" else b"\n"
                self._buf = self._buf.lstrip(b"\r\n") if self.kind == "sse" else self._buf
                if sep in self._buf:
                    line, self._buf = self._buf.split(sep, 1)
                    if self.kind == "sse":
                        assert line.startswith(b"data: "), line
                        line = line[len(b"data: ") :]
                    return line
            if not await self._more():
                return None
        raise AssertionError("no message in 10000 reads")

    async def message(self) -> Any:
        raw = await self.raw_message()
        assert raw is not None, "the stream ended"
        if self.kind == "protobuf":
            reply = client_pb2.Reply()
            reply.ParseFromString(raw)
            return reply
        return json.loads(raw)

    async def next(self, predicate: Any = None, limit: int = 50) -> Any:
        """The next message that is not a ping (and passes ``predicate``), at most ``limit`` read."""
        for _ in range(limit):
            msg = await self.message()
            empty = msg == {} if self.kind != "protobuf" else msg.ByteSize() == 0
            if empty:
                continue
            if predicate is None or predicate(msg):
                return msg
        raise AssertionError(f"no matching message in {limit}")

    async def connect_result(self) -> Any:
        msg = await self.next()
        result = msg.connect if self.kind == "protobuf" else msg["connect"]
        self.session = result.session if self.kind == "protobuf" else result["session"]
        self.node = result.node if self.kind == "protobuf" else result["node"]
        return result

    async def send(self, *commands: Any, session: str | None = None, node: str | None = None) -> int:
        """POST commands to /emulation; the HTTP status."""
        sess = self.session if session is None else session
        nd = self.node if node is None else node
        if self.kind == "protobuf":
            req = client_pb2.EmulationRequest(session=sess, node=nd, data=delimited(*commands))
            body: bytes = req.SerializeToString()
            headers = {"Content-Type": "application/octet-stream"}
        else:
            data = "\n".join(json.dumps(c) for c in commands)
            body = json.dumps({"session": sess, "node": nd, "data": data}).encode()
            headers = {"Content-Type": "application/json"}
        async with self.http.post(self.base + "/emulation", data=body, headers=headers) as r:
            return r.status

    async def rest(self) -> bytes:
        """Everything until the end of the stream (bounded by the read timeout)."""
        data = self._buf + await asyncio.wait_for(self.response.content.read(), READ_TIMEOUT)
        self._buf = b""
        return data

    def close(self) -> None:
        self.response.close()


def _varint(buf: bytes) -> tuple[int, int, bool]:
    value = shift = 0
    for i, b in enumerate(buf[:10]):
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1, True
        shift += 7
    return 0, 0, False
