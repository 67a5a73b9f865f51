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
def geometry_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model set whose classifier has the geometry input (the shape of
    the next default model), exported through the real export path."""
    import torch

    from norface_rt.config import ModelConfig
    from norface_rt.export.writer import save_model_set
    from norface_rt.models.registry import create_model
    from norface_rt.preprocess import preprocess

    names = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "eyeBlinkLeft")
    cfg = ModelConfig.for_size("tiny", geometry_inputs=("blendshapes",), blendshape_names=names,
                               geometry_reference=(0.1,) * len(names),
                               geometry_spread=(0.2,) * len(names), geometry_hidden=16,
                               model_id="norface-tiny-geometry-untrained")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("norface", cfg).eval()
    target = np.full((cfg.img_size, cfg.img_size, 3), 128, np.uint8)
    model.set_target(torch.from_numpy(preprocess(target[None], cfg)))
    return Path(save_model_set(model, cfg, tmp_path_factory.mktemp("model-geometry"),
                               target_image=target))


@pytest.fixture(scope="session")
def triton_server(start_triton, geometry_model_dir: Path,  # noqa: ANN001
                  tmp_path_factory: pytest.TempPathFactory):  # -> TritonServer
    """One Triton server for the whole session (loopback, free ports, always stopped), serving
    the packaged default model as ``norface`` and the tiny geometry model as ``geo``."""
    from norface_rt.paths import packaged_model_dir

    server = start_triton(tmp_path_factory.mktemp("triton"),
                          {"norface": packaged_model_dir(), "geo": geometry_model_dir},
                          queue_delay_us=2000)
    try:
        yield server
    finally:
        server.stop()


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


@pytest.fixture(scope="session")
def flipped_sector_video(media_dir: Path, tmp_path_factory: pytest.TempPathFactory
                         ) -> tuple[Path, int]:
    """``single_face.mp4`` with 64 bytes inverted (as on a bad disk sector), moved along until the
    decoder flags a frame corrupt; returns the file and that frame's index."""
    import av

    data = (media_dir / "single_face.mp4").read_bytes()
    dst = tmp_path_factory.mktemp("flipped") / "flipped.mp4"
    for shift in range(0, 40_000, 500):
        d = bytearray(data)
        mid = len(d) // 2 + shift
        d[mid:mid + 64] = bytes(b ^ 0xFF for b in d[mid:mid + 64])
        dst.write_bytes(bytes(d))
        with av.open(str(dst)) as c:
            flags = [f.is_corrupt for f in c.decode(video=0)]
        if any(flags) and len(flags) == 72:
            return dst, flags.index(True)
    pytest.fail("no 64-byte flip made the decoder flag a frame corrupt")
