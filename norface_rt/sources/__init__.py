"""Frame sources: video files, still images, RTSP streams and webcams, each on its own thread.

Use :func:`open_source` to pick the right class from a path/URL/device; every source follows the
:class:`Source` contract (``start`` / ``read(timeout)`` / ``stop``; exactly one ``EndOfStream``).

Only the contract (:mod:`~norface_rt.sources.base`) is imported with the package; the source
classes are imported on first use (PEP 562), so the pipeline imports on a machine without PyAV
(frames that come from elsewhere: arrays, a benchmark's pre-decoded frames).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from norface_rt.sources.base import Source

_LAZY = {
    "open_source": "norface_rt.sources.factory",
    "FileSource": "norface_rt.sources.file",
    "VideoInfo": "norface_rt.sources.file",
    "POLICIES": "norface_rt.sources.frame_queue",
    "FrameQueue": "norface_rt.sources.frame_queue",
    "Policy": "norface_rt.sources.frame_queue",
    "IMAGE_EXTENSIONS": "norface_rt.sources.images",
    "ImageSource": "norface_rt.sources.images",
    "RTSPSource": "norface_rt.sources.live",
    "WebcamSource": "norface_rt.sources.live",
}

if TYPE_CHECKING:
    from norface_rt.sources.factory import open_source
    from norface_rt.sources.file import FileSource, VideoInfo
    from norface_rt.sources.frame_queue import POLICIES, FrameQueue, Policy
    from norface_rt.sources.images import IMAGE_EXTENSIONS, ImageSource
    from norface_rt.sources.live import RTSPSource, WebcamSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "POLICIES",
    "FileSource",
    "FrameQueue",
    "ImageSource",
    "Policy",
    "RTSPSource",
    "Source",
    "VideoInfo",
    "WebcamSource",
    "open_source",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt.sources' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
