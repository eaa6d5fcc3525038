"""One proxy endpoint: an HTTP client with a bound on requests in flight, a timeout and metrics.

Each endpoint owns its aiohttp ``ClientSession`` (created at first use, with its own connection
pool of ``max_concurrent_requests`` and no cookie jar: a ``Set-Cookie`` from the backend must never
reach another user's request). A request that would pass ``max_concurrent_requests`` is refused at
once (:class:`ProxyFailure` ``overloaded``), so a slow backend cannot pile up requests; a timeout,
a connection error, a non-200 status or an answer that is not proxy JSON is a :class:`ProxyFailure`
too, logged once with the proxy's name. The callers turn a failure into error 100 (temporary).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import aiohttp

from ..config import ProxyOptions
from ..errors import ClientError, Disconnect
from .wire import InvalidAnswer

__all__ = ["MAX_ANSWER_BYTES", "Endpoint", "ProxyFailure", "ProxyMetrics"]

log = logging.getLogger("trunkline.proxy")

#: Largest answer read from a backend (bigger: a failure); a client's outbound queue is 1 MiB by default.
MAX_ANSWER_BYTES = 1048576

T = TypeVar("T")


class ProxyMetrics(Protocol):
    def proxy_request(self, proxy: str, event: str, result: str, seconds: float) -> None: ...

    def proxy_in_flight(self, proxy: str, delta: int) -> None: ...


class ProxyFailure(Exception):
    """The backend gave no usable answer: ``kind`` is timeout, unavailable, status, invalid or overloaded."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class Endpoint:
    """Where and how to ask the backend for one proxy object of the configuration."""

    def __init__(self, name: str, where: str, opts: ProxyOptions, metrics: ProxyMetrics) -> None:
        self.name = name  # the metrics label: a proxy's name, or "default"
        self.where = where  # the config key, for log lines
        self.opts = opts
        self._metrics = metrics
        self._forward = frozenset(h.strip().lower() for h in opts.http_headers)
        self._in_flight = 0
        self._session: aiohttp.ClientSession | None = None
        self._transforms = {t.status_code: t for t in opts.http.status_to_code_transforms}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def binary(self) -> bool:
        return self.opts.binary_encoding

    @property
    def include_meta(self) -> bool:
        return self.opts.include_connection_meta

    def headers(self, connection_headers: Mapping[str, str]) -> dict[str, str]:
        """Static headers, then the allowed headers of the client's connection request (they win)."""
        out = {name: value for name, value in self.opts.http.static_headers.items()}
        if self._forward:
            for name, value in connection_headers.items():
                if name.lower() in self._forward:
                    for existing in [k for k in out if k.lower() == name.lower()]:
                        del out[existing]
                    out[name] = value
        out["Content-Type"] = "application/json"
        return out

    async def call(
        self, event: str, body: bytes, connection_headers: Mapping[str, str], parse: Callable[[bytes], T], client: str
    ) -> T:
        """POST ``body``, parse the answer; raises ProxyFailure, or the answer's ClientError / Disconnect."""
        if self._in_flight >= self.opts.max_concurrent_requests:
            self._metrics.proxy_request(self.name, event, "overloaded", 0.0)
            self._log(event, client, ProxyFailure("overloaded", f"{self._in_flight} requests in flight"))
            raise ProxyFailure("overloaded", f"{self._in_flight} requests in flight")
        self._in_flight += 1
        self._metrics.proxy_in_flight(self.name, 1)
        started = time.perf_counter()
        result = "ok"
        try:
            answer = await self._post(body, connection_headers)
            try:
                return parse(answer)
            except InvalidAnswer as exc:
                raise ProxyFailure("invalid", str(exc)) from None
        except ProxyFailure as failure:
            result = failure.kind
            self._log(event, client, failure)
            raise
        except ClientError:
            result = "error"
            raise
        except Disconnect:
            result = "disconnect"
            raise
        finally:
            self._in_flight -= 1
            self._metrics.proxy_in_flight(self.name, -1)
            self._metrics.proxy_request(self.name, event, result, time.perf_counter() - started)

    async def _post(self, body: bytes, connection_headers: Mapping[str, str]) -> bytes:
        session = self._client()
        try:
            async with asyncio.timeout(self.opts.timeout):
                async with session.post(
                    self.opts.endpoint, data=body, headers=self.headers(connection_headers), allow_redirects=False
                ) as resp:
                    if resp.status != 200:
                        self._transform(resp.status)
                        raise ProxyFailure("status", f"HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
                        raise ProxyFailure("invalid", f"answer of {resp.content_length} bytes")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.content.iter_chunked(65536):
                        size += len(chunk)
                        if size > MAX_ANSWER_BYTES:
                            raise ProxyFailure("invalid", f"answer over {MAX_ANSWER_BYTES} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
        except TimeoutError:
            raise ProxyFailure("timeout", f"no answer within {self.opts.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise ProxyFailure("unavailable", f"{type(exc).__name__}: {exc}"[:200]) from None

    def _transform(self, status: int) -> None:
        """``http.status_to_code_transforms``: a status that maps to an error or a disconnect raises it."""
        t = self._transforms.get(status)
        if t is None:
            return
        if t.to_error.code:
            raise ClientError(t.to_error.code, t.to_error.message, t.to_error.temporary)
        raise Disconnect(t.to_disconnect.code, t.to_disconnect.reason)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.opts.max_concurrent_requests),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self.opts.timeout),
            )
        return self._session

    def _log(self, event: str, client: str, failure: ProxyFailure) -> None:
        log.warning(
            "%s proxy %r (%s) failed for client=%s: %s",
            event,
            self.name,
            self.where,
            client,
            failure,
            extra={"proxy": self.name, "client": client},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
