"""Permissive real faces as training shards, and the real neutral faces geometry is calibrated on.

Only sets on the permissive list may train shipped weights (the shared README): the London set's
training people (neutral and smiling, :mod:`train.data.london`; the held-out third never enters),
the Canada and composite photos and the two CC0 series (all neutral). Each photo goes through the
runtime's own face recipe (MediaPipe image mode on the full photo, five-point alignment with the
model config's template), so crops and blendshapes are what serving would compute.

Labels: emotion neutral or happy (London smiling); AU12 absent on neutral faces, present on the
smiling ones; every other AU unknown (NaN): a posed smile usually but not always raises the
cheeks (AU6), and a photo is not coded for the rest.

The geometry pool (``geometry_pool.npz``) holds MediaPipe's blendshapes of every neutral face
here. Its mean and standard deviation become the model's ``geometry_reference`` and
``geometry_spread``, and training moves each rendered expression onto a randomly drawn real
neutral face of the pool (see :mod:`train.geometry`).

CLI: ``python -m train prepare-real --out DIR [--shared DIR] [--landmarker FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES, ModelConfig
from norface_rt.faces.align import Aligner
from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, blendshape_vector
from norface_rt.types import FramePacket
from train.data.london import CITATION as LONDON_CITATION
from train.data.london import london_people
from train.data.sample import au_vector
from train.data.shards import write_shard

NEUTRAL_SETS: dict[str, str] = {
    "canada": "DeBruine, L. & Jones, B. (2017). Young Adult White Faces with Manipulated Versions. "
              "figshare. doi:10.6084/m9.figshare.4220517.v1 (CC BY 4.0)",
    "composite": "DeBruine, L. (2016). Young adult composite faces. figshare. "
                 "doi:10.6084/m9.figshare.4055130.v1 (CC BY 4.0)",
    "lisa_cc0": "CC0",
    "zoom_cc0": "CC0",
}
POOL_FILE = "geometry_pool.npz"
SOURCE = "real"


@dataclass(frozen=True)
class RealPhoto:
    path: Path
    subject: str
    emotion: str  # "neutral" | "happy"


def permissive_photos(shared: str | os.PathLike[str]) -> list[RealPhoto]:
    """Every permissive labelled real photo usable for training (London held-out excluded)."""
    root = Path(shared)
    out: list[RealPhoto] = []
    for p in london_people(root, split="train"):
        out.append(RealPhoto(p.neutral, p.subject, "neutral"))
        if p.smiling is not None:
            out.append(RealPhoto(p.smiling, p.subject, "happy"))
    for name in NEUTRAL_SETS:
        d = root / "faces" / name
        if not d.is_dir():
            raise FileNotFoundError(f"face photo set not found: {d}")
        for f in sorted(d.glob("*.jpg")):
            # the CC0 series show one person each: one subject, so no split can leak it
            subject = f"{name}/{f.stem}" if name in ("canada", "composite") else name
            out.append(RealPhoto(f, subject, "neutral"))
    return out


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def real_samples(photos: Sequence[RealPhoto], landmarker: str | os.PathLike[str],
                 cfg: ModelConfig) -> Iterator[dict[str, object] | RealPhoto]:
    """Common-format samples (with ``mp_blendshapes``); a photo without a face is yielded back."""
    from norface_rt.faces.landmarker import Landmarker

    aligner = Aligner(cfg)
    with Landmarker(landmarker, max_faces=1, mode="image", tiling=1.0) as lm:
        for ph in photos:
            image = read_rgb(ph.path)
            faces = lm.detect(FramePacket("real", 0, image, None, 0.0))
            if not faces:
                yield ph
                continue
            face = faces[0]
            crop, _ = aligner.crop_for_points(image, face.points5)
            occ = au_vector({"AU12": 1.0 if ph.emotion == "happy" else 0.0})
            yield {
                "image": crop,
                "au_occurrence": occ,
                "au_intensity": au_vector(),
                "emotion": np.int64(EMOTION_NAMES.index(ph.emotion)),
                "mp_blendshapes": blendshape_vector(face.blendshapes, MEDIAPIPE_BLENDSHAPES),
                "subject": ph.subject,
                "source": SOURCE,
                "key": f"real/{ph.path.parent.name}/{ph.path.stem}",
            }


def prepare_real(shared: str | os.PathLike[str], out: str | os.PathLike[str],
                 landmarker: str | os.PathLike[str], img_size: int = 112) -> dict[str, object]:
    """Write the shard, the geometry pool and meta.json into ``out``; returns the meta."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if list(out_dir.glob("shard-*.npz")):
        raise FileExistsError(f"{out_dir} already holds shards; use an empty directory")
    photos = permissive_photos(shared)
    samples: list[dict[str, object]] = []
    missed: list[str] = []
    for s in real_samples(photos, landmarker, ModelConfig(img_size=img_size)):
        if isinstance(s, RealPhoto):
            missed.append(str(s.path.relative_to(Path(shared))))
        else:
            samples.append(s)
    if not samples:
        raise RuntimeError(f"no face found in any of {len(photos)} photos")
    write_shard(out_dir / "shard-00000.npz", samples)
    neutral = np.stack([np.asarray(s["mp_blendshapes"]) for s in samples
                        if int(s["emotion"]) == EMOTION_NAMES.index("neutral")])  # type: ignore[call-overload]
    np.savez_compressed(out_dir / POOL_FILE, neutral=neutral.astype(np.float32),
                        names=np.asarray(MEDIAPIPE_BLENDSHAPES))
    counts: dict[str, int] = {}
    for s in samples:
        name = EMOTION_NAMES[int(s["emotion"])]  # type: ignore[call-overload]
        counts[name] = counts.get(name, 0) + 1
    meta: dict[str, object] = {
        "format": "norface-rt real-face shards", "source": SOURCE, "count": len(samples),
        "img_size": img_size, "au_names": list(AU_NAMES), "emotion_names": list(EMOTION_NAMES),
        "emotions": counts, "no_face": missed, "geometry_pool": POOL_FILE,
        "geometry_pool_count": int(len(neutral)), "mp_blendshape_names": list(MEDIAPIPE_BLENDSHAPES),
        "citations": {"london": LONDON_CITATION, **NEUTRAL_SETS},
        "held_out": "London people whose id is a multiple of 3 (train.data.london) are excluded",
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="empty output directory")
    p.add_argument("--shared", default=None, help="shared data root; default $NORFACE_RT_SHARED")
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task "
                   "(default: the runtime's search order)")
    p.add_argument("--img-size", type=int, default=112, help="crop side (default 112)")


def run_cli(args: argparse.Namespace) -> int:
    from norface_rt.paths import resolve_landmarker
    from train.synth.ict import shared_root

    meta = prepare_real(shared_root(args.shared), args.out, resolve_landmarker(args.landmarker),
                        img_size=args.img_size)
    print(json.dumps({k: meta[k] for k in ("count", "emotions", "geometry_pool_count", "no_face")}))
    return 0
