"""Channel-name rules: namespaces, private prefix, user-limited channels (reference §9.1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """The separators of channel names, as configured under ``channel.*``."""

    namespace_boundary: str = ":"
    private_prefix: str = "$"
    user_boundary: str = "#"
    user_separator: str = ","
    max_length: int = 255

    def namespace_of(self, channel: str) -> str:
        """The namespace name: text before the first boundary, after any private prefix."""
        prefix = self.private_prefix  # is_private, inlined: this runs more than once per publication
        if prefix and channel.startswith(prefix):
            channel = channel[len(prefix) :]
        head, sep, _ = channel.partition(self.namespace_boundary)
        return head if sep else ""

    def is_private(self, channel: str) -> bool:
        return bool(self.private_prefix) and channel.startswith(self.private_prefix)

    def is_user_limited(self, channel: str) -> bool:
        return bool(self.user_boundary) and self.user_boundary in channel

    def allowed_users(self, channel: str) -> list[str]:
        """Users listed after the last user boundary (``news#42,43`` -> ``["42", "43"]``)."""
        _, sep, users = channel.rpartition(self.user_boundary)
        if not sep:
            return []
        return [u for u in users.split(self.user_separator) if u]

    def user_allowed(self, channel: str, user: str) -> bool:
        return bool(user) and user in self.allowed_users(channel)

    def personal_channel(self, user: str, namespace: str = "") -> str:
        base = f"{self.user_boundary}{user}"
        return f"{namespace}{self.namespace_boundary}{base}" if namespace else base

    def name_after_namespace(self, channel: str) -> str:
        name = channel[len(self.private_prefix) :] if self.is_private(channel) else channel
        head, sep, rest = name.partition(self.namespace_boundary)
        return rest if sep else head
