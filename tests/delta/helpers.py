"""Shared by the delta tests: namespaces with delta compression and a realistic document."""

from __future__ import annotations

import json
from typing import Any

_OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_history_for_subscriber": True,
    "history_size": 100,
    "history_ttl": "300s",
    "force_recovery": True,
}

NAMESPACES: list[dict[str, Any]] = [
    {"name": "delta", **_OPEN, "allowed_delta_types": ["fossil"], "delta_publish": True},
    {"name": "deltaopt", **_OPEN, "allowed_delta_types": ["fossil"]},  # delta only if the publish asks
    {"name": "plain", **_OPEN},
    {
        "name": "deltanohistory",
        "allow_subscribe_for_client": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
    },
]


def document(version: int) -> bytes:
    """A ~2 KiB JSON document (an order book with names in several scripts); a few fields change per version."""
    levels = [
        {
            "price": round(100 + i * 0.25, 2),
            "size": 10 + (i * 7 + (version if i in (3, 11) else 0)) % 50,
            "venue": ["Zürich", "東京", "São Paulo", "Kraków"][i % 4],
        }
        for i in range(42)
    ]
    doc = {
        "symbol": "ÉCU/€",
        "version": version,
        "status": "open" if version % 5 else "auction",
        "levels": levels,
        "note": "prix indicatifs – ne pas diffuser",
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
