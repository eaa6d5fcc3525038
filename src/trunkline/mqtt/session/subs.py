"""What an MQTT session keeps per subscription, and who may receive what.

An exact topic filter is one channel: the session joins it on the node like a
Centrifugo subscribe (presence, join/leave, permissions of the channel). A
wildcard filter is a pattern subscription (:meth:`trunkline.node.Node.watch`): the
broker feeds every channel under the filter's channel prefix and a
:class:`FilterMatcher` keeps those whose topic matches the filter *and* that this
user may subscribe to (so ``#`` never leaks a private or another user's channel).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ...config import NamespaceOptions
from ...hub import permissions
from ..filters import matches
from ..packets import Subscription
from ..shape import MqttShape, TopicCache

if TYPE_CHECKING:
    from ...node import Node
    from .shared import SharedGroup


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def channel_allowed(node: Node, channel: str, opts: NamespaceOptions, user: str) -> bool:
    """Whether ``user`` may subscribe to ``channel`` without a subscription token (Centrifugo's rules)."""
    rules = node.rules
    if rules.is_private(channel):
        return False  # needs a subscription token, which MQTT has no place for
    if opts.channel_regex and not _regex(opts.channel_regex).fullmatch(rules.name_after_namespace(channel)):
        return False
    if opts.allow_user_limited_channels and rules.is_user_limited(channel):
        return rules.user_allowed(channel, user)
    return permissions.can_subscribe(opts, user, node.settings.client.insecure)


class Access:
    """Per node: may ``user`` receive ``channel``? (Wildcard deliveries ask this once per publication.)"""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    def allowed(self, channel: str, user: str) -> bool:
        node = self._node
        opts = node.namespace_options(channel)
        return opts is not None and channel_allowed(node, channel, opts, user)


@dataclass(frozen=True, slots=True)
class FilterMatcher:
    """A wildcard filter of one user: shared by every session of that user with the same filter."""

    filter: str
    user: str
    topics: TopicCache = field(compare=True, hash=True)
    access: Access = field(compare=True, hash=True)

    def __call__(self, channel: str) -> bool:
        topic = self.topics.topic(channel)
        return topic is not None and matches(self.filter, topic) and self.access.allowed(channel, self.user)


@dataclass(slots=True)
class MqttSubscription:
    """One topic filter of a session."""

    filter: str
    qos: int
    shape: MqttShape
    channel: str | None = None  # the one channel of an exact filter
    prefix: str = ""  # the channel prefix of a wildcard filter
    matcher: FilterMatcher | None = None
    presence: bool = False
    join_leave: bool = False
    live: bool = False
    finish: Callable[[], None] | None = None  # the second step of a join, run after the SUBACK
    option: Subscription | None = None  # what the client asked for (kept by persistent sessions)
    sub_id: int | None = None  # the MQTT 5 subscription identifier
    start: tuple[int, str] | None = None  # the stream top a positioned join started from
    group: SharedGroup | None = None  # the shared subscription ($share/...) this filter is a member of
