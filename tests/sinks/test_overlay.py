"""Overlay drawing and video writing (real OpenCV drawing, real PyAV encoding and decoding)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from norface_rt.sinks import overlay
from norface_rt.sinks.overlay import (MultiStreamOverlaySink, OverlayVideoSink, ShowSink,
                                      available_codec, draw)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_draw_marks_the_box_and_leaves_the_input_alone(frame_msg) -> None:
    msg = frame_msg(n_faces=1, untrained=False)
    x0, y0, x1, y1 = (int(v) for v in msg["faces"][0]["box"])
    img = np.full((360, 640, 3), 90, np.uint8)
    before = img.copy()
    out = draw(img, msg, fps=24.0)
    assert np.array_equal(img, before), "draw() must not modify its input"
    assert out.shape == img.shape and out.dtype == np.uint8
    box_region = np.abs(out[y0:y1 + 1, x0:x1 + 1].astype(int) - 90).sum(axis=2) > 0
    assert box_region[:, 0].mean() > 0.9 and box_region[0, :].mean() > 0.9  # the outline
    # AU bars right under the box, in the track's colour.
    bars = out[y1 + 5:y1 + 20, x0:x1]
    assert (np.abs(bars.astype(int) - 90).sum(axis=2) > 0).any()
    # A region with no face and no text stays untouched when the model is trained.
    assert np.array_equal(out[250:330, 450:630], img[250:330, 450:630])


def test_untrained_watermark(frame_msg) -> None:
    img = np.full((360, 640, 3), 90, np.uint8)
    trained = draw(img, frame_msg(n_faces=0, untrained=False))
    untrained = draw(img, frame_msg(n_faces=0, untrained=True))
    centre = (slice(150, 210), slice(100, 540))
    assert np.array_equal(trained[centre], img[centre])
    diff = np.abs(untrained[centre].astype(int) - trained[centre].astype(int)).sum(axis=2)
    assert (diff > 30).mean() > 0.05
    # Red-dominant text.
    changed = untrained[centre][diff > 30]
    assert changed[:, 0].mean() > changed[:, 2].mean() + 30


def test_draw_scales_boxes_to_a_smaller_image(frame_msg) -> None:
    msg = frame_msg(n_faces=1, untrained=False)
    x0, y0, x1, y1 = msg["faces"][0]["box"]
    small = draw(np.zeros((180, 320, 3), np.uint8), msg)
    # The left edge of the box lands at half the coordinates.
    col = small[int(y0 / 2) + 10:int(y1 / 2) - 10, int(round(x0 / 2))]
    assert (col.sum(axis=1) > 0).all()


def test_draw_rejects_bad_input(frame_msg) -> None:
    with pytest.raises(ValueError, match=r"image: expected an HxWx3 uint8 RGB array, got float32"):
        draw(np.zeros((10, 10, 3), np.float32), frame_msg())
    with pytest.raises(ValueError, match="image: expected"):
        draw(np.zeros((10, 10), np.uint8), frame_msg())
    with pytest.raises(ValueError, match=r"msg.type: expected 'frame', got 'eos'"):
        draw(np.zeros((10, 10, 3), np.uint8), {"type": "eos"})


def test_overlay_video_is_playable_with_source_timing(tmp_path: Path, frame_msg) -> None:
    path = tmp_path / "overlay.mp4"
    n = 12
    sink = OverlayVideoSink(path, 25.0)
    assert sink.needs_image
    for i in range(n):
        msg = frame_msg(seq=i, n_faces=1, width=161, height=121, pts=0.5 + i * 0.04)
        msg["faces"][0]["box"] = [20.0, 15.0, 90.0, 100.0]
        sink.write(msg, _noise(121, 161, i))
    sink.write({"type": "eos"})  # ignored, not an error
    sink.close()
    sink.close()
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == ("h264" if available_codec() == "libx264" else "mpeg4")
        frames = list(c.decode(video=0))
    assert len(frames) == n
    assert (frames[0].width, frames[0].height) == (160, 120)  # rounded down to even for yuv420p
    times = [float(f.pts * f.time_base) for f in frames]
    assert times == pytest.approx([0.5 + i * 0.04 for i in range(n)], abs=0.002)


def test_overlay_video_handles_missing_and_backward_pts(tmp_path: Path, frame_msg) -> None:
    path = tmp_path / "images.mp4"
    with OverlayVideoSink(path, 10.0, 64, 48, codec="mpeg4") as sink:
        for i, pts in enumerate([None, None, 5.0, 1.0]):  # image folder, then a looping source
            sink.write(frame_msg(seq=i, n_faces=0, width=128, height=96, pts=pts) | {"pts": pts},
                       _noise(96, 128, i))
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (64, 48)
    times = [float(f.pts * f.time_base) for f in frames]
    assert times == pytest.approx([0.0, 0.1, 5.0, 5.1], abs=0.002)


def test_overlay_refuses_missing_image_and_mixed_streams(tmp_path: Path, frame_msg) -> None:
    sink = OverlayVideoSink(tmp_path / "a.mp4", 25.0)
    with pytest.raises(ValueError, match="image: expected the frame's RGB pixels"):
        sink.write(frame_msg(seq=0), None)
    sink.write(frame_msg(seq=0, n_faces=0), _noise(360, 640))
    with pytest.raises(ValueError, match=r"stream_id: expected 'cam0'.*got 'cam1'"):
        sink.write(frame_msg(seq=0, stream_id="cam1"), _noise(360, 640))
    sink.close()
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        OverlayVideoSink(tmp_path / "missing" / "a.mp4", 25.0)
    with pytest.raises(ValueError, match="fps: expected a number > 0"):
        OverlayVideoSink(tmp_path / "b.mp4", 0)


def test_multi_stream_overlay_writes_one_file_per_stream(tmp_path: Path, frame_msg) -> None:
    sink = MultiStreamOverlaySink(tmp_path / "out.mp4", multiple=True)
    for i in range(3):
        for sid in ("cam0", "rtsp/cam 1"):
            sink.write(frame_msg(seq=i, stream_id=sid, width=96, height=64, n_faces=0),
                       _noise(64, 96, i))
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["out-cam0.mp4", "out-rtsp_cam_1.mp4"]
    for name in files:
        with av.open(str(tmp_path / name)) as c:
            assert len(list(c.decode(video=0))) == 3
    single = MultiStreamOverlaySink(tmp_path / "one.mp4", multiple=False)
    single.write(frame_msg(seq=0, width=96, height=64, n_faces=0), _noise(64, 96))
    single.close()
    assert (tmp_path / "one.mp4").is_file()


def test_show_sink_without_gui_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine's OpenCV may have a GUI backend but there is no display; both must be clear.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="cannot show video: .*(DISPLAY|opencv-python)"):
        ShowSink()
    # What an opencv-python-headless build reports.
    monkeypatch.setattr(overlay.cv2, "currentUIFramework", lambda: "", raising=False)
    with pytest.raises(RuntimeError, match="pip install opencv-python"):
        ShowSink()
