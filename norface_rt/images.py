"""Image checks and image files: the one place that decides what a valid frame is and how an
image file becomes pixels.

Every stage exchanges frames as HxWx3 uint8 RGB arrays (:func:`check_rgb_image` says so with the
same words everywhere); files are read with OpenCV (EXIF orientation honoured; grey, palette,
alpha and 16-bit images all become 8-bit RGB) through :func:`read_rgb`, and aligned face crops
such as a model set's target identity through :func:`load_aligned_crop`.

Reading a file is bounded before it costs anything: its size first (:func:`max_file_bytes` of
the pixel cap), then its width and height from the header (Pillow reads the header only), so a
600 KB PNG that declares 200 megapixels is refused before OpenCV allocates 600 MB for it; any
error of the decoder becomes a ValueError naming the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from norface_rt.files import DEFAULT_MAX_PIXELS, display_path, max_file_bytes


def check_rgb_image(image: Any, name: str = "image") -> np.ndarray:
    """``image`` itself when it is an HxWx3 uint8 array with H, W >= 1; else ValueError naming
    ``name`` and what was passed instead."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected an HxWx3 uint8 RGB array, got {type(image).__name__}")
    if (image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
            or image.shape[0] < 1 or image.shape[1] < 1):
        raise ValueError(f"{name}: expected an HxWx3 uint8 RGB array, got {image.dtype} array of "
                         f"shape {image.shape}{_rgb_hint(image)}")
    return image


def _rgb_hint(image: np.ndarray) -> str:
    """What is wrong with a rejected array, in the words of the fix (dtype, rank, channels)."""
    if image.ndim == 2:
        return " (one channel: a grey image? np.stack([image] * 3, axis=-1) makes it RGB)"
    if image.ndim != 3:
        return f" ({image.ndim} dimensions: expected height x width x channels)"
    if image.shape[2] == 4:
        return " (4 channels: RGBA? image[..., :3] drops the alpha channel)"
    if image.shape[2] == 1:
        return " (1 channel: a grey image? np.repeat(image, 3, axis=-1) makes it RGB)"
    if image.shape[2] != 3:
        return f" ({image.shape[2]} channels: expected 3, red green blue)"
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            return (" (floats: if they hold 0..1, (image * 255).round().astype(np.uint8) converts "
                    "them)")
        return f" (dtype {image.dtype}: expected uint8 values 0..255)"
    return " (height and width must be at least 1)"


def read_rgb(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of an image file; ValueError naming the file when it cannot be
    read or decoded (never None, unlike ``cv2.imread``), when it is larger than
    :func:`max_file_bytes` or when its header declares more than ``max_pixels`` pixels."""
    p = Path(path)
    shown = display_path(p)
    limit = max_file_bytes(max_pixels)
    try:
        size = p.stat().st_size
        if size > limit:
            raise ValueError(f"image {shown}: expected at most {limit} bytes for an image of at "
                             f"most {max_pixels} pixels (--max-image-pixels), got {size} bytes")
        _check_declared_size(p, max_pixels, shown)
        data = np.fromfile(p, dtype=np.uint8)  # np.fromfile: non-ASCII paths work everywhere
    except OSError as exc:
        raise ValueError(f"cannot read image {shown}: {exc.strerror or exc}") from exc
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (cv2.error, MemoryError) as exc:
        raise ValueError(f"cannot decode image {shown} ({data.size} bytes): "
                         f"{type(exc).__name__}: {str(exc).strip()}") from exc
    if bgr is None:
        raise ValueError(f"cannot decode image {shown} ({data.size} bytes; expected a valid "
                         "image file)")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:  # (a header Pillow could not read)
        raise ValueError(f"image {shown}: expected at most {max_pixels} pixels "
                         f"(--max-image-pixels), got {bgr.shape[1]}x{bgr.shape[0]}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _check_declared_size(path: Path, max_pixels: int, shown: str) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before anything
    is decoded (Pillow reads the header only). A header Pillow cannot read is left to OpenCV
    (the decoded size is checked then)."""
    from PIL import Image

    try:
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning):
            with Image.open(path) as im:
                w, h = int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:  # past Pillow's own bound, 2 x 89.5 megapixels
        bound = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
        if bound and max_pixels < bound:
            raise ValueError(f"image {shown}: expected at most {max_pixels} pixels "
                             f"(--max-image-pixels), got more than {bound} declared in its "
                             "header") from None
        return
    except Exception:  # noqa: BLE001  (any reader error: OpenCV gets its say)
        return
    if w * h > max_pixels:
        raise ValueError(f"image {shown}: expected at most {max_pixels} pixels "
                         f"(--max-image-pixels), got {w}x{h} = {w * h} declared in its header")


def write_rgb(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write HxWx3 uint8 RGB pixels to an image file (format from the extension)."""
    check_rgb_image(image)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cannot write image {path} (unsupported extension or unwritable folder)")


def load_aligned_crop(path: str | os.PathLike[str], size: int, *, resize: bool = True,
                      name: str = "target_image") -> np.ndarray:
    """An aligned square face crop from a file as (size, size, 3) uint8 RGB.

    ``resize`` False refuses crops of another size instead of resampling them (a model set's own
    target must already match its input size)."""
    try:
        img = read_rgb(path)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"{name}: expected an aligned square crop, got {w}x{h} ({path})")
    if h != size:
        if not resize:
            raise ValueError(f"{name}: expected a {size}x{size} crop, got {w}x{h} ({path})")
        img = np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
    return img
