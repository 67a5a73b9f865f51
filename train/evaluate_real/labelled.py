"""Labelled real faces through the runtime: folder-per-emotion sets, the London set's held-out
people, and labelled segments of videos.

Emotions are scored N-way over ``classes`` (default the 7 basic ones, :data:`DEFAULT_CLASSES`):
only those columns of the model's emotion output compete for the top emotion, and images of other
classes are skipped and counted. Contempt is left out by default because the sets at hand have no
or only a handful of contempt images, and a class nobody can be right about would only add noise
to the argmax. A face not found counts as wrong (:data:`~.scoring.NO_FACE`); the largest face of a
still is the one scored.

Beside each set's emotion scores, the AU patterns of :data:`AU_PATTERNS` are scored as AUCs (does
the AU rise on images of the emotions it belongs to, against all other scored images?), for our
AU probability, our intensity and MediaPipe's blendshapes through the synthetic-label rules
(:class:`~.reference.BlendshapeReference`) on the very same face.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES, ModelConfig
from norface_rt.sources.images import IMAGE_EXTENSIONS
from train.evaluate_real.agreement import MIN_REF_STD
from train.evaluate_real.collect import MediaRecords, StillRecords
from train.evaluate_real.reference import BlendshapeReference
from train.evaluate_real.scoring import (
    NO_FACE,
    auc,
    classification_scores,
    fraction,
    restricted_argmax,
)

DEFAULT_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust",
                                    "anger")

# Which AUs should rise for which emotion: the defining AUs of the EMFACS prototypes in
# docs/au_mapping.md ("Emotions"), as issue 10 scores them on real faces (AU12 and AU06 for
# happiness, AU04 for anger and sadness, AU09 for disgust, AU01/AU02/AU26 for surprise, AU15 for
# sadness). Written once here; the report cites it.
AU_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AU12", ("happy",)),
    ("AU06", ("happy",)),
    ("AU04", ("anger", "sad")),
    ("AU09", ("disgust",)),
    ("AU01", ("surprise",)),
    ("AU02", ("surprise",)),
    ("AU26", ("surprise",)),
    ("AU15", ("sad",)),
)
# The two AUs the London pairs (neutral vs smiling, same person) can speak to.
LONDON_AUS: tuple[str, ...] = ("AU12", "AU06")
# MediaPipe's smile, as the segments compare it: the mean of both mouth corners.
SMILE_BLENDSHAPES: tuple[str, str] = ("mouthSmileLeft", "mouthSmileRight")


def check_classes(classes: Sequence[str], cfg: ModelConfig | None = None) -> tuple[str, ...]:
    """``--classes`` as canonical emotion names (aliases accepted) that the model outputs (when
    ``cfg`` is given)."""
    from train.data.sample import emotion_from_name  # lazy: torch is not needed for --help

    out: list[str] = []
    for c in classes:
        try:
            idx = emotion_from_name(c)
        except ValueError:
            raise ValueError(f"--classes: {c!r} is not an emotion (expected names from "
                             f"{', '.join(EMOTION_NAMES)})") from None
        if idx < 0:
            raise ValueError(f"--classes: {c!r} is not an emotion")
        name = EMOTION_NAMES[idx]
        if cfg is not None and name not in cfg.emotion_names:
            raise ValueError(f"--classes: model {cfg.model_id!r} has no {name!r} output "
                             f"(it outputs {', '.join(cfg.emotion_names)})")
        if name not in out:
            out.append(name)
    if len(out) < 2:
        raise ValueError(f"--classes: expected at least two emotions, got {out}")
    return tuple(out)


def predictions(rec: StillRecords | np.ndarray, classes: Sequence[str],
                cfg: ModelConfig) -> np.ndarray:
    """Top emotion among ``classes`` (index into ``classes``), -1 where no face was found."""
    prob = rec.emotion_prob if isinstance(rec, StillRecords) else rec
    return restricted_argmax(prob, [cfg.emotion_names.index(c) for c in classes])


def teacher_columns(classes: Sequence[str]) -> list[int]:
    """Columns of ``classes`` in a teacher's probabilities (always our EMOTION_NAMES order)."""
    return [EMOTION_NAMES.index(c) for c in classes]


def teacher_predictions(prob: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """A teacher's top emotion among ``classes`` (index into ``classes``), -1 where no face."""
    return restricted_argmax(prob, teacher_columns(classes))


def reference_aus(blendshapes: Sequence[dict[str, float] | None]) -> np.ndarray:
    """(N, A) MediaPipe-derived AU intensities (order of AU_NAMES), NaN rows where no face."""
    names = next((list(d) for d in blendshapes if d), None)
    out = np.full((len(blendshapes), len(AU_NAMES)), np.nan)
    if names is None:
        return out
    ref = BlendshapeReference(names)
    for i, d in enumerate(blendshapes):
        if d:
            out[i] = ref.intensities(d)
    return out


def au_separation(rec: StillRecords, ref_au: np.ndarray, positive: np.ndarray, au: str,
                  cfg: ModelConfig) -> dict[str, Any]:
    """AUC of one AU separating ``positive`` faces from the other faces, ours beside MediaPipe's.

    Only images with a face enter (the AUC ranks scores; a missing face has none). ``mediapipe_flat``
    flags a reference that barely moves on these faces (this MediaPipe bundle scores cheekSquint
    and noseSneer, hence AU06 and AU09, at about 0): its AUC is about 0.5 by construction.
    """
    face = rec.has_face
    j = cfg.au_names.index(au)
    r = ref_au[face, AU_NAMES.index(au)]
    pos = positive[face]
    finite = r[np.isfinite(r)]
    return {
        "n_pos": int(pos.sum()), "n_neg": int((~pos).sum()),
        "auc_prob": auc(rec.au_prob[face, j], pos),
        "auc_intensity": auc(rec.au_intensity[face, j], pos),
        "auc_mediapipe": auc(r, pos),
        "mediapipe_flat": bool(finite.size == 0 or float(finite.std()) < MIN_REF_STD),
    }


# ---- folder-per-emotion sets -----------------------------------------------------------------

@dataclass
class LabelledSet:
    """The images of a folder-per-emotion set that are scored, and what was left out."""

    name: str
    root: Path
    images: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # folder -> images left out
    skipped_why: dict[str, str] = field(default_factory=dict)


def discover_labelled(root: str | os.PathLike[str], classes: Sequence[str],
                      limit: int | None = None, name: str | None = None) -> LabelledSet:
    """Subfolders named by emotion (aliases such as ``angry`` or ``happiness`` accepted); images
    of folders outside ``classes`` or not named by an emotion are skipped and counted. ``limit``:
    at most that many images per folder (first by name), for smoke runs."""
    from train.data.sample import emotion_from_name

    r = Path(root).expanduser()
    if not r.is_dir():
        raise FileNotFoundError(f"--labelled: no such folder: {r}")
    if limit is not None and limit < 1:
        raise ValueError(f"--labelled-limit must be >= 1, got {limit}")
    out = LabelledSet(name or r.resolve().name, r)
    for sub in sorted(p for p in r.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        try:
            idx = emotion_from_name(sub.name)
        except ValueError:
            idx = -1
        if idx < 0:
            out.skipped[sub.name] = len(files)
            out.skipped_why[sub.name] = "not an emotion name"
            continue
        label = EMOTION_NAMES[idx]
        if label not in classes:
            out.skipped[sub.name] = len(files)
            out.skipped_why[sub.name] = f"{label} is not among --classes"
            continue
        files = files[:limit] if limit is not None else files
        out.images += files
        out.labels += [label] * len(files)
    if not out.images:
        raise ValueError(f"--labelled {r}: no images in subfolders named by one of the classes "
                         f"{', '.join(classes)} (found folders: "
                         f"{', '.join(sorted(out.skipped)) or 'none'})")
    return out


def labelled_metrics(lset: LabelledSet, rec: StillRecords, classes: Sequence[str],
                     cfg: ModelConfig) -> dict[str, Any]:
    """Emotion scores and AU-pattern AUCs of one scored set (unreadable files left out)."""
    ok = rec.readable
    true = np.asarray([classes.index(lab) for lab in lset.labels], np.int64)
    pred = predictions(rec, classes, cfg)
    scores = classification_scores(true[ok], pred[ok], classes)
    ref_au = reference_aus(rec.blendshapes)
    aus: dict[str, Any] = {}
    labels = np.asarray(lset.labels)
    sub = _subset(rec, ok)
    for au, emotions in AU_PATTERNS:
        wanted = [e for e in emotions if e in classes]
        if not wanted:
            continue
        aus[au] = {"rises_for": wanted,
                   **au_separation(sub, ref_au[ok], np.isin(labels[ok], wanted), au, cfg)}
    teachers: dict[str, Any] = {}
    for name, prob in rec.teacher_prob.items():
        tp = teacher_predictions(prob, classes)
        teachers[name] = {
            **classification_scores(true[ok], tp[ok], classes),
            "predicted_counts": {c: int((tp[ok] == i).sum()) for i, c in enumerate(classes)}
            | {NO_FACE: int((tp[ok] < 0).sum())}}
    return {
        "name": lset.name, "path": str(lset.root), "classes": list(classes),
        "n_unreadable": int((~ok).sum()), "unreadable": rec.errors[:20],
        "skipped": dict(lset.skipped), "skipped_why": dict(lset.skipped_why),
        **scores,
        "predicted_counts": {c: int((pred[ok] == i).sum()) for i, c in enumerate(classes)}
        | {NO_FACE: int((pred[ok] < 0).sum())},
        "au_patterns": aus,
        "teachers": teachers,
        "seconds": round(rec.seconds, 2),
    }


def _subset(rec: StillRecords, mask: np.ndarray) -> StillRecords:
    idx = np.flatnonzero(mask)
    return StillRecords(paths=[rec.paths[i] for i in idx], readable=rec.readable[idx],
                        faces_found=rec.faces_found[idx], au_intensity=rec.au_intensity[idx],
                        au_prob=rec.au_prob[idx], emotion_prob=rec.emotion_prob[idx],
                        blendshapes=[rec.blendshapes[i] for i in idx], errors=[],
                        seconds=rec.seconds,
                        teacher_prob={k: v[idx] for k, v in rec.teacher_prob.items()})


# ---- the London set's held-out people ----------------------------------------------------------

@dataclass
class LondonSet:
    """Held-out people's photos: each person's neutral photo, and the smiling one where present."""

    images: list[Path]
    labels: list[str]  # "neutral" or "happy"
    person: list[str]
    ethnicity: list[str]
    gender: list[str]
    age_group: list[str]
    people: int


def london_held_out(shared: str | os.PathLike[str] | None,
                    limit: int | None = None) -> LondonSet:
    """The London set's held-out third only (``london_people(root, "held_out")``), never the
    people that textures, calibration and training may use; ``limit``: the first N of them."""
    from train.data.london import age_group, london_people
    from train.synth.ict import shared_root

    if limit is not None and limit < 1:
        raise ValueError(f"--london-limit must be >= 1, got {limit}")
    people = london_people(shared_root(shared), split="held_out")
    if limit is not None:
        people = people[:limit]
    if not people:
        raise ValueError("--london: the London set has no held-out people")
    s = LondonSet([], [], [], [], [], [], len(people))
    for p in people:
        for path, label in ((p.neutral, "neutral"), (p.smiling, "happy")):
            if path is None:
                continue
            s.images.append(path)
            s.labels.append(label)
            s.person.append(p.id)
            s.ethnicity.append(p.ethnicity or "unknown")
            s.gender.append(p.gender or "unknown")
            s.age_group.append(age_group(p.age))
    return s


def london_metrics(ls: LondonSet, rec: StillRecords, classes: Sequence[str],
                   cfg: ModelConfig) -> dict[str, Any]:
    """Neutral read as neutral, smiling read as happy, and AU12/AU06 AUCs smiling vs neutral,
    overall and per ethnicity, gender and age group (a face not found counts as wrong)."""
    for need in ("neutral", "happy"):
        if need not in classes:
            raise ValueError(f"--london scores neutral and happy photos: --classes must include "
                             f"{need!r}, got {list(classes)}")
    pred = predictions(rec, classes, cfg)
    labels = np.asarray(ls.labels)
    ref_au = reference_aus(rec.blendshapes)
    ok = rec.readable
    tpred = {name: teacher_predictions(p, classes) for name, p in rec.teacher_prob.items()}
    i_neutral, i_happy = classes.index("neutral"), classes.index("happy")

    def group(mask: np.ndarray) -> dict[str, Any]:
        m = mask & ok
        neu, smi = m & (labels == "neutral"), m & (labels == "happy")
        sub = _subset(rec, m)
        teachers = {name: {"neutral_as_neutral": fraction(tp[neu] == i_neutral),
                           "smiling_as_happy": fraction(tp[smi] == i_happy),
                           "n_no_face": int((m & (tp < 0)).sum())}
                    for name, tp in tpred.items()}
        return {
            "people": len({ls.person[i] for i in np.flatnonzero(m)}),
            "n_neutral": int(neu.sum()), "n_smiling": int(smi.sum()),
            "n_no_face": int((m & ~rec.has_face).sum()),
            "neutral_as_neutral": fraction(pred[neu] == classes.index("neutral")),
            "smiling_as_happy": fraction(pred[smi] == classes.index("happy")),
            "aus": {au: au_separation(sub, ref_au[m], labels[m] == "happy", au, cfg)
                    for au in LONDON_AUS},
            "teachers": teachers,
        }

    everyone = np.ones(len(ls.images), bool)
    groups: dict[str, dict[str, Any]] = {}
    for key, values in (("ethnicity", ls.ethnicity), ("gender", ls.gender),
                        ("age_group", ls.age_group)):
        v = np.asarray(values)
        groups[key] = {g: group(v == g) for g in sorted(set(values))}
    return {"split": "held_out", "people": ls.people, "n_images": len(ls.images),
            "n_unreadable": int((~ok).sum()), "classes": list(classes),
            "all": group(everyone), "groups": groups, "seconds": round(rec.seconds, 2)}


# ---- labelled video segments -------------------------------------------------------------------

_SEGMENT = re.compile(r"^(?P<video>.+)@(?P<start>[0-9.]+)-(?P<end>[0-9.]+)=(?P<label>[A-Za-z]+)$")


@dataclass(frozen=True)
class SegmentSpec:
    """``VIDEO@START-END=LABEL``: seconds [START, END) of VIDEO show LABEL."""

    text: str
    video: str
    start_s: float
    end_s: float
    label: str


def parse_segment(text: str) -> SegmentSpec:
    from train.data.sample import emotion_from_name

    m = _SEGMENT.match(text.strip())
    if m is None:
        raise ValueError(f"--segment: expected VIDEO@START-END=LABEL (seconds, e.g. "
                         f"clip.mp4@0-5.5=sad), got {text!r}")
    try:
        start, end = float(m["start"]), float(m["end"])
    except ValueError:
        raise ValueError(f"--segment {text!r}: START and END must be numbers of seconds") from None
    if not end > start:
        raise ValueError(f"--segment {text!r}: END must be after START, got {start} and {end}")
    try:
        idx = emotion_from_name(m["label"])
    except ValueError:
        idx = -1
    if idx < 0:
        raise ValueError(f"--segment {text!r}: LABEL must be an emotion "
                         f"({', '.join(EMOTION_NAMES)}), got {m['label']!r}")
    return SegmentSpec(text, m["video"], start, end, EMOTION_NAMES[idx])


def resolve_video(video: str, media: Sequence[str | os.PathLike[str]]) -> Path:
    """A relative path is looked up in the ``--media`` folders (and matched against ``--media``
    files by name) first, then taken as given."""
    p = Path(video).expanduser()
    if not p.is_absolute():
        for m in media:
            mp = Path(m).expanduser()
            if mp.is_dir() and (mp / p).is_file():
                return mp / p
            if mp.is_file() and mp.name == p.name and len(p.parts) == 1:
                return mp
    if p.is_file():
        return p
    where = [str(Path(m) / p) for m in media if Path(m).is_dir()]
    raise FileNotFoundError(f"--segment: video {video!r} not found (looked in "
                            f"{', '.join(where + [str(p)])})")


@dataclass
class SegmentFrames:
    """The largest face of each frame of one segment; NaN rows where no face was found."""

    spec: SegmentSpec
    time_s: np.ndarray
    emotion_prob: np.ndarray
    au_intensity: np.ndarray
    au_prob: np.ndarray
    smile: np.ndarray  # MediaPipe's mouthSmile, mean of both corners
    teacher_prob: dict[str, np.ndarray] = field(default_factory=dict)  # (F, 8) per teacher


def segment_frames(spec: SegmentSpec, rec: MediaRecords) -> SegmentFrames:
    best = rec.largest_per_frame()
    times = np.asarray(rec.analysed_time_s, np.float64)
    in_seg = (times >= spec.start_s) & (times < spec.end_s)
    rows = [best.get(fi) for fi, inside in zip(rec.analysed_index, in_seg) if inside]
    e = len(rec.emotion_prob[0]) if rec.emotion_prob else 1
    a = len(rec.au_intensity[0]) if rec.au_intensity else 1

    def stack(values: list[np.ndarray], width: int) -> np.ndarray:
        return np.asarray([values[i] if i is not None else np.full(width, np.nan) for i in rows],
                          np.float64).reshape(len(rows), width)

    def smile(i: int | None) -> float:
        d = rec.frame_blend[i] if i is not None else None
        if not d or any(k not in d for k in SMILE_BLENDSHAPES):
            return float("nan")
        return float(np.mean([d[k] for k in SMILE_BLENDSHAPES]))

    return SegmentFrames(spec, times[in_seg], stack(rec.emotion_prob, e),
                         stack(rec.au_intensity, a), stack(rec.au_prob, a),
                         np.asarray([smile(i) for i in rows], np.float64),
                         {name: stack(v, len(EMOTION_NAMES))
                          for name, v in rec.teacher_prob.items()})


def segment_metrics(seg: SegmentFrames, classes: Sequence[str], cfg: ModelConfig,
                    video: Path) -> dict[str, Any]:
    """Frames scored, the share of frames read as each class (and as none: no face), the share
    read as the label, and mean probabilities over the frames with a face."""
    pred = predictions(seg.emotion_prob, classes, cfg)
    n = len(pred)
    face = pred >= 0
    read_as = {c: fraction(pred == i) for i, c in enumerate(classes)}
    read_as[NO_FACE] = fraction(~face)
    s = seg.spec
    teachers = {}
    for name, prob in seg.teacher_prob.items():
        tp = teacher_predictions(prob, classes)
        t_read = {c: fraction(tp == i) for i, c in enumerate(classes)} | {NO_FACE: fraction(tp < 0)}
        teachers[name] = {"read_as_label": t_read.get(s.label) if s.label in classes else None,
                          "read_as": t_read}
    return {
        "segment": s.text, "video": str(video), "start_s": s.start_s, "end_s": s.end_s,
        "label": s.label, "frames": n, "frames_with_face": int(face.sum()),
        "read_as_label": read_as.get(s.label) if s.label in classes else None,
        "read_as": read_as,
        "mean_prob": {name: (float(np.mean(seg.emotion_prob[face, j])) if face.any() else None)
                      for j, name in enumerate(cfg.emotion_names)},
        "teachers": teachers,
    }


def happy_vs_sad(segs: Sequence[SegmentFrames], cfg: ModelConfig) -> list[dict[str, Any]]:
    """For each video with exactly one happy and one sad segment: AUC of our AU12 (intensity and
    probability) separating the happy frames from the sad ones, beside MediaPipe's smile."""
    out = []
    j = cfg.au_names.index("AU12")
    for video in dict.fromkeys(s.spec.video for s in segs):
        mine = [s for s in segs if s.spec.video == video]
        happy = [s for s in mine if s.spec.label == "happy"]
        sad = [s for s in mine if s.spec.label == "sad"]
        if len(happy) != 1 or len(sad) != 1:
            continue
        h, d = happy[0], sad[0]
        pos = np.r_[np.ones(len(h.time_s), bool), np.zeros(len(d.time_s), bool)]
        hi, di = np.isfinite(h.au_intensity[:, j]), np.isfinite(d.au_intensity[:, j])
        out.append({
            "video": video, "happy_segment": h.spec.text, "sad_segment": d.spec.text,
            "n_happy": int(hi.sum()), "n_sad": int(di.sum()),
            "auc_au12_intensity": auc(np.r_[h.au_intensity[:, j], d.au_intensity[:, j]], pos),
            "auc_au12_prob": auc(np.r_[h.au_prob[:, j], d.au_prob[:, j]], pos),
            "auc_mediapipe_smile": auc(np.r_[h.smile, d.smile], pos),
        })
    return out
