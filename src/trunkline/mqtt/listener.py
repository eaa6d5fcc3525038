"""MQTT listeners: over WebSocket on the main port (``mqtt.websocket.path``) and over TCP/TLS.

The WebSocket endpoint admits a connection like every other transport
(:func:`trunkline.transport.admission.refuse`: shutdown, ``Origin``, the connection
limit), answers the subprotocol ``mqtt`` and hands every binary frame's bytes to
the session (MQTT packets and WebSocket frames are not aligned: the session's
decoder reassembles them; empty frames are fine). A text frame is a protocol
error (MQTT-6.0.0-1) and closes with 1003.

The TCP listener (and the TLS one) is a plain ``asyncio`` server on its own
address; the same connection counter and limit apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Final

from aiohttp import WSMsgType, web

from ..appkeys import NODE_KEY
from ..contracts import TransportInfo
from ..errors import StartupError
from ..transport.admission import connection_counter, open_connections, refuse
from ..transport.remote import client_ip
from ..transport.websocket import WebSocketTransport
from .session import new_mqtt_session

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("trunkline.mqtt")
WS_INFO: Final = TransportInfo("mqtt_websocket", protocol="mqtt", binary=True, ping="none")
TCP_INFO: Final = TransportInfo("mqtt_tcp", protocol="mqtt", binary=True, ping="none")
TLS_INFO: Final = TransportInfo("mqtt_tls", protocol="mqtt", binary=True, ping="none")
READ_SIZE: Final = 65536
HIGH_WATER: Final = 256 * 1024


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    refusal = refuse(request, node, "mqtt websocket")
    if refusal is not None:
        return refusal
    counter = connection_counter(node)
    limit = node.settings.mqtt.max_packet_size
    ws = web.WebSocketResponse(protocols=("mqtt", "mqttv3.1"), max_msg_size=limit + 8, autoping=True)
    counter.value += 1
    try:
        await ws.prepare(request)
        session = new_mqtt_session(node, WebSocketTransport(ws, request, WS_INFO), client_ip(request, node.settings))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    await session.handle_frame(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await ws.close(code=1003, message=b"mqtt needs binary frames")
                    break
                else:
                    break
        except Exception:
            log.exception("mqtt websocket read loop failed for client=%s", session.client_id)
        finally:
            await session.end(send_will=True)
    finally:
        counter.value -= 1
    return ws


class StreamTransport:
    """A session's ``Transport`` over an asyncio stream (MQTT over TCP or TLS)."""

    __slots__ = ("_writer", "info")

    def __init__(self, writer: asyncio.StreamWriter, info: TransportInfo) -> None:
        self._writer = writer
        self.info = info

    async def send(self, frame: bytes) -> None:
        writer = self._writer
        if writer.is_closing():
            raise ConnectionResetError("mqtt connection closed")
        writer.write(frame)
        if writer.transport.get_write_buffer_size() > HIGH_WATER:
            await writer.drain()

    async def close(self, code: int, reason: str) -> None:
        writer = self._writer
        if writer.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()

    def abort(self) -> None:
        self._writer.transport.abort()


class TcpListener:
    """Plain MQTT (or MQTT over TLS) on its own address."""

    def __init__(self, node: Node, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.info = TLS_INFO if ssl_context is not None else TCP_INFO
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; a port in use or an address that cannot be bound is a :class:`StartupError`."""
        try:
            self._server = await asyncio.start_server(
                self._serve,
                self.host,
                self.port,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.node.settings.websocket.handshake_timeout if self.ssl_context else None,
            )
        except OSError as exc:
            setting = "mqtt.tls.address" if self.ssl_context else "mqtt.tcp.address"
            raise StartupError(setting, f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting; the node's shutdown closes the sessions."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = self.node
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else ""
        limit = node.settings.client.connection_limit
        if not node.accepting or (limit and (open_connections(node) >= limit or node.hub.num_clients >= limit)):
            writer.close()
            return
        counter = connection_counter(node)
        counter.value += 1
        session = new_mqtt_session(node, StreamTransport(writer, self.info), remote)
        try:
            while not session.closed:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                await session.handle_frame(data)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        except Exception:
            log.exception("mqtt tcp read loop failed for client=%s", session.client_id)
        finally:
            try:
                await session.end(send_will=True)
            finally:
                counter.value -= 1


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The TLS listener's context; an unreadable or mismatched file is a :class:`StartupError` naming it."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for setting, path in (("mqtt.tls.cert_pem_file", cert), ("mqtt.tls.key_pem_file", key)):
        try:
            open(path, "rb").close()  # only: is it readable?
        except OSError as exc:
            raise StartupError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise StartupError(
            "mqtt.tls.cert_pem_file", f"cannot load the certificate {cert} with the key {key}: {reason}"
        ) from None
    return ctx


def listeners(node: Node) -> list[TcpListener]:
    """The configured TCP/TLS listeners (not started)."""
    m = node.settings.mqtt
    out: list[TcpListener] = []
    if m.tcp.enabled:
        out.append(TcpListener(node, *split_address(m.tcp.address)))
    if m.tls.enabled:
        out.append(
            TcpListener(node, *split_address(m.tls.address), tls_context(m.tls.cert_pem_file, m.tls.key_pem_file))
        )
    return out
