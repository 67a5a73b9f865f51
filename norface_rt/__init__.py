"""norface-rt: real-time Norface facial expression analysis (AUs and emotions) per tracked face.

The Python API (``Analyzer``, ``to_dataframe``) and the result types are imported on first use,
so ``import norface_rt`` stays light: no model runtime, MediaPipe, OpenCV or PyTorch until an
analysis needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Analyzer": "norface_rt.api",
    "VideoAnalysis": "norface_rt.api",
    "StreamWarning": "norface_rt.api",
    "to_dataframe": "norface_rt.api",
    "FaceResult": "norface_rt.types",
    "FrameResult": "norface_rt.types",
    "FaceQuality": "norface_rt.types",
    "HeadPose": "norface_rt.types",
}

__all__ = ["Analyzer", "FaceQuality", "FaceResult", "FrameResult", "HeadPose", "StreamWarning",
           "VideoAnalysis", "__version__", "to_dataframe"]

if TYPE_CHECKING:
    from norface_rt.api import Analyzer, StreamWarning, VideoAnalysis, to_dataframe
    from norface_rt.types import FaceQuality, FaceResult, FrameResult, HeadPose


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
