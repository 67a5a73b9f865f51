"""Percentiles as reported: nearest rank, so every reported value was really observed."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values`` (unsorted is fine)."""
    if not values:
        raise ValueError("values: expected at least one value, got none")
    if not 0 < q <= 100:
        raise ValueError(f"q: expected a percentile in (0, 100], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
