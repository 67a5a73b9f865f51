"""Randomly initialised model sets (plumbing tests, demos, benchmarks of untrained sizes) and the
target identity every export starts from.

The default target is :func:`synthetic_target_image`, a procedural drawing of a neutral face (no
real person, no image licence), placed on the alignment template so it is aligned exactly like
real crops. :func:`load_target_image` is the one way a target is chosen, for untrained sets and
for training alike: ``"synthetic"`` (or nothing), an image file, or an array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from norface_rt.config import ModelConfig
from norface_rt.export.writer import save_model_set
from norface_rt.files import sha256_bytes
from norface_rt.images import load_aligned_crop
from norface_rt.models.registry import create_model
from norface_rt.preprocess import preprocess

TargetSpec = np.ndarray | str | os.PathLike[str] | None
SYNTHETIC = "synthetic"


def synthetic_target_image(size: int, template: tuple[tuple[float, float], ...]) -> np.ndarray:
    """A deterministic, procedurally drawn neutral 'face' (no real person), (S, S, 3) uint8 RGB.

    Used as the target identity of untrained model sets so they are reproducible and free of any
    image licence. Soft-edged shapes (skin oval, eyes, brows, nose, mouth) are placed on the
    alignment template, so the drawing is aligned exactly like real crops.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = template

    def soft(d: np.ndarray, edge: float = 0.01) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(np.clip(d / edge, -50, 50)))  # 1 inside (d < 0), 0 outside

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return soft(np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) - 1.0, 0.05)

    img = np.empty((size, size, 3))
    img[:] = (0.80, 0.82, 0.86)
    img *= (1.0 - 0.15 * yy)[..., None]  # gentle vertical background gradient
    cx = (rex + lex) / 2
    face = ellipse(cx, (rey + lmy) / 2 + 0.02, 0.34, 0.46)
    img = img * (1 - face[..., None]) + face[..., None] * np.array([0.87, 0.70, 0.60])
    shade = 1.0 - 0.10 * np.clip(np.abs(xx - cx) / 0.34, 0, 1) ** 2
    img *= np.where(face[..., None] > 0.5, shade[..., None], 1.0)

    def paint(mask: np.ndarray, rgb: tuple[float, float, float]) -> None:
        nonlocal img
        img = img * (1 - mask[..., None]) + mask[..., None] * np.array(rgb)

    eye_w = (lex - rex) * 0.28
    for ex, ey in ((rex, rey), (lex, ley)):
        paint(ellipse(ex, ey, eye_w, eye_w * 0.45), (0.95, 0.95, 0.95))
        paint(ellipse(ex, ey, eye_w * 0.42, eye_w * 0.42), (0.30, 0.22, 0.16))
        paint(ellipse(ex, ey - 0.07, eye_w * 1.1, eye_w * 0.18), (0.35, 0.25, 0.20))
    paint(ellipse(nx, ny - 0.02, 0.035, 0.07) * 0.25, (0.70, 0.52, 0.45))
    paint(ellipse(nx, ny + 0.01, 0.05, 0.02) * 0.5, (0.62, 0.45, 0.40))
    paint(ellipse((rmx + lmx) / 2, (rmy + lmy) / 2, (lmx - rmx) / 2, 0.018), (0.70, 0.36, 0.36))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Target:
    """A chosen target identity: the aligned crop and where it came from (for provenance)."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    description: str


def resolve_target(spec: TargetSpec, cfg: ModelConfig) -> Target:
    """The target for ``spec``: None / "" / "synthetic" -> :func:`synthetic_target_image`; a path
    -> that aligned square crop, resized to the model's input size; an array -> itself, which
    must already be (S, S, 3) uint8."""
    size = cfg.img_size
    if spec is None or (isinstance(spec, str) and spec in ("", SYNTHETIC)):
        return Target(synthetic_target_image(size, cfg.template),
                      "synthetic: norface_rt.export.synthetic_target_image (procedural drawing, "
                      "no real person)")
    if isinstance(spec, (str, os.PathLike)):
        img = load_aligned_crop(spec, size)
        what = f"image file {os.path.basename(os.fspath(spec))}"
    else:
        img = np.asarray(spec)
        if img.dtype != np.uint8 or img.shape != (size, size, 3):
            raise ValueError(
                f"target_image: expected ({size}, {size}, 3) uint8, got {img.shape} {img.dtype}"
            )
        what = "user-supplied array"
    return Target(img, f"{what}, sha256 {sha256_bytes(img.tobytes())}")


def load_target_image(spec: TargetSpec, cfg: ModelConfig) -> np.ndarray:
    """The aligned (S, S, 3) uint8 RGB target crop for ``spec`` (see :func:`resolve_target`)."""
    return resolve_target(spec, cfg).image


def untrained_geometry_fields() -> dict[str, object]:
    """Geometry-input config fields for untrained model sets: MediaPipe's blendshapes with a
    placeholder neutral face (0.05 +- 0.1 everywhere). A trained model calibrates these on real
    neutral faces (python -m train prepare-real); here they only exercise the plumbing."""
    from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES

    g = len(MEDIAPIPE_BLENDSHAPES)
    return {"geometry_inputs": ("blendshapes",), "blendshape_names": MEDIAPIPE_BLENDSHAPES,
            "geometry_reference": (0.05,) * g, "geometry_spread": (0.1,) * g}


def init_untrained(out_dir: str | os.PathLike[str], size: str = "small", seed: int = 0,
                   target_image: TargetSpec = None, geometry: bool = False) -> Path:
    """Create a randomly initialised (cfg.trained = False) model set for tests and demos.

    Its outputs are meaningless; the runtime flags every result from it as untrained. The target
    (see :func:`resolve_target`) is recorded in the provenance. ``geometry`` gives it the
    blendshape geometry input (:func:`untrained_geometry_fields`).
    """
    target = resolve_target(target_image, ModelConfig.for_size(size))
    extra = untrained_geometry_fields() if geometry else {}
    cfg = ModelConfig.for_size(
        size, trained=False, model_id=f"norface-{size}{'-geometry' if geometry else ''}-untrained",
        **extra,
        provenance={"weights": f"random initialisation, torch.manual_seed({seed})",
                    "target": target.description, "torch": torch.__version__,
                    "note": "UNTRAINED: outputs carry no information about the face"},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("norface", cfg).eval()
    model.set_target(torch.from_numpy(preprocess(target.image[None], cfg)))
    return save_model_set(model, cfg, out_dir, target_image=target.image)
