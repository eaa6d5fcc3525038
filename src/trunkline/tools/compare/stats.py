"""Figures from raw samples: percentiles and a CDF outline for the charts (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

QUANTILES = tuple(i / 100 for i in range(0, 101, 2))  # the CDF outline kept in results.json


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of an ascending sequence (nearest rank); NaN when empty."""
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean in milliseconds (None when nothing was received)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ms = 1000.0
    return {
        "p50": round(quantile(ordered, 0.5) * ms, 3),
        "p90": round(quantile(ordered, 0.9) * ms, 3),
        "p99": round(quantile(ordered, 0.99) * ms, 3),
        "max": round(ordered[-1] * ms, 3),
        "mean": round(sum(ordered) / len(ordered) * ms, 3),
    }


def cdf(seconds: Sequence[float]) -> list[float]:
    """Latency in milliseconds at each of :data:`QUANTILES` (empty when nothing was received)."""
    ordered = sorted(seconds)
    if not ordered:
        return []
    return [round(max(quantile(ordered, q), 0.0) * 1000.0, 3) for q in QUANTILES]


def per(value: float | None, count: int, scale: float = 1.0) -> float | None:
    """``value / count * scale`` rounded, or None when either is missing."""
    if value is None or count <= 0:
        return None
    return round(value / count * scale, 3)
