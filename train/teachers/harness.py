"""Running teachers over a folder of images or a training shard, with a label cache.

Faces are found by MediaPipe as the runtime finds them in stills (image mode, full-window tiling,
:func:`norface_rt.pipeline.factory.build_face_stage`'s settings); the largest face of each image
is labelled. An image whose shorter side is under :data:`MIN_SIDE` px (the 112-px aligned crops
of the training shards) is upscaled for MediaPipe only, whose detector is unreliable on small
images; the landmarks are scaled back and the teachers crop from the original pixels.

The cache (:class:`LabelCache`, one SQLite file) is keyed by the SHA-256 of the image content
(the file's bytes for a folder, the pixel array for a shard sample), so a renamed or copied file
is not labelled twice and a rerun only labels what is new. MediaPipe's landmarks are cached once
per image and shared by the teachers; each label is stored under the teacher's ``cache_id``
(package version, port and box-rule versions), so changing any of them relabels.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from norface_rt.config import EMOTION_NAMES
from train.teachers.base import Box, Teacher, TeacherInfo

MIN_SIDE = 256
ALIGNED_SUFFIX = "/aligned-median"
MAX_FACES = 4
CACHE_FILE = "teachers.sqlite"
SHARD_GLOB = "shard-*.npz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_key(image: np.ndarray) -> str:
    """Content key of a pixel array (shape and bytes)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def file_key(path: Path) -> str:
    """Content key of an image file (its bytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- inputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One image to label: where it comes from (``ref``: a path, or ``shard.npz#row``), the shard
    sample's own key where it has one, and how to get its pixels."""

    ref: str
    sample_key: str
    load: Callable[[], np.ndarray]
    key_of: Callable[[], str]


def is_shard_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob(SHARD_GLOB))


def folder_items(root: Path) -> list[Item]:
    """Every image file under ``root`` (recursive, sorted by path)."""
    from norface_rt.images import read_rgb

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [Item(str(p), "", partial(read_rgb, p), partial(file_key, p)) for p in files]


def shard_items(root: Path) -> Iterator[Item]:
    """Every sample of a shard folder (train/data/shards.py format), shard by shard."""
    for f in sorted(root.glob(SHARD_GLOB)):
        with np.load(f, allow_pickle=False) as z:
            if "image" not in z.files:
                raise ValueError(f"{f}: a training shard must hold an 'image' array (has "
                                 f"{sorted(z.files)})")
            images = np.asarray(z["image"])
            keys = [str(k) for k in z["key"]] if "key" in z.files else [""] * len(images)
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{f}: 'image' must be (N, S, S, 3) uint8, got {images.dtype} "
                             f"{images.shape}")
        for i in range(len(images)):
            img = images[i]
            yield Item(f"{f.name}#{i}", keys[i], partial(np.ascontiguousarray, img),
                       partial(image_key, img))


def input_items(path: str | os.PathLike[str]) -> tuple[str, list[Item]]:
    """("shards" | "folder", items) of one ``--input``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--input: no such folder: {p}")
    if is_shard_dir(p):
        return "shards", list(shard_items(p))
    if not p.is_dir():
        raise ValueError(f"--input must be a folder of images or of {SHARD_GLOB} shards, got {p}")
    items = folder_items(p)
    if not items:
        raise ValueError(f"--input {p}: no images ({', '.join(IMAGE_SUFFIXES)}) and no "
                         f"{SHARD_GLOB} shards")
    return "folder", items


# ---- faces --------------------------------------------------------------------------------------

def finder_id(landmarker: Path, max_faces: int = MAX_FACES) -> str:
    """What a cached face depends on: the landmarker file's content and the settings."""
    digest = hashlib.sha256(landmarker.read_bytes()).hexdigest()[:16]
    return f"mediapipe:{digest}/image/tiling1.0/max{max_faces}/min{MIN_SIDE}"


class FaceFinder:
    """MediaPipe landmarks of the largest face of a still (None when there is none)."""

    def __init__(self, landmarker: str | os.PathLike[str] | None = None,
                 max_faces: int = MAX_FACES) -> None:
        from norface_rt.faces.landmarker import Landmarker
        from norface_rt.paths import resolve_landmarker

        self.path = resolve_landmarker(landmarker)
        self._lm = Landmarker(self.path, max_faces=max_faces, mode="image", tiling=1.0)
        self.cache_id = finder_id(self.path, max_faces)

    def find(self, image: np.ndarray) -> tuple[int, np.ndarray | None]:
        """(faces found, landmarks (478, 3) of the largest in the image's pixels or None)."""
        from norface_rt.types import FramePacket

        h, w = image.shape[:2]
        scale = max(1.0, MIN_SIDE / min(h, w))
        src = image if scale == 1.0 else cv2.resize(
            image, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC)
        faces = self._lm.detect(FramePacket("teachers", 0, np.ascontiguousarray(src), None, 0.0))
        if not faces:
            return 0, None
        big = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        lm = np.asarray(big.landmarks, np.float32).copy()
        if scale != 1.0:  # pixel-centre convention: (x + 0.5) / s - 0.5
            lm[:, :2] = (lm[:, :2] + 0.5) / scale - 0.5
            lm[:, 2] = lm[:, 2] / scale
        return len(faces), lm

    def close(self) -> None:
        self._lm.close()


# ---- the cache ----------------------------------------------------------------------------------

class LabelCache:
    """Faces and soft labels keyed by image content; one SQLite file in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_FILE
        self._db = sqlite3.connect(self.path)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS faces (key TEXT NOT NULL, finder TEXT NOT NULL, "
            "n_faces INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL, "
            "landmarks BLOB, PRIMARY KEY (key, finder));"
            "CREATE TABLE IF NOT EXISTS labels (key TEXT NOT NULL, teacher TEXT NOT NULL, "
            "prob BLOB NOT NULL, box TEXT NOT NULL, PRIMARY KEY (key, teacher));")

    def face(self, key: str, finder: str) -> tuple[int, tuple[int, int], np.ndarray | None] | None:
        row = self._db.execute("SELECT n_faces, height, width, landmarks FROM faces WHERE key=? "
                               "AND finder=?", (key, finder)).fetchone()
        if row is None:
            return None
        lm = None if row[3] is None else np.frombuffer(row[3], np.float32).reshape(-1, 3).copy()
        return int(row[0]), (int(row[1]), int(row[2])), lm

    def put_face(self, key: str, finder: str, n_faces: int, shape: tuple[int, int],
                 landmarks: np.ndarray | None) -> None:
        blob = None if landmarks is None else np.asarray(landmarks, np.float32).tobytes()
        self._db.execute("INSERT OR REPLACE INTO faces VALUES (?, ?, ?, ?, ?, ?)",
                         (key, finder, int(n_faces), int(shape[0]), int(shape[1]), blob))

    def label(self, key: str, teacher: str) -> tuple[np.ndarray, Box] | None:
        row = self._db.execute("SELECT prob, box FROM labels WHERE key=? AND teacher=?",
                               (key, teacher)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], np.float32).copy(), Box(*json.loads(row[1]))

    def put_label(self, key: str, teacher: str, prob: np.ndarray, box: Box) -> None:
        self._db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                         (key, teacher, np.asarray(prob, np.float32).tobytes(),
                          json.dumps(box.as_list())))

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT teacher, COUNT(*) FROM labels GROUP BY teacher").fetchall()
        return {str(t): int(n) for t, n in rows}

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()


# ---- labels -------------------------------------------------------------------------------------

@dataclass
class LabelTable:
    """Soft labels of a list of images: one row per image, NaN rows where no face was found."""

    refs: list[str]
    sample_keys: list[str]
    keys: list[str]
    faces_found: np.ndarray  # (N,) int
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # teacher -> (N, 8)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # teacher -> (N, 4) x0 y0 x1 y1
    infos: dict[str, TeacherInfo] = field(default_factory=dict)
    cached: int = 0  # labels read from the cache (not computed)
    computed: int = 0

    def __len__(self) -> int:
        return len(self.refs)

    def ensemble(self) -> np.ndarray:
        return ensemble_mean(self.probs, self.infos)

    def agreement(self, min_confidence: float = 0.0) -> np.ndarray:
        return agreement(self.probs, min_confidence=min_confidence)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One .npz: refs, keys, faces_found, prob_<teacher>, box_<teacher>, ensemble, agree,
        emotion_names, and each teacher's record as JSON (``teachers``)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "ref": np.asarray(self.refs, dtype=np.str_),
            "sample_key": np.asarray(self.sample_keys, dtype=np.str_),
            "content_key": np.asarray(self.keys, dtype=np.str_),
            "faces_found": self.faces_found,
            "emotion_names": np.asarray(EMOTION_NAMES, dtype=np.str_),
            "ensemble": self.ensemble(),
            "agree": self.agreement(),
            "teachers": np.asarray(json.dumps({k: asdict(v) for k, v in self.infos.items()})),
        }
        for name in self.probs:
            arrays[f"prob_{name}"] = self.probs[name]
            arrays[f"box_{name}"] = self.boxes[name]
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        return out


def concat_tables(tables: Sequence[LabelTable]) -> LabelTable:
    """Several inputs' tables as one (same teachers, rows in order)."""
    if not tables:
        raise ValueError("concat_tables: no tables")
    names = list(tables[0].probs)
    for t in tables[1:]:
        if list(t.probs) != names:
            raise ValueError(f"tables have different teachers: {names} vs {list(t.probs)}")
    return LabelTable(
        [r for t in tables for r in t.refs], [k for t in tables for k in t.sample_keys],
        [k for t in tables for k in t.keys], np.concatenate([t.faces_found for t in tables]),
        {n: np.concatenate([t.probs[n] for t in tables]) for n in names},
        {n: np.concatenate([t.boxes[n] for t in tables]) for n in names},
        dict(tables[0].infos), sum(t.cached for t in tables), sum(t.computed for t in tables))


def ensemble_mean(probs: Mapping[str, np.ndarray],
                  infos: Mapping[str, TeacherInfo] | None = None) -> np.ndarray:
    """(N, 8) mean of the teachers' probabilities. Each emotion is averaged over the teachers
    that have a class for it (``infos``; without them every teacher counts for every class), and
    each row is renormalised to sum to 1; NaN rows where no teacher has a face."""
    if not probs:
        raise ValueError("ensemble_mean: no teachers given")
    stack = np.stack([np.asarray(p, np.float64) for p in probs.values()])  # (T, N, 8)
    if stack.shape[2] != len(EMOTION_NAMES):
        raise ValueError(f"teacher probabilities must be (N, {len(EMOTION_NAMES)}), got "
                         f"{stack.shape[1:]}")
    covers = np.ones((len(probs), len(EMOTION_NAMES)), bool)
    if infos is not None:
        for t, name in enumerate(probs):
            covers[t] = infos[name].column_of_ours >= 0
    valid = np.asarray(np.isfinite(stack).all(axis=2), bool)  # (T, N)
    w = (valid[:, :, None] & covers[:, None, :]).astype(np.float64)
    num = np.where(w > 0, np.nan_to_num(stack), 0.0).sum(0)
    den = w.sum(0)
    mean = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    total = mean.sum(1, keepdims=True)
    out = np.divide(mean, total, out=np.full_like(mean, np.nan), where=total > 0)
    out[~valid.any(0)] = np.nan
    return out.astype(np.float32)


def agreement(probs: Mapping[str, np.ndarray], min_confidence: float = 0.0) -> np.ndarray:
    """(N,) True where every teacher found the face, all teachers' top emotions are the same and
    each gives it at least ``min_confidence`` (an agreement filter for soft labels)."""
    if not probs:
        raise ValueError("agreement: no teachers given")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    stack = np.stack([np.asarray(p, np.float64) for p in probs.values()])
    valid = np.isfinite(stack).all(2).all(0)
    top = np.nan_to_num(stack, nan=-1.0).argmax(2)  # (T, N)
    same = (top == top[:1]).all(0)
    conf = np.take_along_axis(np.nan_to_num(stack), top[:, :, None], 2)[:, :, 0].min(0)
    return valid & same & (conf >= min_confidence)


class TeacherLabeler:
    """Labels images with teachers, through the cache (module docstring)."""

    def __init__(self, teachers: Sequence[Teacher], cache: LabelCache,
                 landmarker: str | os.PathLike[str] | None = None) -> None:
        self._shared_lm: np.ndarray | None = None
        if not teachers:
            raise ValueError("TeacherLabeler needs at least one teacher")
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teachers given twice: {names}")
        self.teachers = list(teachers)
        self.cache = cache
        self._landmarker = landmarker
        self._finder: FaceFinder | None = None
        self._finder_id: str | None = None

    @property
    def finder(self) -> FaceFinder:
        if self._finder is None:
            self._finder = FaceFinder(self._landmarker)
            self._finder_id = self._finder.cache_id
        return self._finder

    @property
    def finder_id(self) -> str:
        if self._finder_id is None:
            from norface_rt.paths import resolve_landmarker

            self._finder_id = finder_id(resolve_landmarker(self._landmarker))
        return self._finder_id

    def use_aligned_landmarks(self, items: Sequence[Item], sample: int = 32) -> np.ndarray:
        """For shards of aligned crops (every face framed the same way by the runtime's
        five-point alignment): MediaPipe reads the first ``sample`` crops once, and their median
        landmarks frame every crop of the input, so each teacher crops the same box everywhere.
        Why: finding the face again in each crop costs most of the labelling time and changes
        the box by a few pixels at most. Labels made this way are cached apart
        (:data:`ALIGNED_SUFFIX`)."""
        found = []
        for it in items[:sample]:
            n_faces, lm = self.finder.find(it.load())
            if lm is not None:
                found.append(lm)
        if len(found) < max(1, min(sample, len(items)) // 2):
            raise ValueError(f"aligned crops: MediaPipe found a face in only {len(found)} of the "
                             f"first {min(sample, len(items))} crops; are these aligned face crops?")
        self._shared_lm = np.median(np.stack(found), axis=0).astype(np.float32)
        return self._shared_lm

    def label(self, items: Sequence[Item], progress: Callable[[int, int], None] | None = None,
              commit_every: int = 200) -> LabelTable:
        n = len(items)
        shared = self._shared_lm
        suffix = ALIGNED_SUFFIX if shared is not None else ""
        table = LabelTable([it.ref for it in items], [it.sample_key for it in items], [],
                           np.zeros(n, np.int64),
                           {t.name: np.full((n, len(EMOTION_NAMES)), np.nan, np.float32)
                            for t in self.teachers},
                           {t.name: np.full((n, 4), np.nan, np.float32) for t in self.teachers},
                           {t.name: t.info for t in self.teachers})
        for i, it in enumerate(items):
            key = it.key_of()
            table.keys.append(key)
            hits = {t.name: self.cache.label(key, t.cache_id + suffix) for t in self.teachers}
            image: np.ndarray | None = None
            face: tuple[int, tuple[int, int], np.ndarray | None] | None
            if shared is not None:
                face = (1, (0, 0), shared)
            else:
                face = self.cache.face(key, self.finder_id)
            if face is None:
                image = it.load()
                n_faces, lm = self.finder.find(image)
                face = (n_faces, (int(image.shape[0]), int(image.shape[1])), lm)
                self.cache.put_face(key, self.finder_id, n_faces, face[1], lm)
            n_faces, _, lm = face
            table.faces_found[i] = n_faces
            if lm is None:
                continue
            for t in self.teachers:
                hit = hits[t.name]
                if hit is None:
                    if image is None:
                        image = it.load()
                    prob, box = t.label(image, lm)
                    self.cache.put_label(key, t.cache_id + suffix, prob, box)
                    table.computed += 1
                else:
                    prob, box = hit
                    table.cached += 1
                table.probs[t.name][i] = prob
                table.boxes[t.name][i] = box.as_list()
            if (i + 1) % commit_every == 0:
                self.cache.commit()
            if progress is not None:
                progress(i + 1, n)
        self.cache.commit()
        return table

    def close(self) -> None:
        if self._finder is not None:
            self._finder.close()
            self._finder = None


def summary(table: LabelTable) -> dict[str, Any]:
    """Counts for the log: images, faces, each teacher's top emotions, the agreement rate."""
    face = table.faces_found > 0
    out: dict[str, Any] = {"images": len(table), "with_face": int(face.sum()),
                           "labels_cached": table.cached, "labels_computed": table.computed,
                           "top": {}}
    for name, p in table.probs.items():
        top = np.nan_to_num(p, nan=-1.0).argmax(1)
        out["top"][name] = {e: int((top[face] == j).sum()) for j, e in enumerate(EMOTION_NAMES)
                            if (top[face] == j).any()}
    if len(table.probs) > 1:
        out["agree"] = int(table.agreement().sum())
    return out


def timed_progress(label: str, every: int = 100) -> Callable[[int, int], None]:
    t0 = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"teachers: {label}: {done}/{total} ({rate:.1f} images/s)", flush=True)

    return report
