"""The shared-poll refresh proxy: one batched backend call for a channel's tracked keys.

Centrifugo's ``SharedPollRefreshRequest`` (``server/shared_poll.md``): Trunkline POSTs
``{"channel": "votes:feed", "items": [{"key": "post_1"}, {"key": "post_2", "version": 5}]}``
(``version`` only in ``versioned`` mode, and only when not 0) and the backend answers
``{"result": {"items": [{"key", "data", "version", "removed"}], "epoch": "…"}}`` or
``{"error": {"code", "message"}}``. Items left out of the answer are unchanged. ``data`` is JSON
(Centrifugo's answer has no ``b64data``: items are JSON). The request carries no connection: it is made
once for every connection that tracks the keys. :func:`parse_refresh` raises
:class:`~trunkline.proxy.wire.InvalidAnswer` for anything else; the endpoint turns that, a
timeout, a refused connection or a non-200 status into a ProxyFailure.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..errors import ClientError
from ..hub.shared_poll import PolledItem
from .endpoint import Endpoint
from .wire import InvalidAnswer

__all__ = ["EVENT", "parse_refresh", "refresh", "refresh_request"]

#: the proxy event name (metrics label, log lines)
EVENT = "shared_poll_refresh"

_U64 = 2**64 - 1


class _Item(msgspec.Struct, omit_defaults=True):
    key: str
    version: int = 0


class _Request(msgspec.Struct):
    channel: str
    items: list[_Item]


_encoder = msgspec.json.Encoder()


def refresh_request(channel: str, items: Sequence[tuple[str, int]], *, versioned: bool) -> bytes:
    """The request body for ``items`` ((key, version held) pairs)."""
    return _encoder.encode(_Request(channel, [_Item(k, v if versioned else 0) for k, v in items]))


class _ResultItem(msgspec.Struct):
    key: str
    data: msgspec.Raw = msgspec.Raw()
    version: int = 0
    removed: bool = False


class _Result(msgspec.Struct):
    items: list[_ResultItem] = []
    epoch: str = ""


class _Error(msgspec.Struct):
    code: int
    message: str = ""
    temporary: bool = False


class _Answer(msgspec.Struct):
    result: _Result | None = None
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Answer)


def parse_refresh(body: bytes) -> tuple[list[PolledItem], str]:
    """The items and epoch of an answer; raises InvalidAnswer, or ClientError for an ``error``."""
    try:
        answer = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidAnswer(str(exc)[:200]) from None
    if answer.error is not None:
        raise ClientError(answer.error.code, answer.error.message, answer.error.temporary)
    if answer.result is None:
        return [], ""
    out: list[PolledItem] = []
    for item in answer.result.items:
        if not 0 <= item.version <= _U64:
            raise InvalidAnswer(f"item {item.key[:64]!r}: version outside 0-2^64")
        data = bytes(item.data) if len(item.data) and bytes(item.data) != b"null" else None
        out.append(PolledItem(item.key, data, item.version, item.removed))
    return out, answer.result.epoch


async def refresh(
    endpoint: Endpoint, channel: str, items: Sequence[tuple[str, int]], *, versioned: bool
) -> tuple[list[PolledItem], str]:
    """Ask the backend for ``items`` of ``channel``; raises ProxyFailure / ClientError / Disconnect."""
    body = refresh_request(channel, items, versioned=versioned)
    return await endpoint.call(EVENT, body, {}, parse_refresh, "")
