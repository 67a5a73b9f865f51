"""Overlay drawing and video writing (real OpenCV drawing, real PyAV encoding and decoding)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from norface_rt.protocol import eos_message
from norface_rt.sinks import overlay
from norface_rt.sinks.overlay import MultiStreamOverlaySink, OverlayVideoSink, ShowSink, available_codec, draw
from norface_rt.types import EndOfStream


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_draw_marks_the_box_and_leaves_the_input_alone(frame_msg) -> None:
    msg = frame_msg(n_faces=1, untrained=False)
    x0, y0, x1, y1 = (int(v) for v in msg["faces"][0]["box"])
    img = np.full((360, 640, 3), 90, np.uint8)
    before = img.copy()
    out = draw(img, msg, fps=24.0)
    assert np.array_equal(img, before), "draw() must not modify its input"
    # the frame, then the side panel on its right (same height)
    assert out.shape == (360, 640 + overlay.PANEL_WIDTH, 3) and out.dtype == np.uint8
    frame = out[:, :640]
    box_region = np.abs(frame[y0:y1 + 1, x0:x1 + 1].astype(int) - 90).sum(axis=2) > 0
    assert box_region[:, 0].mean() > 0.9 and box_region[-1, :].mean() > 0.9  # the outline
    colour = overlay.track_color(msg["faces"][0]["track_id"])
    # the tag sits against the box, filled with the track's colour
    tag = frame[max(0, y0 - 30):y0, x0:x1]
    assert (np.abs(tag.astype(int) - colour).sum(axis=2) == 0).mean() > 0.2
    # A region with no face and no text stays untouched when the model is trained.
    assert np.array_equal(frame[250:330, 450:630], img[250:330, 450:630])
    # the panel holds the face's block: bars in the track's colour
    panel = out[:, 640:]
    assert (np.abs(panel.astype(int) - colour).sum(axis=2) < 40).sum() > 100
    same_size = draw(img, msg, panel=False)
    assert same_size.shape == img.shape


def test_au_bars_are_labelled_and_bright_only_when_present(frame_msg) -> None:
    img = np.full((360, 640, 3), 90, np.uint8)

    def panel_colour_pixels(occurrence: float) -> int:
        msg = frame_msg(n_faces=1, untrained=False)
        face = msg["faces"][0]
        face["au_intensity"] = {k: 4.0 for k in face["au_intensity"]}
        face["au_occurrence"] = {k: occurrence for k in face["au_occurrence"]}
        colour = overlay.track_color(face["track_id"])
        panel = draw(img, msg)[:, 640:].astype(int)
        return int((np.abs(panel - colour).sum(axis=2) < 30).sum())

    bright, dim = panel_colour_pixels(0.9), panel_colour_pixels(0.1)
    assert bright > 5 * max(dim, 1), (bright, dim)
    assert overlay._au_label("AU01") == "1" and overlay._au_label("AU43") == "43"


def test_tags_of_neighbouring_faces_never_overlap(frame_msg) -> None:
    # six faces side by side, tags wider than the faces: a naive "above the box" collides
    boxes = [(40 + 45 * i, 200, 80 + 45 * i, 240) for i in range(6)]
    sizes = [(110, 22)] * 6
    rects = overlay.place_tags(boxes, sizes, 640, 360)
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 640 and 0 <= a[1] and a[3] <= 360
        for b in rects[i + 1:]:
            assert overlay._overlap(a, b) == 0, (a, b)
    # and each tag touches its own box (above, below or inside it)
    for (bx0, by0, bx1, by1), (tx0, ty0, tx1, ty1) in zip(boxes, rects):
        assert tx0 < bx1 and tx1 > bx0 and (ty1 <= by0 + 30 or ty0 >= by1 - 30)


def test_rate_is_the_real_average_not_the_burst(frame_msg) -> None:
    meter = overlay.RateMeter(window=3.0)
    t, rates = 100.0, []
    for _ in range(20):  # 8 frames published 1 ms apart every 0.32 s: 25 frames/s on average
        for k in range(8):
            rates.append(meter.update(t + k * 0.001))
        t += 0.32
    assert rates[0] is None
    assert rates[-1] == pytest.approx(25.0, rel=0.12)


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


def test_poor_quality_faces_get_corner_brackets(frame_msg) -> None:
    msg = frame_msg(n_faces=1, untrained=False)
    msg["faces"][0]["quality"] = {"ok": False, "issues": ["small_face"]}
    x0, y0, x1, y1 = (int(v) for v in msg["faces"][0]["box"])
    out = draw(np.full((360, 640, 3), 90, np.uint8), msg)
    left_edge = np.abs(out[y0:y1, x0].astype(int) - 90).sum(axis=1) > 0
    assert left_edge[:10].all() and not left_edge[len(left_edge) // 2]  # corners, not a side


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
    sink.write(eos_message(EndOfStream("cam0", n), n))  # ignored, not an error
    sink.close()
    sink.close()
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == ("h264" if available_codec() == "libx264" else "mpeg4")
        frames = list(c.decode(video=0))
    assert len(frames) == n
    # frame + side panel, rounded down to even for yuv420p
    assert (frames[0].width, frames[0].height) == ((161 + overlay.PANEL_WIDTH) // 2 * 2, 120)
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


def test_gaze_is_drawn_as_an_arrow_from_each_pupil_along_the_gaze(frame_msg) -> None:
    """Issue 21: gaze joins the overlay. An arrow starts at each iris centre and points where
    the eye looks as the camera sees it (here: to the image's right); a face without gaze gets
    no arrow."""
    msg = frame_msg(n_faces=1, untrained=False)
    face = msg["faces"][0]
    x0, y0, x1, y1 = face["box"]
    cy = int((y0 + y1) / 2)
    pupils = [(x0 + 0.3 * (x1 - x0), cy), (x0 + 0.7 * (x1 - x0), cy)]
    right = (0.6, 0.0, 0.8)  # looking towards the image's right, level
    img = np.full((360, 640, 3), 40, np.uint8)

    def gaze_pixels(with_gaze: bool) -> np.ndarray:
        if with_gaze:
            face["gaze"] = {"eye_0": right, "eye_1": right, "angle_x": 0.64, "angle_y": 0.0,
                            "pupil_0": pupils[0], "pupil_1": pupils[1]}
        else:
            face.pop("gaze", None)
        out = draw(img, msg, panel=False)
        return np.abs(out.astype(int) - overlay.GAZE_COLOR).sum(axis=2) < 40

    assert not gaze_pixels(False).any()
    mask = gaze_pixels(True)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 20
    length = overlay.GAZE_LENGTH * (x1 - x0) * right[0]
    for px, py in pupils:  # each arrow runs right of its pupil, on the pupil's row
        near = (np.abs(ys - py) <= 4) & (xs >= px - 2) & (xs <= px + length + 3)
        assert near.sum() > 0.6 * length, (px, near.sum(), length)
    assert xs.min() >= pupils[0][0] - 3  # nothing drawn to the left: the arrow points right
