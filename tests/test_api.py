"""The Python API on real media: the CLI's pipeline underneath, typed results, bounded memory,
early exits that stop every thread, and DataFrames with the CSV's columns."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import norface_rt
from norface_rt.pipeline import Pipeline
from norface_rt.types import FaceQuality, FaceResult, FrameResult


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout)


# Threads of the shared analyzer's still pipeline, which runs as long as the analyzer is open:
# not what the video tests look for.
STILL_THREADS: set[int | None] = set()


@pytest.fixture(scope="module")
def analyzer(tiny_model_dir: Path, landmarker_path: Path, media_dir: Path):
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path, max_faces=8) as a:
        before = {t.ident for t in threading.enumerate()}
        a.analyze_image(media_dir / "single_face.jpg")  # starts the still pipeline
        STILL_THREADS.update(t.ident for t in threading.enumerate() if t.ident not in before)
        yield a


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("norface-", "source-")) and t.is_alive()
            and t.ident not in STILL_THREADS]


def test_import_stays_light() -> None:
    code = ("import sys, norface_rt\n"
            "heavy = ('torch', 'mediapipe', 'cv2', 'onnxruntime', 'av', 'numpy', 'pandas', "
            "'matplotlib', 'zmq')\n"
            "print([m for m in heavy if m in sys.modules])\n"
            "norface_rt.Analyzer, norface_rt.to_dataframe, norface_rt.FrameResult\n"
            "print([m for m in ('torch', 'mediapipe', 'pandas', 'matplotlib') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out == ["[]", "[]"], out


def test_analyze_image_path_and_array_agree(analyzer, media_dir: Path) -> None:
    from norface_rt.images import read_rgb

    faces = analyzer.analyze_image(media_dir / "multi_face.jpg")
    assert len(faces) == 5 and all(isinstance(f, FaceResult) for f in faces)
    f = faces[0]
    assert isinstance(f.quality, FaceQuality) and f.landmarks.shape == (478, 3)
    assert set(f.au_intensity) == set(analyzer.config.au_names)
    assert f.blendshapes is not None and 0 <= f.blendshapes["jawOpen"] <= 1
    from_array = analyzer.analyze_image(read_rgb(media_dir / "multi_face.jpg"))
    assert [g.box for g in from_array] == [g.box for g in faces]
    np.testing.assert_allclose([list(g.emotions.values()) for g in from_array],
                               [list(g.emotions.values()) for g in faces], atol=1e-6)
    assert analyzer.analyze_image(np.zeros((64, 64, 3), np.uint8)) == []  # no face: no error


@pytest.mark.parametrize("bad,match", [
    (np.zeros((64, 64, 3), np.float32), r"^image: .*got float32 array .*\(floats: if they hold 0\.\.1"),
    (np.zeros((64, 64), np.uint8), r"shape \(64, 64\) \(one channel: a grey image"),
    (np.zeros((64, 64, 4), np.uint8), r"\(4 channels: RGBA\? image\[\.\.\., :3\]"),
    (np.zeros((64, 64, 3), np.uint16), r"\(dtype uint16: expected uint8"),
    (np.zeros((0, 64, 3), np.uint8), r"height and width must be at least 1"),
    ([[1, 2, 3]], r"image: expected a path or an HxWx3 uint8 RGB array, got list"),
])
def test_analyze_image_names_what_is_wrong_with_an_array(analyzer, bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        analyzer.analyze_image(bad)


def test_analyze_image_refuses_videos_folders_and_missing_files(analyzer, media_dir, tmp_path):
    with pytest.raises(ValueError, match="use analyze_video"):
        analyzer.analyze_image(media_dir / "single_face.mp4")
    with pytest.raises(ValueError, match="use analyze_video"):
        analyzer.analyze_image(media_dir)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        analyzer.analyze_image(tmp_path / "missing.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="cannot decode image"):
        analyzer.analyze_image(tmp_path / "broken.png")


def test_analyze_video_runs_the_clis_pipeline(analyzer, media_dir: Path) -> None:
    analysis = analyzer.analyze_video(media_dir / "single_face.mp4")
    assert isinstance(analysis.pipeline, Pipeline) and analysis.expected_frames == 72
    frames = list(analysis)
    assert all(isinstance(f, FrameResult) for f in frames)
    assert [f.frame_index for f in frames] == list(range(72)) and [f.seq for f in frames] == \
        list(range(72))
    assert sum(1 for f in frames if f.faces) >= 65 and frames[0].image is None
    assert analysis.ended and analysis.error is None and analysis.frames == 72
    assert not pipeline_threads()
    with pytest.raises(RuntimeError, match="already iterated"):
        iter(analysis)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):  # at the call, not on iteration
        analyzer.analyze_video(media_dir / "nope.mp4")


def test_results_equal_the_clis_messages(analyzer, tiny_model_dir, landmarker_path, media_dir,
                                         tmp_path) -> None:
    res = cli("run", str(media_dir / "multi_face.jpg"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(landmarker_path), "--max-faces", "8", "--jsonl",
              str(tmp_path / "r.jsonl"), "--no-progress")
    assert res.returncode == 0, res.stderr
    (msg,) = [m for m in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())
              if m["type"] == "frame"]
    faces = analyzer.analyze_image(media_dir / "multi_face.jpg")
    assert [f.to_dict() for f in faces] == msg["faces"]


def test_folder_frames_carry_their_file_and_a_bad_file_is_a_warned_frame(analyzer, media_dir,
                                                                         tmp_path) -> None:
    shutil.copy(media_dir / "single_face.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a picture")
    shutil.copy(media_dir / "grace_hopper_512x512.jpg", tmp_path / "c.jpg")
    analysis = analyzer.analyze_video(tmp_path)
    with pytest.warns(norface_rt.StreamWarning, match="b.jpg"):
        frames = list(analysis)
    assert [Path(f.source).name for f in frames] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert frames[1].error and not frames[1].faces and frames[0].faces and frames[2].faces
    assert "b.jpg" in analysis.error


def test_leaving_the_loop_early_stops_every_thread(analyzer, media_dir: Path) -> None:
    assert not pipeline_threads()
    seen = 0
    for frame in analyzer.analyze_video(media_dir / "WolfgangLanger_Pexels.mp4"):
        seen += 1
        if seen == 3:
            break
    gc.collect()
    deadline = time.monotonic() + 5.0
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pipeline_threads(), pipeline_threads()
    # closing an analysis that never ran releases it as well
    analyzer.analyze_video(media_dir / "single_face.mp4").close()
    assert not pipeline_threads()


def test_a_paused_caller_holds_the_decoder_back(analyzer, media_dir: Path) -> None:
    # 472 frames; with the caller paused, only the bounded queues' worth may be decoded.
    with analyzer.analyze_video(media_dir / "WolfgangLanger_Pexels.mp4", buffer=4) as analysis:
        it = iter(analysis)
        next(it), next(it)
        time.sleep(3.0)
        source = analysis.pipeline.sources[0]
        decoded = source.frames
        assert decoded < 80, f"{decoded} frames decoded while the caller read 2"
        more = [next(it) for _ in range(10)]
        assert [f.frame_index for f in more] == list(range(2, 12))


def test_a_caller_slower_than_the_sink_timeout_loses_nothing(analyzer, media_dir: Path) -> None:
    """The result queue runs behind its own sink thread like every output, but asks for
    back-pressure: a loop that pauses longer than the pipeline's stall timeout (2 s) is waited
    for, never dropped, with or without the frames' pixels."""
    for keep_images in (False, True):
        with analyzer.analyze_video(media_dir / "single_face.mp4", buffer=2,
                                    keep_images=keep_images) as analysis:
            frames = []
            for f in analysis:
                frames.append(f)
                if len(frames) in (1, 40):
                    time.sleep(2.6)  # the pipeline fills every buffer meanwhile
            (worker,) = analysis.pipeline.workers
            assert worker.name == "results" and worker.policy == "block"
            assert not worker.stalled and analysis.pipeline.sink_losses == {"results": 0}
        assert [f.frame_index for f in frames] == list(range(72)) and analysis.error is None
        assert all((f.image is not None) == keep_images for f in frames)


def test_keep_images_and_smoothing_options(tiny_model_dir, landmarker_path, media_dir) -> None:
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path, smooth=0.3) as a:
        frames = []
        for f in a.analyze_video(media_dir / "single_face.mp4", keep_images=True):
            frames.append(f)
            if len(frames) == 5:
                break
    assert frames[0].image is not None and frames[0].image.shape == (360, 640, 3)
    with pytest.raises(ValueError, match="--smooth"):
        norface_rt.Analyzer(tiny_model_dir, landmarker_path, smooth=-1)
    with pytest.raises(ValueError, match="--max-faces"):
        norface_rt.Analyzer(tiny_model_dir, landmarker_path, max_faces=0)


def test_missing_model_fails_at_construction(landmarker_path, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="Looked in"):
        norface_rt.Analyzer(tmp_path / "none", landmarker_path)


# ----------------------------------------------------------------------------- DataFrames
@pytest.mark.parametrize("style,extra", [("default", []), ("openface", []),
                                         ("default", ["--landmarks", "--blendshapes"]),
                                         ("openface", ["--landmarks", "--blendshapes"])])
def test_to_dataframe_has_the_csvs_columns(analyzer, tiny_model_dir, landmarker_path, media_dir,
                                           tmp_path, style, extra) -> None:
    import pandas as pd

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "multi_face.jpg", folder / "a.jpg")
    shutil.copy(media_dir / "astronaut.png", folder / "b.png")  # a face or none
    (folder / "c.jpg").write_bytes(b"unreadable")  # a success=0 row in the OpenFace style
    res = cli("run", str(folder), "--model-dir", str(tiny_model_dir), "--landmarker",
              str(landmarker_path), "--max-faces", "8", "--csv", str(tmp_path / "out.csv"),
              "--csv-style", style, *extra, "--no-progress")
    assert res.returncode == 1, res.stderr  # the unreadable file ends the stream with an error
    from_csv = pd.read_csv(tmp_path / "out.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", norface_rt.StreamWarning)
        frames = list(analyzer.analyze_video(folder))
    df = norface_rt.to_dataframe(frames, style=style, landmarks=bool(extra),
                                 blendshapes=bool(extra))
    assert list(df.columns) == list(from_csv.columns)
    assert len(df) == len(from_csv)
    for col in ("AU12_r", "emotion_happy", "confidence"):
        np.testing.assert_allclose(df[col].to_numpy(float), from_csv[col].to_numpy(float),
                                   atol=1e-9, equal_nan=True)
    if style == "openface":
        assert from_csv["frame"].tolist()[0] == 1 and 0 in from_csv["success"].tolist()


def test_to_dataframe_reads_message_dicts_and_refuses_mixed_openface_streams(analyzer, media_dir):
    frames = list(analyzer.analyze_video(media_dir / "single_face.jpg"))
    msgs = [f.to_message() for f in frames]
    assert list(norface_rt.to_dataframe(msgs).columns) == list(
        norface_rt.to_dataframe(frames).columns)
    other = dict(msgs[0], stream_id="other")
    with pytest.raises(ValueError, match="style 'openface' has no stream column"):
        norface_rt.to_dataframe([msgs[0], other], style="openface")
    with pytest.raises(ValueError, match="style: expected one of"):
        norface_rt.to_dataframe(msgs, style="excel")


def test_to_dataframe_without_pandas_names_the_extra(monkeypatch, analyzer) -> None:
    from norface_rt import extras

    monkeypatch.setitem(extras.EXTRA_MODULES, "pandas", ("no_such_module_for_this_test",))
    with pytest.raises(extras.MissingExtra, match=r"pip install 'norface-rt\[pandas\]'"):
        norface_rt.to_dataframe([])


# ----------------------------------------------------------------------------- issue 21, point 7

def test_analyze_image_keeps_one_warm_pipeline_across_calls(analyzer, media_dir: Path) -> None:
    """A photo costs what it costs in a folder: successive calls go through the same running
    pipeline (same threads, same MediaPipe graphs) instead of building one per call."""
    first = analyzer.analyze_image(media_dir / "single_face.jpg")
    stills = analyzer._stills
    threads = {t.ident for t in threading.enumerate() if t.name.startswith("norface-")}
    for _ in range(3):
        again = analyzer.analyze_image(media_dir / "single_face.jpg")
        assert [f.to_dict() for f in again] == [f.to_dict() for f in first]
    assert analyzer._stills is stills and stills.pipeline.alive_threads
    assert {t.ident for t in threading.enumerate() if t.name.startswith("norface-")} == threads
    assert first.frame.source == str(media_dir / "single_face.jpg") and first.faces_cut == 0


def test_analyze_images_streams_many_pictures_in_order(analyzer, media_dir, tmp_path) -> None:
    from norface_rt.images import read_rgb

    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    paths = [media_dir / "single_face.jpg", tmp_path / "bad.jpg", media_dir / "astronaut.png",
             read_rgb(media_dir / "grace_hopper_512x512.jpg")] * 4
    frames = list(analyzer.analyze_images(paths))
    assert len(frames) == 16 and all(isinstance(f, FrameResult) for f in frames)
    assert [f.source for f in frames[:4]] == [str(paths[0]), str(paths[1]), str(paths[2]), None]
    assert frames[1].error and "cannot decode image" in frames[1].error and not frames[1].faces
    assert all(len(frames[i].faces) == 1 for i in (0, 2, 3))
    assert [f.to_dict() for f in frames[4].faces] == [f.to_dict() for f in frames[0].faces]
    # leaving early leaves nothing behind for the next call
    for _ in analyzer.analyze_images(paths):
        break
    assert len(analyzer.analyze_image(media_dir / "multi_face.jpg")) == 5
    with pytest.raises(FileNotFoundError, match="missing.jpg"):  # checked before anything runs
        analyzer.analyze_images([media_dir / "single_face.jpg", tmp_path / "missing.jpg"])


def test_to_dataframe_takes_any_result(analyzer, media_dir: Path) -> None:
    faces = analyzer.analyze_image(media_dir / "multi_face.jpg")
    df = norface_rt.to_dataframe(faces)  # one picture's faces (it used to be refused)
    assert len(df) == 5 and df["source"].tolist() == [str(media_dir / "multi_face.jpg")] * 5
    assert len(norface_rt.to_dataframe(list(faces))) == 5  # a plain list of faces
    assert len(norface_rt.to_dataframe(faces[0])) == 1
    assert len(norface_rt.to_dataframe(faces.frame, style="openface")) == 5
    frames = analyzer.analyze_images([media_dir / "single_face.jpg", media_dir / "astronaut.png"])
    of = norface_rt.to_dataframe(frames, style="openface")
    assert of["frame"].tolist() == [1, 2] and str(of["face_id"].dtype) == "int64"
    assert (of["timestamp"] == 0).all()  # stills: timestamp 0, as OpenFace writes


def test_progress_bar_is_opt_in(tiny_model_dir, landmarker_path, media_dir, capfd) -> None:
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path) as quiet:
        list(quiet.analyze_video(media_dir / "single_face.mp4"))
        assert "72/72" not in capfd.readouterr().err
        list(quiet.analyze_video(media_dir / "single_face.mp4", progress=True))
        assert "72/72" in capfd.readouterr().err
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path, progress=True) as shown:
        list(shown.analyze_images([media_dir / "single_face.jpg"] * 3))
        assert "3/3" in capfd.readouterr().err


NATIVE = ("INFO: Created TensorFlow Lite", "W0000 ", "INFO: [")


def test_mediapipes_native_log_lines_stay_off_stderr(tiny_model_dir, landmarker_path,
                                                     media_dir) -> None:
    code = ("import sys, norface_rt\n"
            "with norface_rt.Analyzer(sys.argv[1], sys.argv[2], native_logs=sys.argv[4] == '1') "
            "as a:\n"
            "    a.analyze_image(sys.argv[3])\n"
            "    list(a.analyze_video(sys.argv[3]))\n"
            "print('python line', file=sys.stderr)\n")
    args = [str(tiny_model_dir), str(landmarker_path), str(media_dir / "single_face.jpg")]
    quiet = subprocess.run([sys.executable, "-c", code, *args, "0"], capture_output=True,
                           text=True, timeout=240)
    assert quiet.returncode == 0, quiet.stderr
    assert not [x for x in quiet.stderr.splitlines() if x.startswith(NATIVE)], quiet.stderr
    assert "python line" in quiet.stderr
    kept = subprocess.run([sys.executable, "-c", code, *args, "1"], capture_output=True,
                          text=True, timeout=240)
    assert [x for x in kept.stderr.splitlines() if x.startswith(NATIVE)], kept.stderr


def test_closing_the_analyzer_stops_everything_it_started(tiny_model_dir, landmarker_path,
                                                          media_dir) -> None:
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path) as a:
        a.analyze_image(media_dir / "single_face.jpg")  # the still pipeline runs
        analysis = a.analyze_video(media_dir / "single_face.mp4")
        next(iter(analysis))  # a video analysis left open mid-way
        assert pipeline_threads()
    assert not pipeline_threads()
    with pytest.raises(RuntimeError, match="closed"):
        a.analyze_image(media_dir / "single_face.jpg")


# ----------------------------------------------------------------------------- issue 21, point 3

def test_stills_keep_every_face_unless_asked(tiny_model_dir, landmarker_path, media_dir,
                                             tmp_path) -> None:
    """The five-person photo gives five faces by default (the cap of 4 is for videos); a cap
    that cuts says so in the result."""
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path) as a:
        assert len(a.analyze_image(media_dir / "multi_face.jpg")) == 5
    with norface_rt.Analyzer(tiny_model_dir, landmarker_path, max_faces=3) as capped:
        with pytest.warns(UserWarning, match="left out"):
            faces = capped.analyze_image(media_dir / "multi_face.jpg")
        assert len(faces) == 3 and faces.faces_cut >= 1
    res = cli("run", str(media_dir / "multi_face.jpg"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(landmarker_path), "--jsonl", str(tmp_path / "r.jsonl"),
              "--quiet")
    assert res.returncode == 0 and "--max-faces" not in res.stderr, res.stderr
    frame = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert len(frame["faces"]) == 5 and frame["faces_cut"] == 0
