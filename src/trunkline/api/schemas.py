"""Request bodies of the server HTTP API (reference §8.2), decoded with msgspec.

Unknown fields are ignored (newer ``cent`` versions may send more); ``data`` and
``info`` stay raw JSON and are compacted before they travel to clients.
"""

from __future__ import annotations

from msgspec import Raw, Struct


class Position(Struct):
    offset: int = 0
    epoch: str = ""


class DisconnectSpec(Struct):
    code: int = 3503
    reason: str = "force disconnect"


class PublishRequest(Struct):
    channel: str = ""
    data: Raw = Raw()
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


class BroadcastRequest(Struct):
    channels: list[str] = []
    data: Raw = Raw()
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


class SubscribeRequest(Struct):
    user: str = ""
    channel: str = ""
    client: str = ""
    session: str = ""
    info: Raw = Raw()
    data: Raw = Raw()
    expire_at: int = 0
    recover_since: Position | None = None


class UnsubscribeRequest(Struct):
    user: str = ""
    channel: str = ""
    client: str = ""
    session: str = ""


class DisconnectRequest(Struct):
    user: str = ""
    client: str = ""
    session: str = ""
    whitelist: list[str] = []
    disconnect: DisconnectSpec | None = None


class RefreshRequest(Struct):
    user: str = ""
    client: str = ""
    session: str = ""
    expired: bool = False
    expire_at: int = 0
    info: Raw = Raw()


class ChannelRequest(Struct):
    channel: str = ""


class HistoryRequest(Struct):
    channel: str = ""
    limit: int = 0
    since: Position | None = None
    reverse: bool = False


class ChannelsRequest(Struct):
    pattern: str = ""


class InfoRequest(Struct):
    pass


class BatchRequest(Struct):
    commands: list[dict[str, Raw]] = []
    parallel: bool = False


class LegacyCommand(Struct):
    method: str | int = ""
    params: Raw = Raw()


# --- map subscriptions (docs/map.md "Server API") ------------------------------------------


class MapPublishRequest(Struct):
    channel: str = ""
    key: str = ""
    data: Raw = Raw()
    b64data: str = ""
    key_mode: str = ""  # "" (replace), "if_new" or "if_exists"
    idempotency_key: str = ""
    tags: dict[str, str] | None = None
    score: int = 0
    delta: bool = False
    stream_data: Raw = Raw()
    b64stream_data: str = ""
    #: Centrifugo's per-key versioning: not supported, refused when set
    version: int = 0
    version_epoch: str = ""


class SharedPollPublishRequest(Struct):
    channel: str = ""
    key: str = ""
    data: Raw = Raw()
    b64data: str = ""
    version: int = 0
    epoch: str = ""


class MapRemoveRequest(Struct):
    channel: str = ""
    key: str = ""
    idempotency_key: str = ""
    tags: dict[str, str] | None = None


class MapReadStateRequest(Struct):
    channel: str = ""
    cursor: str = ""
    limit: int = 0  # 0: only the stream position; below 0: the largest page
    key: str = ""
    asc: bool = False
    #: Centrifugo's "read at revision": not supported, refused when set
    revision_offset: int = 0
    revision_epoch: str = ""


class MapReadStreamRequest(Struct):
    channel: str = ""
    since: Position | None = None
    #: Centrifugo's flat form of ``since``
    since_offset: int = 0
    since_epoch: str = ""
    limit: int = 0  # 0: only the stream position; below 0: the whole stream
    reverse: bool = False
