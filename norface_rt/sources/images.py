"""Still images, one file or a folder, as a lossless stream of frames.

Error policy (decided here, relied on by callers):

* missing path -> ``FileNotFoundError`` at construction; a folder with no image files, a file with
  an unsupported extension, or a *single* image that cannot be decoded -> ``ValueError`` at
  construction (nothing useful could be streamed, so fail before any thread starts);
* an unreadable file *inside a folder* is logged and delivered as a flagged frame without pixels
  (``FramePacket.error`` says why, ``image`` is 0x0), so it yields one message with that error and
  no faces; the good images are still delivered, and the final ``EndOfStream.error`` lists every
  unreadable file, so a batch over a large folder is not lost to one bad file but the damage is
  never silent. Unreadable includes too large: a file bigger than an image of ``max_pixels`` can
  be, or a header declaring more pixels (:func:`norface_rt.images.read_rgb`), and any error of
  the decoder.

File names travel as text that always encodes (:func:`norface_rt.files.display_path`): bytes of a
name that are not UTF-8 are written ``\\xNN``, so such a file's results reach every output.

``frame_index`` is the file's position in the sorted listing, counting unreadable files: the
N-th file is always frame N, whatever happened to the files before it. Every frame carries its
file in ``FramePacket.source`` (``ImageSource.delivered_paths`` maps frame_index to it as well).
``pts`` is None (stills have no timeline). Decoding is :func:`norface_rt.images.read_rgb`.
``timings[Stage.DECODE]`` is the time spent reading, decoding and converting that file.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from norface_rt.files import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT, display_path, slug
from norface_rt.images import read_rgb
from norface_rt.sources.base import DecodeClock, Source
from norface_rt.types import FramePacket, Stage

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageSource(Source):
    """One image file or every image in a folder (sorted by name, not recursive)."""

    stills = True

    def __init__(self, path: str | os.PathLike[str], stream_id: str | None = None,
                 queue_size: int = 8, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                or not 1 <= max_pixels <= MAX_PIXELS_LIMIT):
            raise ValueError(f"max_pixels: expected an integer in [1, {MAX_PIXELS_LIMIT}], got "
                             f"{max_pixels!r}")
        self.max_pixels = max_pixels
        self._path = Path(path)
        super().__init__(stream_id or slug(self._path.stem or self._path.name),
                         queue_size=queue_size, policy="lossless", live=False)
        if not self._path.exists():
            raise FileNotFoundError(f"image file or folder not found: {display_path(self._path)}")
        self._first: np.ndarray | None = None
        self._first_decode_s = 0.0
        if self._path.is_dir():
            self._files = sorted(p for p in self._path.iterdir()
                                 if p.is_file() and is_image_path(p))
            if not self._files:
                raise ValueError(f"no images or videos in folder {display_path(self._path)} "
                                 f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)}, or "
                                 "videos: `run` takes a folder of videos as one stream per video)")
        else:
            if not is_image_path(self._path):
                raise ValueError(f"unsupported image extension {self._path.suffix!r} for "
                                 f"{display_path(self._path)} (expected one of "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
            self._files = [self._path]
            t0 = time.perf_counter()
            self._first = read_rgb(self._path, max_pixels=max_pixels)  # a lone bad image fails
            # right here
            self._first_decode_s = time.perf_counter() - t0
        self._bad: list[str] = []
        self._delivered_paths: list[Path] = []

    @property
    def expected_frames(self) -> int:
        """One frame per image file, unreadable ones included (they are delivered flagged)."""
        return len(self._files)

    @property
    def paths(self) -> list[Path]:
        """Every candidate image, in delivery order."""
        return list(self._files)

    @property
    def delivered_paths(self) -> list[Path]:
        """The file of each queued frame: ``delivered_paths[frame_index]``."""
        return list(self._delivered_paths)

    @property
    def bad_files(self) -> list[str]:
        """Why each unreadable image could not be analysed (the message names the file)."""
        return list(self._bad)

    def _produce(self) -> str | None:
        clock = DecodeClock()
        for path in self._files:
            if self._stopping:
                return None
            error = None
            if self._first is not None:  # decoded (and timed) at construction
                image, self._first = self._first, None
                decode_s = self._first_decode_s
            else:
                clock.resume()
                try:
                    image = read_rgb(path, max_pixels=self.max_pixels)
                except Exception as exc:  # any reader error costs this file, not the folder
                    why = str(exc) if isinstance(exc, ValueError) else (
                        f"cannot read image {display_path(path)}: {type(exc).__name__}: {exc}")
                    log.warning("unreadable image, flagged: %s", why)
                    self._bad.append(why)
                    image, error = np.zeros((0, 0, 3), np.uint8), why
                decode_s = clock.take()
            packet = FramePacket(stream_id=self.stream_id, frame_index=self._next_index,
                                 image=image, pts=None, capture_time=time.time(), live=False,
                                 timings={Stage.DECODE: decode_s}, source=display_path(path),
                                 error=error)
            self._delivered_paths.append(path)
            if not self._emit(packet):
                self._delivered_paths.pop()
                return None
        if self._bad:
            return (f"{len(self._bad)} of {len(self._files)} images could not be decoded (their "
                    f"frames carry the error): " + "; ".join(self._bad))
        return None
