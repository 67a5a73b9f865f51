"""WebcamSource without a camera: the two ways a device can be unusable, each bounded in time.

* no such device node -> ``FileNotFoundError`` at construction, listing what exists;
* a node that is not a capture device -> ``EndOfStream(error=...)`` from the decode thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from norface_rt.sources import WebcamSource
from norface_rt.types import EndOfStream, FramePacket

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]  # fixture `drain`


def test_missing_device_raises_at_construction() -> None:
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"webcam device not found: /dev/video63 "
                                                r"\(present: .+\)"):
        WebcamSource("/dev/video63")
    with pytest.raises(FileNotFoundError, match=r"/dev/video62"):
        WebcamSource(62)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_node_that_is_not_a_camera_ends_with_an_error(drain: Drain) -> None:
    src = WebcamSource("/dev/null", "notcam", open_timeout=2.0, read_timeout=2.0)
    assert (src.live, src.policy) == (True, "drop_oldest")
    t0 = time.monotonic()
    with src:
        packets, eos = drain(src, deadline_s=10.0)
    assert packets == []
    assert eos.error is not None and eos.error.startswith("cannot open webcam /dev/null (v4l2): ")
    assert time.monotonic() - t0 < 5.0
