"""MQTT topic names and topic filters: validation, matching, shared subscriptions, a trie.

The rules are those of MQTT 5 §4.7 (identical in 3.1.1 §4.7):

- topic names and filters are UTF-8 strings of 1 to 65 535 bytes without U+0000;
- ``/`` separates levels, and a level may be empty (``a//b``, ``/a``, ``a/``);
- in a filter ``+`` matches exactly one level and must be the whole level;
  ``#`` matches the parent level and any number of child levels and must be the
  whole last level (``sport/#`` matches ``sport``); topic names contain neither;
- a filter that starts with a wildcard never matches a topic that starts with
  ``$`` (``#`` and ``+/info`` do not match ``$SYS/info``);
- MQTT 5 shared subscriptions are ``$share/<group>/<filter>``; the group is at
  least one character and contains none of ``/``, ``+``, ``#`` (§4.8.2).

:class:`FilterTrie` finds every (filter, key) pair whose filter matches a topic by
walking the topic's levels once: at each level it follows the literal child, the
``+`` child and collects the ``#`` child, so the work is proportional to the
topic's levels times the filter prefixes that match so far, not to the number of
filters stored.

Pure functions and data structures: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import TrunklineError

MAX_LENGTH = 65535
"""The longest topic name or filter, in UTF-8 bytes (a two-byte length prefix)."""

SHARE_PREFIX = "$share/"

K = TypeVar("K")


class InvalidTopic(TrunklineError, ValueError):
    """A topic name or filter breaks the MQTT rules; ``reason`` says which one.

    An MQTT 5 session answers 0x90 (topic name invalid) for a PUBLISH and 0x8F
    (topic filter invalid) in a SUBACK or UNSUBACK.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _check_string(text: str, what: str) -> None:
    if not text:
        raise InvalidTopic(f"{what} is empty")
    if "\x00" in text:
        raise InvalidTopic(f"{what} contains U+0000")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTopic(f"{what} is not valid UTF-8 (a lone surrogate)") from None
    if size > MAX_LENGTH:
        raise InvalidTopic(f"{what} is {size} bytes, more than {MAX_LENGTH}")


def validate_topic(name: str) -> None:
    """Raise :class:`InvalidTopic` unless ``name`` is a valid topic name."""
    _check_string(name, "topic name")
    if "+" in name or "#" in name:
        raise InvalidTopic("topic name contains a wildcard (+ or #)")


def validate_filter(topic_filter: str) -> None:
    """Raise :class:`InvalidTopic` unless ``topic_filter`` is a valid filter (not parsed for ``$share``)."""
    _check_string(topic_filter, "topic filter")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise InvalidTopic("'#' must be the whole last level of a topic filter")
        if "+" in level and level != "+":
            raise InvalidTopic("'+' must be a whole level of a topic filter")


def is_wildcard(topic_filter: str) -> bool:
    """Whether a (valid) filter contains ``+`` or ``#``."""
    return "+" in topic_filter or "#" in topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """Whether the valid filter ``topic_filter`` matches the valid topic name ``topic``."""
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True  # the rest, including none at all (the parent level)
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@dataclass(frozen=True, slots=True)
class SharedSubscription:
    """``$share/<group>/<filter>``: the group name and the filter it shares."""

    group: str
    topic_filter: str


def parse_shared(topic_filter: str) -> SharedSubscription | None:
    """The shared subscription ``topic_filter`` names, ``None`` when it is not one.

    Raises :class:`InvalidTopic` for a malformed ``$share/...`` filter (no group, a
    group with ``/``, ``+`` or ``#``, no filter after the group, an invalid filter).
    A filter ``$share`` or ``$shared/x`` is not a shared subscription: it is an
    ordinary filter on a ``$`` topic.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    _check_string(topic_filter, "topic filter")
    group, sep, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not group:
        raise InvalidTopic("shared subscription without a share name ($share/<name>/<filter>)")
    if "+" in group or "#" in group:
        raise InvalidTopic("share name contains a wildcard (+ or #)")
    if not sep or not rest:
        raise InvalidTopic("shared subscription without a topic filter after the share name")
    validate_filter(rest)
    return SharedSubscription(group, rest)


class _Node(Generic[K]):
    __slots__ = ("children", "filter", "keys")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}
        self.keys: dict[K, None] = {}  # an ordered set: first subscriber first
        self.filter = ""  # set when keys is not empty


class FilterTrie(Generic[K]):
    """Topic filters by level, for fan-out of wildcard (and literal) subscriptions.

    ``add(filter, key)`` stores the pair once (adding it again changes nothing);
    ``match(topic)`` returns every (filter, key) pair whose filter matches. One key
    may hold several filters; each matching one is reported, so a session can see
    every subscription identifier that applies. Filters must be valid
    (:func:`validate_filter`); shared subscriptions are stored under their inner
    filter by the caller.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[K] = _Node()
        self._size = 0

    def __len__(self) -> int:
        """The number of (filter, key) pairs stored."""
        return self._size

    def add(self, topic_filter: str, key: K) -> bool:
        """Store the pair; ``False`` when it was stored already."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if key in node.keys:
            return False
        node.keys[key] = None
        node.filter = topic_filter
        self._size += 1
        return True

    def remove(self, topic_filter: str, key: K) -> bool:
        """Drop the pair and any branch left empty; ``False`` when it was not stored."""
        path: list[tuple[_Node[K], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if key not in node.keys:
            return False
        del node.keys[key]
        self._size -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.keys or child.children:
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> list[tuple[str, K]]:
        """Every (filter, key) pair whose filter matches the valid topic name ``topic``."""
        found: list[tuple[str, K]] = []
        levels = topic.split("/")
        nodes = [self._root]
        system = topic.startswith("$")
        for depth, level in enumerate(levels):
            following: list[_Node[K]] = []
            for node in nodes:
                children = node.children
                if not children:
                    continue
                wild = not (system and depth == 0)
                if wild:
                    rest = children.get("#")
                    if rest is not None:
                        _collect(rest, found)
                child = children.get(level)
                if child is not None:
                    following.append(child)
                if wild:
                    child = children.get("+")
                    if child is not None:
                        following.append(child)
            if not following:
                return found
            nodes = following
        for node in nodes:
            _collect(node, found)
            rest = node.children.get("#")
            if rest is not None:
                _collect(rest, found)  # "a/#" matches "a"
        return found

    def filters(self) -> Iterator[tuple[str, K]]:
        """Every stored pair (for tests and diagnostics)."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            for key in node.keys:
                yield node.filter, key
            stack.extend(node.children.values())


def _collect(node: _Node[K], found: list[tuple[str, K]]) -> None:
    if node.keys:
        topic_filter = node.filter
        found.extend((topic_filter, key) for key in node.keys)
