"""Pure helpers of the TensorRT path: batch chunking (batches larger than the engines' max_batch
run as consecutive chunks) and CUDA device spellings."""

from __future__ import annotations

import pytest

from engines.trt_backend import chunk_slices


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


@pytest.mark.parametrize("spec, index", [(0, 0), (3, 3), ("cuda", 0), ("cuda:1", 1), (" CUDA:2 ", 2)])
def test_device_spellings(spec: object, index: int) -> None:
    from engines.build import device_index

    assert device_index(spec) == index  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["cpu", "cuda:", "cuda:x", -1, True, 1.0])
def test_bad_device_is_a_clear_error(spec: object) -> None:
    from engines.build import device_index

    with pytest.raises(ValueError, match="device must be a CUDA device index"):
        device_index(spec)  # type: ignore[arg-type]
