"""`norface-rt normalize`: original / normalized / target panels, from images and from video."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.export import synthetic_target_image
from norface_rt.tools.normalize import normalize_media


def test_model_set_keeps_its_target_image(tiny_model_dir: Path) -> None:
    cfg = ModelConfig.load(tiny_model_dir / "config.json")
    saved = cv2.imread(str(tiny_model_dir / "target.png"))[:, :, ::-1]
    assert np.array_equal(saved, synthetic_target_image(cfg.img_size, cfg.template))


def test_images_give_one_panel_per_face(tiny_model_dir, landmarker_path, media_dir, tmp_path):
    rep = normalize_media(str(media_dir / "multi_face.jpg"), tmp_path, model_dir=tiny_model_dir,
                          landmarker=landmarker_path, max_faces=8, scale=2)
    assert rep.frames == 1 and rep.faces >= 3 and len(rep.files) == rep.faces
    s = ModelConfig.load(tiny_model_dir / "config.json").img_size
    target = cv2.imread(str(tiny_model_dir / "target.png"))
    for f in rep.files:
        panel = cv2.imread(str(f))
        assert panel.shape == (2 * s, 3 * 2 * s, 3)
        # the right third is the target (upscaled), below the label line
        right = cv2.resize(panel[:, 4 * s:], (s, s), interpolation=cv2.INTER_AREA)
        assert np.abs(right[s // 3:].astype(int) - target[s // 3:].astype(int)).mean() < 6


def test_video_gives_one_mp4_frame_per_input_frame(tiny_model_dir, landmarker_path, media_dir,
                                                   tmp_path):
    res = subprocess.run([sys.executable, "-m", "norface_rt", "normalize",
                          str(media_dir / "single_face.mp4"), "--out", str(tmp_path),
                          "--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path),
                          "--scale", "1"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    (mp4,) = tmp_path.glob("*.mp4")
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 72 and frames[0].shape[1] == 3 * frames[0].shape[0]


def test_missing_model_is_exit_2(landmarker_path, media_dir, tmp_path):
    res = subprocess.run([sys.executable, "-m", "norface_rt", "normalize",
                          str(media_dir / "single_face.jpg"), "--out", str(tmp_path / "o"),
                          "--model-dir", str(tmp_path / "none"), "--landmarker",
                          str(landmarker_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Looked in" in res.stderr
