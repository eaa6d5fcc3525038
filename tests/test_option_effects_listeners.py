"""Listener options, each set by its test, over real sockets.

- ``http_server.internal_address``: the internal listener (server API, metrics) binds there
  (``127.0.0.2``, another loopback address), not on ``http_server.address``;
- ``http_server.tls.key_pem_file`` / ``mqtt.tls.key_pem_file``: the key is the one the TLS
  handshake proves (a client that trusts the CA completes it); the key of another
  certificate stops the server from starting.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from tests.conftest import API_KEY, Running, free_port, make_settings
from trunkline.app import Server

Start = Callable[..., Any]


async def test_internal_address(start_server: Start) -> None:
    port = free_port()
    srv: Running = await start_server({"http_server": {"internal_port": port, "internal_address": "127.0.0.2"}})
    assert srv.server.internal_port == port
    headers = {"X-API-Key": API_KEY}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.2:{port}/api/info", data=b"{}", headers=headers) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(f"http://127.0.0.1:{port}/api/info", data=b"{}", headers=headers):
                pass


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.cert, self.key, self.other_key = directory / "cert.pem", directory / "key.pem", directory / "other.pem"
        leaf = self.ca.issue_cert("127.0.0.1")
        for i, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(self.cert), append=i > 0)
        leaf.private_key_pem.write_to_path(str(self.key))
        self.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(self.other_key))

    def client(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def tls_config(where: str, pki: Pki, key: Path) -> dict[str, Any]:
    files = {"enabled": True, "cert_pem_file": str(pki.cert), "key_pem_file": str(key)}
    if where == "http":
        return {"http_server": {"tls": files}}
    return {"mqtt": {"tls": {**files, "address": f"127.0.0.1:{free_port()}"}}}


def tls_port(srv: Running, where: str) -> int:
    return srv.port if where == "http" else srv.server.mqtt_listeners[0].port


@pytest.mark.parametrize("where", ["http", "mqtt"])
async def test_tls_key_pem_file_is_the_handshake_key(start_server: Start, tmp_path: Path, where: str) -> None:
    pki = Pki(tmp_path)
    srv: Running = await start_server(tls_config(where, pki, pki.key))
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", tls_port(srv, where), ssl=pki.client()), 5)
    try:
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("where", ["http", "mqtt"])
async def test_tls_key_of_another_certificate_refused(tmp_path: Path, where: str) -> None:
    pki = Pki(tmp_path)
    server = Server(make_settings(tls_config(where, pki, pki.other_key)))
    with pytest.raises(Exception) as refused:
        await server.start()
    await server.stop(timeout=2)
    assert "KEY_VALUES_MISMATCH" in str(refused.value), refused.value  # the configured key was loaded
    if where == "http":
        assert str(refused.value).startswith("http_server.tls.cert_pem_file: cannot load the certificate")
        assert str(pki.other_key) in str(refused.value)
