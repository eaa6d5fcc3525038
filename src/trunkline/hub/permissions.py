"""Permission decisions for client commands (reference §4.3, §5.2–§5.4): pure functions."""

from __future__ import annotations

from ..config import NamespaceOptions as ChannelOptions


def can_subscribe(opts: ChannelOptions, user: str, insecure: bool) -> bool:
    """Step 6–7 of the order: client/anonymous allow-options, then insecure mode."""
    if opts.allow_subscribe_for_client and (user or opts.allow_subscribe_for_anonymous):
        return True
    return insecure


def can_publish(opts: ChannelOptions, user: str, subscribed: bool, insecure: bool) -> bool:
    if opts.allow_publish_for_client and (user or opts.allow_publish_for_anonymous):
        return True
    if opts.allow_publish_for_subscriber and subscribed and (user or opts.allow_publish_for_anonymous):
        return True
    return insecure


def can_read_presence(opts: ChannelOptions, user: str, subscribed: bool, insecure: bool) -> bool:
    if opts.allow_presence_for_client and (user or opts.allow_presence_for_anonymous):
        return True
    if opts.allow_presence_for_subscriber and subscribed and (user or opts.allow_presence_for_anonymous):
        return True
    return insecure


def can_read_history(opts: ChannelOptions, user: str, subscribed: bool, insecure: bool) -> bool:
    if opts.allow_history_for_client and (user or opts.allow_history_for_anonymous):
        return True
    if opts.allow_history_for_subscriber and subscribed and (user or opts.allow_history_for_anonymous):
        return True
    return insecure
