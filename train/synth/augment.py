"""Backgrounds and image degradations for synthetic originals (never for the normalized target).

Every function takes the numpy ``Generator`` it may draw from, so a sample is a pure function of
its seed. Degradations happen on the full render, before alignment, like real camera artefacts.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def load_backgrounds(directory: str | os.PathLike[str] | None, size: int) -> list[np.ndarray]:
    """Background photos as RGB uint8, shortest side resized to ``1.5 * size`` (room to crop)."""
    if directory is None:
        return []
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"background directory not found: {d}")
    out = []
    for p in sorted(d.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"background image could not be decoded: {p}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        s = 1.5 * size / min(img.shape[:2])
        out.append(cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
    return out


def photo_background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    img = photos[int(rng.integers(len(photos)))]
    side = max(8, int(rng.uniform(0.55, 1.0) * min(img.shape[:2])))
    y = int(rng.integers(0, img.shape[0] - side + 1))
    x = int(rng.integers(0, img.shape[1] - side + 1))
    crop = cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.6, 1.2) * rng.uniform(0.9, 1.1, 3)
    return np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Flat colour, gradient, smooth blobs or clutter rectangles: cheap and endless."""
    kind = int(rng.integers(4))
    c0 = rng.uniform(0, 255, 3)
    img: np.ndarray
    if kind == 0:
        img = np.broadcast_to(c0, (size, size, 3)).astype(np.float32)
    elif kind == 1:
        c1 = rng.uniform(0, 255, 3)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = np.clip((np.cos(ang) * xx + np.sin(ang) * yy), 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
    elif kind == 2:
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        img = np.broadcast_to(c0, (size, size, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(3, 12))):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 16, size // 2, 2)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)),
                          tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 3.0)))
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + background.astype(np.float32) * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def occlude(rng: np.random.Generator, img: np.ndarray, face_box: tuple[float, float, float, float],
            photos: list[np.ndarray]) -> np.ndarray:
    """Cover part of the face (hand-, object- or bar-like shape) without hiding all of it.

    The occluder area is at most about a quarter of the face box, so the expression labels,
    which are kept, stay mostly observable.
    """
    x0, y0, x1, y1 = face_box
    fw, fh = x1 - x0, y1 - y0
    out = img.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    cx = rng.uniform(x0, x1)
    cy = rng.uniform(y0, y1)
    kind = int(rng.integers(3))
    if kind == 0:  # ellipse (hand, cup, microphone)
        ax = (max(2, int(fw * rng.uniform(0.12, 0.3))), max(2, int(fh * rng.uniform(0.12, 0.3))))
        cv2.ellipse(mask, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif kind == 1:  # rectangle entering from a side (object in front of the face)
        w, h = fw * rng.uniform(0.2, 0.5), fh * rng.uniform(0.15, 0.35)
        cv2.rectangle(mask, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)),
                      255, -1)
    else:  # bar (glasses frame, hair strand, scarf edge)
        ang = rng.uniform(-0.5, 0.5)
        dx, dy = np.cos(ang) * fw * 0.6, np.sin(ang) * fw * 0.6
        thick = max(2, int(fh * rng.uniform(0.03, 0.1)))
        cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, thick)
    if photos and rng.random() < 0.6:
        fill = photo_background(rng, photos, img.shape[0])
    else:
        col = rng.uniform(0, 255, 3)
        shade = cv2.GaussianBlur(rng.normal(0, 12, img.shape[:2]).astype(np.float32), (0, 0), 4)
        fill = np.clip(col[None, None] + shade[..., None], 0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.8)[..., None]
    out = out.astype(np.float32) * (1 - soft) + fill.astype(np.float32) * soft
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Blur (defocus or motion), resolution loss, sensor noise and JPEG artefacts."""
    out = img
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.3, 1.6)))
    elif rng.random() < 0.12:
        k = int(rng.integers(3, 9))
        kernel: np.ndarray = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        m = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, m, (k, k))
        kernel = (kernel / max(float(kernel.sum()), 1e-6)).astype(np.float32)
        out = cv2.filter2D(out, -1, kernel)
    if rng.random() < 0.2:
        s = float(rng.uniform(0.35, 0.8))
        h, w = out.shape[:2]
        small = cv2.resize(out, (max(8, int(w * s)), max(8, int(h * s))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.4:
        sigma = float(rng.uniform(1.0, 8.0))
        noise = rng.normal(0, sigma, out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        q = int(rng.integers(30, 96))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = decoded[..., ::-1]
    return np.ascontiguousarray(out)
