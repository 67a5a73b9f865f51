"""TorchAligner (device-side face warping) against the CPU Aligner on real frames and faces.

Measured on the shared media (single_face.mp4 frames 0/20/40, grace_hopper, and a two-face
composite of two video frames; tiny model, CPU fp32): TorchAligner crops differ from the
``Aligner``'s uint8 crops by 0.22-0.25 grey levels on average and at most 0.501 -- i.e. by OpenCV's
uint8 rounding only (uniform rounding alone averages 0.25). ``infer_aligned`` differs from
``infer(Aligner crops)`` by at most 2.1e-4 in AU probabilities, 1.0e-3 in intensities (0-5 scale),
1.3e-4 in emotion probabilities, again from that rounding of the crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from norface_rt.backends.cuda_backend import CudaGraphBackend
from norface_rt.backends.gpu_preprocess import TorchAligner, sampling_theta
from norface_rt.config import ModelConfig
from norface_rt.faces import Aligner
from norface_rt.types import FramePacket

CROP_MEAN_TOL = 1.5  # grey levels (task requirement); measured <= 0.25
CROP_MAX_TOL = 1.0  # measured 0.501: the uint8 rounding of the OpenCV crop
PROB_TOL = 2e-3  # au_prob / emotion_prob, infer_aligned vs infer; measured <= 2.1e-4
INTENSITY_TOL = 1e-2  # au_intensity (0..5); measured <= 1.0e-3
NO_CUDA = f"CUDA not available (torch {torch.__version__} has no CUDA)"


@dataclass
class Case:
    name: str
    frame: np.ndarray  # (H, W, 3) uint8 RGB
    crops: np.ndarray  # Aligner crops (K, S, S, 3) uint8
    matrices: np.ndarray  # (K, 2, 3) image -> crop


# torch modules here run with one intra-op thread (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cfg(model_dir: Path) -> ModelConfig:
    return ModelConfig.load(model_dir / "config.json")


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        pytest.skip(f"test image not found or unreadable: {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def cases(media_dir: Path, landmarker_path: Path, cfg: ModelConfig) -> list[Case]:
    """Real frames with real MediaPipe landmarks, aligned by the CPU Aligner."""
    import av

    from norface_rt.faces.landmarker import Landmarker

    video = media_dir / "single_face.mp4"
    if not video.is_file():
        pytest.skip(f"test video not found: {video}")
    frames: list[tuple[str, np.ndarray]] = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in (0, 20, 40):
                frames.append((f"single_face.mp4#{i}", frame.to_ndarray(format="rgb24")))
            if i >= 40:
                break
    frames.append(("grace_hopper", _rgb(media_dir / "grace_hopper_512x512.jpg")))
    # Two faces in one frame: the first and last video frames stacked (720x640).
    frames.append(("two_faces", np.ascontiguousarray(np.vstack([frames[0][1], frames[2][1]]))))
    aligner = Aligner(cfg)
    out: list[Case] = []
    with Landmarker(landmarker_path, mode="image", max_faces=4) as lm:
        for i, (name, img) in enumerate(frames):
            faces = lm.detect(FramePacket(stream_id="t", frame_index=i, image=img, pts=None,
                                          capture_time=0.0))
            crops, mats = aligner.align(img, [f.points5 for f in faces])
            out.append(Case(name, img, crops, mats))
    assert [len(c.crops) for c in out] == [1, 1, 1, 1, 2], [(c.name, len(c.crops)) for c in out]
    return out


def _grey_levels(t: torch.Tensor, cfg: ModelConfig) -> np.ndarray:
    """(K, 3, S, S) normalised tensor -> (K, S, S, 3) float64 in [0, 255] (not rounded)."""
    mean = np.asarray(cfg.mean).reshape(1, 3, 1, 1)
    std = np.asarray(cfg.std).reshape(1, 3, 1, 1)
    return ((t.detach().cpu().numpy().astype(np.float64) * std + mean) * 255.0).transpose(0, 2, 3, 1)


def test_crops_match_the_cpu_aligner_on_real_faces(cases: list[Case], cfg: ModelConfig) -> None:
    aligner = TorchAligner.from_config(cfg, "cpu")
    for case in cases:
        t = aligner.warp(case.frame, case.matrices)
        assert t.shape == (len(case.crops), 3, cfg.img_size, cfg.img_size)
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        diff = np.abs(_grey_levels(t, cfg) - case.crops)
        assert diff.mean() < CROP_MEAN_TOL, (case.name, diff.mean())
        assert diff.max() <= CROP_MAX_TOL, (case.name, diff.max())


def test_border_is_black_like_cv2(cases: list[Case], cfg: ModelConfig) -> None:
    """Faces pushed half out of the frame, rotated and scaled: the outside must be black (0), as
    with Aligner's BORDER_CONSTANT, and the blend at the frame edge must match OpenCV's."""
    case = cases[0]
    s = cfg.img_size
    base = case.matrices[0]
    h, w = case.frame.shape[:2]
    mats = []
    for dx, dy, angle, scale in ((-0.6 * w, 0.0, 0.0, 1.0), (0.0, 0.45 * h, 20.0, 1.3),
                                 (0.5 * w, -0.5 * h, -35.0, 0.6)):
        rot = cv2.getRotationMatrix2D((s / 2 - 0.5, s / 2 - 0.5), angle, scale)
        m = np.vstack([base, [0, 0, 1]])
        m = np.vstack([rot, [0, 0, 1]]) @ m @ np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1]])
        mats.append(m[:2])
    mats_np = np.stack(mats)
    t = TorchAligner.from_config(cfg).warp(case.frame, mats_np)
    got = _grey_levels(t, cfg)
    for i, m in enumerate(mats_np):
        ref = cv2.warpAffine(case.frame, m, (s, s), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        outside = (ref == 0).all(axis=2)
        assert 0.1 < outside.mean() < 0.95, (i, outside.mean())  # really crosses the border
        diff = np.abs(got[i] - ref)
        assert diff.mean() < CROP_MEAN_TOL and diff.max() <= CROP_MAX_TOL, (i, diff.mean(), diff.max())


def test_integer_shift_reproduces_pixels_exactly(cases: list[Case], cfg: ModelConfig) -> None:
    """A pure integer translation samples exact pixel centres: any half-pixel convention error
    would blur the crop and show here as differences of many grey levels."""
    frame = cases[0].frame
    s = cfg.img_size
    m = np.array([[[1.0, 0.0, -200.0], [0.0, 1.0, -100.0]]])
    got = _grey_levels(TorchAligner.from_config(cfg).warp(frame, m), cfg)[0]
    assert np.abs(got - frame[100:100 + s, 200:200 + s]).max() < 1e-3


def test_infer_aligned_matches_infer_on_cpu_crops(cases: list[Case], model_dir: Path) -> None:
    backend = CudaGraphBackend(model_dir, device="cpu", fp16=False)
    for case in cases:
        ref = backend.infer(case.crops, want_normalized=True)
        got = backend.infer_aligned(case.frame, case.matrices, want_normalized=True)
        assert set(got.timings) == {"normalize", "classify"}
        for name, tol in (("au_prob", PROB_TOL), ("emotion_prob", PROB_TOL),
                          ("au_intensity", INTENSITY_TOL)):
            diff = np.abs(getattr(got, name) - getattr(ref, name)).max()
            assert diff <= tol, (case.name, name, diff)
        assert got.normalized is not None and ref.normalized is not None
        assert got.normalized.shape == ref.normalized.shape and got.normalized.dtype == np.uint8
    empty = backend.infer_aligned(cases[0].frame, np.zeros((0, 2, 3)))
    assert len(empty) == 0 and empty.normalized is None and empty.timings == {}
    assert backend.infer_aligned(cases[0].frame, cases[0].matrices).normalized is None


def test_empty_and_invalid_inputs(cfg: ModelConfig) -> None:
    aligner = TorchAligner.from_config(cfg)
    frame = np.zeros((40, 60, 3), np.uint8)
    assert aligner.warp(frame, np.zeros((0, 2, 3))).shape == (0, 3, cfg.img_size, cfg.img_size)
    ok = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    with pytest.raises(ValueError,
                       match=r"frame: expected an HxWx3 uint8 RGB array, got uint8 array of shape \(40, 60\)"):
        aligner.warp(frame[..., 0], ok)
    with pytest.raises(ValueError, match="frame: expected an HxWx3 uint8 RGB array, got float32"):
        aligner.warp(frame.astype(np.float32), ok)
    with pytest.raises(ValueError, match=r"matrices: expected \(K, 2, 3\).*got shape \(2, 3\)"):
        aligner.warp(frame, ok[0])
    with pytest.raises(ValueError, match="matrices: expected finite values"):
        aligner.warp(frame, np.full((1, 2, 3), np.nan))
    with pytest.raises(ValueError, match="matrices: expected invertible matrices, matrix 0"):
        aligner.warp(frame, np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="size: expected an int >= 1, got 0"):
        TorchAligner(0)
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda"):
        TorchAligner(112, "meta")
    with pytest.raises(ValueError, match=r"std: expected values > 0"):
        TorchAligner(112, std=(0.5, 0.0, 0.5))


def test_sampling_theta_identity() -> None:
    """The identity image->crop map on a same-sized frame is the identity in [-1, 1] space."""
    theta = sampling_theta(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), (112, 112), 112)
    np.testing.assert_allclose(theta[0], [[1, 0, 0], [0, 1, 0]], atol=1e-7)


def synthetic_cases(cfg: ModelConfig) -> list[Case]:
    """Smooth random frames of two sizes, each with rotated / scaled / shifted image->crop
    matrices: what a CUDA-vs-CPU warp comparison needs, without MediaPipe, PyAV or shared media
    (so it runs on a GPU machine that has none of them). Crops are left empty: unused."""
    rng = np.random.default_rng(31)
    s = cfg.img_size
    out = []
    for h, w, k in ((360, 640, 1), (720, 1280, 3), (360, 640, 2)):
        frame = cv2.GaussianBlur(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), (0, 0), 3)
        frame = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX)  # full contrast after the blur
        mats = []
        for _ in range(k):  # each maps a random point of the frame onto the crop centre
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-40, 40), rng.uniform(0.3, 1.5))
            m[:, 2] -= (cx - (s / 2 - 0.5), cy - (s / 2 - 0.5))
            mats.append(m)
        out.append(Case(f"{w}x{h}x{k}", np.ascontiguousarray(frame), np.zeros((0, s, s, 3), np.uint8),
                        np.stack(mats)))
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_warp_matches_cpu_and_reuses_pinned_staging(cfg: ModelConfig) -> None:
    cpu = TorchAligner.from_config(cfg, "cpu")
    gpu = TorchAligner.from_config(cfg, "cuda")
    # Several frames of two sizes through one aligner: the pinned buffer is reused and regrown.
    cases = synthetic_cases(cfg)
    for case in [*cases, *cases]:
        got = gpu.warp(case.frame, case.matrices)
        assert got.device.type == "cuda" and got.dtype == torch.float32
        ref = cpu.warp(case.frame, case.matrices)
        assert (got.cpu() - ref).abs().max().item() < 1e-3, case.name
