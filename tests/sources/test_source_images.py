"""ImageSource: single images, folders, and the skip-but-report policy for unreadable files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.sources import ImageSource
from norface_rt.types import EndOfStream, FramePacket

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]  # fixture `drain`


def test_folder_delivers_good_images_in_name_order_and_reports_bad_ones(
        media_dir: Path, tmp_path: Path, drain: Drain) -> None:
    shutil.copy(media_dir / "single_face.jpg", tmp_path / "b_face.JPG")  # case-insensitive ext
    shutil.copy(media_dir / "astronaut.png", tmp_path / "a_astro.png")
    shutil.copy(media_dir / "multi_face.jpg", tmp_path / "d_group.jpeg")
    (tmp_path / "c_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    grey = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    assert cv2.imwrite(str(tmp_path / "e_grey.png"), grey)

    src = ImageSource(tmp_path, "stills")
    assert (src.live, src.policy) == (False, "lossless")
    assert [p.name for p in src.paths] == ["a_astro.png", "b_face.JPG", "c_broken.jpg",
                                           "d_group.jpeg", "e_grey.png"]
    assert src.expected_frames == 5  # one frame per file, the unreadable one included
    with src:
        packets, eos = drain(src)
    # frame_index = the file's position: the unreadable file is frame 2, flagged, without pixels
    assert [p.frame_index for p in packets] == [0, 1, 2, 3, 4]
    assert [Path(p.source).name for p in packets] == ["a_astro.png", "b_face.JPG", "c_broken.jpg",
                                                      "d_group.jpeg", "e_grey.png"]
    assert [p.error is None for p in packets] == [True, True, False, True, True]
    assert "c_broken.jpg" in packets[2].error and packets[2].image.shape == (0, 0, 3)
    good = [p for p in packets if p.error is None]
    assert [p.image.shape for p in good] == [(512, 512, 3), (562, 572, 3), (667, 1000, 3),
                                             (48, 64, 3)]
    assert all(p.image.dtype == np.uint8 and p.pts is None for p in packets)
    assert [p.name for p in src.delivered_paths] == ["a_astro.png", "b_face.JPG", "c_broken.jpg",
                                                     "d_group.jpeg", "e_grey.png"]
    # RGB order, identical to OpenCV's BGR decode flipped
    bgr = cv2.imread(str(media_dir / "single_face.jpg"))
    assert bgr is not None
    np.testing.assert_array_equal(packets[1].image, bgr[:, :, ::-1])
    np.testing.assert_array_equal(packets[4].image[:, :, 0], grey)
    assert eos.frames == 5
    assert eos.error is not None
    assert eos.error.startswith("1 of 5 images could not be decoded (their frames carry the "
                                "error): ")
    assert "c_broken.jpg" in eos.error
    assert len(src.bad_files) == 1


def test_single_image_is_one_frame_and_a_clean_end(media_dir: Path, drain: Drain) -> None:
    with ImageSource(media_dir / "grace_hopper_512x512.jpg") as src:
        packets, eos = drain(src)
    assert src.stream_id == "grace_hopper_512x512"
    assert len(packets) == 1 and packets[0].image.shape == (512, 512, 3)
    assert eos.error is None and eos.frames == 1


def test_construction_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image file or folder not found: .*missing\.png"):
        ImageSource(tmp_path / "missing.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no images or videos in folder .*empty \(expected files"):
        ImageSource(empty)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match=r"cannot decode image .*bad\.png"):
        ImageSource(bad)
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"unsupported image extension '\.gif'"):
        ImageSource(gif)


def test_iter_frames_leaves_out_flagged_frames_unless_asked(media_dir: Path, tmp_path: Path) -> None:
    # Callers that process pixels themselves (normalize, evaluation) cannot use a frame without
    # pixels; the pipeline reads every frame and publishes the flagged one.
    shutil.copy(media_dir / "single_face.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"broken")
    shutil.copy(media_dir / "astronaut.png", tmp_path / "c.png")
    with ImageSource(tmp_path) as src:
        got = [p.frame_index for p in src.iter_frames(10.0)]
    assert got == [0, 2] and src.end is not None and "b.jpg" in src.end.error
    with ImageSource(tmp_path) as src:
        assert [p.frame_index for p in src.iter_frames(10.0, flagged=True)] == [0, 1, 2]
