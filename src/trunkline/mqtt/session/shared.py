"""MQTT 5 shared subscriptions: ``$share/<group>/<filter>``, each message to one member of the group.

The sessions of this node that subscribe with the same share name and filter are
one :class:`SharedGroup`. The group is a single pattern subscriber on the node
(:meth:`trunkline.node.Node.watch`, for exact filters too) whose wire shape is
the group itself: for each publication it picks the next member in turn (round
robin, skipping members that may not receive that channel), encodes the
publication with that member's own shape (version, QoS, subscription id) and its
``push`` hands the bytes to that member only.

Across nodes every node with members delivers each publication to one of its own
members: with members on three nodes, a message reaches three members, one per
node (there is no cluster-wide group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...records import Publication
from ..filters import matches
from ..shape import MqttShape, TopicCache

if TYPE_CHECKING:
    from .core import MqttSession

Push = Callable[[bytes], None]


class SharedMatcher:
    """The filter of one group (identity-hashed: never shared with an ordinary subscription)."""

    __slots__ = ("filter", "topics")

    def __init__(self, topic_filter: str, topics: TopicCache) -> None:
        self.filter = topic_filter
        self.topics = topics

    def __call__(self, channel: str) -> bool:
        topic = self.topics.topic(channel)
        return topic is not None and matches(self.filter, topic)


@dataclass(slots=True)
class Member:
    session: MqttSession
    shape: MqttShape
    push: Push


class SharedGroup:
    """The members of one ``$share/<group>/<filter>`` on this node, and the wire shape that picks one."""

    __slots__ = ("_chosen", "_turn", "key", "matcher", "members", "owner", "prefix")

    def __init__(self, key: tuple[str, str], prefix: str, topics: TopicCache) -> None:
        self.key = key
        self.prefix = prefix
        self.matcher = SharedMatcher(key[1], topics)
        self.members: dict[MqttSession, Member] = {}
        self.owner: MqttSession | None = None  # the session the group is registered under on the node
        self._turn = 0
        self._chosen: Push | None = None

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def publication(self, channel: str, pub: Publication) -> bytes:
        members = list(self.members.values())
        count = len(members)
        for _ in range(count):
            member = members[self._turn % count]
            self._turn = (self._turn + 1) % count
            session = member.session
            if session.closed or not session.state.access.allowed(channel, session.user):
                continue
            self._chosen = member.push
            return member.shape.publication(channel, pub)
        self._chosen = None
        return b""

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return b""

    def push(self, data: bytes) -> None:
        chosen, self._chosen = self._chosen, None
        if chosen is not None and data:
            chosen(data)


async def join(s: MqttSession, group_name: str, topic_filter: str, prefix: str, shape: MqttShape) -> SharedGroup:
    """Add ``s`` to the group (created, and watched on the node, by its first member)."""
    state = s.state
    key = (group_name, topic_filter)
    group = state.shared.get(key)
    if group is None:
        group = state.shared[key] = SharedGroup(key, prefix, state.topics)
    group.members[s] = Member(s, shape, s.push_for(shape))
    if group.owner is None:
        group.owner = s
        try:
            await s.node.watch(s, prefix, group.matcher, group, group.push)
        except BaseException:
            group.owner = None
            await leave(s, group)
            raise
    return group


async def leave(s: MqttSession, group: SharedGroup) -> None:
    """Take ``s`` out of the group; the group moves to another member, or ends with its last one."""
    group.members.pop(s, None)
    node = s.node
    if group.owner is not s:
        if not group.members and group.owner is None:
            s.state.shared.pop(group.key, None)
        return
    node.unwatch(s, group.prefix, group.matcher)
    group.owner = None
    while group.members:
        heir = next(iter(group.members))
        if heir.closed:
            group.members.pop(heir, None)
            continue
        group.owner = heir
        try:
            await node.watch(heir, group.prefix, group.matcher, group, group.push)
        except Exception:
            group.owner = None
            group.members.pop(heir, None)
            continue
        return
    if s.state.shared.get(group.key) is group:
        del s.state.shared[group.key]
