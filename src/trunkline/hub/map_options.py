"""A map namespace's settings, resolved: the broker's :class:`MapOptions` and the page limits.

Node builds ``map_options(ns, history_meta_ttl)`` for every map channel it writes or reads;
the subscribe phases use :func:`page_limit` and :func:`stream_limit`. The derived defaults
(Centrifugo's): durable and persistent maps keep a stream of 100 entries for one minute;
ephemeral maps keep none; map_clients / map_users keys live 60 s unless ``key_ttl`` says
otherwise; ``meta_ttl`` 0 is ``channel.history_meta_ttl``.
"""

from __future__ import annotations

from ..broker.map_base import MapOptions
from ..config import MapNamespace, NamespaceOptions

DEFAULT_STREAM_SIZE = 100
DEFAULT_STREAM_TTL = 60.0
DEFAULT_PRESENCE_KEY_TTL = 60.0


def map_options(ns: NamespaceOptions, history_meta_ttl: float = 0.0) -> MapOptions:
    """The broker options of a map namespace (``ns.is_map``)."""
    m = ns.map
    if m.mode == "ephemeral":
        stream_size, stream_ttl = 0, 0.0
    else:
        stream_size = m.stream_size or DEFAULT_STREAM_SIZE
        stream_ttl = m.stream_ttl or DEFAULT_STREAM_TTL
    key_ttl = m.key_ttl
    if not key_ttl and ns.subscription_type in ("map_clients", "map_users"):
        key_ttl = DEFAULT_PRESENCE_KEY_TTL
    return MapOptions(
        stream_size=stream_size,
        stream_ttl=stream_ttl,
        meta_ttl=m.meta_ttl or history_meta_ttl,
        key_ttl=key_ttl,
        max_keys=m.max_keys,
        ordered=m.ordered,
    )


def page_limit(m: MapNamespace, asked: int) -> int:
    """State entries per page: ``default_page_size`` when none asked (0), else clamped to min..max."""
    if asked <= 0:
        return m.default_page_size
    return max(m.min_page_size, min(asked, m.max_page_size))


def stream_limit(m: MapNamespace) -> int:
    """The most stream entries a subscriber catches up before going live (more: re-sync from state)."""
    return m.live_transition_max_publication_limit or m.max_page_size
