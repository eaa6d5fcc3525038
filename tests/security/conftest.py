"""Security suite fixtures: live servers, hostile hand-driven clients, real SDK clients, Chromium.

Every test here talks to a real Trunkline over real sockets:

- ``serve(extra)``: an in-process server (``start_server`` from ``tests/conftest.py``)
  with a long HMAC secret and API key (the shared test ones are too short to be
  realistic, and PyJWT warns about them);
- ``raw(url)``: a :class:`RawClient`, an aiohttp WebSocket that sends exactly what the
  test says (no automatic connect, pong or reconnect) and reports close codes and reasons;
- ``sdk_client(url, ...)``: centrifuge-python, for the paths a real application takes;
- ``chromium(*args)``: Debian's Chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    ErrorContext,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import Running, deep_merge

SECRET = "trunkline-security-suite-hmac-secret-" + "s" * 40
API_KEY = "trunkline-security-suite-api-key-" + "k" * 40
SEC_CONFIG: dict[str, Any] = {
    "client": {"token": {"hmac_secret_key": SECRET}},
    "http_api": {"key": API_KEY},
}


# ----------------------------------------------------------------------------------- tokens


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    claims: Mapping[str, Any], key: Any = SECRET, alg: str = "HS256", headers: dict[str, Any] | None = None
) -> str:
    return jwt.encode(dict(claims), key, algorithm=alg, headers=headers)


def conn_token(
    user: str = "42", *, ttl: float | None = 3600, key: Any = SECRET, alg: str = "HS256", **claims: Any
) -> str:
    """A connection token; ``headers=`` in ``claims`` goes to the JWT header."""
    headers = claims.pop("headers", None)
    payload: dict[str, Any] = {"sub": user, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return sign(payload, key, alg, headers)


def sub_token(user: str, channel: str, *, ttl: float | None = 3600, key: Any = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "channel": channel, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return sign(payload, key)


def hand_signed(header: Mapping[str, Any], payload: Mapping[str, Any], secret: bytes | None) -> str:
    """A JWT built by hand: any header (``alg: none``), HMAC-SHA256 with any bytes as the secret
    (PyJWT refuses to use a PEM public key as an HMAC secret, an attacker does not)."""
    head = b64u(json.dumps(dict(header), separators=(",", ":")).encode())
    body = b64u(json.dumps(dict(payload), separators=(",", ":")).encode())
    if secret is None:
        return f"{head}.{body}."
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64u(signature)}"


# ----------------------------------------------------------------------------------- servers


@pytest.fixture
def serve(start_server: Callable[..., Awaitable[Running]]) -> Callable[..., Awaitable[Running]]:
    """``await serve({...})``: an in-process server with the security suite's secrets."""

    async def start(extra: Mapping[str, Any] | None = None, node: Any = None) -> Running:
        return await start_server(deep_merge(SEC_CONFIG, extra or {}), node)

    return start


def api_url(running: Running, method: str) -> str:
    return f"{running.api_url}/{method}"


async def api(running: Running, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(api_url(running, method), json=dict(body), headers={"X-API-Key": API_KEY}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


# ----------------------------------------------------------------------------------- raw client


@dataclass(frozen=True)
class Closed:
    """How the server ended a connection: the close frame's code and reason."""

    code: int
    reason: str


@dataclass
class RawClient:
    """A WebSocket client that does only what the test tells it to."""

    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    pushes: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    close: Closed | None = None
    _next_id: int = 0

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> RawClient:
        session = aiohttp.ClientSession()
        kwargs.setdefault("max_msg_size", 0)
        kwargs.setdefault("autoping", True)
        try:
            ws = await session.ws_connect(url, **kwargs)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, *commands: Mapping[str, Any]) -> list[int]:
        """Send commands in one frame; each gets the next id unless it has one (``id: 0`` for none)."""
        ids: list[int] = []
        lines: list[str] = []
        for command in commands:
            cmd = dict(command)
            if "id" not in cmd:
                cmd["id"] = self.next_id()
            if not cmd["id"]:
                del cmd["id"]
            ids.append(int(cmd.get("id", 0)))
            lines.append(json.dumps(cmd, separators=(",", ":")))
        await self.ws.send_str("\n".join(lines))
        return ids

    async def _read(self, timeout: float) -> bool:
        """Read one frame into replies/pushes; False once the connection is over."""
        if self.close is not None:
            return False
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            for line in msg.data.strip().split("\n"):
                if not line:
                    continue
                item = json.loads(line)
                if item.get("id"):
                    self.replies[int(item["id"])] = item
                elif "push" in item:
                    self.pushes.append(item["push"])
            return True
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close = Closed(int(msg.data), msg.extra or "")
        else:  # CLOSED / ERROR: gone without (or after) a close frame
            code = self.ws.close_code
            self.close = Closed(int(code) if code is not None else 1006, "")
        return False

    async def pump(self, seconds: float) -> None:
        """Read whatever arrives within ``seconds`` (pushes, replies, a close)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                if not await self._read(left):
                    return
            except TimeoutError:
                return

    async def outcome(self, cmd_id: int, timeout: float = 5.0) -> dict[str, Any] | Closed:
        """The reply to ``cmd_id`` or, if the server closes first, how it closed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while cmd_id not in self.replies:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no reply to command {cmd_id} within {timeout}s")
            if not await self._read(left):
                assert self.close is not None
                return self.close
        return self.replies.pop(cmd_id)

    async def reply(self, cmd_id: int, timeout: float = 5.0) -> dict[str, Any]:
        result = await self.outcome(cmd_id, timeout)
        assert not isinstance(result, Closed), f"closed instead of replying: {result}"
        return result

    async def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        (cmd_id,) = await self.send({method: dict(params or {})})
        return await self.reply(cmd_id, timeout)

    async def attempt(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 5.0
    ) -> dict[str, Any] | Closed:
        (cmd_id,) = await self.send({method: dict(params or {})})
        return await self.outcome(cmd_id, timeout)

    async def connect(self, token: str | None = None, timeout: float = 5.0) -> dict[str, Any] | Closed:
        return await self.attempt("connect", {"token": token} if token is not None else {}, timeout)

    async def closed(self, timeout: float = 5.0) -> Closed:
        """Wait until the server closes the connection (skipping whatever arrives before)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self._read(max(deadline - asyncio.get_running_loop().time(), 0.001)):
            pass
        assert self.close is not None
        return self.close

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.session.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    """``await raw(url, origin=..., headers=..., compress=...)``: a RawClient, closed at teardown."""
    clients: list[RawClient] = []

    async def open_(url: str, **kwargs: Any) -> RawClient:
        client = await RawClient.open(url, **kwargs)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await client.aclose()


async def connected(raw: Callable[..., Awaitable[RawClient]], running: Running, token: str) -> RawClient:
    """A RawClient that has connected with ``token``."""
    client = await raw(running.ws_url)
    result = await client.connect(token)
    assert isinstance(result, dict) and "connect" in result, result
    return client


async def handshake(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """A WebSocket upgrade request by hand: the HTTP status and the JSON body of a refusal."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **(headers or {}),
    }
    async with aiohttp.ClientSession() as session, session.get(url, headers=upgrade) as resp:
        if resp.status == 101:
            return 101, None
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body.decode(errors="replace")


# ----------------------------------------------------------------------------------- SDK client


@dataclass
class Events(ClientEventHandler):
    """What centrifuge-python reports about its connection."""

    connected: list[ConnectedContext] = field(default_factory=list)
    connecting: list[ConnectingContext] = field(default_factory=list)
    disconnected: list[DisconnectedContext] = field(default_factory=list)
    errors: list[ErrorContext] = field(default_factory=list)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        self.errors.append(ctx)


@contextlib.asynccontextmanager
async def sdk_client(url: str, token: str = "", **kwargs: Any) -> AsyncIterator[tuple[Client, Events]]:
    """A centrifuge-python client (not yet connected) and its recorded events; disconnected at exit."""
    events = Events()
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("max_reconnect_delay", 0.5)
    client = Client(url, events=events, token=token, **kwargs)
    try:
        yield client, events
    finally:
        await client.disconnect()


# ----------------------------------------------------------------------------------- TLS


@dataclass
class Tls:
    ca: trustme.CA
    cert_file: Path
    key_file: Path
    spki_sha256: str

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def config(self) -> dict[str, object]:
        return {
            "http_server": {
                "tls": {"enabled": True, "cert_pem_file": str(self.cert_file), "key_pem_file": str(self.key_file)}
            }
        }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key_file))
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Tls(ca, cert_file, key_file, base64.b64encode(hashlib.sha256(spki).digest()).decode())


# ----------------------------------------------------------------------------------- browser
