"""Pictures already in memory (HxWx3 uint8 RGB arrays) as a lossless stream of stills.

What the Python API analyses when it is handed pixels instead of a path
(:meth:`norface_rt.Analyzer.analyze_image`): the arrays go through the same pipeline as files,
in MediaPipe's image mode like any still. Arrays are checked at construction, so a wrong dtype,
shape or channel count is reported before a thread starts, naming the array and what it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from norface_rt.images import check_rgb_image
from norface_rt.sources.base import Source
from norface_rt.types import FramePacket, Stage


class ArraySource(Source):
    """Each array of ``images`` as one frame, in order (frame_index = position)."""

    stills = True

    def __init__(self, images: Sequence[np.ndarray], stream_id: str = "array",
                 queue_size: int = 8) -> None:
        super().__init__(stream_id, queue_size=queue_size, policy="lossless", live=False)
        if isinstance(images, np.ndarray):
            raise ValueError("images: expected a sequence of HxWx3 arrays, got one array (wrap it "
                             "in a list)")
        self._images = [np.ascontiguousarray(check_rgb_image(im, f"images[{i}]"))
                        for i, im in enumerate(images)]
        if not self._images:
            raise ValueError("images: expected at least one HxWx3 uint8 RGB array, got none")

    @property
    def expected_frames(self) -> int:
        return len(self._images)

    def _produce(self) -> str | None:
        for image in self._images:
            if self._stopping:
                return None
            packet = FramePacket(stream_id=self.stream_id, frame_index=self._next_index,
                                 image=image, pts=None, capture_time=time.time(), live=False,
                                 timings={Stage.DECODE: 0.0})
            if not self._emit(packet):
                return None
        return None
