"""Protocol-neutral records that cross the broker: a publication and who made it.

A leaf module: the broker stores and ships these, the hub fans them out, and each
wire format (JSON, Protobuf, MQTT) encodes them its own way.
"""

from __future__ import annotations

import msgspec


class Undeliverable(ValueError):
    """A wire format cannot carry this publication (binary data to a JSON client)."""


class ClientInfo(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """Who published (or joined): user, connection id and the raw info payloads."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


class Publication(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """One publication of a channel, as every wire format sees it.

    ``offset`` and ``epoch`` are set by the broker when the channel keeps history
    (0 and ``""`` otherwise); ``time`` is the publish time in Unix milliseconds.
    ``meta`` is left out of the encoding when absent.
    """

    data: bytes
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    time: int = 0
    offset: int = 0
    epoch: str = ""
    #: what only the publishing protocol reads, opaque to the others (MQTT: QoS, retain flag and
    #: MQTT 5 properties); last, so records written without it decode unchanged
    meta: bytes | None = None
    #: the publisher asked for delta compression (namespace ``delta_publish`` or ``delta`` in the
    #: publish call): delta subscribers may get it as a Fossil patch against the one before
    delta: bool = False
    #: map subscriptions: the entry's key, whether this update removes it, and its sort score
    #: (ordered maps); appended so older records decode unchanged
    key: str = ""
    removed: bool = False
    score: int = 0


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(Publication)


def encode_body(pub: Publication) -> bytes:
    """The compact binary form of a record (offset and epoch travel beside it)."""
    return _body_encoder.encode(pub)


def decode_body(body: bytes, offset: int, epoch: str) -> Publication:
    """Decode :func:`encode_body` output and give it its stream position."""
    pub = _body_decoder.decode(body)
    if offset or epoch:
        return msgspec.structs.replace(pub, offset=offset, epoch=epoch)
    return pub
