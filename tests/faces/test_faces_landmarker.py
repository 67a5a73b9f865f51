"""Landmarker on real media with real MediaPipe, plus its timestamp and tiling helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faces_helpers import as_packet, decode, load_rgb
from norface_rt.faces.landmarker import MAX_TILES, MIN_TILE_PX, Landmarker, TimestampGuard, tile_windows
from norface_rt.faces.tracker import Tracker
from norface_rt.types import FramePacket


def test_timestamps_follow_pts_then_frame_index() -> None:
    g = TimestampGuard(fallback_fps=25.0)
    assert [g.next(p, i) for i, p in enumerate([0.0, 0.04, 0.08])] == [0, 40, 80]
    g = TimestampGuard(fallback_fps=25.0)
    assert [g.next(None, i) for i in range(3)] == [0, 40, 80]


def test_timestamps_stay_strictly_increasing_when_the_clock_restarts() -> None:
    g = TimestampGuard()
    pts = [10.0, 10.033, 10.066, 0.0, 0.033, 0.066, 0.066, None]  # reconnect, duplicate, no pts
    ts = [g.next(p, i) for i, p in enumerate(pts)]
    assert all(b > a for a, b in zip(ts, ts[1:])), ts
    assert ts[3] - ts[2] == 33 and ts[4] - ts[3] == 33  # spacing kept across the restart


def test_tiling_is_bounded_by_a_minimum_tile_size_and_a_window_count() -> None:
    """A 20000x1 strip asked for 1,249 windows (each a MediaPipe graph); a frame thinner than a
    tile is not tiled, and a very long one gets at most MAX_TILES windows, still spanning it."""
    assert tile_windows(20000, 1, 1.0) == [(0, 0, 20000, 1)]
    assert tile_windows(MIN_TILE_PX - 1, 4000, 0.2) == [(0, 0, MIN_TILE_PX - 1, 4000)]
    wins = tile_windows(20000, 200, 1.0)
    assert len(wins) == 1 + MAX_TILES
    assert min(w[0] for w in wins[1:]) == 0 and max(w[2] for w in wins[1:]) == 20000
    assert all(w[2] - w[0] >= MIN_TILE_PX for w in wins)
    assert len(tile_windows(1000, 667, 0.2)) <= 1 + MAX_TILES


def test_tile_windows_cover_the_frame() -> None:
    assert tile_windows(1000, 667, None) == [(0, 0, 1000, 667)]
    wins = tile_windows(1000, 667, 1.0)
    assert wins[0] == (0, 0, 1000, 667) and wins[1:] == [(0, 0, 667, 667), (333, 0, 1000, 667)]
    wins = tile_windows(640, 360, 0.5)
    covered = np.zeros((360, 640), bool)
    for x0, y0, x1, y1 in wins[1:]:
        assert x1 - x0 == y1 - y0 == 180
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_bad_arguments_are_named(landmarker_path: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_path"):
        Landmarker(tmp_path / "missing.task", max_faces=4)
    not_zip = tmp_path / "x.task"
    not_zip.write_bytes(b"not a bundle")
    with pytest.raises(ValueError, match="face_detector.tflite"):
        Landmarker(not_zip, max_faces=4)
    with pytest.raises(ValueError, match="mode must be 'video' or 'image', got 'live'"):
        Landmarker(landmarker_path, mode="live", max_faces=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_faces must be an int >= 1, got 0"):
        Landmarker(landmarker_path, max_faces=0)
    with pytest.raises(ValueError, match="min_presence must be in"):
        Landmarker(landmarker_path, min_presence=1.5, max_faces=4)
    with Landmarker(landmarker_path, mode="image", max_faces=4) as lm:
        with pytest.raises(ValueError, match=r"frame.image: expected an HxWx3 uint8 RGB array, got uint8 array of shape \(10, 10\)"):
            lm.detect(as_packet(np.zeros((10, 10), np.uint8)))
        with pytest.raises(ValueError, match="frame.image: expected an HxWx3 uint8 RGB array, got float32"):
            lm.detect(as_packet(np.zeros((10, 10, 3), np.float32)))
    with pytest.raises(RuntimeError, match="closed"):
        lm.detect(as_packet(np.zeros((10, 10, 3), np.uint8)))


def test_video_mode_single_face(landmarker_path: Path, single_face_frames: list[FramePacket]) -> None:
    assert len(single_face_frames) == 72
    with Landmarker(landmarker_path, mode="video", confidence_refresh=30, max_faces=4) as lm:
        per_frame = [lm.detect(f) for f in single_face_frames]
        # The same stream reconnecting: pts start again from 0; nothing may break.
        again = [lm.detect(f) for f in single_face_frames[:10]]
    assert sum(len(fs) == 1 for fs in per_frame) >= 0.95 * 72
    assert all(len(fs) == 1 for fs in again)
    f = per_frame[0][0]
    h, w = single_face_frames[0].height, single_face_frames[0].width
    assert f.landmarks.shape == (478, 3) and f.points5.shape == (5, 2)
    x0, y0, x1, y1 = f.box
    assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1
    assert np.allclose([x0, y0], f.landmarks[:, :2].min(axis=0), atol=1e-3)  # tight, not padded
    assert f.blendshapes is not None and len(f.blendshapes) == 52
    assert "jawOpen" in f.blendshapes and all(0.0 <= v <= 1.0 for v in f.blendshapes.values())
    assert f.pose is not None and abs(f.pose.yaw) < 30
    scores = [fs[0].confidence for fs in per_frame if fs]
    assert min(scores) > 0.8
    assert len(set(scores[:30])) == 1  # carried on the face between refreshes, not recomputed


def test_confidence_separates_faces_from_non_faces(landmarker_path: Path, media_dir: Path) -> None:
    cartoon = decode(media_dir / "no_face.mp4", "nf", limit=1)[0].image
    face_img = load_rgb(media_dir / "single_face.jpg")
    with Landmarker(landmarker_path, mode="image", max_faces=4) as lm:
        face = lm.detect(as_packet(face_img))[0]
        assert face.confidence == pytest.approx(lm.score_box(face_img, face.box)) and face.confidence > 0.8
        for box in [(100.0, 100.0, 300.0, 300.0), (400.0, 150.0, 600.0, 350.0), (700.0, 300.0, 900.0, 500.0)]:
            assert lm.score_box(cartoon, box) < 0.5


def test_no_face_video_gives_no_faces(landmarker_path: Path, media_dir: Path) -> None:
    frames = decode(media_dir / "no_face.mp4", "nf", limit=30)
    assert len(frames) == 30
    with Landmarker(landmarker_path, mode="video", max_faces=4) as lm:
        assert [len(lm.detect(f)) for f in frames] == [0] * 30


def test_group_photo_needs_tiling_and_gets_distinct_ids(landmarker_path: Path, media_dir: Path) -> None:
    img = load_rgb(media_dir / "multi_face.jpg")
    with Landmarker(landmarker_path, mode="image", max_faces=8, tiling=1.0) as lm:
        faces = Tracker().update(lm.detect(as_packet(img)))
    assert len(faces) >= 3
    assert len({f.track_id for f in faces}) == len(faces)
    assert all(f.confidence > 0.8 for f in faces)
    boxes = [f.box for f in faces]
    for i, a in enumerate(boxes):  # duplicates from overlapping windows were merged
        for b in boxes[i + 1:]:
            inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
            assert inter == 0


def test_faces_beyond_max_faces_are_counted_not_silently_dropped(landmarker_path: Path,
                                                                  media_dir: Path) -> None:
    # multi_face.jpg holds 5 people: with room for 4, the smallest is cut and counted.
    image = load_rgb(media_dir / "multi_face.jpg")
    with Landmarker(landmarker_path, mode="image", max_faces=4, tiling=1.0) as lm:
        faces = lm.detect(as_packet(image, 0))
        assert len(faces) == 4 and lm.faces_cut >= 1
    with Landmarker(landmarker_path, mode="image", max_faces=5, tiling=1.0) as lm:
        all_faces = lm.detect(as_packet(image, 0))
        assert len(all_faces) == 5 and lm.faces_cut == 0
    area = sorted((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in all_faces)
    kept = sorted((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces)
    assert kept == pytest.approx(area[1:], rel=0.05)  # the four largest were kept
