"""`norface-rt plot`: timelines from real runs, thumbnails from the video or the image files,
and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from norface_rt.tools.plot import choose_aus, plot_timeline, read_results, thumbnails


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def video_run(tiny_model_dir, landmarker_path, media_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plot") / "r.jsonl"
    res = cli("run", str(media_dir / "single_face.mp4"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(landmarker_path), "--jsonl", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    return out


def test_timeline_of_a_video_with_thumbnails(video_run, media_dir, tmp_path) -> None:
    run = read_results(video_run)
    assert run.time_unit == "s" and run.frames == {"single_face": 72} and run.untrained
    (track,) = [t for t in run.tracks if len(t.times) > 30]
    assert len(track.times) == len(track.emotions["happy"]) == len(track.aus["AU12"])
    assert track.times == sorted(track.times)
    thumbs = thumbnails(run, [track], media_dir / "single_face.mp4")
    (crop,) = thumbs.values()
    assert crop.shape == (160, 160, 3) and crop.std() > 20  # a picture, not a blank
    assert thumbnails(run, [track], None) == {}  # a video run needs --video for thumbnails
    assert len(choose_aus(run.tracks, 4)) == 4
    res = cli("plot", str(video_run), "--out", str(tmp_path / "t.png"), "--video",
              str(media_dir / "single_face.mp4"), "--aus", "AU06,AU12")
    assert res.returncode == 0, res.stderr
    img = cv2.imread(str(tmp_path / "t.png"))
    assert img is not None and img.shape[1] > 1200 and img.shape[0] > 300


def test_stills_from_a_folder_get_thumbnails_from_their_files(tiny_model_dir, landmarker_path,
                                                              media_dir, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "multi_face.jpg", folder / "group.jpg")
    res = cli("run", str(folder), "--model-dir", str(tiny_model_dir), "--landmarker",
              str(landmarker_path), "--max-faces", "8", "--jsonl", str(tmp_path / "r.jsonl"),
              "--no-progress")
    assert res.returncode == 0, res.stderr
    run = read_results(tmp_path / "r.jsonl")
    assert run.time_unit == "frame" and len(run.tracks) == 5
    assert len(thumbnails(run, run.tracks, None)) == 5  # from the files the frames name
    out = plot_timeline(tmp_path / "r.jsonl", tmp_path / "group.png", max_tracks=3)
    img = cv2.imread(str(out))
    assert img is not None
    five = plot_timeline(tmp_path / "r.jsonl", tmp_path / "group5.png")
    assert cv2.imread(str(five)).shape[0] > img.shape[0]  # one row per track


def test_bad_input_is_named(video_run, media_dir, tmp_path) -> None:
    res = cli("plot", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "results file not found" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(video_run.read_text().splitlines()[0] + "\n{not json\n")
    res = cli("plot", str(bad), "--out", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "bad.jsonl:2: not a norface-rt message" in res.stderr
    res = cli("plot", str(video_run), "--out", str(tmp_path / "x.png"), "--aus", "AU99")
    assert res.returncode == 2 and "--aus: ['AU99'] not in the results" in res.stderr
    res = cli("plot", str(video_run), "--out", str(tmp_path / "x.png"), "--video",
              str(media_dir / "face_noface.mov"))
    assert res.returncode == 2 and "--video: frames are 960x540" in res.stderr
    eos_only = tmp_path / "eos.jsonl"
    eos_only.write_text(video_run.read_text().splitlines()[-1] + "\n")
    res = cli("plot", str(eos_only), "--out", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "no frame messages" in res.stderr
    assert all("Traceback" not in r for r in (res.stderr,))


def test_without_matplotlib_the_extra_is_named(monkeypatch, video_run, tmp_path) -> None:
    from norface_rt import extras

    monkeypatch.setitem(extras.EXTRA_MODULES, "plot", ("no_such_module_for_this_test",))
    with pytest.raises(extras.MissingExtra, match=r"pip install 'norface-rt\[plot\]'"):
        plot_timeline(video_run, tmp_path / "x.png")
    lines = [json.loads(x) for x in video_run.read_text().splitlines()]
    assert lines[-1]["type"] == "eos"


def test_plot_with_a_video_logs_no_false_error(video_run, media_dir, tmp_path) -> None:
    """Issue 21, point 9: reading the video only up to the last thumbnail needed used to log
    "ended with an error: interrupted" on every plot."""
    res = cli("plot", str(video_run), "--out", str(tmp_path / "t.png"), "--video",
              str(media_dir / "single_face.mp4"))
    assert res.returncode == 0, res.stderr
    assert "error" not in res.stderr.lower() and (tmp_path / "t.png").stat().st_size > 10_000


def test_au_lines_never_take_an_emotions_colour() -> None:
    """Issue 21, point 9: AU12's line had fear's purple."""
    from matplotlib.colors import to_rgb

    from norface_rt.config import EMOTION_COLORS, SERIES_COLORS

    for au in SERIES_COLORS:  # the AU lines' colours (and the live view's)
        for emotion, colour in EMOTION_COLORS.items():
            distance = sum((a - b) ** 2 for a, b in zip(to_rgb(au), to_rgb(colour))) ** 0.5
            assert distance > 0.25, (au, emotion, colour)
    assert len(set(SERIES_COLORS)) == len(SERIES_COLORS)
