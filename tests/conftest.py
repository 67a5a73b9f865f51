"""Test-only fixtures (the shared-data fixtures live in the repository's root conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model set, exported through the real export path."""
    from norface_rt.export import init_untrained

    return Path(init_untrained(tmp_path_factory.mktemp("model-tiny"), size="tiny", seed=0))


@pytest.fixture(scope="session")
def sideways_video(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 24 frames of single_face.mp4 stored as a phone stores portrait video: pixels
    turned a quarter clockwise (360x640) and a display matrix saying "turn 90 degrees
    counter-clockwise to show" (``frame.rotation == 90``)."""
    import av

    dst = tmp_path_factory.mktemp("sideways") / "phone.mp4"
    with av.open(str(media_dir / "single_face.mp4")) as inp, av.open(str(dst), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 360, 640, "yuv420p"
        st.set_display_rotation(90)
        for i, frame in enumerate(inp.decode(video=0)):
            if i == 24:
                break
            img = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=-1))
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    with av.open(str(dst)) as c:  # what a phone recording looks like to a decoder
        first = next(c.decode(video=0))
        assert (first.rotation, first.width, first.height) == (90, 360, 640)
    return dst
