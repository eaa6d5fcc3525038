"""Fan-out between nodes over NATS (core NATS, at most once), as Centrifugo's NATS broker.

Every channel is a NATS subject ``<prefix>.client.<channel>``; control messages go
to ``<prefix>.control``. A channel name that is not a plain NATS subject (spaces,
non-ASCII, the wildcards ``*`` and ``>``, empty tokens) travels on
``<prefix>.xclient.<hex of its UTF-8>`` instead, so every channel works.

Core NATS keeps nothing: a node that is disconnected, or too slow to read, misses
what was published meanwhile (the node is told through ``handle_resync``). Alone,
this broker has no history, offsets or recovery: history reads answer 108 "not
available", which is what a positioned or recoverable subscribe then answers too.
Presence kept per node would be wrong across nodes, so :class:`NoPresence` refuses
presence reads (108) while joins and leaves still cross.

With a Redis history store (``engine.nats.history = "redis"``) publications that
keep history (or carry an idempotency key) are first stored by the same Redis
script as the Redis broker's, which gives their offset and epoch; NATS then
carries them, position included, to every node. History, recovery and presence
are then Redis's; NATS stays the only fan-out path.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from .. import errors as E
from .base import (
    BrokerEventHandler,
    HistoryQuery,
    Publication,
    PublishOptions,
    StreamPosition,
    decode_body,
    encode_body,
)
from .memory import new_epoch
from .redis import _PUBLISH, RedisBroker, _ms

logger = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"
PENDING_SIZE = 2 * 1024 * 1024  # bytes written but not yet flushed to NATS before a publish waits


class NatsUnavailable(ConnectionError):
    """NATS could not be reached, or the connection is down."""


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    """What crosses NATS: kind ("p", "j", "l"), the channel, the stream position and the body."""

    kind: str
    channel: str
    data: bytes
    offset: int = 0
    epoch: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Envelope)


def _plain(channel: str) -> bool:
    """Whether ``channel`` can be a NATS subject as it is (ASCII, no wildcards, no empty token)."""
    if not channel or not channel.isascii() or "*" in channel or ">" in channel:
        return False
    if any(c <= " " or c == "\x7f" for c in channel):
        return False
    return all(channel.split("."))


def channel_subject(prefix: str, channel: str) -> str:
    """The NATS subject of a Trunkline channel."""
    if _plain(channel):
        return f"{prefix}.client.{channel}"
    return f"{prefix}.xclient.{channel.encode().hex()}"


class RedisHistoryStore(RedisBroker):
    """The Redis broker's streams, used for storage only: nothing is fanned out through Redis."""

    async def store(
        self, channel: str, pub: Publication, options: PublishOptions
    ) -> tuple[StreamPosition | None, bool]:
        """Store ``pub`` (history, idempotency); return its position and whether it was a repeat."""
        stream_key, meta_key = self._stream_keys(channel)
        result_key = f"{self._prefix}.result.{len(channel)}.{channel}.{options.idempotency_key}"
        offset, epoch, repeat = await self._eval(
            _PUBLISH,
            (stream_key, meta_key, result_key),
            (
                encode_body(pub),
                options.history_size if options.keeps_history else 0,
                _ms(options.history_ttl),
                _ms(options.history_meta_ttl),
                new_epoch(),
                f"{self._prefix}.nats-fanout",  # a Redis pub/sub name no node listens to
                _ms(options.idempotent_result_ttl) if options.idempotency_key else 0,
            ),
        )
        position = StreamPosition(int(offset), epoch.decode()) if options.keeps_history and int(offset) else None
        return position, bool(int(repeat))


class NatsBroker:
    """Pub/sub between nodes over NATS; history only through an optional :class:`RedisHistoryStore`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        prefix: str = "trunkline",
        dial_timeout: float = 1.0,
        write_timeout: float = 1.0,
        history: RedisHistoryStore | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._dial_timeout = dial_timeout
        self._write_timeout = write_timeout
        self._history = history
        self._nc: Client | None = None
        self._handler: BrokerEventHandler | None = None
        self._subs: dict[str, Subscription] = {}  # channel -> its subscription
        self._patterns: set[str] = set()
        self._pattern_subs: list[Subscription] = []
        self._lock = asyncio.Lock()  # serialises subscribe/unsubscribe bookkeeping

    @property
    def history_store(self) -> RedisHistoryStore | None:
        return self._history

    # --- lifecycle --------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect to NATS; raise :class:`NatsUnavailable` if it cannot within the dial timeout."""
        if self._nc is not None:
            raise RuntimeError("broker already started")
        self._handler = handler
        try:
            async with asyncio.timeout(self._dial_timeout + 1.0):
                nc = await nats.connect(
                    self._url,
                    name="trunkline",
                    connect_timeout=max(1, round(self._dial_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    pending_size=PENDING_SIZE,  # bounded; _send refuses while disconnected anyway
                    flush_timeout=self._write_timeout,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except Exception as exc:
            raise NatsUnavailable(f"cannot connect to NATS at {self._url}: {exc!r}") from exc
        self._nc = nc
        await nc.subscribe(f"{self._prefix}.control", cb=self._on_control)
        await self._flush()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._subs.clear()
        self._pattern_subs.clear()
        if nc is not None:
            await nc.close()
        if self._history is not None:
            await self._history.close()

    async def ping(self) -> None:
        """Raise if NATS (or the Redis history store) is unreachable."""
        nc = self._connection()
        if not nc.is_connected:
            raise NatsUnavailable("NATS is reconnecting")
        await self._flush()
        if self._history is not None:
            await self._history.ping()

    def _connection(self) -> Client:
        if self._nc is None:
            raise NatsUnavailable("the NATS broker is not started")
        return self._nc

    async def _flush(self) -> None:
        """Wait until NATS has taken everything sent so far (subscriptions included)."""
        try:
            await self._connection().flush(timeout=max(1, round(self._write_timeout)))
        except NatsUnavailable:
            raise
        except Exception as exc:
            raise NatsUnavailable(f"NATS did not answer: {exc!r}") from exc

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            logger.warning("NATS dropped messages for this node (slow consumer): %s", exc)
            self._resync()
        else:
            logger.warning("NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        logger.warning("NATS connection lost; reconnecting")

    async def _on_reconnected(self) -> None:
        logger.info("NATS connection back")
        self._resync()

    def _resync(self) -> None:
        if self._handler is not None:
            try:
                self._handler.handle_resync()
            except Exception:
                logger.exception("broker event handler failed on resync")

    # --- subscriptions ----------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._subs:
                return
            sub = await self._connection().subscribe(channel_subject(self._prefix, channel), cb=self._on_message)
            self._subs[channel] = sub
            await self._flush()

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            sub = self._subs.pop(channel, None)
            if sub is not None and self._nc is not None:
                await sub.unsubscribe()

    async def psubscribe(self, prefix: str) -> None:
        async with self._lock:
            self._patterns.add(prefix)
            if self._pattern_subs:
                return
            nc = self._connection()
            for subject in (f"{self._prefix}.client.>", f"{self._prefix}.xclient.*"):
                self._pattern_subs.append(await nc.subscribe(subject, cb=self._on_pattern_message))
            await self._flush()

    async def punsubscribe(self, prefix: str) -> None:
        async with self._lock:
            self._patterns.discard(prefix)
            if self._patterns:
                return
            subs, self._pattern_subs = self._pattern_subs, []
            if self._nc is not None:
                for sub in subs:
                    await sub.unsubscribe()

    # --- receiving --------------------------------------------------------

    async def _on_control(self, msg: Msg) -> None:
        if self._handler is None:
            return
        try:
            self._handler.handle_control(msg.data)
        except Exception:
            logger.exception("broker event handler failed on a control message")

    async def _on_message(self, msg: Msg) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            envelope = _decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("undecodable NATS message on %r dropped", msg.subject)
            return
        if self._subs.get(envelope.channel) is None:
            return  # unsubscribed meanwhile (or a message for a channel this subject does not carry)
        try:
            if envelope.kind == "p":
                try:
                    pub = decode_body(envelope.data, envelope.offset, envelope.epoch)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    logger.warning("undecodable publication on %r dropped", msg.subject)
                    return
                handler.handle_publication(envelope.channel, pub)
            elif envelope.kind == "j":
                handler.handle_join(envelope.channel, envelope.data)
            elif envelope.kind == "l":
                handler.handle_leave(envelope.channel, envelope.data)
            else:
                logger.warning("unknown NATS message kind %r on %r", envelope.kind, msg.subject)
        except Exception:
            logger.exception("broker event handler failed on %r", msg.subject)

    async def _on_pattern_message(self, msg: Msg) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            envelope = _decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if envelope.kind != "p" or not any(envelope.channel.startswith(p) for p in self._patterns):
            return
        try:
            pub = decode_body(envelope.data, envelope.offset, envelope.epoch)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        try:
            handler.handle_pattern_publication(envelope.channel, pub)
        except Exception:
            logger.exception("broker event handler failed on a pattern publication of %r", msg.subject)

    # --- publishing -------------------------------------------------------

    async def _send(self, channel: str, envelope: _Envelope) -> None:
        nc = self._connection()
        if not nc.is_connected:
            raise NatsUnavailable("NATS is reconnecting; nothing was published")
        try:
            await nc.publish(channel_subject(self._prefix, channel), _encoder.encode(envelope))
        except Exception as exc:
            raise NatsUnavailable(f"NATS publish failed: {exc!r}") from exc

    async def publish(self, channel: str, pub: Publication, options: PublishOptions) -> StreamPosition | None:
        """Fan ``pub`` out; with a history store, store it first and carry its position.

        Without a history store the publication keeps no position (as Centrifugo's
        NATS broker): history options and idempotency keys have no effect.
        """
        position: StreamPosition | None = None
        if self._history is not None and (options.keeps_history or options.idempotency_key):
            position, repeat = await self._history.store(channel, pub, options)
            if repeat:
                return position
        body = encode_body(pub)
        if position is None:
            await self._send(channel, _Envelope("p", channel, body))
        else:
            await self._send(channel, _Envelope("p", channel, body, position.offset, position.epoch))
        return position

    async def publish_join(self, channel: str, info: bytes) -> None:
        await self._send(channel, _Envelope("j", channel, info))

    async def publish_leave(self, channel: str, info: bytes) -> None:
        await self._send(channel, _Envelope("l", channel, info))

    async def publish_control(self, data: bytes) -> None:
        nc = self._connection()
        if not nc.is_connected:
            raise NatsUnavailable("NATS is reconnecting; the control message was not sent")
        try:
            await nc.publish(f"{self._prefix}.control", data)
        except Exception as exc:
            raise NatsUnavailable(f"NATS publish failed: {exc!r}") from exc

    # --- history ----------------------------------------------------------

    async def history(self, channel: str, query: HistoryQuery) -> tuple[list[Publication], StreamPosition]:
        if self._history is None:
            raise E.NOT_AVAILABLE()
        return await self._history.history(channel, query)

    async def remove_history(self, channel: str) -> None:
        if self._history is None:
            raise E.NOT_AVAILABLE()
        await self._history.remove_history(channel)


class NoPresence:
    """Presence with NATS alone: nothing is kept (per-node presence would lie), reads answer 108."""

    async def add_presence(self, channel: str, client_id: str, user: str, info: bytes, ttl: float) -> None:
        return None

    async def remove_presence(self, channel: str, client_id: str) -> None:
        return None

    async def presence(self, channel: str) -> dict[str, bytes]:
        raise E.NOT_AVAILABLE()

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        raise E.NOT_AVAILABLE()

    async def close(self) -> None:
        return None
