"""CudaGraphBackend: bucketing, padding and chunking on CPU (fp32, eager), fp16 + CUDA graphs on GPU.

The CPU tests run the same bucket / static-buffer code as the GPU path and compare it with the
plain TorchBackend; the GPU tests (skipped without CUDA) check fp16 against fp32 and graph replays
against eager runs of the same buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from norface_rt.backends import ModelOutput, load_backend
from norface_rt.preprocess import preprocess
from norface_rt.backends.cuda_backend import (
    DEFAULT_BUCKETS,
    CudaGraphBackend,
    check_buckets,
)
from norface_rt.backends.torch_backend import TorchBackend
from norface_rt.models.moe import NoisyTopKMoE

FIELDS = ("au_prob", "au_intensity", "emotion_prob")
BATCHES = (1, 3, 8, 9, 70)
NO_CUDA = f"CUDA not available (torch {torch.__version__} has no CUDA)"


def needs_cuda(fn: Callable[..., None]) -> Callable[..., None]:
    """A GPU test: marked ``gpu`` (``pytest -m gpu`` and the GPU kit select it) and skipped with
    the reason where torch has no CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)(fn))


# fp16 vs fp32 tolerances (task requirement): probabilities, intensities (0..5).
FP16_PROB_TOL, FP16_INTENSITY_TOL = 0.02, 0.1
# Rows whose fp32 MoE routing is this close to a tie (gap between the k-th and (k+1)-th gate
# logit) may legitimately switch experts under any rounding change; they are excluded from the
# fp16 tolerance check and must stay rare. 10x the gate-logit error of the fp16 encoders measured
# with CPU fp16 emulation (<= 1e-3, tiny model).
TIE_MARGIN = 0.01


# torch modules here run with one intra-op thread (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> TorchBackend:
    return TorchBackend(model_dir, device="cpu")


@pytest.fixture(scope="module")
def cpu_backend(model_dir: Path) -> Iterator[CudaGraphBackend]:
    b = CudaGraphBackend(model_dir, device="cpu", fp16=False)
    yield b
    b.close()


def make_crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, n]).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def smooth_crops(n: int, seed: int) -> np.ndarray:
    """Blurred noise: smooth like real faces. Plain noise drives the untrained tiny model's MoE
    gate logits to near-ties (median top-k gap 0.018 vs 0.11 blurred), where the expert choice
    flips under any rounding change."""
    return np.stack([cv2.GaussianBlur(c, (0, 0), 2) for c in make_crops(n, seed)])


def max_diffs(a: ModelOutput, b: ModelOutput) -> dict[str, float]:
    return {k: float(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in FIELDS}


def assert_stage_timings(out: ModelOutput) -> None:
    assert set(out.timings) == {"normalize", "classify"}, out.timings
    for k, v in out.timings.items():
        assert isinstance(v, float) and math.isfinite(v) and 0.0 < v < 60.0, (k, v)


# -- pure helpers ---------------------------------------------------------------------------------

def test_bucket_validation() -> None:
    assert check_buckets([8, 1, 2]) == (1, 2, 8)  # unsorted: sorted, not rejected
    assert check_buckets((np.int64(4),)) == (4,)
    with pytest.raises(ValueError, match="buckets: expected at least one batch size, got an empty"):
        check_buckets([])
    with pytest.raises(ValueError, match=r"buckets: expected ints >= 1, got \[0, -2\] in \[1, 0, -2\]"):
        check_buckets([1, 0, -2])
    with pytest.raises(ValueError, match=r"buckets: expected ints >= 1, got \[2.5\]"):
        check_buckets([1, 2.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"buckets: expected ints >= 1, got \[True\]"):
        check_buckets([True])
    with pytest.raises(ValueError, match=r"buckets: expected distinct sizes, got duplicates \[4\]"):
        check_buckets([4, 2, 4])
    with pytest.raises(ValueError, match="buckets: expected a sequence of ints"):
        check_buckets(8)  # type: ignore[arg-type]


# -- CPU: the bucketed code path against the plain torch backend ------------------------------------

def test_matches_torch_backend_with_padding_and_chunking(
        cpu_backend: CudaGraphBackend, reference: TorchBackend) -> None:
    assert cpu_backend.name == "torch-cuda" and not cpu_backend.use_graphs
    assert not any(m.training for m in cpu_backend.model.modules())  # MoE gate noise is off
    for n in BATCHES:
        crops = make_crops(n)
        got = cpu_backend.infer(crops, want_normalized=True)
        ref = reference.infer(crops, want_normalized=True)
        assert len(got) == n
        for k in FIELDS:
            assert getattr(got, k).shape == getattr(ref, k).shape and getattr(got, k).dtype == np.float32
        diffs = max_diffs(got, ref)
        assert max(diffs.values()) <= 1e-5, (n, diffs)
        assert got.normalized is not None and ref.normalized is not None
        assert np.abs(got.normalized.astype(int) - ref.normalized).max() <= 1  # uint8 rounding
        assert_stage_timings(got)


def test_rows_do_not_depend_on_their_batch(cpu_backend: CudaGraphBackend) -> None:
    """A face gives the same result alone, padded among zero rows, and chunked among others."""
    crops = make_crops(9, seed=1)
    batch = cpu_backend.infer(crops)
    for i in (0, 4, 8):
        alone = cpu_backend.infer(crops[i:i + 1])
        diffs = {k: float(np.abs(getattr(alone, k)[0] - getattr(batch, k)[i]).max()) for k in FIELDS}
        assert max(diffs.values()) <= 1e-5, (i, diffs)
    small = CudaGraphBackend(cpu_backend.model_dir, device="cpu", fp16=False, buckets=(4, 2))
    assert small.buckets == (2, 4)
    chunked = small.infer(crops)  # 4 + 4 + 1 (padded to 2)
    assert max(max_diffs(chunked, batch).values()) <= 1e-5


def test_padding_rows_are_zeroed_between_calls(cpu_backend: CudaGraphBackend) -> None:
    cpu_backend.infer(make_crops(8, seed=2))  # fills all 8 rows of bucket 8
    cpu_backend.infer(make_crops(5, seed=3))  # reuses bucket 8 with 3 padding rows
    bucket = next(b for b in cpu_backend._buckets if b.size == 8)
    assert bucket.face[5:].abs().max().item() == 0.0
    assert bucket.face[:5].abs().max().item() > 0.0


def test_results_are_deterministic_and_outputs_not_aliased(cpu_backend: CudaGraphBackend) -> None:
    crops = make_crops(3, seed=4)
    first = cpu_backend.infer(crops)
    kept = first.au_prob.copy()
    cpu_backend.infer(make_crops(3, seed=5))  # same bucket, different faces
    np.testing.assert_array_equal(first.au_prob, kept)  # earlier results were copies
    again = cpu_backend.infer(crops)
    assert max(max_diffs(first, again).values()) == 0.0


def test_empty_batch_bad_input_and_close(model_dir: Path) -> None:
    backend = load_backend(model_dir, "torch-cuda", device="cpu", fp16=False, buckets=(1, 2))
    assert isinstance(backend, CudaGraphBackend)
    empty = backend.infer(np.zeros((0, 112, 112, 3), np.uint8), want_normalized=True)
    assert len(empty) == 0 and empty.timings == {}
    assert empty.normalized is not None and empty.normalized.shape == (0, 112, 112, 3)
    assert backend.infer(make_crops(2)).normalized is None
    with pytest.raises(ValueError,
                       match=r"crops: expected \(N, 112, 112, 3\) uint8, got \(2, 64, 64, 3\) uint8"):
        backend.infer(np.zeros((2, 64, 64, 3), np.uint8))
    assert "torch-cuda" in repr(backend) and "graphs=False" in repr(backend)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="CudaGraphBackend is closed"):
        backend.infer(make_crops(1))


def test_constructor_errors(model_dir: Path) -> None:
    with pytest.raises(ValueError,
                       match="fp16=True needs a CUDA device, got device='cpu'; pass fp16=False"):
        CudaGraphBackend(model_dir, device="cpu")
    with pytest.raises(ValueError, match="use_graphs=True needs a CUDA device, got device='cpu'"):
        CudaGraphBackend(model_dir, device="cpu", fp16=False, use_graphs=True)
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda\\[:N\\]', got 'meta'"):
        CudaGraphBackend(model_dir, device="meta", fp16=False)
    with pytest.raises(ValueError, match="buckets: expected at least one batch size"):
        CudaGraphBackend(model_dir, device="cpu", fp16=False, buckets=())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_cuda_without_cuda_names_the_torch_version(model_dir: Path) -> None:
    version = torch.__version__.replace("+", r"\+")
    with pytest.raises(RuntimeError, match=rf"device='cuda' requested but torch {version} has no CUDA"):
        load_backend(model_dir, "torch-cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_bench_reports_not_available_without_cuda(model_dir: Path) -> None:
    """`norface-rt bench --backend torch-cuda` without CUDA: 'not available: <reason>'."""
    res = bench_torch_cuda(model_dir)
    assert res["status"].startswith("not available: device='cuda' requested but torch")
    assert "has no CUDA" in res["status"] and res["rows"] == []


@needs_cuda
def test_bench_measures_on_cuda(model_dir: Path) -> None:
    """`norface-rt bench --backend torch-cuda` with CUDA: a measured row, with its error against
    the fp32 reference."""
    res = bench_torch_cuda(model_dir)
    assert res["status"] == "ok" and res["device"].startswith("cuda")
    assert res["cuda_graphs"] is True and res["buckets"] == list(DEFAULT_BUCKETS)
    assert res["rows"][0]["max_abs_err"]["au_intensity"] <= FP16_INTENSITY_TOL


def bench_torch_cuda(model_dir: Path) -> dict[str, object]:
    from norface_rt.tools.bench import measure_backend
    from norface_rt.reference import make_crops as bench_crops
    from norface_rt.reference import reference_outputs

    refs = reference_outputs(model_dir, {2: bench_crops(2, 112, 0)})
    return measure_backend(str(model_dir), "torch-cuda", [2], repeats=1, warmup=0, max_seconds=5.0,
                           device="cpu", threads=1, seed=0, refs=refs)


# -- GPU: fp16 CUDA graphs ------------------------------------------------------------------------

def routing_margins(model_dir: Path, crops: np.ndarray) -> np.ndarray:
    """Per row, the smallest gap between the k-th and (k+1)-th clean gate logit over the model's
    MoE blocks (fp32, CPU): how far each row's expert choice is from a tie."""
    from norface_rt.weights import load_torch_model

    model = load_torch_model(model_dir, device="cpu")
    gaps: list[torch.Tensor] = []

    def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], _out: object) -> None:
        assert isinstance(mod, NoisyTopKMoE)
        logits = torch.sort(args[0] @ mod.w_gate, dim=-1, descending=True).values
        gaps.append(logits[:, mod.k - 1] - logits[:, mod.k] if mod.k < mod.m
                    else torch.full((logits.shape[0],), math.inf))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, NoisyTopKMoE)]
    with torch.no_grad():
        model(torch.from_numpy(preprocess(crops, model.cfg)))
    for h in handles:
        h.remove()
    return torch.stack(gaps).min(dim=0).values.numpy()


@needs_cuda
def test_fp16_graphs_match_fp32_reference(model_dir: Path, reference: TorchBackend) -> None:
    backend = CudaGraphBackend(model_dir)  # cuda, fp16, graphs
    try:
        assert backend.use_graphs and backend.fp16 and backend.device.type == "cuda"
        assert backend.capture_seconds > 0
        for n in BATCHES:
            crops = smooth_crops(n, seed=10)
            got = backend.infer(crops, want_normalized=True)
            ref = reference.infer(crops, want_normalized=True)
            assert_stage_timings(got)
            clear = routing_margins(model_dir, crops) >= TIE_MARGIN
            assert clear.mean() >= 0.9, (n, clear.mean())
            for k, tol in (("au_prob", FP16_PROB_TOL), ("emotion_prob", FP16_PROB_TOL),
                           ("au_intensity", FP16_INTENSITY_TOL)):
                diff = np.abs(getattr(got, k) - getattr(ref, k))[clear].max()
                assert diff <= tol, (n, k, diff)
            assert got.normalized is not None and ref.normalized is not None
            assert np.abs(got.normalized.astype(int) - ref.normalized).mean() < 2.0
    finally:
        backend.close()


@needs_cuda
def test_graph_replay_equals_eager(model_dir: Path) -> None:
    graphs = CudaGraphBackend(model_dir, use_graphs=True)
    eager = CudaGraphBackend(model_dir, use_graphs=False)
    try:
        assert eager.use_graphs is False and all(b.normalize_graph is None for b in eager._buckets)
        for n in BATCHES:
            a, b = smooth_crops(n, seed=20), smooth_crops(n, seed=21)
            first = graphs.infer(a, want_normalized=True)
            other = graphs.infer(b)  # same graphs, new input: the replay must read it
            again = graphs.infer(a, want_normalized=True)
            assert max(max_diffs(first, again).values()) == 0.0
            assert max(max_diffs(first, other).values()) > 0.0
            ref = eager.infer(a, want_normalized=True)
            assert max(max_diffs(first, ref).values()) <= 1e-3, (n, max_diffs(first, ref))
            assert first.normalized is not None and ref.normalized is not None
            assert np.abs(first.normalized.astype(int) - ref.normalized).max() <= 1
            assert max(max_diffs(other, eager.infer(b)).values()) <= 1e-3
    finally:
        graphs.close()
        eager.close()


@needs_cuda
def test_infer_aligned_on_cuda_matches_cpu(model_dir: Path, cpu_backend: CudaGraphBackend) -> None:
    frame, mats = aligned_inputs()
    crops = np.stack([cv2.warpAffine(frame, m, (112, 112), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT) for m in mats])
    clear = routing_margins(model_dir, crops) >= TIE_MARGIN
    assert clear.sum() >= 6, clear
    backend = CudaGraphBackend(model_dir)
    try:
        got = backend.infer_aligned(frame, mats)
        ref = cpu_backend.infer_aligned(frame, mats)
        assert_stage_timings(got)
        for k, tol in (("au_prob", FP16_PROB_TOL), ("emotion_prob", FP16_PROB_TOL),
                       ("au_intensity", FP16_INTENSITY_TOL)):
            diff = np.abs(getattr(got, k) - getattr(ref, k))[clear].max()
            assert diff <= tol, (k, diff)
    finally:
        backend.close()


def aligned_inputs() -> tuple[np.ndarray, np.ndarray]:
    """A smooth random frame and 8 rotated / scaled / shifted image->crop matrices."""
    rng = np.random.default_rng(30)
    frame = cv2.GaussianBlur(rng.integers(0, 256, size=(360, 640, 3), dtype=np.uint8), (0, 0), 3)
    mats = []
    for _ in range(8):  # each maps a random point of the frame onto the crop centre
        cx, cy = rng.uniform(0, 640), rng.uniform(0, 360)
        m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-40, 40), rng.uniform(0.4, 1.5))
        m[:, 2] -= (cx - 55.5, cy - 55.5)
        mats.append(m)
    return frame, np.stack(mats)


# -- the geometry input (models whose config declares one) --------------------------------------

@pytest.fixture(scope="module")
def geo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from norface_rt.export import init_untrained

    return init_untrained(tmp_path_factory.mktemp("geo"), size="tiny", seed=4, geometry=True)


def make_geometry(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng([seed, n, 7]).random((n, 51)) ** 3).astype(np.float32)


def test_geometry_rides_the_buckets_padding_and_chunking(geo_model_dir: Path) -> None:
    """Each bucket carries its own geometry buffer: padded, chunked and aligned rows give the
    plain torch backend's results, and the padding rows are zeroed between calls."""
    ref = TorchBackend(geo_model_dir, device="cpu")
    small = CudaGraphBackend(geo_model_dir, device="cpu", fp16=False, buckets=(2, 4))
    for n in (1, 3, 9):
        crops, geo = make_crops(n, seed=n), make_geometry(n, seed=n)
        diffs = max_diffs(small.infer(crops, geometry=geo), ref.infer(crops, geometry=geo))
        assert max(diffs.values()) <= 1e-5, (n, diffs)
    bucket = next(b for b in small._buckets if b.size == 2)  # 9 = 4 + 4 + 1 padded to 2
    assert bucket.geometry is not None and bucket.geometry[1:].abs().max().item() == 0.0
    frame, mats = aligned_inputs()
    geo = make_geometry(len(mats), seed=40)
    aligned = small.infer_aligned(frame, mats, geometry=geo)
    crops = np.stack([cv2.warpAffine(frame, m, (112, 112), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT) for m in mats])
    diffs = max_diffs(aligned, ref.infer(crops, geometry=geo))  # warped on the device vs by cv2
    assert diffs["au_prob"] <= 1e-3 and diffs["emotion_prob"] <= 1e-3, diffs
    assert diffs["au_intensity"] <= 1e-2, diffs
    with pytest.raises(ValueError, match="consumes"):
        small.infer(make_crops(2))
    with pytest.raises(ValueError, match=r"expected \(8, 51\)"):
        small.infer_aligned(frame, mats, geometry=geo[:3])
    small.close()


@needs_cuda
def test_geometry_fp16_graphs_match_fp32_reference(geo_model_dir: Path) -> None:
    ref = TorchBackend(geo_model_dir, device="cpu")
    backend = CudaGraphBackend(geo_model_dir)
    try:
        for n in (1, 8, 70):
            crops, geo = smooth_crops(n, seed=50), make_geometry(n, seed=50)
            got = backend.infer(crops, geometry=geo)
            want = ref.infer(crops, geometry=geo)
            clear = routing_margins(geo_model_dir, crops) >= TIE_MARGIN
            for k, tol in (("au_prob", FP16_PROB_TOL), ("emotion_prob", FP16_PROB_TOL),
                           ("au_intensity", FP16_INTENSITY_TOL)):
                diff = np.abs(getattr(got, k) - getattr(want, k))[clear].max()
                assert diff <= tol, (n, k, diff)
            other = backend.infer(crops, geometry=np.zeros_like(geo))  # the replay reads the buffer
            assert max(max_diffs(got, other).values()) > 0.0
    finally:
        backend.close()
