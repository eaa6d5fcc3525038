"""MQTT topic names <-> Trunkline channel names: an explicit, reversible mapping.

An MQTT device and a Centrifugo client share a channel when the device's topic
maps to that channel's name. The mapping (``docs/mqtt.md``, "Topics and channels"):

- **Namespace mode** (the default): the first topic level is the namespace.
  ``chat/room1`` is the channel ``chat:room1``; the other levels stay separated by
  ``/`` (``sensors/dev1/temp`` -> ``sensors:dev1/temp``); a one-level topic is a
  channel without namespace (``news`` -> ``news``). So the Centrifugo channel
  ``news:sports`` is the topic ``news/sports``.
- **Prefix mode**: every topic lives in one namespace: with prefix ``mqtt``,
  ``chat/room1`` is ``mqtt:chat/room1``. An empty prefix puts every topic in
  channels without namespace (``chat/room1`` -> ``chat/room1``).

Characters are carried over unchanged except:

- in a channel, ``%XX`` (uppercase hex, one per UTF-8 byte) stands for a topic
  character that channels reserve or do not allow: ``%`` itself, space, control
  characters, everything outside ASCII, ``*`` and ``&`` (reserved by Centrifugo),
  and the namespace boundary ``:`` in the level that gives the namespace (or
  everywhere when there is no namespace). A ``:`` in a later level is a plain
  character of the name and stays as it is;
- in a topic, ``%23`` and ``%2B`` stand for the channel characters ``#`` (the user
  boundary of user-limited channels, ``dialogs:chat#42,43`` <->
  ``dialogs/chat%2342,43``) and ``+``, which MQTT does not allow in topic names.

Topics starting with ``$`` are the server's (MQTT §4.7.2) and private channels
(the ``$`` prefix) need a subscription token that MQTT has no place for, so
neither maps. Every refusal raises :class:`Unmappable` with a reason; nothing is
renamed silently. ``to_channel`` and ``to_topic`` are inverse on every name they
accept: ``to_topic`` refuses a channel that is not in the form ``to_channel``
produces (``a:b%41`` would come back as ``a:bA``), so no two topics share a channel.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..errors import TrunklineError
from .filters import MAX_LENGTH, InvalidTopic, validate_filter, validate_topic

Mode = Literal["namespace", "prefix"]
MODES: tuple[Mode, ...] = ("namespace", "prefix")

NAMESPACE_NAME = re.compile(r"[-a-zA-Z0-9_]{2,}")
"""Centrifugo's rule for namespace names (also the rule for the prefix)."""

_RESERVED = frozenset("%*&#+")  # the escape, Centrifugo's reserved * and &, MQTT's wildcards
_HEX = frozenset("0123456789ABCDEF")


class Unmappable(TrunklineError, ValueError):
    """A topic (or filter) has no channel, or a channel has no topic; ``reason`` says why.

    An MQTT 5 session answers 0x90 (topic name invalid) for a PUBLISH and 0x8F
    (topic filter invalid) in a SUBACK.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class FilterScope:
    """What a topic filter can reach, for permission checks and subscriptions.

    ``namespaces`` holds every namespace (``""`` = channels without namespace) whose
    channels the filter can match; ``None`` means any namespace (a filter whose
    first level is a wildcard, such as ``#`` or ``+/temp``). Every channel whose
    topic matches the filter starts with ``channel_prefix``. ``channel`` is the one
    channel of a filter without wildcards, else ``None``.

    Permission rule (``docs/mqtt.md``), as mosquitto applies its ACLs to wildcard
    subscriptions: a filter is granted when subscribing is allowed in at least one
    namespace it reaches (:meth:`reachable` with the configured namespace names
    gives that set for ``None``), and a publication reaches it only when the
    subscriber may subscribe to that publication's channel (namespace options,
    user-limited channels, ``channel_regex``). A filter without wildcards is one
    channel and is checked like a Centrifugo subscribe to it.
    """

    namespaces: frozenset[str] | None
    channel_prefix: str
    channel: str | None = None

    def reaches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def reachable(self, configured: Iterable[str]) -> frozenset[str]:
        """The namespaces to check: ``namespaces``, or every configured one plus ``""``."""
        if self.namespaces is not None:
            return self.namespaces
        return frozenset(configured) | {""}


@dataclass(frozen=True, slots=True)
class TopicMapping:
    """The options of the mapping, from plain values (``mqtt.topic_mapping.*``).

    ``mode`` is ``"namespace"`` (first level = namespace) or ``"prefix"`` (every
    topic in namespace ``prefix``; ``""`` = no namespace). ``level_separator`` is the
    channel character for the topic's ``/`` after the namespace (``/`` or a
    punctuation character such as ``.``, which topics then have escaped as ``%2E``).
    The channel separators are those of ``channel.*`` and ``max_channel_length`` is
    ``channel.max_length``. Invalid values raise ``ValueError``.
    """

    mode: Mode = "namespace"
    prefix: str = "mqtt"
    level_separator: str = "/"
    max_channel_length: int = 255
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    private_prefix: str = "$"
    _plain: frozenset[str] = field(init=False, repr=False, compare=False)
    _topic_escapes: dict[str, str] = field(init=False, repr=False, compare=False)
    _channel_escapes: dict[str, str] = field(init=False, repr=False, compare=False)
    _fast: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _fast_topic: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _fast_channel: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "prefix" and self.prefix and not NAMESPACE_NAME.fullmatch(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} is not a namespace name ([-a-zA-Z0-9_]{{2,}}, or empty)")
        if self.max_channel_length < 1:
            raise ValueError("max_channel_length must be at least 1")
        separators = {
            "level_separator": self.level_separator,
            "namespace_boundary": self.namespace_boundary,
            "user_boundary": self.user_boundary,
        }
        for name, value in separators.items():
            if len(value) != 1 or not value.isascii() or not value.isprintable() or value.isalnum() or value == " ":
                raise ValueError(f"{name} must be one ASCII punctuation character, not {value!r}")
            if value in "%*&+" or (value == "#" and name != "user_boundary"):
                raise ValueError(f"{name} cannot be {value!r} (the escape, a reserved character or a wildcard)")
        if len(set(separators.values())) != len(separators):
            raise ValueError("level_separator, namespace_boundary and user_boundary must differ")
        structural = _RESERVED | {self.level_separator, self.user_boundary}
        plain = frozenset(chr(c) for c in range(0x21, 0x7F)) - structural
        # Channel characters that topic names cannot hold travel as %XX in the topic.
        topic_escapes = {f"%{ord(c):02X}": c for c in {"#", "+", self.user_boundary}}
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "_topic_escapes", topic_escapes)
        object.__setattr__(self, "_channel_escapes", {c: e for e, c in topic_escapes.items()})
        safe = "".join(sorted(plain - {self.namespace_boundary}))
        object.__setattr__(self, "_fast", re.compile(f"[{re.escape(safe)}]*"))
        # A whole topic that needs no escape (the usual case) in namespace mode with "/" kept:
        # its channel is the topic with the first "/" turned into the namespace boundary.
        fast_topic = fast_channel = None
        if self.mode == "namespace" and self.level_separator == "/":
            head = re.escape(safe)
            rest = re.escape(safe + self.namespace_boundary)
            fast_topic = re.compile(f"[{head}]*(?:/[{rest}]*)*")
            fast_channel = re.compile(f"[{head}]*(?:{re.escape(self.namespace_boundary)}[{rest}/]*)?")
        object.__setattr__(self, "_fast_topic", fast_topic)
        object.__setattr__(self, "_fast_channel", fast_channel)

    # --- topic -> channel ----------------------------------------------------

    def to_channel(self, topic: str) -> str:
        """The channel of a topic name; :class:`~.filters.InvalidTopic` or :class:`Unmappable` if none."""
        fast = self._fast_topic
        if (
            fast is not None
            and len(topic) <= min(self.max_channel_length, MAX_LENGTH)
            and topic[:1] != "$"
            and fast.fullmatch(topic)
        ):
            channel = topic.replace("/", self.namespace_boundary, 1)
            if not (self.private_prefix and channel.startswith(self.private_prefix)) and channel:
                return channel
        validate_topic(topic)
        if topic.startswith("$"):
            raise Unmappable("topics starting with '$' are reserved for the server and have no channel")
        channel = self._channel_of_levels(topic.split("/"))
        self._check_channel(channel)
        return channel

    def _channel_of_levels(self, levels: list[str]) -> str:
        sep = self.level_separator
        if self.mode == "prefix":
            has_namespace = bool(self.prefix)
            body = sep.join(self._escape(level, boundary_plain=has_namespace) for level in levels)
            return f"{self.prefix}{self.namespace_boundary}{body}" if has_namespace else body
        head = self._escape(levels[0], boundary_plain=False)
        if len(levels) == 1:
            return head
        body = sep.join(self._escape(level, boundary_plain=True) for level in levels[1:])
        return f"{head}{self.namespace_boundary}{body}"

    def _check_channel(self, channel: str) -> None:
        if len(channel) > self.max_channel_length:
            raise Unmappable(
                f"the channel for this topic is {len(channel)} characters, "
                f"more than channel.max_length ({self.max_channel_length})"
            )
        if self.private_prefix and channel.startswith(self.private_prefix):
            raise Unmappable(f"the channel for this topic would be private ({self.private_prefix!r} prefix)")

    def _escape(self, level: str, *, boundary_plain: bool) -> str:
        """A topic level as channel text (``boundary_plain``: ``:`` needs no escape here)."""
        if self._fast.fullmatch(level):
            return level
        plain = self._plain
        boundary = self.namespace_boundary
        escapes = self._topic_escapes
        out: list[str] = []
        i = 0
        n = len(level)
        while i < n:
            ch = level[i]
            if ch == "%" and level[i : i + 3] in escapes:
                out.append(escapes[level[i : i + 3]])
                i += 3
                continue
            if ch in plain and (boundary_plain or ch != boundary):
                out.append(ch)
            else:
                out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
            i += 1
        return "".join(out)

    # --- channel -> topic ----------------------------------------------------

    def to_topic(self, channel: str) -> str:
        """The topic name of a channel; :class:`Unmappable` when it has none."""
        fast = self._fast_channel
        if (
            fast is not None
            and channel
            and len(channel) <= self.max_channel_length
            and channel[0] != "$"
            and not (self.private_prefix and channel.startswith(self.private_prefix))
            and fast.fullmatch(channel)
        ):
            return channel.replace(self.namespace_boundary, "/", 1)
        if not channel:
            raise Unmappable("empty channel")
        if self.private_prefix and channel.startswith(self.private_prefix):
            raise Unmappable(f"private channels ({self.private_prefix!r} prefix) need a subscription token")
        boundary = self.namespace_boundary
        if self.mode == "prefix":
            if self.prefix:
                head = f"{self.prefix}{boundary}"
                if not channel.startswith(head):
                    raise Unmappable(f"channel is outside the MQTT namespace {self.prefix!r}")
                segments = channel[len(head) :].split(self.level_separator)
                levels = [self._unescape(s, boundary_plain=True) for s in segments]
            else:
                levels = [self._unescape(s, boundary_plain=False) for s in channel.split(self.level_separator)]
        else:
            namespace, sep, rest = channel.partition(boundary)
            if not sep and self.level_separator in channel:
                raise Unmappable(
                    f"a channel without namespace is a one-level topic, so it cannot contain {self.level_separator!r}"
                )
            levels = [self._unescape(namespace, boundary_plain=False)]
            if sep:
                levels += [self._unescape(s, boundary_plain=True) for s in rest.split(self.level_separator)]
        topic = "/".join(levels)
        try:
            back = self.to_channel(topic)
        except (InvalidTopic, Unmappable) as exc:
            raise Unmappable(f"channel {channel!r} has no topic: {exc.reason}") from None
        if back != channel:
            raise Unmappable(f"channel {channel!r} is not in mapped form (its topic {topic!r} maps to {back!r})")
        return topic

    def _unescape(self, segment: str, *, boundary_plain: bool) -> str:
        """Channel text back to a topic level; refuses what the mapping never produces."""
        if self._fast.fullmatch(segment):
            return segment
        plain = self._plain
        boundary = self.namespace_boundary
        to_topic = self._channel_escapes
        out: list[str] = []
        pending = bytearray()
        i = 0
        n = len(segment)
        while i < n:
            ch = segment[i]
            if ch == "%":
                code = segment[i + 1 : i + 3]
                if len(code) != 2 or not set(code) <= _HEX:
                    raise Unmappable(f"'%' in a channel must start an escape %XX (uppercase hex): {segment!r}")
                pending.append(int(code, 16))
                i += 3
                continue
            if pending:
                out.append(_decode(pending))
                pending.clear()
            if ch in to_topic:
                out.append(to_topic[ch])
            elif ch in plain and (boundary_plain or ch != boundary):
                out.append(ch)
            else:
                raise Unmappable(f"character {ch!r} of the channel has no topic form")
            i += 1
        if pending:
            out.append(_decode(pending))
        return "".join(out)

    # --- namespaces and filters ---------------------------------------------

    def namespace_of(self, topic: str) -> str:
        """The namespace of a topic's channel (``""``: none); raises like :meth:`to_channel`."""
        channel = self.to_channel(topic)
        if self.mode == "prefix":
            return self.prefix
        head, sep, _ = channel.partition(self.namespace_boundary)
        return head if sep else ""

    def filter_scope(self, topic_filter: str) -> FilterScope:
        """What a (non-shared) filter reaches; raises :class:`InvalidTopic` or :class:`Unmappable`.

        Parse ``$share/<group>/`` off first (:func:`~.filters.parse_shared`). Filters
        starting with ``$`` can only match server topics, which have no channels.
        """
        validate_filter(topic_filter)
        if topic_filter.startswith("$"):
            raise Unmappable("filters starting with '$' match only server topics, which have no channels")
        levels = topic_filter.split("/")
        wild = next((i for i, level in enumerate(levels) if level in ("+", "#")), None)
        if wild is None:
            channel = self.to_channel(topic_filter)
            return FilterScope(frozenset({self.namespace_of(topic_filter)}), channel, channel)
        literal = levels[:wild]
        wildcard = levels[wild]
        sep = self.level_separator
        if self.mode == "prefix":
            head = f"{self.prefix}{self.namespace_boundary}" if self.prefix else ""
            scope = frozenset({self.prefix})
            body = sep.join(self._escape(level, boundary_plain=bool(self.prefix)) for level in literal)
            tail = sep if wildcard == "+" and literal else ""
            return FilterScope(scope, self._bounded(head + body + tail))
        if wild == 0:
            # "+" alone: one-level topics, channels without namespace; otherwise any namespace
            return FilterScope(frozenset({""}) if levels == ["+"] else None, "")
        namespace = self._escape(levels[0], boundary_plain=False)
        if wild == 1:
            if wildcard == "#":  # "a/#" matches "a" (no namespace) and "a/..." (namespace a)
                return FilterScope(frozenset({"", namespace}), self._bounded(namespace))
            return FilterScope(frozenset({namespace}), self._bounded(namespace + self.namespace_boundary))
        body = sep.join(self._escape(level, boundary_plain=True) for level in literal[1:])
        prefix = f"{namespace}{self.namespace_boundary}{body}"
        return FilterScope(frozenset({namespace}), self._bounded(prefix + (sep if wildcard == "+" else "")))

    def _bounded(self, channel_prefix: str) -> str:
        if len(channel_prefix) > self.max_channel_length:
            raise Unmappable(
                f"the channels this filter matches are longer than channel.max_length ({self.max_channel_length})"
            )
        if self.private_prefix and channel_prefix.startswith(self.private_prefix):
            raise Unmappable(f"the channels this filter matches would be private ({self.private_prefix!r} prefix)")
        return channel_prefix


def _decode(data: bytearray) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unmappable("an escape sequence of the channel is not UTF-8") from None
