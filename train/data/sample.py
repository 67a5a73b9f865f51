"""The common training sample format and the label vocabulary every adapter maps onto.

A sample is a plain dict (see docs/datasets.md):
  image (S,S,3) uint8 RGB aligned I_o; au_occurrence (A,) float32 {0,1}/NaN; au_intensity (A,)
  float32 [0,5]/NaN; emotion int64 (-1 unknown); optional normalized, landmarks (68,2),
  normalized_landmarks (68,2), blendshapes (K,) (ICT expression weights of a render),
  mp_blendshapes (G,) (what MediaPipe reads on the face: a model's geometry input; NaN when
  MediaPipe found no face), mp_neutral (G,) (the same for the same person's neutral face, renders
  only); subject, source, key (str).
Masks come from NaN / -1, so one network carries all heads and single-task data still trains it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.preprocess import normalize_pixels

NUM_AUS = len(AU_NAMES)
NUM_EMOTIONS = len(EMOTION_NAMES)
UNKNOWN_EMOTION = -1

REQUIRED_KEYS = ("image", "au_occurrence", "au_intensity", "emotion", "subject", "source", "key")
OPTIONAL_ARRAY_KEYS = ("normalized", "landmarks", "normalized_landmarks", "blendshapes",
                       "mp_blendshapes", "mp_neutral", "teacher_emotion")
STRING_KEYS = ("subject", "source", "key")


def au_name(number: int) -> str:
    """FACS AU number -> the project's name ("AU01")."""
    return f"AU{int(number):02d}"


def au_index(number: int | str) -> int:
    """Position of an AU (number, "AU1", "AU01" or "1") in :data:`AU_NAMES`."""
    s = str(number).strip().upper()
    if s.startswith("AU"):
        s = s[2:]
    try:
        name = au_name(int(s))
    except ValueError:
        raise ValueError(f"not an AU identifier: {number!r}") from None
    if name not in AU_NAMES:
        raise ValueError(f"{name} is not one of the project's AUs {AU_NAMES}")
    return AU_NAMES.index(name)


def au_vector(values: Mapping[int, float] | Mapping[str, float] | None = None) -> np.ndarray:
    """(A,) float32 vector, NaN everywhere except the given AUs."""
    out = np.full(NUM_AUS, np.nan, dtype=np.float32)
    for k, v in (values or {}).items():
        out[au_index(k)] = np.float32(v)
    return out


def au_mask(numbers: Iterable[int]) -> np.ndarray:
    """(A,) bool mask of the given AU numbers (a protocol's evaluated AUs)."""
    m = np.zeros(NUM_AUS, dtype=bool)
    for n in numbers:
        m[au_index(n)] = True
    return m


def validate_sample(sample: Mapping[str, Any], img_size: int | None = None) -> None:
    """Raise ValueError naming the field and the expected vs actual value when malformed."""
    for k in REQUIRED_KEYS:
        if k not in sample:
            raise ValueError(f"sample is missing field {k!r} (has {sorted(sample)})")
    img = sample["image"]
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be uint8 (S, S, 3), got {getattr(img, 'dtype', type(img))} "
                         f"{getattr(img, 'shape', None)}")
    if img.shape[0] != img.shape[1] or (img_size is not None and img.shape[0] != img_size):
        raise ValueError(f"image must be ({img_size or 'S'}, {img_size or 'S'}, 3), got {img.shape}")
    for k in ("au_occurrence", "au_intensity"):
        a = sample[k]
        if not isinstance(a, np.ndarray) or a.shape != (NUM_AUS,) or a.dtype != np.float32:
            raise ValueError(f"{k} must be float32 ({NUM_AUS},), got {getattr(a, 'dtype', type(a))} "
                             f"{getattr(a, 'shape', None)}")
    occ = sample["au_occurrence"]
    if np.any((occ[~np.isnan(occ)] != 0) & (occ[~np.isnan(occ)] != 1)):
        raise ValueError(f"au_occurrence values must be 0, 1 or NaN, got {np.unique(occ).tolist()}")
    inten = sample["au_intensity"][~np.isnan(sample["au_intensity"])]
    if np.any((inten < 0) | (inten > 5)):
        raise ValueError(f"au_intensity values must lie in [0, 5] or be NaN, got {inten.tolist()}")
    emo = int(sample["emotion"])
    if not (emo == UNKNOWN_EMOTION or 0 <= emo < NUM_EMOTIONS):
        raise ValueError(f"emotion must be -1 or in [0, {NUM_EMOTIONS}), got {emo}")
    for k in ("landmarks", "normalized_landmarks"):
        if k in sample and np.asarray(sample[k]).shape != (68, 2):
            raise ValueError(f"{k} must be (68, 2), got {np.asarray(sample[k]).shape}")
    if "normalized" in sample and np.asarray(sample["normalized"]).shape != img.shape:
        raise ValueError(f"normalized must have the image shape {img.shape}, "
                         f"got {np.asarray(sample['normalized']).shape}")
    for k in STRING_KEYS:
        if not isinstance(sample[k], str):
            raise ValueError(f"{k} must be str, got {type(sample[k]).__name__}")


def images_to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B,S,S,3) uint8 -> (B,3,S,S) float32, through serving's own preprocessing
    (:func:`norface_rt.preprocess.normalize_pixels`), so training sees exactly the numbers the
    runtime feeds the network."""
    return torch.from_numpy(normalize_pixels(images, mean, std))


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: arrays become tensors (uint8 images stay uint8), strings lists.

    Optional fields are kept only if every sample has them, plus a ``has_<field>`` bool mask so
    mixed batches (synthetic pairs with real photos) know which rows carry the field.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    batch: dict[str, Any] = {}
    batch["image"] = torch.from_numpy(np.stack([s["image"] for s in samples]))
    batch["au_occurrence"] = torch.from_numpy(np.stack([s["au_occurrence"] for s in samples]))
    batch["au_intensity"] = torch.from_numpy(np.stack([s["au_intensity"] for s in samples]))
    batch["emotion"] = torch.tensor([int(s["emotion"]) for s in samples], dtype=torch.int64)
    for k in STRING_KEYS:
        batch[k] = [str(s[k]) for s in samples]
    for k in OPTIONAL_ARRAY_KEYS:
        present = [k in s for s in samples]
        if not any(present):
            continue
        ref = next(np.asarray(s[k]) for s in samples if k in s)
        rows = [np.asarray(s[k]) if k in s else np.zeros_like(ref) for s in samples]
        batch[k] = torch.from_numpy(np.stack(rows))
        batch[f"has_{k}"] = torch.tensor(present, dtype=torch.bool)
    return batch


def emotion_from_name(name: str) -> int:
    """Emotion name (case-insensitive; 'happiness' etc. accepted) -> index, -1 for unknown."""
    aliases = {"happiness": "happy", "sadness": "sad", "surprised": "surprise", "angry": "anger",
               "disgusted": "disgust", "fearful": "fear"}
    n = aliases.get(name.strip().lower(), name.strip().lower())
    if n in ("", "unknown", "none", "-1"):
        return UNKNOWN_EMOTION
    if n not in EMOTION_NAMES:
        raise ValueError(f"emotion must be one of {EMOTION_NAMES}, got {name!r}")
    return EMOTION_NAMES.index(n)

