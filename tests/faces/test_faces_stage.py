"""FaceStage end to end on real video: tracked faces, aligned crops, timings."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from faces_helpers import decode
from norface_rt.config import ModelConfig
from norface_rt.faces.align import Aligner
from norface_rt.faces.landmarker import Landmarker
from norface_rt.faces.stage import FaceStage, interocular
from norface_rt.faces.tracker import Tracker
from norface_rt.types import FramePacket


def make_stage(landmarker_path: Path, cfg: ModelConfig) -> FaceStage:
    return FaceStage(Landmarker(landmarker_path, mode="video", max_faces=4), Tracker(), Aligner(cfg))


def test_single_face_video_one_track(landmarker_path: Path, single_face_frames: list[FramePacket]) -> None:
    cfg = ModelConfig()
    stage = make_stage(landmarker_path, cfg)
    try:
        # Fresh packets: the stage writes timings into the frame it is given.
        out = [stage.process(dataclasses.replace(f, timings={})) for f in single_face_frames]
    finally:
        stage.close()
    with_face = [ff for ff in out if ff.faces]
    assert len(with_face) >= 0.95 * len(out)
    ids = Counter(f.track_id for ff in with_face for f in ff.faces)
    assert ids.most_common(1)[0][1] >= 0.95 * len(with_face), ids
    for ff in out:
        assert ff.crops.shape == (len(ff.faces), cfg.img_size, cfg.img_size, 3)
        assert ff.crops.dtype == np.uint8
        assert ff.frame.timings["detect"] > 0 and ff.frame.timings["align"] >= 0
    crop = with_face[0].crops[0]
    assert crop.std() > 20  # a real face, not a black border
    assert interocular(with_face[0].faces[0].points5) > 24  # not a "small face"


def test_no_face_frames_give_empty_results(landmarker_path: Path, media_dir: Path) -> None:
    cfg = ModelConfig.for_size("tiny", img_size=64)
    stage = make_stage(landmarker_path, cfg)
    try:
        for frame in decode(media_dir / "no_face.mp4", "nf", limit=10):
            ff = stage.process(frame)
            assert ff.faces == [] and ff.crops.shape == (0, 64, 64, 3)
            assert set(frame.timings) >= {"detect", "align"}
    finally:
        stage.close()


def test_tiny_face_is_kept_not_a_crash(landmarker_path: Path, single_face_frames: list[FramePacket]) -> None:
    # Shrink a real frame so the face falls to ~20 px between the eyes, then pad back up.
    import cv2

    small = cv2.resize(single_face_frames[0].image, (160, 90), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((180, 320, 3), np.uint8)
    canvas[45:135, 80:240] = small
    frame = dataclasses.replace(single_face_frames[0], image=canvas, timings={})
    stage = make_stage(landmarker_path, ModelConfig())
    try:
        ff = stage.process(frame)
    finally:
        stage.close()
    assert len(ff.faces) == 1 and interocular(ff.faces[0].points5) < 24
    assert ff.crops.shape == (1, 112, 112, 3)
