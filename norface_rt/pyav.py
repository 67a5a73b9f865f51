"""PyAV, always imported after OpenCV.

PyAV's wheels bundle their own ``libxcb`` (for libavdevice's screen capture). When that copy is
loaded before OpenCV's, the Qt window behind ``--show`` (OpenCV's highgui: Qt 5 over xcb) binds
to it and the first ``cv2.imshow`` never returns: it waits on the X server forever in
``xcb_shm_query_version``. Measured under Xvfb: 6 runs of 6 hung with ``import av`` first, none
with ``import cv2`` first. So every module of the package that uses PyAV imports it from here,
and the order no longer depends on which module a command happens to import first.
"""

# isort: off
import cv2  # noqa: F401  (OpenCV first: see the module doc)
import av

# isort: on

__all__ = ["av"]
