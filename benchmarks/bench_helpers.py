"""Helpers shared by the benchmarks: timings that survive ``--benchmark-disable``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    """``fn`` that also appends its own wall time to ``times`` (read by :func:`median_seconds`)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - t0)

    return wrapper


def median_seconds(benchmark: Any, times: list[float]) -> float:
    """pytest-benchmark's median, or with ``--benchmark-disable`` (no stats kept) the median of
    the runs :func:`timed` recorded."""
    if benchmark.stats is not None:
        return float(benchmark.stats.stats.median)
    return statistics.median(times)
