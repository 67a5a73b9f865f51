"""face-api.js's expression model (npm ``@vladmandic/face-api``, MIT), run in PyTorch.

The package ships the model as a TensorFlow.js weights manifest
(``model/face_expression_model-weights_manifest.json``) and one binary file of weights, mostly
uint8-quantized. :func:`read_tfjs_weights` decodes them (value = min + scale * q, as tfjs does)
and :class:`FaceExpressionNet` runs face-api's network: four densely connected blocks of
depthwise-separable convolutions (``FaceFeatureExtractor``: ``denseBlock4`` x 4, 112 -> 7 px),
a 7x7 average pool, a fully connected layer of 256 -> 7 and a softmax. ``verify_faceapi.py``
checks the port against the package's own JavaScript on tfjs's CPU backend.

Input convention, as face-api prepares a face in Node (its tensor path): the face box is clipped
to the image and floored (``Box.clipAtImageBorders``), the pixels are cut out
(``extractFaceTensors``), padded to a square with zeros split evenly (``padToSquare``, the odd
pixel before), resized to 112x112 with ``resizeBilinear`` (no corner alignment, no half-pixel
centres), the mean RGB (122.782, 117.001, 104.298) subtracted and divided by 255. In a browser
face-api crops through a canvas instead, which resamples slightly differently.

Where the package lives: ``node_modules`` given by ``--node-modules``, else
``$NORFACE_RT_NODE_MODULES``, else ``train/teachers/js/node_modules`` (``npm install --prefix
train/teachers/js`` installs the pinned versions of ``train/teachers/js/package.json`` there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.teachers.base import Box, Teacher, TeacherInfo, TeacherUnavailable, check_image
from train.teachers.boxes import FACEAPI_BOX_RULE
from train.teachers.ops import pad_same, torch_module

FACEAPI_PACKAGE = "@vladmandic/face-api"
FACEAPI_VERSION = "1.7.15"
NODE_MODULES_ENV = "NORFACE_RT_NODE_MODULES"
JS_DIR = Path(__file__).resolve().parent / "js"
FACEAPI_INSTALL = (f"npm install --prefix {JS_DIR} (installs {FACEAPI_PACKAGE}@{FACEAPI_VERSION} "
                   f"from {JS_DIR / 'package.json'}), or point --node-modules / "
                   f"${NODE_MODULES_ENV} at a node_modules folder holding it")
MANIFEST = "model/face_expression_model-weights_manifest.json"
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 112
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACEAPI_TO_OURS = ("neutral", "happy", "sad", "anger", "fear", "disgust", "surprise")


def node_modules_dir(node_modules: str | os.PathLike[str] | None = None) -> Path:
    """The node_modules folder to look in: argument, else $NORFACE_RT_NODE_MODULES, else
    train/teachers/js/node_modules."""
    if node_modules is not None:
        return Path(node_modules).expanduser()
    if os.environ.get(NODE_MODULES_ENV):
        return Path(os.environ[NODE_MODULES_ENV]).expanduser()
    return JS_DIR / "node_modules"


def faceapi_package_dir(node_modules: str | os.PathLike[str] | None = None) -> Path:
    """The installed @vladmandic/face-api package folder (TeacherUnavailable if missing)."""
    nm = node_modules_dir(node_modules)
    pkg = nm / FACEAPI_PACKAGE
    if not (pkg / MANIFEST).is_file():
        raise TeacherUnavailable(f"teacher 'faceapi' needs the npm package {FACEAPI_PACKAGE} "
                                 f"(not found in {nm}): {FACEAPI_INSTALL}")
    return pkg


def package_version(pkg: Path) -> str:
    try:
        return str(json.loads((pkg / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


# ---- TensorFlow.js weights ---------------------------------------------------------------------

_DTYPES: dict[str, Any] = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8,
                           "uint16": np.uint16, "float16": np.float16}


def read_tfjs_weights(manifest_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every weight of a tfjs ``weights_manifest.json`` (and its binary files) as float32 arrays
    in the stored (TensorFlow, channels-last) layout, dequantized as tfjs does."""
    mpath = Path(manifest_path)
    groups = json.loads(mpath.read_text())
    if not isinstance(groups, list):
        raise ValueError(f"{mpath}: expected a list of weight groups, got {type(groups).__name__}")
    out: dict[str, np.ndarray] = {}
    for g in groups:
        buf = b"".join((mpath.parent / p).read_bytes() for p in g["paths"])
        offset = 0
        for w in g["weights"]:
            shape = tuple(int(s) for s in w["shape"])
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            stored = q["dtype"] if q else w["dtype"]
            if stored not in _DTYPES:
                raise ValueError(f"{mpath}: weight {w['name']!r} is stored as {stored!r}, "
                                 f"expected one of {sorted(_DTYPES)}")
            dt = np.dtype(_DTYPES[stored]).newbyteorder("<")
            nbytes = n * dt.itemsize
            if offset + nbytes > len(buf):
                raise ValueError(f"{mpath}: weight {w['name']!r} needs bytes {offset}.."
                                 f"{offset + nbytes} but the weight files hold {len(buf)}")
            raw = np.frombuffer(buf, dt, n, offset)
            offset += nbytes
            if q and stored in ("uint8", "uint16"):
                vals = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
            else:
                vals = raw.astype(np.float64)
            out[w["name"]] = vals.astype(np.float32).reshape(shape)
        if offset != len(buf):
            raise ValueError(f"{mpath}: the weight files hold {len(buf)} bytes, the manifest "
                             f"describes {offset}")
    return out


# ---- the network --------------------------------------------------------------------------------

class FaceExpressionNet:
    """face-api's FaceExpressionNet (FaceFeatureExtractor + fc) with weights from the manifest."""

    BLOCKS = ("dense0", "dense1", "dense2", "dense3")

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        torch = torch_module()
        self.w: dict[str, Any] = {}
        for k, v in weights.items():
            t = torch.from_numpy(np.ascontiguousarray(v))
            if k.endswith("/filters"):  # HWIO -> OIHW
                t = t.permute(3, 2, 0, 1).contiguous()
            elif k.endswith("/depthwise_filter"):  # (h, w, C, 1) -> (C, 1, h, w)
                t = t.permute(2, 3, 0, 1).contiguous()
            elif k.endswith("/pointwise_filter"):  # (1, 1, C, O) -> (O, C, 1, 1)
                t = t.permute(3, 2, 0, 1).contiguous()
            self.w[k] = t
        need = ["dense0/conv0/filters", "dense0/conv0/bias", "fc/weights", "fc/bias"]
        for b in self.BLOCKS:
            for i in range(4):
                if b == "dense0" and i == 0:
                    continue
                need += [f"{b}/conv{i}/{p}" for p in ("depthwise_filter", "pointwise_filter",
                                                       "bias")]
        missing = [k for k in need if k not in self.w]
        if missing:
            raise ValueError(f"face expression weights lack {missing[:4]} "
                             f"({len(missing)} missing)")
        if tuple(self.w["fc/weights"].shape) != (256, 7):
            raise ValueError(f"fc/weights must be (256, 7), got {tuple(self.w['fc/weights'].shape)}")

    def _sep(self, x: Any, prefix: str, stride: int) -> Any:
        F = torch_module().nn.functional
        dw = self.w[f"{prefix}/depthwise_filter"]
        y = F.conv2d(pad_same(x, (3, 3), (stride, stride)), dw, None, stride=stride, groups=int(dw.shape[0]))
        return F.conv2d(y, self.w[f"{prefix}/pointwise_filter"], self.w[f"{prefix}/bias"])

    def _block(self, x: Any, name: str, first: bool) -> Any:
        torch = torch_module()
        F = torch.nn.functional
        if first:
            out1 = torch.relu(F.conv2d(pad_same(x, (3, 3), (2, 2)), self.w[f"{name}/conv0/filters"],
                                       self.w[f"{name}/conv0/bias"], stride=2))
        else:
            out1 = torch.relu(self._sep(x, f"{name}/conv0", 2))
        out2 = self._sep(out1, f"{name}/conv1", 1)
        in3 = torch.relu(out1 + out2)
        out3 = self._sep(in3, f"{name}/conv2", 1)
        in4 = torch.relu(out1 + (out2 + out3))
        out4 = self._sep(in4, f"{name}/conv3", 1)
        return torch.relu(out1 + (out2 + (out3 + out4)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) normalized input (:func:`faceapi_inputs`) -> (N, 7) probabilities."""
        torch = torch_module()
        arr = np.asarray(x, np.float32)
        if arr.ndim != 4 or arr.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"input must be (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got {arr.shape}")
        with torch.no_grad():
            y = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
            for i, b in enumerate(self.BLOCKS):
                y = self._block(y, b, first=i == 0)
            y = torch.nn.functional.avg_pool2d(y, 7, 2)  # 'valid': 7x7 -> 1x1
            y = y.permute(0, 2, 3, 1).reshape(len(arr), -1)
            logits = y @ self.w["fc/weights"] + self.w["fc/bias"]
            return np.asarray(torch.softmax(logits, dim=1).numpy(), np.float32)


# ---- input preparation --------------------------------------------------------------------------

def clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """face-api's ``Box.clipAtImageBorders``: (x, y, w, h) clipped to the image and floored."""
    x, y = max(box.x0, 0.0), max(box.y0, 0.0)
    w = min(box.x1 - x, width - x)
    h = min(box.y1 - y, height - y)
    return int(np.floor(x)), int(np.floor(y)), int(np.floor(w)), int(np.floor(h))


def pad_to_square(face: np.ndarray) -> np.ndarray:
    """face-api's ``padToSquare(x, isCenterImage=true)``: zeros, round(diff / 2) after, the rest
    before."""
    h, w = face.shape[:2]
    if h == w:
        return face
    diff = abs(h - w)
    after = int(np.floor(diff * 0.5 + 0.5))  # JavaScript Math.round of a non-negative number
    before = diff - after
    pad = ((0, 0), (before, after), (0, 0)) if h > w else ((before, after), (0, 0), (0, 0))
    return np.pad(face, pad)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=false) as tfjs's CPU kernel
    computes it: source coordinate = destination * (in / out), interpolated in double precision
    (JavaScript numbers), stored as float32."""
    h, w = image.shape[:2]
    img = image.astype(np.float64)

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size, dtype=np.float64) * (n_in / size)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(np.ceil(src).astype(np.int64), n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * fx[None, :, None]
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * fx[None, :, None]
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


def faceapi_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The face's pixels as face-api cuts them (``extractFaceTensors``), uint8."""
    check_image(image)
    x, y, w, h = clip_box(box, image.shape[1], image.shape[0])
    if w <= 0 or h <= 0:
        raise ValueError(f"faceapi: box {box.as_list()} lies outside the {image.shape[1]}x"
                         f"{image.shape[0]} image")
    return image[y:y + h, x:x + w]


def faceapi_inputs(faces: Sequence[np.ndarray]) -> np.ndarray:
    """Cut faces (HxWx3) -> (N, 112, 112, 3) network inputs (padToSquare, resizeBilinear,
    mean subtraction, / 255)."""
    out = np.empty((len(faces), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    for i, f in enumerate(faces):
        sq = pad_to_square(np.asarray(f))
        img = (resize_bilinear(sq, INPUT_SIZE) if sq.shape[0] != INPUT_SIZE
               else sq.astype(np.float32))
        out[i] = (img - np.asarray(MEAN_RGB, np.float32)) / np.float32(255.0)
    return out


class FaceApiTeacher(Teacher):
    """face-api.js's FaceExpressionNet (MIT), ported to PyTorch."""

    port_version = 1

    def __init__(self, node_modules: str | os.PathLike[str] | None = None) -> None:
        pkg = faceapi_package_dir(node_modules)
        self.package_dir = pkg
        self.net = FaceExpressionNet(read_tfjs_weights(pkg / MANIFEST))
        self.rule = FACEAPI_BOX_RULE
        self.box_version = self.rule.version
        self.info = TeacherInfo(
            name="faceapi",
            title="face-api.js FaceExpressionNet (@vladmandic/face-api)",
            licence=f"MIT ({FACEAPI_PACKAGE} LICENSE; originally face-api.js by Vincent Mühler, "
                    "MIT)",
            package=f"npm {FACEAPI_PACKAGE}",
            version=package_version(pkg),
            weights=f"{FACEAPI_PACKAGE}/{MANIFEST} + face_expression_model.bin",
            trained_on=("\"a variety of images from publicly available datasets as well as images "
                        "scraped from the web\" (the package's TUTORIAL.md, face expression "
                        "recognition model); the datasets are not named"),
            classes=FACEAPI_CLASSES,
            to_ours=FACEAPI_TO_OURS,
            input=("112x112 RGB: box clipped and floored, zero-padded to a square, tfjs "
                   "resizeBilinear, minus mean RGB (122.782, 117.001, 104.298), / 255"),
            box_rule=self.rule.describe())

    def box(self, landmarks: np.ndarray, image_shape: tuple[int, ...]) -> Box:
        return self.rule.box(landmarks, image_shape)

    def predict_raw(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        return self.net(faceapi_inputs([faceapi_crop(image, b) for b in boxes]))
