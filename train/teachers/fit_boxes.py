"""Fit the teachers' box rules (:mod:`train.teachers.boxes`) to their own detectors.

``python -m train teachers fit-boxes --out boxes.json`` runs, on permissive photos only (the
London set's training people, Canada, the composites, the media stills; never ``eval/``):

* MediaPipe (the harness's :class:`~train.teachers.harness.FaceFinder`): landmarks of the
  largest face;
* fer's detector: OpenCV's frontal-face Haar cascade with fer's settings (``fer.FER.find_faces``:
  scale factor 1.1, 5 neighbours, minimum 50 px, on the grey image);
* face-api's pipeline in its own JavaScript (:func:`~train.teachers.verify.faceapi_reference`):
  SSD MobileNet v1 (minimum confidence 0.5), 68 landmarks, ``alignedRect``.

Each detector box is matched to the MediaPipe face it overlaps most (IoU >= 0.3 with the landmark
extent) and expressed relative to the landmark extent; the rule's constants are the medians, the
JSON keeps every face and the interquartile ranges.

Tight crops (``tight``): a sliding-window detector cannot return a box larger than the image, so
the Haar box shrinks when the face fills the frame (real_val's 350 px face crops, the training
shards' aligned crops). Every second photo is also cut to a 350 px grey square with the face
(landmark extent) 0.7, 0.8 and 0.9 of its width; the Haar side's medians at those framings give
the rule's frame limit ``a w + b S`` (least squares through the three medians).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from train.teachers.boxes import landmark_extent

MIN_IOU = 0.3
# fer.FER's default cascade_file: cv2.data.haarcascades + this name (OpenCV ships it)
HAAR_CASCADE = Path(cv2.__file__).parent / "data" / "haarcascade_frontalface_default.xml"
MAX_SIDE = 800  # photos are downscaled to this long side first (the SSD sees 512 px anyway)


def calibration_images(shared: str | os.PathLike[str] | None = None) -> list[Path]:
    """The permissive photos of the fit (module docstring)."""
    from train.data.london import london_people
    from train.synth.ict import shared_root

    root = shared_root(shared)
    out: list[Path] = []
    for p in london_people(root, split="train"):
        out += [x for x in (p.neutral, p.smiling) if x is not None]
    for sub in ("canada", "composite"):
        out += sorted((root / "faces" / sub).glob("*.jpg"))
    out += [root / "media" / n for n in ("single_face.jpg", "grace_hopper_512x512.jpg",
                                         "astronaut.png", "multi_face.jpg")]
    return [p for p in out if p.is_file()]


def haar_boxes(image: np.ndarray) -> list[tuple[float, float, float, float]]:
    """fer's default face detector on an RGB image: (x0, y0, x1, y1) boxes."""
    cascade = cv2.CascadeClassifier(str(HAAR_CASCADE))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                     flags=cv2.CASCADE_SCALE_IMAGE, minSize=(50, 50))
    return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def relative(box: Sequence[float], extent: Sequence[float]) -> dict[str, float]:
    """A detector box relative to the landmark extent: centre shift in extent widths/heights,
    width and height in extent widths/heights."""
    x0, y0, x1, y1 = extent
    w, h = x1 - x0, y1 - y0
    return {"dx": ((box[0] + box[2]) / 2 - (x0 + x1) / 2) / w,
            "dy": ((box[1] + box[3]) / 2 - (y0 + y1) / 2) / h,
            "sw": (box[2] - box[0]) / w, "sh": (box[3] - box[1]) / h}


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for k in ("dx", "dy", "sw", "sh"):
        v = np.asarray([r[k] for r in rows], np.float64)
        q1, med, q3 = np.percentile(v, [25, 50, 75]) if v.size else (np.nan,) * 3
        out[k] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
    return out


TIGHT_RATIOS = (0.7, 0.8, 0.9)
TIGHT_SIDE = 350


def tight_crop(image: np.ndarray, extent: Sequence[float], ratio: float) -> np.ndarray:
    """A TIGHT_SIDE px grey (3-channel) square centred on the face, face width = ratio x side."""
    x0, y0, x1, y1 = extent
    s = TIGHT_SIDE * ratio / (x1 - x0)
    c = TIGHT_SIDE / 2
    m = np.array([[s, 0, c - s * (x0 + x1) / 2], [0, s, c - s * (y0 + y1) / 2]])
    crop = cv2.warpAffine(image, m, (TIGHT_SIDE, TIGHT_SIDE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def fit_tight(pics: Sequence[np.ndarray], extents: Sequence[Any], finder: Any) -> dict[str, Any]:
    """Haar side / image side against face width / image side on tight crops (module doc)."""
    per: dict[str, list[dict[str, float]]] = {str(r): [] for r in TIGHT_RATIOS}
    for img, ext in zip(pics[::2], extents[::2]):
        if ext is None:
            continue
        for r in TIGHT_RATIOS:
            crop = tight_crop(img, ext, r)
            _, lm = finder.find(crop)
            boxes = haar_boxes(crop)
            if lm is None or not boxes:
                continue
            e = landmark_extent(lm)
            best = max(boxes, key=lambda b: _iou(b, e))
            if _iou(best, e) >= MIN_IOU:
                per[str(r)].append({"w": (e[2] - e[0]) / TIGHT_SIDE,
                                    "side": (best[2] - best[0]) / TIGHT_SIDE,
                                    **relative(best, e)})
    med = {r: {k: float(np.median([x[k] for x in rows])) for k in ("w", "side", "dy", "sw")}
           for r, rows in per.items() if rows}
    w = np.asarray([m["w"] for m in med.values()])
    side = np.asarray([m["side"] for m in med.values()])
    (a, b), *_ = np.linalg.lstsq(np.c_[w, np.ones_like(w)], side, rcond=None)
    return {"ratios": list(TIGHT_RATIOS), "n": {r: len(v) for r, v in per.items()},
            "medians": med, "frame": [float(a), float(b)]}


def fit(images: Sequence[Path], *, landmarker: str | os.PathLike[str] | None = None,
        node_modules: str | os.PathLike[str] | None = None, faceapi: bool = True,
        tight: bool = True, log: Any = None) -> dict[str, Any]:
    """Detector boxes relative to MediaPipe's landmark extent, per face, and their medians."""
    from norface_rt.images import read_rgb
    from train.teachers.harness import FaceFinder
    from train.teachers.verify import faceapi_reference

    finder = FaceFinder(landmarker)
    pics: list[np.ndarray] = []
    extents: list[tuple[float, float, float, float] | None] = []
    tight_fit = None
    try:
        for p in images:
            img = read_rgb(p)
            s = MAX_SIDE / max(img.shape[:2])
            if s < 1:
                img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                 interpolation=cv2.INTER_AREA)
            pics.append(img)
            _, lm = finder.find(img)
            extents.append(None if lm is None else landmark_extent(lm))
        if tight:
            tight_fit = fit_tight(pics, extents, finder)
    finally:
        finder.close()
    if log:
        print(f"fit-boxes: MediaPipe found a face in {sum(e is not None for e in extents)} of "
              f"{len(images)} photos", file=log, flush=True)
    detectors: dict[str, list[list[tuple[float, float, float, float]]]] = {
        "fer": [haar_boxes(img) for img in pics]}
    if faceapi:
        ref = faceapi_reference(pics, [], node_modules=node_modules, backend="wasm")
        detectors["faceapi"] = [[(f["aligned"][0], f["aligned"][1],
                                  f["aligned"][0] + f["aligned"][2],
                                  f["aligned"][1] + f["aligned"][3]) for f in r["faces"]]
                                for r in ref["images"]]
    result: dict[str, Any] = {"images": [str(p) for p in images], "min_iou": MIN_IOU,
                              "max_side": MAX_SIDE, "teachers": {}, "fer_tight": tight_fit}
    if log and tight_fit is not None:
        a, b = tight_fit["frame"]
        print(f"fit-boxes: fer tight crops: side medians {json.dumps(tight_fit['medians'])}; "
              f"frame limit {a:.3f} w + {b:.3f} S", file=log, flush=True)
    for name, per_image in detectors.items():
        rows: list[dict[str, Any]] = []
        for path, ext, boxes in zip(images, extents, per_image):
            if ext is None or not boxes:
                continue
            best = max(boxes, key=lambda b: _iou(b, ext))
            if _iou(best, ext) < MIN_IOU:
                continue
            rows.append({"image": str(path), "extent": list(ext), "box": list(best),
                         **relative(best, ext)})
        result["teachers"][name] = {"faces": rows, **_stats(rows),
                                    "images_without_match": len(images) - len(rows)}
        if log:
            s = result["teachers"][name]
            print(f"fit-boxes: {name}: {s['n']} faces; " + ", ".join(
                f"{k} {s[k]['median']:+.3f} [{s[k]['q1']:+.3f}, {s[k]['q3']:+.3f}]"
                for k in ("dx", "dy", "sw", "sh")), file=log, flush=True)
    return result


def write(result: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1) + "\n")
    return p
