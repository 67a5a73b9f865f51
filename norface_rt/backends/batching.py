"""Batch chunking: how a batch larger than a backend's fixed capacity is split.

Two backends have fixed-size device buffers: TensorRT engines (an optimization profile up to
``max_batch``) and the CUDA-graph backend (buckets of fixed sizes). Both cut a batch into
consecutive chunks here, in order, so results concatenate back row for row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def chunk_slices(n: int, max_batch: int) -> list[slice]:
    """Split ``n`` rows into consecutive slices of at most ``max_batch`` (N = 0 -> no slices)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    return [slice(i, min(i + int(max_batch), int(n))) for i in range(0, int(n), int(max_batch))]


def plan_chunks(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, count, bucket) per chunk covering rows 0..n-1: full chunks of the largest bucket,
    then the remainder in the smallest bucket that holds it. ``buckets`` must be ascending."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    return [(sl.start, sl.stop - sl.start, next(b for b in buckets if b >= sl.stop - sl.start))
            for sl in chunk_slices(n, buckets[-1])]
