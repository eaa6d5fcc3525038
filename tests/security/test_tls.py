"""TLS: ``wss://`` with centrifuge-python and Chromium, TLS 1.2+ only, no cleartext on the TLS port.

Certificates come from a throwaway CA (trustme). centrifuge-python trusts it through
its ``ssl_context`` option. Chromium cannot be handed a CA file on the command line
(that needs an NSS database); instead it is launched with
``--ignore-certificate-errors-spki-list=<sha256 of the leaf's public key>``, which
trusts exactly this server key and nothing else - a launch without it refuses the
page, so the test proves the pin, not a blanket "ignore errors".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from centrifuge import PublicationContext, SubscriptionEventHandler
from playwright.async_api import Browser
from playwright.async_api import Error as PlaywrightError

from tests.conftest import Running, eventually
from tests.security.conftest import API_KEY, Tls, conn_token, sdk_client

Serve = Callable[..., Awaitable[Running]]
Launch = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def tls_server(serve: Serve, tls: Tls) -> Running:
    return await serve(tls.config())


def wss(running: Running) -> str:
    return f"wss://127.0.0.1:{running.port}/connection/websocket"


def https(running: Running) -> str:
    return f"https://127.0.0.1:{running.port}"


async def handshake_version(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS version negotiated with 127.0.0.1:port, or raise ssl.SSLError."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
    try:
        version = writer.get_extra_info("ssl_object").version()
        assert isinstance(version, str)
        return version
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 2)


def legacy_client_context(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers only old TLS versions (OpenSSL's security level lowered so it really does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


@pytest.fixture
async def permissive_tls_port(tls: Tls) -> AsyncIterator[int]:
    """A control TLS server that still accepts TLS 1.0: shows the legacy client really speaks it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(tls.cert_file, tls.key_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


# ----------------------------------------------------------------------------------- SDK


async def test_wss_with_centrifuge_python(tls_server: Running, tls: Tls) -> None:
    """Connect, subscribe and receive a publication over ``wss://``, trusting only the test CA."""
    received: list[object] = []

    class Sub(SubscriptionEventHandler):
        async def on_publication(self, ctx: PublicationContext) -> None:
            received.append(ctx.pub.data)

    async with sdk_client(wss(tls_server), conn_token("42"), ssl_context=tls.client_context()) as (client, events):
        sub = client.new_subscription("news", Sub())
        await client.connect()
        await client.ready(timeout=5)
        await sub.subscribe()
        await sub.ready(timeout=5)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                https(tls_server) + "/api/publish",
                json={"channel": "news", "data": {"over": "tls"}},
                headers={"X-API-Key": API_KEY},
                ssl=tls.client_context(),
            ) as resp,
        ):
            assert resp.status == 200
        await eventually(lambda: received, timeout=5)
        assert received == [{"over": "tls"}]
        assert events.connected


async def test_certificate_is_verified_by_clients(tls_server: Running) -> None:
    """Without the CA a client refuses the server: there is no silent fallback."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.ws_connect(wss(tls_server))


async def test_no_cleartext_on_the_tls_port(tls_server: Running) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ClientError, aiohttp.WSServerHandshakeError)):
            await session.ws_connect(
                f"ws://127.0.0.1:{tls_server.port}/connection/websocket", timeout=aiohttp.ClientWSTimeout(ws_receive=3)
            )


# ----------------------------------------------------------------------------------- versions


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
async def test_tls_downgrade_refused(tls_server: Running, permissive_tls_port: int, maximum: ssl.TLSVersion) -> None:
    ctx = legacy_client_context(maximum)
    assert await handshake_version(permissive_tls_port, ctx) in ("TLSv1", "TLSv1.1")  # the client can speak it
    # The server aborts the handshake (an alert or a reset, depending on timing): never a session.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await handshake_version(tls_server.port, ctx)


async def test_tls_1_2_and_1_3_accepted(tls_server: Running, tls: Tls) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = tls.client_context()
        ctx.minimum_version = ctx.maximum_version = version
        assert (
            await handshake_version(tls_server.port, ctx) == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        )


# ----------------------------------------------------------------------------------- browser

CENTRIFUGE_JS = """
async ({url, token}) => await new Promise((resolve) => {
  const c = new Centrifuge(url, {token});
  c.on("connected", () => { resolve("connected"); c.disconnect(); });
  c.on("disconnected", (ctx) => resolve("disconnected:" + ctx.code));
  c.connect();
  setTimeout(() => resolve("timeout"), 5000);
})
"""


async def test_chromium_wss_from_the_https_page(tls_server: Running, tls: Tls, chromium: Launch) -> None:
    """The demo page served over https by the same server connects over wss://."""
    untrusting = await chromium()
    page = await untrusting.new_page()
    with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
        await page.goto(https(tls_server) + "/")

    browser = await chromium(f"--ignore-certificate-errors-spki-list={tls.spki_sha256}")
    page = await browser.new_page()
    response = await page.goto(https(tls_server) + "/")
    assert response is not None and response.ok
    if not await page.evaluate("typeof Centrifuge !== 'undefined'"):
        await page.add_script_tag(url="/static/vendor/centrifuge.js")
    result = await page.evaluate(CENTRIFUGE_JS, {"url": wss(tls_server), "token": conn_token("42")})
    assert result == "connected"
