"""End-to-end pipeline runs on real media, real MediaPipe and a real (untrained) ONNX model."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.pipeline import PipelineOptions, create_pipeline
from norface_rt.sinks.base import Sink


class CollectSink(Sink):
    """A real sink that keeps every message in memory (what a consumer would see)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed = False

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        self.messages.append(msg)

    def close(self) -> None:
        self.closed = True

    def frames(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "frame"
                and (stream_id is None or m["stream_id"] == stream_id)]

    def eos(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "eos"]


class BrokenSink(Sink):
    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        raise OSError("disk full (deliberately)")

    def close(self) -> None:
        pass


def run(sources: list[str], model_dir: Path, landmarker: Path, sinks: list[Any] | None = None,
        **kw: Any) -> tuple[CollectSink, dict[str, Any], Any]:
    sink = CollectSink()
    opts = PipelineOptions(sources=sources, model_dir=model_dir, landmarker=landmarker, **kw)
    pipe = create_pipeline(opts, [sink, *(sinks or [])])
    snap = pipe.run(timeout=240)
    assert sink.closed
    return sink, snap, pipe


def test_single_face_one_message_per_frame_in_order(tiny_model_dir, landmarker_path, media_dir):
    sink, snap, _ = run([str(media_dir / "single_face.mp4")], tiny_model_dir, landmarker_path)
    frames = sink.frames()
    assert len(frames) == 72
    assert [m["frame_index"] for m in frames] == list(range(72))
    assert [m["seq"] for m in frames] == list(range(72))
    pts = [m["pts"] for m in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    (eos,) = sink.eos()
    assert eos["error"] is None and eos["seq"] == 72 and eos["frames"] == 72
    assert sink.messages[-1]["type"] == "eos"
    with_face = [m for m in frames if m["faces"]]
    assert len(with_face) >= 65
    ids = Counter(f["track_id"] for m in with_face for f in m["faces"])
    top_id, top_n = ids.most_common(1)[0]
    assert top_n >= 0.95 * len(with_face), ids
    face = with_face[0]["faces"][0]
    assert list(face["au_occurrence"]) == list(AU_NAMES)
    assert list(face["au_intensity"]) == list(AU_NAMES)
    assert list(face["emotions"]) == list(EMOTION_NAMES)
    assert face["top_emotion"] == max(face["emotions"], key=face["emotions"].get)
    assert all(0.0 <= v <= 1.0 for v in face["au_occurrence"].values())
    assert all(0.0 <= v <= 5.0 for v in face["au_intensity"].values())
    assert abs(sum(face["emotions"].values()) - 1.0) < 1e-3
    assert face["model_id"].endswith("untrained")
    assert all(m["untrained"] is True for m in frames)
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
    assert snap["frames"] == 72
    for stage in ("decode", "detect", "align", "normalize", "classify", "publish", "latency"):
        assert snap["stages"][stage]["count"] > 0


@pytest.mark.parametrize("name", ["face_noface.mov", "noface_face.mov"])
def test_frames_without_faces_still_produce_messages(tiny_model_dir, landmarker_path, media_dir, name):
    sink, _, _ = run([str(media_dir / name)], tiny_model_dir, landmarker_path)
    frames = sink.frames()
    assert len(frames) == 169
    assert [m["frame_index"] for m in frames] == list(range(169))
    empty = sum(1 for m in frames if not m["faces"])
    full = sum(1 for m in frames if m["faces"])
    assert empty >= 20 and full >= 20, (empty, full)
    assert sink.eos()[0]["error"] is None


def test_no_face_video_clean_end(tiny_model_dir, landmarker_path, media_dir):
    sink, _, _ = run([str(media_dir / "no_face.mp4")], tiny_model_dir, landmarker_path)
    frames = sink.frames()
    assert len(frames) > 50
    assert all(m["faces"] == [] for m in frames)
    assert len(sink.eos()) == 1 and sink.eos()[0]["error"] is None


def test_multi_face_image_distinct_ids(tiny_model_dir, landmarker_path, media_dir):
    sink, _, _ = run([str(media_dir / "multi_face.jpg")], tiny_model_dir, landmarker_path,
                     max_faces=8)
    (frame,) = sink.frames()
    ids = [f["track_id"] for f in frame["faces"]]
    assert len(ids) >= 3 and len(set(ids)) == len(ids)


def test_several_sources_in_one_process(tiny_model_dir, landmarker_path, media_dir, tmp_path):
    a = tmp_path / "a.mp4"
    shutil.copy(media_dir / "single_face.mp4", a)
    sink, snap, _ = run([str(a), str(media_dir / "no_face.mp4"), str(media_dir / "single_face.jpg")],
                        tiny_model_dir, landmarker_path)
    assert len(sink.frames("a")) == 72
    assert [m["seq"] for m in sink.frames("a")] == list(range(72))
    assert len(sink.frames("no_face")) > 50
    assert len(sink.frames("single_face")) == 1 and sink.frames("single_face")[0]["faces"]
    assert sorted(e["stream_id"] for e in sink.eos()) == ["a", "no_face", "single_face"]
    assert set(snap["streams"]) == {"a", "no_face", "single_face"}


def test_truncated_video_delivers_frames_before_damage(tiny_model_dir, landmarker_path, media_dir,
                                                       tmp_path):
    import av

    # Re-mux to MPEG-TS (no index at the end), then cut it: the front stays decodable.
    ts = tmp_path / "full.ts"
    with av.open(str(media_dir / "single_face.mp4")) as src, av.open(str(ts), "w", format="mpegts") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
    data = ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    sink, snap, _ = run([str(cut)], tiny_model_dir, landmarker_path)
    frames = sink.frames()
    assert 10 <= len(frames) < 72
    assert [m["frame_index"] for m in frames] == list(range(len(frames)))
    (eos,) = sink.eos()
    assert eos["frames"] == len(frames)


def test_broken_sink_does_not_stop_the_others(tiny_model_dir, landmarker_path, media_dir):
    sink, _, pipe = run([str(media_dir / "single_face.jpg")], tiny_model_dir, landmarker_path,
                        sinks=[BrokenSink()])
    assert len(sink.frames()) == 1 and len(sink.eos()) == 1
    assert pipe.sink_errors == 2


def test_missing_model_names_where_it_looked(landmarker_path, media_dir, tmp_path, monkeypatch):
    from norface_rt.paths import ModelNotFoundError

    monkeypatch.delenv("NORFACE_RT_MODEL_DIR", raising=False)
    with pytest.raises(ModelNotFoundError) as ei:
        create_pipeline(PipelineOptions(sources=[str(media_dir / "single_face.jpg")],
                                        model_dir=tmp_path / "nope", landmarker=landmarker_path), [])
    assert str(tmp_path / "nope") in str(ei.value)


@pytest.mark.parametrize("kw,field", [({"max_faces": 0}, "--max-faces"),
                                      ({"max_batch": 100000}, "--max-batch"),
                                      ({"stream_ids": ["a", "b"]}, "--stream-id")])
def test_absurd_options_are_rejected(kw, field, tiny_model_dir, landmarker_path, media_dir):
    with pytest.raises(ValueError, match=field):
        create_pipeline(PipelineOptions(sources=[str(media_dir / "single_face.jpg")],
                                        model_dir=tiny_model_dir, landmarker=landmarker_path, **kw), [])


class SlowSink(CollectSink):
    """A consumer slower than the camera: it may lose messages at its own buffer (counted), but
    never slow the pipeline or add latency."""

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        super().write(msg)
        if msg["type"] == "frame":
            time.sleep(0.12)


def test_live_run_with_a_slow_sink_counts_every_loss(tiny_model_dir, landmarker_path, media_dir):
    slow, fast = SlowSink(), CollectSink()
    opts = PipelineOptions(sources=[str(media_dir / "single_face.mp4")], model_dir=tiny_model_dir,
                           landmarker=landmarker_path, realtime=True, queue_size=2, sink_buffer=4)
    pipe = create_pipeline(opts, [slow, fast])
    t0 = time.monotonic()
    pipe.start()
    assert pipe.wait(60)
    elapsed = time.monotonic() - t0  # published as fast as the camera, whatever the slow sink does
    pipe.stop()
    frames = slow.frames()
    (eos,) = slow.eos()  # an end-of-stream message always gets in
    lost = pipe.sink_losses["SlowSink"]
    assert lost > 0, "a sink 3x slower than the camera must lose messages at its buffer"
    assert len(frames) + lost + eos["dropped_frames"] == 72, "each frame delivered or counted"
    assert eos["sink_losses"]["SlowSink"] > 0 and eos["sink_losses"]["CollectSink"] == 0
    # the fast sink is unaffected: every frame the source delivered reaches it
    assert len(fast.frames()) + eos["dropped_frames"] == 72
    assert elapsed < 72 * 0.12 * 0.6
    drops = [m["dropped_frames"] for m in fast.frames()]
    assert drops == sorted(drops)
    idx = [m["frame_index"] for m in frames]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    lat = [m["emit_time"] - m["capture_time"] for m in fast.frames()]
    assert max(lat[len(lat) // 2:]) < 3.0
    snap = pipe.stats.snapshot()
    assert snap["sinks"]["SlowSink"]["dropped"] == lost and snap["sinks"]["CollectSink"]["dropped"] == 0


def test_periodic_stats_messages(tiny_model_dir, landmarker_path, media_dir):
    from norface_rt import protocol

    sink, _, _ = run([str(media_dir / "single_face.mp4")], tiny_model_dir, landmarker_path,
                     stats_interval=0.3)
    stats = [m for m in sink.messages if m["type"] == "stats"]
    assert len(stats) >= 2  # at least one periodic and the final one
    for m in stats:
        protocol.validate(m)
    final = stats[-1]
    assert final["frames"] == 72 and final["streams"]["single_face"]["ended"] is True
    assert {"detect", "normalize", "classify", "latency"} <= set(final["stages"])
    assert sink.messages[-1]["type"] == "stats"  # the final summary comes after end of stream


def test_device_align_matches_cpu_crops(tiny_model_dir, landmarker_path, media_dir):
    # The GPU pre-processing path (frame uploaded once, faces warped by the backend) runs on the
    # CPU with the torch-cuda backend in its eager CPU mode: same faces, results within the
    # measured crop-rounding tolerance of the cv2 path, same message stream.
    src = [str(media_dir / "multi_face.jpg")]
    kw = dict(backend="torch-cuda", device="cpu", tiling=0.5)
    cpu_sink, _, _ = run(src, tiny_model_dir, landmarker_path, **kw)
    dev_sink, _, pipe = run(src, tiny_model_dir, landmarker_path, device_align=True, **kw)
    assert pipe.device_align
    (a,), (b,) = cpu_sink.frames(), dev_sink.frames()
    assert len(a["faces"]) == len(b["faces"]) >= 4
    for fa, fb in zip(a["faces"], b["faces"]):
        assert fa["box"] == fb["box"]
        pa, pb = (np.array(list(f["au_occurrence"].values())) for f in (fa, fb))
        ea, eb = (np.array(list(f["emotions"].values())) for f in (fa, fb))
        assert np.abs(pa - pb).max() < 5e-3 and np.abs(ea - eb).max() < 5e-3
    with pytest.raises(ValueError, match="--device-align needs --backend torch-cuda"):
        create_pipeline(PipelineOptions(sources=src, model_dir=tiny_model_dir, landmarker=landmarker_path,
                                        device_align=True), [])


def test_image_folder_frames_name_their_file_and_count_unreadable_ones(
        tiny_model_dir, landmarker_path, media_dir, tmp_path):
    from norface_rt import protocol

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "single_face.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copy(media_dir / "grace_hopper_512x512.jpg", folder / "c.jpg")
    sink, _, _ = run([str(folder)], tiny_model_dir, landmarker_path)
    frames = sink.frames()
    for m in frames:
        protocol.validate(m)
    # one message per file, frame_index = the file's position, unreadable file included
    assert [m["frame_index"] for m in frames] == [0, 1, 2]
    assert [Path(m["source"]).name for m in frames] == ["a.jpg", "b.jpg", "c.jpg"]
    bad = frames[1]
    assert "b.jpg" in bad["error"] and bad["faces"] == [] and bad["width"] == bad["height"] == 0
    assert frames[0]["faces"] and frames[2]["faces"] and not frames[0]["error"]
    (eos,) = sink.eos()
    assert eos["frames"] == 3 and "b.jpg" in eos["error"]


def test_landmarks_blendshapes_and_quality_travel_when_asked(tiny_model_dir, landmarker_path,
                                                             media_dir):
    src = [str(media_dir / "single_face.jpg")]
    plain, _, _ = run(src, tiny_model_dir, landmarker_path)
    rich, _, _ = run(src, tiny_model_dir, landmarker_path, landmarks=True, blendshapes=True)
    (p,), (r,) = plain.frames(), rich.frames()
    assert "landmarks" not in p["faces"][0] and "blendshapes" not in p["faces"][0]
    face = r["faces"][0]
    assert len(face["landmarks"]) == 478
    x0, y0, x1, y1 = face["box"]
    xs = [pt[0] for pt in face["landmarks"]]
    assert x0 - 1 <= min(xs) and max(xs) <= x1 + 1  # pixels of this frame, inside the box
    assert 0.0 <= face["blendshapes"]["jawOpen"] <= 1.0 and len(face["blendshapes"]) == 52
    assert face["quality"] == {"ok": True, "issues": []} == p["faces"][0]["quality"]
    assert r["faces_cut"] == 0


def test_faces_beyond_max_faces_are_counted_in_the_message_and_warned(
        tiny_model_dir, landmarker_path, media_dir, caplog):
    with caplog.at_level("WARNING"):
        sink, _, _ = run([str(media_dir / "multi_face.jpg")], tiny_model_dir, landmarker_path,
                         max_faces=4)
    (frame,) = sink.frames()
    assert len(frame["faces"]) == 4 and frame["faces_cut"] >= 1
    assert any("--max-faces" in r.getMessage() for r in caplog.records)


def test_smoothing_steadies_a_track_and_is_off_by_default(tiny_model_dir, landmarker_path,
                                                          media_dir):
    src = [str(media_dir / "single_face.mp4")]
    raw, _, _ = run(src, tiny_model_dir, landmarker_path)
    smooth, _, _ = run(src, tiny_model_dir, landmarker_path, smooth=0.5)

    def jitter(sink: CollectSink) -> float:
        seq = [m["faces"][0]["emotions"] for m in sink.frames() if len(m["faces"]) == 1]
        names = list(seq[0])
        arr = np.array([[e[k] for k in names] for e in seq])
        return float(np.abs(np.diff(arr, axis=0)).mean())

    assert jitter(smooth) < 0.5 * jitter(raw)
    for m in smooth.frames():
        for f in m["faces"]:
            assert abs(sum(f["emotions"].values()) - 1.0) < 1e-6
            assert f["top_emotion"] == max(f["emotions"], key=f["emotions"].get)


def test_geometry_model_end_to_end_with_per_track_baseline(landmarker_path, media_dir, tmp_path):
    """A model with the blendshape input runs through the real pipeline; in a video the baseline
    moves each track's geometry, in stills (and with baseline=False) it does not."""
    from norface_rt.export import init_untrained

    geo_dir = init_untrained(tmp_path / "geo", size="tiny", seed=2, geometry=True)
    video = str(media_dir / "single_face.mp4")
    sink, snap, _ = run([video], geo_dir, landmarker_path)
    frames = sink.frames()
    assert len(frames) == 72 and all(len(f["faces"]) == 1 and f["error"] is None for f in frames)
    plain, _, _ = run([video], geo_dir, landmarker_path, baseline=False)
    a = np.array([[*f["faces"][0]["emotions"].values()] for f in frames])
    b = np.array([[*f["faces"][0]["emotions"].values()] for f in plain.frames()])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)  # first look: nothing to correct yet
    assert np.abs(a[-10:] - b[-10:]).max() > 1e-5  # later: the track's resting offset is removed


def test_a_sideways_phone_video_is_analysed_upright(tiny_model_dir, landmarker_path, media_dir,
                                                    sideways_video, tmp_path):
    """A video stored sideways with a display matrix (frame.rotation == 90): frames, boxes, head
    pose and the overlay are those of the upright video."""
    import av

    from norface_rt.sinks.overlay import OverlayVideoSink

    overlay = OverlayVideoSink(tmp_path / "overlay.mp4")
    turned, _, _ = run([str(sideways_video)], tiny_model_dir, landmarker_path, sinks=[overlay])
    upright, _, _ = run([str(media_dir / "single_face.mp4")], tiny_model_dir, landmarker_path)
    frames, ref = turned.frames(), upright.frames()[:24]
    assert len(frames) == 24 and all((m["width"], m["height"]) == (640, 360) for m in frames)
    pairs = [(a["faces"][0], b["faces"][0]) for a, b in zip(frames, ref) if a["faces"] and b["faces"]]
    assert len(pairs) >= 20
    for fa, fb in pairs:  # same face, same place, head not rolled by 90 degrees
        assert np.abs(np.array(fa["box"]) - np.array(fb["box"])).max() < 12, (fa["box"], fb["box"])
        assert abs(fa["pose"]["roll"] - fb["pose"]["roll"]) < 8
        assert abs(fa["pose"]["roll"]) < 30
    from norface_rt.sinks import overlay as overlay_mod

    with av.open(str(tmp_path / "overlay.mp4")) as c:  # the upright frame + the side panel
        first = next(c.decode(video=0))
        assert (first.width, first.height, first.rotation) == (
            (640 + overlay_mod.PANEL_WIDTH) // 2 * 2, 360, 0)
