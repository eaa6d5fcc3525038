"""Sans-I/O codec: frame bytes <-> typed commands, replies and pushes.

The JSON format puts one compact object per line and several lines per WebSocket
frame (reference §1.3). No encoded message may contain a raw newline, so payloads
that arrive from outside a frame (the HTTP API) go through :func:`compact_raw`.
Protobuf will come later behind the same :class:`Codec` interface.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..records import Publication as Record
from ..records import Undeliverable
from .messages import NO_DATA, ClientInfo, Command, ConnectRequest, Publication, Push, PushReply, Reply


class ProtocolError(ValueError):
    """A frame could not be decoded into commands; the connection gets 3501."""


class Codec(Protocol):
    """What a transport needs from a wire format."""

    name: str
    #: joins several encoded messages in one frame
    separator: bytes
    #: the server's ping (an empty reply); the client answers with an empty command
    ping: bytes

    def decode_commands(self, frame: bytes) -> list[Command]: ...

    def encode_reply(self, reply: Reply) -> bytes: ...

    def encode_push(self, push: Push) -> bytes: ...

    def join(self, messages: list[bytes]) -> bytes: ...

    def publication(self, record: Record) -> msgspec.Raw:
        """A record as this format's Publication message, for history and recovery replies."""

    def client_info(self, info: bytes) -> msgspec.Raw:
        """A presence entry (JSON-encoded ClientInfo, as presence stores it) in this format."""


_command_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()


def compact_raw(raw: bytes) -> msgspec.Raw:
    """Return ``raw`` JSON without raw newlines (they are whitespace in valid JSON)."""
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return msgspec.Raw(raw)


MAX_OFFSET = 2**64 - 1


def offsets_fit(command: Command) -> bool:
    """Whether every stream offset of ``command`` is a uint64 (msgspec bounds stop at int64)."""
    if command.subscribe is not None and command.subscribe.offset > MAX_OFFSET:
        return False
    if command.history is not None and command.history.since is not None:
        return command.history.since.offset <= MAX_OFFSET
    if command.connect is not None:
        return all(sub.offset <= MAX_OFFSET for sub in command.connect.subs.values())
    return True


class JsonCodec:
    """Newline-delimited compact JSON, as spoken by centrifuge-js and centrifuge-python."""

    name = "json"
    separator = b"\n"
    ping = b"{}"

    def __init__(self, max_commands_per_frame: int = 1000) -> None:
        self.max_commands_per_frame = max_commands_per_frame

    def decode_commands(self, frame: bytes) -> list[Command]:
        try:
            frame.decode("utf-8")  # raw payloads are passed through: they must be valid UTF-8 JSON
        except UnicodeDecodeError:
            raise ProtocolError("frame is not valid UTF-8") from None
        body = frame.strip()
        if not body:
            raise ProtocolError("empty frame")
        lines = [line for line in body.split(b"\n") if line.strip()] if b"\n" in body else [body]
        if len(lines) > self.max_commands_per_frame:
            raise ProtocolError("too many commands in one frame")
        commands: list[Command] = []
        for line in lines:
            try:
                command = _command_decoder.decode(line)
                if not offsets_fit(command):
                    raise ProtocolError("malformed command: offset out of uint64 range")
                commands.append(command)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise ProtocolError(f"malformed command: {exc}") from None
            except RecursionError:
                raise ProtocolError("malformed command: nested too deeply") from None
        return commands

    def encode_reply(self, reply: Reply) -> bytes:
        return _encoder.encode(reply)

    def encode_push(self, push: Push) -> bytes:
        return _encoder.encode(PushReply(push))

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)

    def publication(self, record: Record) -> msgspec.Raw:
        return encode_publication(record)

    def client_info(self, info: bytes) -> msgspec.Raw:
        return msgspec.Raw(info)


def encode_publication_push(channel: str, pub: Publication) -> bytes:
    """Encode a publication push once, for writing to every subscriber of ``channel``."""
    return _encoder.encode(PushReply(Push(channel=channel, pub=pub)))


_json_check = msgspec.json.Decoder(msgspec.Raw)


def publication(record: Record) -> Publication:
    """The JSON protocol's view of a broker record: payloads are embedded raw JSON.

    Data that is not JSON (binary, published by a Protobuf client) cannot travel in
    this format: :class:`~trunkline.records.Undeliverable` (the connection is then
    closed with 3506 "inappropriate protocol", as Centrifugo documents).
    """
    if record.removed and not record.data:
        data = NO_DATA  # a map removal carries no data
    else:
        try:
            _json_check.decode(record.data)
        except msgspec.DecodeError:
            raise Undeliverable("publication data is not JSON") from None
        data = compact_raw(record.data)
    info = record.info
    return Publication(
        data=data,
        info=ClientInfo(
            user=info.user,
            client=info.client,
            conn_info=msgspec.Raw(info.conn_info) if info.conn_info is not None else None,
            chan_info=msgspec.Raw(info.chan_info) if info.chan_info is not None else None,
        )
        if info is not None
        else None,
        offset=record.offset,
        tags=record.tags,
        key=record.key,
        removed=record.removed,
        score=record.score,
    )


def encode_publication(record: Record) -> msgspec.Raw:
    """A record as the JSON protocol's Publication object (history replies, recovery)."""
    return msgspec.Raw(_encoder.encode(publication(record)))


class ChannelPrefixes:
    """A bounded cache of each channel's encoded push prefix, shared by the wire shapes."""

    __slots__ = ("_prefixes",)
    MAX_CHANNELS = 10000

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}

    def _make_prefix(self, channel: str) -> bytes:
        raise NotImplementedError

    def _prefix(self, channel: str) -> bytes:
        prefix = self._prefixes.get(channel)
        if prefix is None:
            if len(self._prefixes) > self.MAX_CHANNELS:
                self._prefixes.clear()
            prefix = self._prefixes[channel] = self._make_prefix(channel)
        return prefix


class JsonShape(ChannelPrefixes):
    """The wire shape of JSON subscribers: one push line per publication, join and leave.

    A push is ``_OPEN`` + the channel + its field + ``_CLOSE``: ``{"push":{"channel":…,"pub":…}}``.
    """

    __slots__ = ()
    _OPEN = b'{"push":{"channel":'
    _CLOSE = b"}}"

    def _make_prefix(self, channel: str) -> bytes:
        return self._OPEN + _encoder.encode(channel)

    def publication(self, channel: str, record: Record) -> bytes:
        return self._prefix(channel) + b',"pub":' + _encoder.encode(publication(record)) + self._CLOSE

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return self._prefix(channel) + b',"' + kind.encode() + b'":{"info":' + info + b"}" + self._CLOSE


JSON_SHAPE = JsonShape()


# ---------------------------------------------------------------- unidirectional JSON
#
# Unidirectional transports (uni_websocket, uni_sse, uni_http_stream) carry bare Push
# objects, no Reply wrapper: first {"connect":{...}}, then {"channel":"c","pub":{...}}…
# The client sends one bare ConnectRequest and nothing after it; {} is a ping that
# needs no answer.

_connect_decoder = msgspec.json.Decoder(ConnectRequest)


class UniJsonCodec:
    """The JSON wire of unidirectional transports: a bare ConnectRequest in, bare pushes out."""

    name = "json"
    separator = b"\n"
    ping = b"{}"

    def decode_commands(self, frame: bytes) -> list[Command]:
        """The connect request, as the connect command (id 1) the session runs."""
        try:
            frame.decode("utf-8")
            request = _connect_decoder.decode(frame)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed connect request: {exc}") from None
        except RecursionError:
            raise ProtocolError("malformed connect request: nested too deeply") from None
        command = Command(id=1, connect=request)
        if not offsets_fit(command):
            raise ProtocolError("malformed connect request: offset out of uint64 range")
        return [command]

    def encode_reply(self, reply: Reply) -> bytes:
        """Only the connect reply travels, as the ``connect`` push; nothing else has a wire form."""
        if reply.connect is None:
            raise ValueError("a unidirectional connection gets no replies but the connect result")
        return _encoder.encode(Push(connect=reply.connect))

    def encode_push(self, push: Push) -> bytes:
        return _encoder.encode(push)

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)

    def publication(self, record: Record) -> msgspec.Raw:
        return encode_publication(record)

    def client_info(self, info: bytes) -> msgspec.Raw:
        return msgspec.Raw(info)


class UniJsonShape(JsonShape):
    """The wire shape of unidirectional JSON subscribers: bare pushes, ``{"channel":…,"pub":…}``."""

    __slots__ = ()
    _OPEN = b'{"channel":'
    _CLOSE = b"}"


UNI_JSON_SHAPE = UniJsonShape()


PING_FRAME = b"{}"
