"""Wire shapes of delta subscriptions (``delta: "fossil"`` negotiated), JSON and Protobuf.

A delta subscriber gets each publication either *full* or as a Fossil *patch*
against the previous publication of the stream (``Publication.delta = true``). The
hub computes the patch once per channel and publication
(:mod:`trunkline.hub.delta`) and asks each delta shape present for the bytes of
either form, once per shape.

In JSON *every* publication of a delta subscription carries ``data`` as a JSON
string, full ones too: the client keeps the exact bytes of the last one as the base
of the next patch, and a string is the only JSON form that keeps them exact. The
data must still be JSON (clients parse it): anything else cannot be delivered
(3506, as for plain JSON subscribers). Protobuf carries ``data`` as bytes, full or
patch alike; its full form is the plain Protobuf publication.

``recovered`` encodes a subscribe reply's recovered publications chained: the first
full, every later one that asked for delta as a patch against the one before it.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw

from ..records import Publication as Record
from ..records import Undeliverable
from . import fossil
from .codec import JSON_SHAPE, ChannelPrefixes
from .codec import publication as json_publication
from .messages import DeltaPublication
from .protobuf import PROTOBUF_SHAPE, ProtobufShape, _publication_body, _push_frame, uvarint

_encoder = msgspec.json.Encoder()


def patch(previous: Record | None, record: Record) -> bytes | None:
    """The patch that turns ``previous`` into ``record``, or None when ``record`` goes full.

    Full when the publisher did not ask for delta, when there is no previous
    publication, and when the patch would not be smaller than the data.
    """
    if previous is None or not record.delta:
        return None
    data = record.data
    out = fossil.create(previous.data, data)
    return out if len(out) < len(data) else None


def chain(records: list[Record]) -> list[tuple[Record, bytes | None]]:
    """Each record with its patch against the one before it (None: full); the first is full."""
    out: list[tuple[Record, bytes | None]] = []
    previous: Record | None = None
    for record in records:
        out.append((record, patch(previous, record)))
        previous = record
    return out


def _json_delta_publication(record: Record, data: bytes | None) -> DeltaPublication:
    plain = json_publication(record)  # the JSON check (3506 otherwise) and the ClientInfo
    text = (record.data if data is None else data).decode("utf-8")  # UTF-8: JSON checked, patches are
    return DeltaPublication(data=text, info=plain.info, offset=plain.offset, tags=plain.tags, delta=data is not None)


class JsonDeltaShape(ChannelPrefixes):
    """Bidirectional JSON delta subscribers: push lines whose ``pub.data`` is a JSON string."""

    __slots__ = ()
    #: marks a delta shape for the hub
    delta = True

    def _make_prefix(self, channel: str) -> bytes:
        return b'{"push":{"channel":' + _encoder.encode(channel)

    def _push(self, channel: str, record: Record, data: bytes | None) -> bytes:
        try:
            pub = _json_delta_publication(record, data)
        except UnicodeDecodeError:
            raise Undeliverable("publication data is not UTF-8") from None
        return self._prefix(channel) + b',"pub":' + _encoder.encode(pub) + b"}}"

    def publication(self, channel: str, record: Record) -> bytes:
        return self._push(channel, record, None)

    def delta_publication(self, channel: str, record: Record, patch: bytes) -> bytes:
        return self._push(channel, record, patch)

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return JSON_SHAPE.join_leave(channel, kind, info)

    def recovered(self, records: list[Record]) -> list[Raw]:
        try:
            return [Raw(_encoder.encode(_json_delta_publication(r, p))) for r, p in chain(records)]
        except UnicodeDecodeError:
            raise Undeliverable("publication data is not UTF-8") from None


class ProtobufDeltaShape(ProtobufShape):
    """Protobuf delta subscribers: full publications as usual, patches with ``delta = true``."""

    __slots__ = ()
    delta = True

    def delta_publication(self, channel: str, record: Record, patch: bytes) -> bytes:
        body = _publication_body(patch, record.info, record.offset, record.tags, delta=True)
        return _push_frame(self._prefix(channel) + b"\x22" + uvarint(len(body)) + body)

    def recovered(self, records: list[Record]) -> list[Raw]:
        return [
            Raw(_publication_body(p if p is not None else r.data, r.info, r.offset, r.tags, delta=p is not None))
            for r, p in chain(records)
        ]


JSON_DELTA_SHAPE = JsonDeltaShape()
PROTOBUF_DELTA_SHAPE = ProtobufDeltaShape()

#: the delta shape of each plain shape that has one (bidirectional JSON and Protobuf)
DELTA_SHAPES: dict[object, JsonDeltaShape | ProtobufDeltaShape] = {
    JSON_SHAPE: JSON_DELTA_SHAPE,
    PROTOBUF_SHAPE: PROTOBUF_DELTA_SHAPE,
}

__all__ = [
    "DELTA_SHAPES",
    "JSON_DELTA_SHAPE",
    "PROTOBUF_DELTA_SHAPE",
    "JsonDeltaShape",
    "ProtobufDeltaShape",
    "chain",
    "patch",
]
