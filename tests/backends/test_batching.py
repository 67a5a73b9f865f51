"""Batch chunking: batches larger than a backend's fixed capacity (TensorRT's max_batch, the
CUDA-graph backend's buckets) run as consecutive chunks, every row once, in order."""

from __future__ import annotations

import pytest

from norface_rt.backends.batching import chunk_slices, plan_chunks


@pytest.mark.parametrize("n, max_batch, sizes", [
    (0, 8, []),
    (1, 8, [1]),
    (8, 8, [8]),
    (9, 8, [8, 1]),
    (67, 64, [64, 3]),
    (20, 1, [1] * 20),
    (130, 64, [64, 64, 2]),
])
def test_chunks_cover_every_face_once_in_order(n: int, max_batch: int, sizes: list[int]) -> None:
    chunks = chunk_slices(n, max_batch)
    assert [s.stop - s.start for s in chunks] == sizes
    covered = [i for s in chunks for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert all(s.stop - s.start <= max_batch for s in chunks)


@pytest.mark.parametrize("n, max_batch, field", [(-1, 8, "n"), (3, 0, "max_batch"),
                                                 (2.0, 8, "n"), (3, True, "max_batch")])
def test_bad_arguments_name_the_field(n: object, max_batch: object, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        chunk_slices(n, max_batch)  # type: ignore[arg-type]


def test_plan_chunks_pads_to_the_smallest_bucket_and_splits_large_batches() -> None:
    b = (1, 2, 4, 8, 16, 32, 64)
    assert plan_chunks(0, b) == []
    assert plan_chunks(1, b) == [(0, 1, 1)]
    assert plan_chunks(3, b) == [(0, 3, 4)]
    assert plan_chunks(9, b) == [(0, 9, 16)]
    assert plan_chunks(64, b) == [(0, 64, 64)]
    assert plan_chunks(70, b) == [(0, 64, 64), (64, 6, 8)]
    assert plan_chunks(130, b) == [(0, 64, 64), (64, 64, 64), (128, 2, 2)]
    assert plan_chunks(5, (4,)) == [(0, 4, 4), (4, 1, 4)]
