"""The map broker ``map_broker.type`` names: memory (the default) or Redis."""

from __future__ import annotations

from ..config import Settings
from .map_base import MapBroker
from .map_memory import MemoryMapBroker
from .map_redis import RedisMapBroker


def make_map_broker(settings: Settings) -> MapBroker:
    """A new, not yet started map broker for ``settings`` (Redis: ``map_broker.redis``, or
    ``engine.redis`` when that has no address)."""
    if settings.map_broker.type == "redis":
        return RedisMapBroker.from_settings(settings)
    return MemoryMapBroker.from_settings(settings)
