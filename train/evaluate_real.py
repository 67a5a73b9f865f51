"""Label-free quality of a Norface model set on real faces, for the model card.

Real video has no AU labels we may use, so two independent yardsticks stand in for them. Both run
the serving path itself (``norface_rt`` sources -> :class:`~norface_rt.faces.stage.FaceStage` ->
:func:`~norface_rt.backends.load_backend`), with the landmarker settings ``create_pipeline`` uses,
so what is measured is what users get.

Yardstick 1, AUs against MediaPipe: MediaPipe's FaceLandmarker also predicts 52 ARKit-style
blendshapes, from a separate network trained on real faces. They are turned into reference AU
intensities through the very rules that label the synthetic training data
(:class:`train.synth.labels.AULabeler`, docs/au_mapping.md), e.g. AU12 <- 5 * max(mouthSmileLeft,
mouthSmileRight). Per AU, over all face-frames: Pearson, Spearman, ICC(3,1) and MAE between our
intensity and that reference, Spearman of our occurrence probability against it, per media file
and pooled. The reference emotion (the same EMFACS rules) gives an agreement rate as a side number.
MediaPipe is a model too, not ground truth: agreement bounds neither side's error, it shows whether
ours moves with an independent real-face estimator. Frames of a video are strongly autocorrelated,
so no p-values are given; ``n`` counts face-frames, not independent samples.

Yardstick 2, normalization fidelity: Norface re-renders each face on one target identity and must
keep the expression. MediaPipe (image mode) runs on the aligned original crop I_o and on our
normalized face I_n, both upscaled from the model's input size to ``fidelity_size`` the same way;
per blendshape, the correlation between the two over faces is the fidelity. The detection rate on
I_n says whether the render still looks like a face at all. As a ceiling, the same correlation
between the full-frame blendshapes and I_o shows how much cropping and upscaling alone cost.

A time-series plot of one video (emotions, AU intensities and their MediaPipe references) is
written too. Untrained model sets are evaluated like any other and flagged as such everywhere:
their numbers are meaningless (about 0) and only prove the tooling works.

CLI: ``python -m train evaluate-real --model-dir DIR --media PATH... --out DIR``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.sources.images import IMAGE_EXTENSIONS
from norface_rt.types import FramePacket
from train import metrics as M
from train.synth.labels import AU_RULES, LABEL_MAPPING_VERSION, AULabeler

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts",
                                     ".mpg", ".mpeg")
# The plot prefers this clip when it is among the media (a woman acting strong expressions).
PREFERRED_PLOT_VIDEO = "WolfgangLanger_Pexels.mp4"
PLOT_AUS: tuple[str, ...] = ("AU01", "AU04", "AU06", "AU12", "AU15", "AU25", "AU26")
MIN_PAIRS = 3  # fewer face-frames than this: every correlation is NaN
# A reference that barely moves (std below this, in FACS intensity units; 0.01 in blendshape units)
# gives a correlation of pure noise: such an AU is reported as "flat" with NaN correlations.
MIN_REF_STD = 0.05
MIN_BLEND_STD = 0.01
READ_TIMEOUT_S = 60.0
# Shapes the AU rules read that exist in ICT-FaceKit but not in ARKit/MediaPipe; they enter as 0.
ICT_ONLY_SHAPES: tuple[str, ...] = ("cheekRaiser",)
REPORT_VERSION = 1

MediaKind = Literal["video", "images"]


# ---- statistics --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman over the pairs where both values are finite.

    NaN (``null`` in JSON) means undefined: fewer than :data:`MIN_PAIRS` pairs, or one side
    constant (e.g. a blendshape MediaPipe never moved in that clip). ``n`` is always reported.
    """

    pearson: float
    spearman: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"pearson": self.pearson, "spearman": self.spearman, "n": self.n}


def correlate(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> Correlation:
    """Correlation of two equally long 1-D signals, dropping pairs with a NaN/inf on either side."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"correlate: x and y must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < MIN_PAIRS or np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return Correlation(math.nan, math.nan, n)
    from scipy import stats  # lazy: `python -m train --help` should not pay for scipy

    r = float(stats.pearsonr(a, b).statistic)
    rho = float(stats.spearmanr(a, b).statistic)
    return Correlation(_clip1(r), _clip1(rho), n)


def _clip1(v: float) -> float:
    return v if math.isnan(v) else min(1.0, max(-1.0, v))


def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return float(v.mean()) if v.size else math.nan


# ---- MediaPipe blendshapes -> reference AUs -----------------------------------------------------

def ict_name(mediapipe_name: str) -> str:
    """MediaPipe spells sides ``mouthSmileLeft``, ICT/ARKit-in-ICT ``mouthSmile_L``."""
    if mediapipe_name.endswith("Left"):
        return mediapipe_name[:-4] + "_L"
    if mediapipe_name.endswith("Right"):
        return mediapipe_name[:-5] + "_R"
    return mediapipe_name


def expression_blendshapes(mediapipe_names: Sequence[str]) -> tuple[str, ...]:
    """The MediaPipe blendshapes some AU rule reads (gaze, cheekPuff, _neutral... are not)."""
    bases = {base for rule in AU_RULES for base, _ in rule.shapes}
    return tuple(n for n in mediapipe_names if ict_name(n).removesuffix("_L").removesuffix("_R")
                 in bases)


class BlendshapeReference:
    """MediaPipe blendshape scores -> reference AU intensities and emotion.

    Uses :class:`train.synth.labels.AULabeler`, the code that labels the synthetic training data,
    so the reference means exactly what the model was trained to output. Shapes the rules read but
    MediaPipe lacks (ICT's ``cheekRaiser``) enter as 0 and are listed in :attr:`missing`.
    """

    def __init__(self, mediapipe_names: Sequence[str]) -> None:
        self.mediapipe_names = tuple(mediapipe_names)
        names = [ict_name(n) for n in self.mediapipe_names]
        have = set(names)
        self.missing: list[str] = []
        for rule in AU_RULES:
            for base, _ in rule.shapes:
                if base in have or (f"{base}_L" in have and f"{base}_R" in have):
                    continue
                if base not in self.missing:
                    self.missing.append(base)
        unknown = [b for b in self.missing if b not in ICT_ONLY_SHAPES]
        if unknown:
            raise ValueError(f"blendshape names lack {unknown} (each as a midline name or a "
                             f"Left/Right pair, MediaPipe spelling); got {len(names)} names")
        self._pad = 2 * len(self.missing)
        self._labeler = AULabeler(names + [f"{b}_{s}" for b in self.missing for s in "LR"])

    def weights(self, blendshapes: Mapping[str, float]) -> np.ndarray:
        lacking = [n for n in self.mediapipe_names if n not in blendshapes]
        if lacking:
            raise ValueError(f"blendshapes: missing {lacking[:5]} (expected the "
                             f"{len(self.mediapipe_names)} MediaPipe categories)")
        w = np.array([blendshapes[n] for n in self.mediapipe_names] + [0.0] * self._pad, np.float64)
        return np.clip(np.nan_to_num(w), 0.0, 1.0)

    def intensities(self, blendshapes: Mapping[str, float]) -> np.ndarray:
        """(A,) FACS intensities in [0, 5], order of AU_NAMES."""
        return self._labeler.intensities(self.weights(blendshapes))

    def emotion(self, blendshapes: Mapping[str, float]) -> int:
        """Index into EMOTION_NAMES, -1 for ambiguous/non-prototypic."""
        return self._labeler.emotion(self.weights(blendshapes))


# ---- collecting face-frames ---------------------------------------------------------------------

@dataclass(frozen=True)
class MediaItem:
    """One unit of the report: a video file, or a set of still images (a folder or one file)."""

    path: Path
    kind: MediaKind

    @property
    def name(self) -> str:
        return self.path.name + ("/" if self.path.is_dir() else "")


def expand_media(paths: Sequence[str | os.PathLike[str]]) -> list[MediaItem]:
    """Files and folders from ``--media``: each video is one item, each folder's stills another."""
    if not paths:
        raise ValueError("--media: expected at least one video, image or folder")
    items: list[MediaItem] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"--media: no such file or folder: {p}")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
            items += [MediaItem(f, "video") for f in videos]
            if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
                items.append(MediaItem(p, "images"))
            if not videos and not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
                raise ValueError(f"--media: folder {p} holds no video "
                                 f"({', '.join(VIDEO_EXTENSIONS)}) or image "
                                 f"({', '.join(IMAGE_EXTENSIONS)}) files")
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(MediaItem(p, "images"))
        else:
            items.append(MediaItem(p, "video"))  # FileSource names the problem if it is not one
    seen: set[tuple[Path, str]] = set()
    unique = []
    for it in items:
        key = (it.path.resolve(), it.kind)
        if key not in seen:
            seen.add(key)
            unique.append(it)
    return unique


@dataclass
class MediaRecords:
    """Every face-frame of one media item: our outputs next to MediaPipe's views of the face.

    Blendshape entries are dicts, or None where MediaPipe found no face (``crop``/``normalized``)
    or the face was not probed (``probed`` False).
    """

    item: MediaItem
    fps: float | None = None
    frames: int = 0
    frames_with_face: int = 0
    error: str | None = None
    seconds: float = 0.0
    frame_index: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    track_id: list[int] = field(default_factory=list)
    area: list[float] = field(default_factory=list)
    au_intensity: list[np.ndarray] = field(default_factory=list)
    au_prob: list[np.ndarray] = field(default_factory=list)
    emotion_prob: list[np.ndarray] = field(default_factory=list)
    frame_blend: list[dict[str, float] | None] = field(default_factory=list)
    probed: list[bool] = field(default_factory=list)
    crop_blend: list[dict[str, float] | None] = field(default_factory=list)
    norm_blend: list[dict[str, float] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_index)


class RealEvaluator:
    """Runs the serving path over media and records, per face, outputs and MediaPipe's views.

    Owns the backend and the probe landmarker (``close()``); each media item gets its own
    FaceStage (landmarker + tracker), built by the runtime's factory like every pipeline's.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None,
                 landmarker: str | os.PathLike[str] | None = None, *,
                 backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
                 stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
                 fidelity_size: int = 256, fidelity_every: int = 1) -> None:
        from norface_rt.faces.landmarker import Landmarker
        from norface_rt.paths import resolve_landmarker, resolve_model_dir
        from norface_rt.pipeline.factory import open_backend

        if stride < 1:
            raise ValueError(f"--stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
        if not 64 <= fidelity_size <= 1024:
            raise ValueError(f"--fidelity-size must be in [64, 1024] px, got {fidelity_size}")
        if fidelity_every < 1:
            raise ValueError(f"--fidelity-every must be >= 1, got {fidelity_every}")
        if not 1 <= max_faces <= 64:
            raise ValueError(f"--max-faces must be in [1, 64], got {max_faces}")
        self.model_dir = resolve_model_dir(model_dir)
        self.landmarker_path = resolve_landmarker(landmarker)
        self.backend = open_backend(self.model_dir, backend, threads=threads)
        self.config = self.backend.config
        self.max_faces = max_faces
        self.stride = stride
        self.max_frames = max_frames
        self.fidelity = fidelity
        self.fidelity_size = fidelity_size
        self.fidelity_every = fidelity_every
        self._probe = (Landmarker(self.landmarker_path, max_faces=1, mode="image")
                       if fidelity else None)

    def evaluate(self, item: MediaItem) -> MediaRecords:
        """All face-frames of one media item (video: every ``stride``-th frame)."""
        from norface_rt.pipeline.factory import build_face_stage
        from norface_rt.sources.file import FileSource
        from norface_rt.sources.images import ImageSource

        src = (ImageSource(item.path, "evaluate") if item.kind == "images"
               else FileSource(item.path, "evaluate"))
        video = item.kind == "video"
        rec = MediaRecords(item, fps=src.info.fps if isinstance(src, FileSource) else None)
        stage = build_face_stage(self.landmarker_path, self.config, video=video,
                                 max_faces=self.max_faces)
        t0 = time.perf_counter()
        decoded = 0
        try:
            src.start()
            for packet in src.iter_frames(READ_TIMEOUT_S):
                decoded += 1
                if (decoded - 1) % self.stride:
                    continue
                self._frame(stage, packet, rec)
                if self.max_frames is not None and rec.frames >= self.max_frames:
                    break
            if src.end is not None:
                rec.error = src.end.error
        finally:
            src.stop()
            stage.close()
        rec.seconds = time.perf_counter() - t0
        return rec

    def _frame(self, stage: Any, packet: FramePacket, rec: MediaRecords) -> None:
        ff = stage.process(packet)
        rec.frames += 1
        if not ff.faces:
            return
        rec.frames_with_face += 1
        out = self.backend.infer(ff.crops, geometry=ff.geometry, want_normalized=self.fidelity)
        if packet.pts is not None:
            t = float(packet.pts)
        elif rec.fps:
            t = packet.frame_index / rec.fps
        else:
            t = float(packet.frame_index)
        for i, face in enumerate(ff.faces):
            x0, y0, x1, y1 = face.box
            rec.frame_index.append(packet.frame_index)
            rec.time_s.append(t)
            rec.track_id.append(int(face.track_id))
            rec.area.append(float((x1 - x0) * (y1 - y0)))
            rec.au_intensity.append(out.au_intensity[i])
            rec.au_prob.append(out.au_prob[i])
            rec.emotion_prob.append(out.emotion_prob[i])
            rec.frame_blend.append(face.blendshapes)
            probe = self.fidelity and (len(rec) - 1) % self.fidelity_every == 0
            rec.probed.append(probe)
            if probe:
                assert out.normalized is not None
                rec.crop_blend.append(self._blendshapes_of(ff.crops[i]))
                rec.norm_blend.append(self._blendshapes_of(out.normalized[i]))
            else:
                rec.crop_blend.append(None)
                rec.norm_blend.append(None)

    def _blendshapes_of(self, face: np.ndarray) -> dict[str, float] | None:
        """MediaPipe on one model-sized face, upscaled: at 112 px its detector is unreliable."""
        assert self._probe is not None
        s = self.fidelity_size
        img = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
        faces = self._probe.detect(FramePacket("probe", 0, np.ascontiguousarray(img), None, 0.0))
        return faces[0].blendshapes if faces else None

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.backend.close()

    def __enter__(self) -> "RealEvaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- metrics ------------------------------------------------------------------------------------

@dataclass
class FaceArrays:
    """:class:`MediaRecords` as arrays (N face-frames); blendshapes (N, K), NaN where absent."""

    au_intensity: np.ndarray
    au_prob: np.ndarray
    emotion_prob: np.ndarray
    frame_blend: np.ndarray
    crop_blend: np.ndarray
    norm_blend: np.ndarray
    probed: np.ndarray
    ref_au: np.ndarray  # (N, A) reference AUs from the full-frame blendshapes
    ref_emotion: np.ndarray  # (N,) int, -1 ambiguous, -2 no blendshapes
    crop_au: np.ndarray  # reference AUs from I_o
    norm_au: np.ndarray  # reference AUs from I_n

    @classmethod
    def build(cls, records: Sequence[MediaRecords], names: Sequence[str],
              ref: BlendshapeReference | None) -> "FaceArrays":
        a, e, k = len(AU_NAMES), len(EMOTION_NAMES), len(names)

        def stack(rows: list[np.ndarray], width: int) -> np.ndarray:
            # explicit row count: an item with no face (or no blendshape names) gives (0, width)
            if not rows:
                return np.zeros((0, width), np.float64)
            return np.asarray(rows, np.float64).reshape(len(rows), width)

        def blend(rows: list[dict[str, float] | None]) -> np.ndarray:
            return stack([np.array([d.get(n, np.nan) for n in names]) if d else np.full(k, np.nan)
                          for d in rows], k)

        def aus(rows: list[dict[str, float] | None]) -> np.ndarray:
            return stack([ref.intensities(d) if (d and ref) else np.full(a, np.nan)
                          for d in rows], a)

        fb = [d for r in records for d in r.frame_blend]
        cb = [d for r in records for d in r.crop_blend]
        nb = [d for r in records for d in r.norm_blend]
        return cls(
            au_intensity=stack([v for r in records for v in r.au_intensity], a),
            au_prob=stack([v for r in records for v in r.au_prob], a),
            emotion_prob=stack([v for r in records for v in r.emotion_prob], e),
            frame_blend=blend(fb), crop_blend=blend(cb), norm_blend=blend(nb),
            probed=np.asarray([p for r in records for p in r.probed], bool),
            ref_au=aus(fb),
            ref_emotion=np.asarray([ref.emotion(d) if (d and ref) else -2 for d in fb], np.int64),
            crop_au=aus(cb), norm_au=aus(nb),
        )


def au_agreement(fa: FaceArrays) -> dict[str, Any]:
    """Yardstick 1: our AU intensities against the MediaPipe-derived reference, per AU."""
    icc = M.icc31(fa.au_intensity, fa.ref_au) if len(fa.ref_au) else np.full(len(AU_NAMES), np.nan)
    mae = M.mae_per_au(fa.au_intensity, fa.ref_au) if len(fa.ref_au) \
        else np.full(len(AU_NAMES), np.nan)
    per_au: dict[str, Any] = {}
    for j, au in enumerate(AU_NAMES):
        ok = np.isfinite(fa.ref_au[:, j])
        ref_std = float(fa.ref_au[ok, j].std()) if ok.any() else math.nan
        flat = not ref_std >= MIN_REF_STD
        c = correlate(fa.au_intensity[:, j], fa.ref_au[:, j])
        cp = correlate(fa.au_prob[:, j], fa.ref_au[:, j])
        per_au[au] = {
            "pearson": math.nan if flat else c.pearson,
            "spearman": math.nan if flat else c.spearman, "n": c.n,
            "spearman_prob": math.nan if flat else cp.spearman,
            "icc31": math.nan if flat else float(icc[j]), "mae": float(mae[j]),
            "ours_mean": float(fa.au_intensity[ok, j].mean()) if ok.any() else math.nan,
            "ref_mean": float(fa.ref_au[ok, j].mean()) if ok.any() else math.nan,
            "ref_std": ref_std, "ref_flat": flat,
            "ref_active": float((fa.ref_au[ok, j] >= 1.0).mean()) if ok.any() else math.nan,
        }
    return {
        "n_faces": int(len(fa.au_intensity)),
        "per_au": per_au,
        "mean_pearson": _nanmean(v["pearson"] for v in per_au.values()),
        "mean_spearman": _nanmean(v["spearman"] for v in per_au.values()),
        "mean_icc31": _nanmean(v["icc31"] for v in per_au.values()),
    }


def emotion_agreement(fa: FaceArrays) -> dict[str, Any]:
    """Top emotion vs the EMFACS label of MediaPipe's blendshapes, where that is unambiguous."""
    labelled = fa.ref_emotion >= 0
    pred = fa.emotion_prob.argmax(1) if len(fa.emotion_prob) else np.zeros(0, np.int64)
    n = int(labelled.sum())
    return {
        "n_labelled": n,
        "n_ambiguous": int((fa.ref_emotion == -1).sum()),
        "accuracy": float((pred[labelled] == fa.ref_emotion[labelled]).mean()) if n else math.nan,
        "reference_counts": {e: int((fa.ref_emotion == i).sum())
                             for i, e in enumerate(EMOTION_NAMES)},
        "predicted_counts": {e: int((pred == i).sum()) for i, e in enumerate(EMOTION_NAMES)},
    }


def fidelity_metrics(fa: FaceArrays, names: Sequence[str]) -> dict[str, Any]:
    """Yardstick 2: MediaPipe on I_o vs on I_n (fidelity) and on the frame vs I_o (ceiling)."""
    probed = int(fa.probed.sum())
    crop_ok = fa.probed & np.isfinite(fa.crop_blend).all(1) if len(names) else fa.probed & False
    norm_ok = fa.probed & np.isfinite(fa.norm_blend).all(1) if len(names) else fa.probed & False
    relevant = set(expression_blendshapes(names))
    per: dict[str, Any] = {}
    for j, name in enumerate(names):
        if name == "_neutral":
            continue
        fid = correlate(fa.crop_blend[:, j], fa.norm_blend[:, j])
        ceil = correlate(fa.frame_blend[:, j], fa.crop_blend[:, j])
        both = np.isfinite(fa.crop_blend[:, j]) & np.isfinite(fa.norm_blend[:, j])
        seen = np.isfinite(fa.crop_blend[:, j])
        flat = not (float(fa.crop_blend[seen, j].std()) if seen.any() else 0.0) >= MIN_BLEND_STD
        if flat:  # MediaPipe never moved this shape on I_o: nothing to be faithful to
            fid = Correlation(math.nan, math.nan, fid.n)
            ceil = Correlation(math.nan, math.nan, ceil.n)
        per[name] = {**fid.to_dict(), "expression": name in relevant, "flat": flat,
                     "mean_abs_diff": float(np.abs(fa.crop_blend[both, j] - fa.norm_blend[both, j])
                                            .mean()) if both.any() else math.nan,
                     "ceiling_pearson": ceil.pearson, "ceiling_n": ceil.n}
    per_au: dict[str, Any] = {}
    for j, au in enumerate(AU_NAMES):
        seen = np.isfinite(fa.crop_au[:, j])
        flat = not (float(fa.crop_au[seen, j].std()) if seen.any() else 0.0) >= MIN_REF_STD
        fid = correlate(fa.crop_au[:, j], fa.norm_au[:, j])
        ceil = correlate(fa.ref_au[:, j], fa.crop_au[:, j])
        per_au[au] = {"pearson": math.nan if flat else fid.pearson,
                      "spearman": math.nan if flat else fid.spearman, "n": fid.n, "flat": flat,
                      "ceiling_pearson": math.nan if flat else ceil.pearson}
    expr = [v for v in per.values() if v["expression"]]
    return {
        "faces_probed": probed,
        "detect_rate_original": float(crop_ok.sum() / probed) if probed else math.nan,
        "detect_rate_normalized": float(norm_ok.sum() / probed) if probed else math.nan,
        "mean_expression_pearson": _nanmean(v["pearson"] for v in expr),
        "mean_expression_ceiling_pearson": _nanmean(v["ceiling_pearson"] for v in expr),
        "expression_blendshapes": sorted(relevant),
        "per_blendshape": per,
        "per_au": per_au,
        "mean_au_pearson": _nanmean(v["pearson"] for v in per_au.values()),
    }


def blendshape_names(records: Sequence[MediaRecords]) -> list[str]:
    """MediaPipe's category names, in the order of the first face that has them."""
    for r in records:
        for group in (r.frame_blend, r.crop_blend, r.norm_blend):
            for d in group:
                if d:
                    return list(d)
    return []


def summarize(records: Sequence[MediaRecords], fidelity: bool) -> dict[str, Any]:
    """Metrics of a group of media items (one item, or all of them pooled)."""
    names = blendshape_names(records)
    ref = BlendshapeReference(names) if names else None
    fa = FaceArrays.build(records, names, ref)
    out: dict[str, Any] = {"au_vs_mediapipe": au_agreement(fa), "emotion_vs_mediapipe":
                           emotion_agreement(fa)}
    out["normalization_fidelity"] = fidelity_metrics(fa, names) if fidelity else None
    return out


# ---- plot ---------------------------------------------------------------------------------------

def pick_plot_video(items: Sequence[MediaItem],
                    plot_video: str | os.PathLike[str] | None) -> MediaItem | None:
    """``plot_video`` when given, else the preferred clip if listed, else the first video."""
    if plot_video is not None:
        p = Path(plot_video).expanduser()
        for it in items:
            if it.kind == "video" and it.path.resolve() == p.resolve():
                return it
        raise ValueError(f"--plot-video {p} is not one of the --media videos "
                         f"({[str(i.path) for i in items if i.kind == 'video']})")
    videos = [it for it in items if it.kind == "video"]
    for it in videos:
        if it.path.name == PREFERRED_PLOT_VIDEO:
            return it
    return videos[0] if videos else None


def plot_timeseries(rec: MediaRecords, path: Path, *, model_id: str, trained: bool) -> Path:
    """Emotion probabilities, AU intensities and their MediaPipe references over time, PNG.

    One face per frame (the largest): a second person would otherwise interleave. Frames without
    a face are gaps. Uses the Agg canvas directly, so no global pyplot state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best: dict[int, int] = {}
    for i, fi in enumerate(rec.frame_index):
        if fi not in best or rec.area[i] > rec.area[best[fi]]:
            best[fi] = i
    rows = [best[fi] for fi in sorted(best)]
    names = blendshape_names([rec])
    ref = BlendshapeReference(names) if names else None
    t = np.asarray([rec.time_s[i] for i in rows], np.float64)
    emo = np.asarray([rec.emotion_prob[i] for i in rows], np.float64)
    emo = emo.reshape(-1, len(EMOTION_NAMES))
    cols = [AU_NAMES.index(a) for a in PLOT_AUS]
    ours = np.asarray([rec.au_intensity[i][cols] for i in rows], np.float64).reshape(-1, len(cols))
    theirs = np.asarray([ref.intensities(rec.frame_blend[i])[cols]  # type: ignore[index]
                         if (ref and rec.frame_blend[i]) else np.full(len(cols), np.nan)
                         for i in rows], np.float64).reshape(-1, len(cols))
    if t.size > 1:  # break lines across frames without a face
        step = np.median(np.diff(t))
        gaps = np.nonzero(np.diff(t) > 1.5 * step)[0]
        t = np.insert(t, gaps + 1, t[gaps] + step)
        emo = np.insert(emo, gaps + 1, np.nan, axis=0)
        ours = np.insert(ours, gaps + 1, np.nan, axis=0)
        theirs = np.insert(theirs, gaps + 1, np.nan, axis=0)

    fig = Figure(figsize=(12, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_e, ax_a, ax_r = fig.subplots(3, 1, sharex=True)
    emo_colors = [f"C{i}" for i in range(len(EMOTION_NAMES))]
    for k, e in enumerate(EMOTION_NAMES):
        ax_e.plot(t, emo[:, k], color=emo_colors[k], lw=1.2, label=e)
    ax_e.set_ylim(0, 1)
    ax_e.set_ylabel("emotion probability")
    ax_e.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    for k, au in enumerate(PLOT_AUS):
        ax_a.plot(t, ours[:, k], color=f"C{k}", lw=1.2, label=au)
        ax_r.plot(t, theirs[:, k], color=f"C{k}", lw=1.2, label=au)
    ax_a.set_ylabel("AU intensity (ours)")
    ax_r.set_ylabel("AU from MediaPipe\nblendshapes")
    for ax in (ax_a, ax_r):
        ax.set_ylim(0, 5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax_r.set_xlabel("time (s)")
    state = "trained" if trained else "UNTRAINED (outputs are random)"
    fig.suptitle(f"{model_id} - {state}\n{rec.item.path.name}: {rec.frames} frames, "
                 f"{rec.frames_with_face} with a face (largest face shown)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path


# ---- report -------------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    """NaN/inf -> null (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_faces_csv(records: Sequence[MediaRecords], path: Path) -> Path:
    """One row per face-frame (ours and the reference), for re-analysis without re-running."""
    names = blendshape_names(records)
    ref = BlendshapeReference(names) if names else None
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["media", "frame_index", "time_s", "track_id", "top_emotion", "ref_emotion",
                    *AU_NAMES, *(f"ref_{a}" for a in AU_NAMES)])
        for r in records:
            for i in range(len(r)):
                d = r.frame_blend[i]
                ra = ref.intensities(d) if (ref and d) else np.full(len(AU_NAMES), np.nan)
                re_ = ref.emotion(d) if (ref and d) else -2
                w.writerow([r.item.name, r.frame_index[i], f"{r.time_s[i]:.4f}", r.track_id[i],
                            EMOTION_NAMES[int(np.argmax(r.emotion_prob[i]))],
                            EMOTION_NAMES[re_] if re_ >= 0 else ("ambiguous" if re_ == -1 else ""),
                            *(f"{v:.4f}" for v in r.au_intensity[i]), *(f"{v:.4f}" for v in ra)])
    return path


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report.md (report.json holds the same numbers and more)."""
    m = report["model"]
    lines = [f"# Real-face evaluation: `{m['model_id']}`", ""]
    if not m["trained"]:
        lines += ["> **UNTRAINED model set**: randomly initialised weights. Every number below is "
                  "noise around 0 and only shows that the tooling runs.", ""]
    lines += [f"* model id: `{m['model_id']}` (trained: {m['trained']}), "
              f"model dir `{m['model_dir']}`",
              f"* backend: {m['backend']}; landmarker `{report['landmarker']}`",
              f"* label mapping version {report['label_mapping_version']} "
              f"(train/synth/labels.py, docs/au_mapping.md)",
              f"* media: {len(report['media'])} items, {report['totals']['frames']} frames, "
              f"{report['totals']['faces']} face-frames", ""]
    lines += ["## Media", "", "| media | kind | frames | frames with face | faces | probed | "
              "error |", "|---|---|---:|---:|---:|---:|---|"]
    for it in report["media"]:
        lines.append(f"| {it['name']} | {it['kind']} | {it['frames']} | {it['frames_with_face']} | "
                     f"{it['faces']} | {it['faces_probed']} | {it['error'] or ''} |")
    pooled = report["pooled"]
    y1 = pooled["au_vs_mediapipe"]
    lines += ["", "## Yardstick 1: AU intensity vs MediaPipe blendshapes (pooled)", "",
              "Reference = MediaPipe blendshapes through the synthetic-label rules (e.g. AU12 <- "
              "5 max(mouthSmileLeft, mouthSmileRight)). n = face-frames; video frames are "
              "autocorrelated, so n overstates the independent samples. – = undefined "
              "(n < 3 or a constant signal).", "",
              f"AUs whose reference std is below {MIN_REF_STD} are *flat* (MediaPipe saw no "
              "movement): their correlations are left undefined. ref active = share of "
              "face-frames with reference intensity >= 1.", "",
              "| AU | n | Pearson | Spearman | Spearman (prob) | ICC(3,1) | MAE | ours mean | "
              "ref mean | ref std | ref active |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for au, v in y1["per_au"].items():
        lines.append(f"| {au} | {v['n']} | {_f(v['pearson'])} | {_f(v['spearman'])} | "
                     f"{_f(v['spearman_prob'])} | {_f(v['icc31'])} | {_f(v['mae'], 2)} | "
                     f"{_f(v['ours_mean'], 2)} | {_f(v['ref_mean'], 2)} | {_f(v['ref_std'], 2)}"
                     f"{' (flat)' if v['ref_flat'] else ''} | {_f(v['ref_active'], 2)} |")
    lines.append(f"| **mean** | | {_f(y1['mean_pearson'])} | {_f(y1['mean_spearman'])} | | "
                 f"{_f(y1['mean_icc31'])} | | | | | |")
    lines += ["", "### Spearman per media", "",
              "| AU | " + " | ".join(it["name"] for it in report["media"]) + " |",
              "|---|" + "---:|" * len(report["media"])]
    for au in AU_NAMES:
        cells = [f"{_f(it['metrics']['au_vs_mediapipe']['per_au'][au]['spearman'])} "
                 f"(n={it['metrics']['au_vs_mediapipe']['per_au'][au]['n']})"
                 for it in report["media"]]
        lines.append(f"| {au} | " + " | ".join(cells) + " |")
    em = pooled["emotion_vs_mediapipe"]
    lines += ["", "### Emotion vs the EMFACS label of MediaPipe's blendshapes", "",
              f"Agreement {_f(em['accuracy'])} on {em['n_labelled']} face-frames with an "
              f"unambiguous reference ({em['n_ambiguous']} ambiguous left out).", "",
              "| emotion | reference | predicted (top) |", "|---|---:|---:|"]
    for e in EMOTION_NAMES:
        lines.append(f"| {e} | {em['reference_counts'][e]} | {em['predicted_counts'][e]} |")
    y2 = pooled["normalization_fidelity"]
    lines += ["", "## Yardstick 2: normalization fidelity (MediaPipe on I_o vs I_n)", ""]
    if y2 is None:
        lines.append("Not run (--no-fidelity).")
    else:
        lines += [f"Both faces upscaled to {report['settings']['fidelity_size']} px, MediaPipe in "
                  "image mode. Fidelity = correlation over faces of each blendshape on the "
                  "original crop I_o and on the normalized face I_n; the ceiling is the same "
                  "correlation between the full frame and I_o (what cropping and upscaling alone "
                  "cost).", "",
                  f"* faces probed: {y2['faces_probed']}",
                  f"* detection rate on I_o: {_f(y2['detect_rate_original'])}, on I_n: "
                  f"{_f(y2['detect_rate_normalized'])}",
                  f"* mean Pearson over the {len(y2['expression_blendshapes'])} "
                  f"expression-relevant blendshapes: {_f(y2['mean_expression_pearson'])} "
                  f"(ceiling {_f(y2['mean_expression_ceiling_pearson'])})",
                  f"* mean Pearson over reference AUs: {_f(y2['mean_au_pearson'])}", "",
                  "| media | probed | detect I_o | detect I_n | mean expr. Pearson | ceiling |",
                  "|---|---:|---:|---:|---:|---:|"]
        for it in report["media"]:
            f2 = it["metrics"]["normalization_fidelity"]
            lines.append(f"| {it['name']} | {f2['faces_probed']} | "
                         f"{_f(f2['detect_rate_original'])} | {_f(f2['detect_rate_normalized'])} | "
                         f"{_f(f2['mean_expression_pearson'])} | "
                         f"{_f(f2['mean_expression_ceiling_pearson'])} |")
        lines += ["", "| blendshape | n | Pearson I_o~I_n | Spearman | mean abs diff | ceiling "
                  "Pearson |", "|---|---:|---:|---:|---:|---:|"]
        for name, v in y2["per_blendshape"].items():
            if v["expression"]:
                lines.append(f"| {name} | {v['n']} | {_f(v['pearson'])} | {_f(v['spearman'])} | "
                             f"{_f(v['mean_abs_diff'])} | {_f(v['ceiling_pearson'])} |")
        lines += ["", "| AU (from blendshapes) | n | Pearson I_o~I_n | ceiling |",
                  "|---|---:|---:|---:|"]
        for au, v in y2["per_au"].items():
            lines.append(f"| {au} | {v['n']} | {_f(v['pearson'])} | {_f(v['ceiling_pearson'])} |")
    if report.get("plot"):
        lines += ["", "## Time series", "", f"![time series]({Path(report['plot']).name})"]
    return "\n".join(lines) + "\n"


def run(model_dir: str | os.PathLike[str] | None, media: Sequence[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str], *, landmarker: str | os.PathLike[str] | None = None,
        backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
        stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
        fidelity_size: int = 256, fidelity_every: int = 1,
        plot_video: str | os.PathLike[str] | None = None, plot: bool = True,
        log: Any = None) -> dict[str, Any]:
    """Evaluate every media item, write report.json, report.md, faces.csv and the plot."""
    items = expand_media(media)
    plot_item = pick_plot_video(items, plot_video) if plot else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[MediaRecords] = []
    with RealEvaluator(model_dir, landmarker, backend=backend, threads=threads,
                       max_faces=max_faces, stride=stride, max_frames=max_frames,
                       fidelity=fidelity, fidelity_size=fidelity_size,
                       fidelity_every=fidelity_every) as ev:
        cfg = ev.config
        for it in items:
            rec = ev.evaluate(it)
            records.append(rec)
            if log is not None:
                print(f"evaluate-real: {it.name}: {rec.frames} frames, {len(rec)} faces "
                      f"({rec.seconds:.1f} s){' ERROR ' + rec.error if rec.error else ''}",
                      file=log, flush=True)
        model = {"model_id": cfg.model_id, "trained": bool(cfg.trained), "size": cfg.size,
                 "model_dir": str(ev.model_dir), "backend": ev.backend.name,
                 "provenance": cfg.provenance}
        landmarker_path = str(ev.landmarker_path)
    media_out = []
    for rec in records:
        media_out.append({
            "name": rec.item.name, "path": str(rec.item.path), "kind": rec.item.kind,
            "frames": rec.frames, "frames_with_face": rec.frames_with_face, "faces": len(rec),
            "faces_probed": int(sum(rec.probed)), "error": rec.error,
            "seconds": round(rec.seconds, 2), "metrics": summarize([rec], fidelity)})
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "landmarker": landmarker_path,
        "label_mapping_version": LABEL_MAPPING_VERSION,
        "reference_missing_shapes": BlendshapeReference(blendshape_names(records)).missing
        if blendshape_names(records) else [],
        "settings": {"stride": stride, "max_frames": max_frames, "max_faces": max_faces,
                     "fidelity": fidelity, "fidelity_size": fidelity_size,
                     "fidelity_every": fidelity_every, "min_pairs": MIN_PAIRS},
        "notes": ("null = undefined (fewer than min_pairs face-frames or a constant signal); "
                  "n counts face-frames, which are autocorrelated within a video"),
        "totals": {"media": len(records), "frames": sum(r.frames for r in records),
                   "frames_with_face": sum(r.frames_with_face for r in records),
                   "faces": sum(len(r) for r in records)},
        "media": media_out,
        "pooled": summarize(records, fidelity),
        "plot": None,
    }
    if plot_item is not None:
        rec = next(r for r in records if r.item == plot_item)
        if len(rec):
            p = out / f"timeseries_{plot_item.path.stem}.png"
            report["plot"] = str(plot_timeseries(rec, p, model_id=model["model_id"],
                                                 trained=model["trained"]))
    report = _jsonable(report)
    write_faces_csv(records, out / "faces.csv")
    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


# ---- CLI ----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", default=None,
                   help="model set to evaluate (default: the runtime's model resolution)")
    p.add_argument("--media", nargs="+", required=True, metavar="PATH",
                   help="videos, images or folders (a folder: each video, plus its stills as "
                   "one item)")
    p.add_argument("--out", required=True,
                   help="folder for report.json, report.md, faces.csv and the plot")
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt"))
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--stride", type=int, default=1, help="analyse every N-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="analysed frames per media item")
    p.add_argument("--no-fidelity", action="store_true", help="skip yardstick 2 (2 extra "
                   "MediaPipe runs per face)")
    p.add_argument("--fidelity-size", type=int, default=256,
                   help="side in px that I_o and I_n are upscaled to for MediaPipe")
    p.add_argument("--fidelity-every", type=int, default=1, help="probe every N-th face only")
    p.add_argument("--plot-video", default=None, help="which --media video to plot (default: "
                   f"{PREFERRED_PLOT_VIDEO} if listed, else the first video)")
    p.add_argument("--no-plot", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
    report = run(args.model_dir, args.media, args.out, landmarker=args.landmarker,
                 backend=args.backend, threads=args.threads, max_faces=args.max_faces,
                 stride=args.stride, max_frames=args.max_frames, fidelity=not args.no_fidelity,
                 fidelity_size=args.fidelity_size, fidelity_every=args.fidelity_every,
                 plot_video=args.plot_video, plot=not args.no_plot, log=sys.stderr)
    y1 = report["pooled"]["au_vs_mediapipe"]
    y2 = report["pooled"]["normalization_fidelity"]
    m = report["model"]
    print(f"evaluate-real: {m['model_id']} ({'trained' if m['trained'] else 'UNTRAINED'}): "
          f"{report['totals']['faces']} face-frames; AU vs MediaPipe mean Spearman "
          f"{_f(y1['mean_spearman'])}; fidelity "
          f"{_f(y2['mean_expression_pearson']) if y2 else 'n/a'} -> {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.evaluate_real",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
