"""Retained MQTT messages: the last PUBLISH with retain=1 of each topic.

A retained message is not history of size one: it is set only by a publish with
the retain flag, a retained publish with an empty payload deletes it (and is not
stored), and a new subscription gets the retained message of every topic its
filter matches (MQTT 5 §3.3.1.3). With MQTT 5 a message may carry an expiry
interval: once it has passed the message is no longer delivered, and a message
delivered before that carries the time that is left (§3.3.2.3.3).

Two stores with the same behaviour (``tests/mqtt/test_retained.py`` runs one suite
on both):

- :class:`MemoryRetained`: one node; topics in a trie by level, so ``matching``
  visits only the branches the filter can match.
- :class:`RedisRetained`: every node sharing one Redis sees the same retained
  messages. Keys under the configured prefix: ``<prefix>.retained.data`` (hash
  topic -> msgpack record), ``<prefix>.retained.index`` (sorted set of topics, all
  score 0, so a filter's literal leading levels ``a/b/`` select the range of
  topics that start with them), ``<prefix>.retained.expire`` (sorted set topic ->
  expiry in Unix ms) and ``<prefix>.retained.bytes`` (the stored size). A set or
  delete is one Lua script, so the limits hold across nodes. Expiry compares
  with the publishing and reading nodes' clocks.

Both are bounded by ``max_count`` messages and ``max_bytes`` (topic and encoded
record, UTF-8 bytes), and one payload by ``max_payload_size`` (0: no bound). When
a new topic or a bigger message would pass a bound, expired messages are dropped
first; if that is not enough the set is refused with :class:`RetainedFull` and
nothing stored is evicted (EMQX's policy: the session answers 0x97 quota exceeded,
or delivers the message without retaining it). Replacing a topic's message by one that fits, and
deleting, always work. Time comes from an injectable :class:`~trunkline.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..broker.redis import DEFAULT_ADDRESS, RedisUnavailable, connection_kwargs, make_client
from ..clock import REAL_CLOCK, Clock
from ..errors import TrunklineError
from ..records import ClientInfo
from .filters import is_wildcard, matches

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)


class RetainedMessage(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """One retained message: payload, QoS, the MQTT 5 properties kept, and who sent it.

    ``expires_at`` is Unix time in seconds (``None``: never); ``time`` is when the
    message was published, Unix milliseconds.
    """

    payload: bytes
    qos: int = 0
    payload_format: int = 0  # MQTT 5 payload format indicator: 1 = UTF-8 text
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    expires_at: float | None = None
    info: ClientInfo | None = None
    time: int = 0

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def remaining_expiry(self, now: float) -> int | None:
        """The message expiry interval to send at ``now``, whole seconds rounded up (``None``: no expiry)."""
        if self.expires_at is None:
            return None
        return max(0, math.ceil(self.expires_at - now))


def expiry_deadline(interval: int | None, now: float) -> float | None:
    """``expires_at`` for a message expiry interval received at ``now`` (``None``: no expiry)."""
    return None if interval is None else now + interval


class Retained(NamedTuple):
    """A topic and its retained message, as ``matching`` returns them."""

    topic: str
    message: RetainedMessage


class RetainedFull(TrunklineError):
    """The store is full: ``limit`` is ``"count"`` or ``"bytes"``; nothing was stored."""

    def __init__(self, limit: str, reason: str) -> None:
        self.limit = limit
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class RetainedLimits:
    """Bounds of a store (``mqtt.retained.*`` in the config); 0 turns one off.

    ``max_count`` messages, ``max_bytes`` of all of them together (topic and
    encoded record), ``max_payload_size`` bytes of one payload.
    """

    max_count: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    max_payload_size: int = 0

    def __post_init__(self) -> None:
        if self.max_count < 0 or self.max_bytes < 0 or self.max_payload_size < 0:
            raise ValueError("retained limits must be 0 (no limit) or more")

    def check_payload(self, payload: bytes) -> None:
        if self.max_payload_size and len(payload) > self.max_payload_size:
            raise RetainedFull(
                "payload", f"retained payload is {len(payload)} bytes, more than {self.max_payload_size}"
            )


class RetainedStore(Protocol):
    async def set(self, topic: str, message: RetainedMessage) -> None:
        """Retain ``message`` for ``topic``; an empty payload deletes. Raises :class:`RetainedFull`."""

    async def get(self, topic: str) -> RetainedMessage | None:
        """The unexpired retained message of ``topic``."""

    async def matching(self, topic_filter: str) -> list[Retained]:
        """Every unexpired retained message whose topic the valid filter matches, by topic."""

    async def stats(self) -> tuple[int, int]:
        """(messages, bytes) stored, expired ones not yet dropped included."""

    async def purge(self) -> int:
        """Drop expired messages now (a set also drops some); returns how many."""

    async def close(self) -> None: ...


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RetainedMessage)


def encode_message(message: RetainedMessage) -> bytes:
    return _encoder.encode(message)


def decode_message(data: bytes) -> RetainedMessage:
    return _decoder.decode(data)


def stored_size(topic: str, record: bytes) -> int:
    """What a message counts against ``max_bytes``: its topic and record, in bytes."""
    return len(topic.encode()) + len(record)


def _full(limits: RetainedLimits, count: int, size: int, *, new: bool, grows: int) -> RetainedFull | None:
    if new and limits.max_count and count >= limits.max_count:
        return RetainedFull("count", f"retained message store is full ({limits.max_count} messages)")
    if grows > 0 and limits.max_bytes and size + grows > limits.max_bytes:
        return RetainedFull("bytes", f"retained message store is full ({limits.max_bytes} bytes)")
    return None


# --- memory ----------------------------------------------------------------------


class _Entry:
    __slots__ = ("message", "seq", "size", "topic")

    def __init__(self, topic: str, message: RetainedMessage, size: int, seq: int) -> None:
        self.topic = topic
        self.message = message
        self.size = size
        self.seq = seq


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entry: _Entry | None = None


class MemoryRetained:
    """Retained messages of one node, in a trie of topic levels."""

    purge_batch = 1000  # expired messages dropped per set, at most

    def __init__(self, limits: RetainedLimits | None = None, clock: Clock = REAL_CLOCK) -> None:
        self._limits = limits or RetainedLimits()
        self._clock = clock
        self._root = _Node()
        self._count = 0
        self._bytes = 0
        self._expiries: list[tuple[float, int, str]] = []  # (expires_at, seq, topic)
        self._seq = itertools.count()

    async def set(self, topic: str, message: RetainedMessage) -> None:
        self._set(topic, message)

    def _set(self, topic: str, message: RetainedMessage) -> None:
        now = self._clock.time()
        self._purge(now, self.purge_batch)
        if not message.payload:
            self._remove(topic)
            return
        self._limits.check_payload(message.payload)
        size = stored_size(topic, encode_message(message))
        node = self._find(topic)
        old = node.entry if node is not None else None
        grows = size - (old.size if old else 0)
        error = _full(self._limits, self._count, self._bytes, new=old is None, grows=grows)
        if error is not None:
            self._purge(now, None)
            old = node.entry if node is not None else None
            grows = size - (old.size if old else 0)
            error = _full(self._limits, self._count, self._bytes, new=old is None, grows=grows)
            if error is not None:
                raise error
        if node is None or old is None:
            node = self._make(topic)
            self._count += 1
        entry = _Entry(topic, message, size, next(self._seq))
        node.entry = entry
        self._bytes += grows
        if message.expires_at is not None:
            heapq.heappush(self._expiries, (message.expires_at, entry.seq, topic))

    async def get(self, topic: str) -> RetainedMessage | None:
        node = self._find(topic)
        if node is None or node.entry is None or node.entry.message.expired(self._clock.time()):
            return None
        return node.entry.message

    async def matching(self, topic_filter: str) -> list[Retained]:
        now = self._clock.time()
        if not is_wildcard(topic_filter):
            message = await self.get(topic_filter)
            return [Retained(topic_filter, message)] if message is not None else []
        found = [
            Retained(entry.topic, entry.message)
            for entry in self._walk(topic_filter.split("/"))
            if not entry.message.expired(now)
        ]
        found.sort(key=lambda r: r.topic)
        return found

    async def stats(self) -> tuple[int, int]:
        return self._count, self._bytes

    async def close(self) -> None:
        return None

    async def purge(self) -> int:
        """Drop every expired message now; returns how many."""
        return self._purge(self._clock.time(), None)

    # --- trie ---

    def _find(self, topic: str) -> _Node | None:
        node: _Node | None = self._root
        for level in topic.split("/"):
            assert node is not None
            node = node.children.get(level)
            if node is None:
                return None
        return node

    def _make(self, topic: str) -> _Node:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        return node

    def _remove(self, topic: str, seq: int | None = None) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        entry = node.entry
        if entry is None or (seq is not None and entry.seq != seq):
            return False
        node.entry = None
        self._count -= 1
        self._bytes -= entry.size
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.entry is not None or child.children:
                break
            del parent.children[level]
        return True

    def _walk(self, levels: list[str]) -> Iterator[_Entry]:
        """Every entry whose topic the filter (split in levels) matches; $ topics skip first-level wildcards."""
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        last = len(levels)
        while stack:
            node, depth = stack.pop()
            if depth == last:
                if node.entry is not None:
                    yield node.entry
                continue
            level = levels[depth]
            if level == "#":
                if node.entry is not None and depth > 0:
                    yield node.entry  # "a/#" matches "a"
                for name, child in node.children.items():
                    if depth == 0 and name.startswith("$"):
                        continue
                    yield from _subtree(child)
            elif level == "+":
                for name, child in node.children.items():
                    if depth == 0 and name.startswith("$"):
                        continue
                    stack.append((child, depth + 1))
            else:
                literal = node.children.get(level)
                if literal is not None:
                    stack.append((literal, depth + 1))

    def _purge(self, now: float, limit: int | None) -> int:
        dropped = 0
        heap = self._expiries
        while heap and heap[0][0] <= now and (limit is None or dropped < limit):
            _, seq, topic = heapq.heappop(heap)
            if self._remove(topic, seq):
                dropped += 1
        return dropped


def _subtree(node: _Node) -> Iterator[_Entry]:
    stack = [node]
    while stack:
        current = stack.pop()
        if current.entry is not None:
            yield current.entry
        stack.extend(current.children.values())


# --- Redis -----------------------------------------------------------------------

# KEYS: data, index, expire, bytes.  ARGV: topic, record ("" deletes), expires_at ms (0: never),
# now ms, max_count, max_bytes, purge batch.  Returns 1 stored, 0 deleted/nothing, -1 count full, -2 bytes full.
_SET_SCRIPT = """
local data, index, expire, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local topic, record = ARGV[1], ARGV[2]
local deadline, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_count, max_bytes, batch = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local function remove(t)
  local size = redis.call('HSTRLEN', data, t)
  if redis.call('HDEL', data, t) == 1 then
    redis.call('ZREM', index, t)
    redis.call('ZREM', expire, t)
    redis.call('DECRBY', bytes, size + string.len(t))
    return 1
  end
  return 0
end

local function purge(limit)
  local args = {'ZRANGEBYSCORE', expire, '-inf', now}
  if limit then
    table.insert(args, 'LIMIT'); table.insert(args, 0); table.insert(args, limit)
  end
  for _, t in ipairs(redis.call(unpack(args))) do remove(t) end
end

purge(batch)
if record == '' then
  remove(topic)
  return 0
end

local size = string.len(topic) + string.len(record)
local function check()
  local exists = redis.call('HEXISTS', data, topic) == 1
  local old = 0
  if exists then old = redis.call('HSTRLEN', data, topic) + string.len(topic) end
  if not exists and max_count > 0 and redis.call('ZCARD', index) >= max_count then return -1, old end
  local stored = tonumber(redis.call('GET', bytes) or '0')
  if size > old and max_bytes > 0 and stored + size - old > max_bytes then return -2, old end
  return 0, old
end

local status, old = check()
if status ~= 0 then
  purge(nil)
  status, old = check()
  if status ~= 0 then return status end
end
redis.call('HSET', data, topic, record)
redis.call('ZADD', index, 0, topic)
if deadline > 0 then
  redis.call('ZADD', expire, deadline, topic)
else
  redis.call('ZREM', expire, topic)
end
redis.call('INCRBY', bytes, size - old)
return 1
"""

# KEYS: data, index, expire, bytes.  ARGV: now ms.  Returns how many expired messages were dropped.
_PURGE_SCRIPT = """
local data, index, expire, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dropped = 0
for _, t in ipairs(redis.call('ZRANGEBYSCORE', expire, '-inf', ARGV[1], 'LIMIT', 0, 10000)) do
  local size = redis.call('HSTRLEN', data, t)
  if redis.call('HDEL', data, t) == 1 then
    redis.call('ZREM', index, t)
    redis.call('DECRBY', bytes, size + string.len(t))
    dropped = dropped + 1
  end
  redis.call('ZREM', expire, t)
end
return dropped
"""


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


class RedisRetained:
    """Retained messages in Redis, shared by every node on the same prefix."""

    page = 1000  # topics read per ZRANGEBYLEX when a wildcard filter is matched
    purge_batch = 100  # expired messages dropped per set, at most

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        prefix: str = "trunkline",
        *,
        limits: RetainedLimits | None = None,
        clock: Clock = REAL_CLOCK,
        connect_timeout: float = 5.0,
        io_timeout: float = 4.0,
    ) -> None:
        client = make_client(address, connect_timeout, io_timeout)
        self._init(client, prefix, limits, clock, connect_timeout + io_timeout, owns_client=True)

    @classmethod
    def from_client(
        cls,
        client: Redis,
        prefix: str = "trunkline",
        *,
        limits: RetainedLimits | None = None,
        clock: Clock = REAL_CLOCK,
        timeout: float = 9.0,
    ) -> RedisRetained:
        """A store on a client owned by the caller (e.g. the broker's; ``close`` leaves it open)."""
        self = cls.__new__(cls)
        self._init(client, prefix, limits, clock, timeout, owns_client=False)
        return self

    def _init(
        self,
        client: Redis,
        prefix: str,
        limits: RetainedLimits | None,
        clock: Clock,
        timeout: float,
        *,
        owns_client: bool,
    ) -> None:
        if connection_kwargs(client).get("decode_responses"):  # a RedisCluster has no connection_pool
            raise ValueError("the Redis client must return bytes (decode_responses=False)")
        self._client = client
        self._owns_client = owns_client
        self._limits = limits or RetainedLimits()
        self._clock = clock
        self._timeout = timeout
        base = f"{prefix}.retained."
        self._keys = [base + "data", base + "index", base + "expire", base + "bytes"]
        self._set_script = client.register_script(_SET_SCRIPT)
        self._purge_script = client.register_script(_PURGE_SCRIPT)

    async def _run(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except _UNAVAILABLE as exc:
            raise RedisUnavailable(f"redis {what} failed: {exc!r}") from exc

    async def set(self, topic: str, message: RetainedMessage) -> None:
        self._limits.check_payload(message.payload)
        record = encode_message(message) if message.payload else b""
        # rounded up: Redis drops a message only once it has expired by the exact deadline too
        deadline = max(1, math.ceil(message.expires_at * 1000)) if message.expires_at is not None else 0
        limits = self._limits
        args: list[bytes | int] = [
            topic.encode(),
            record,
            deadline,
            _ms(self._clock.time()),
            limits.max_count,
            limits.max_bytes,
            self.purge_batch,
        ]
        status = await self._run("retained set", self._set_script(keys=self._keys, args=args))
        if status == -1:
            raise RetainedFull("count", f"retained message store is full ({limits.max_count} messages)")
        if status == -2:
            raise RetainedFull("bytes", f"retained message store is full ({limits.max_bytes} bytes)")

    async def get(self, topic: str) -> RetainedMessage | None:
        data = await self._run("retained get", self._client.hget(self._keys[0], topic.encode()))
        if data is None:
            return None
        message = decode_message(data)
        return None if message.expired(self._clock.time()) else message

    async def matching(self, topic_filter: str) -> list[Retained]:
        if not is_wildcard(topic_filter):
            message = await self.get(topic_filter)
            return [Retained(topic_filter, message)] if message is not None else []
        levels = topic_filter.split("/")
        wild = next(i for i, level in enumerate(levels) if level in ("+", "#"))
        if wild == 0:
            topics = await self._range(b"-", b"+")
        else:
            literal = "/".join(levels[:wild])
            # "0" follows "/": the range holds exactly the topics that start with "<literal>/"
            topics = await self._range(b"[" + (literal + "/").encode(), b"(" + (literal + "0").encode())
            if levels[wild] == "#" and literal:
                topics.insert(0, literal)  # "a/#" matches "a"
        wanted = [t for t in topics if matches(topic_filter, t)]
        now = self._clock.time()
        found: list[Retained] = []
        for start in range(0, len(wanted), self.page):
            chunk = wanted[start : start + self.page]
            values = await self._run("retained read", self._client.hmget(self._keys[0], [t.encode() for t in chunk]))
            for topic, data in zip(chunk, values, strict=True):
                if data is None:
                    continue  # deleted meanwhile
                message = decode_message(data)
                if not message.expired(now):
                    found.append(Retained(topic, message))
        found.sort(key=lambda r: r.topic)
        return found

    async def _range(self, low: bytes, high: bytes) -> list[str]:
        """Topics of the index in [low, high), a page at a time (bounded by the store's count limit)."""
        topics: list[str] = []
        count = self._limits.max_count or await self._run("retained count", self._client.zcard(self._keys[1]))
        for _ in range(int(count) // self.page + 2):
            batch: list[bytes] = await self._run(
                "retained index",
                self._client.zrangebylex(self._keys[1], low, high, start=0, num=self.page),
            )
            topics.extend(t.decode() for t in batch)
            if len(batch) < self.page:
                break
            low = b"(" + batch[-1]
        return topics

    async def stats(self) -> tuple[int, int]:
        async def read() -> tuple[int, int]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zcard(self._keys[1])
                pipe.get(self._keys[3])
                count, size = await pipe.execute()
            return int(count), int(size or 0)

        result: tuple[int, int] = await self._run("retained stats", read())
        return result

    async def purge(self) -> int:
        """Drop expired messages now (up to 10 000 per call); returns how many."""
        now = _ms(self._clock.time())
        dropped: int = await self._run("retained purge", self._purge_script(keys=self._keys, args=[now]))
        return dropped

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self._owns_client = False
            await self._client.aclose()
