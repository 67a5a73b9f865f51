"""Frame sources: video files, still images, RTSP streams and webcams, each on its own thread.

Use :func:`open_source` to pick the right class from a path/URL/device; every source follows the
:class:`Source` contract (``start`` / ``read(timeout)`` / ``stop``; exactly one ``EndOfStream``).
"""

from norface_rt.sources.base import Source
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
