"""train.evaluate_real on labelled real faces, end to end: the packaged default model through ONNX
Runtime and real MediaPipe on a tiny folder-per-emotion set built from permissive photos, the
London set's held-out people, two labelled segments of a real video, and two reports side by side.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.paths import packaged_model_dir

LONDON_IDS = ("003", "006")  # held-out people (ids divisible by 3)
LONDON_LIMIT = 3


def _cartoon_frame(video: Path, dst: Path) -> Path:
    """One frame of the animated cartoon (no real face in it)."""
    import av

    with av.open(str(video)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == 30:
                cv2.imwrite(str(dst), frame.to_ndarray(format="bgr24"))
                return dst
    raise AssertionError(f"{video} has fewer than 31 frames")


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path,
                 media_dir: Path) -> Path:
    london = shared_dir / "faces" / "london"
    if not (london / "_info.csv").is_file():
        pytest.skip(f"London set not found: {london}")
    root = tmp_path_factory.mktemp("labelled") / "tiny"
    for sub in ("neutral", "happiness", "sad", "contempt", "misc"):
        (root / sub).mkdir(parents=True)
    for pid in LONDON_IDS:
        shutil.copy(london / "neutral" / f"{pid}_03.jpg", root / "neutral")
        shutil.copy(london / "smiling" / f"{pid}_08.jpg", root / "happiness")  # an alias
    cv2.imwrite(str(root / "sad" / "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    _cartoon_frame(media_dir / "no_face.mp4", root / "sad" / "cartoon.jpg")
    (root / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    shutil.copy(media_dir / "single_face.jpg", root / "contempt")  # outside --classes: skipped
    shutil.copy(media_dir / "grace_hopper_512x512.jpg", root / "misc")  # not an emotion: skipped
    return root


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, labelled_dir: Path, shared_dir: Path,
               media_dir: Path, landmarker_path: Path) -> Path:
    from train.__main__ import main

    out = tmp_path_factory.mktemp("evaluate-labelled") / "report"
    video = media_dir / "single_face.mp4"
    rc = main(["evaluate-real", "--labelled", str(labelled_dir), "--london", "--shared",
               str(shared_dir), "--london-limit", str(LONDON_LIMIT),
               "--segment", f"{video}@0-1.2=happy", "--segment", f"{video}@1.2-10=sad",
               "--out", str(out), "--landmarker", str(landmarker_path)])
    assert rc == 0
    return out


def _report(d: Path) -> dict:
    return json.loads((d / "report.json").read_text())


def test_labelled_counts_and_no_face_handling(report_dir: Path) -> None:
    r = _report(report_dir)
    assert r["model"]["model_id"] == json.loads(
        (packaged_model_dir() / "config.json").read_text())["model_id"]
    assert r["media"] == [] and r["pooled"] is None  # --media is optional now
    (s,) = r["labelled"]
    assert s["name"] == "tiny" and s["classes"] == ["neutral", "happy", "sad", "surprise", "fear",
                                                    "disgust", "anger"]
    assert s["n"] == 6 and s["n_unreadable"] == 1  # broken.jpg: not scored, reported
    assert s["skipped"] == {"contempt": 1, "misc": 1}
    assert s["n_no_face"] == 2  # the blank image and the cartoon
    sad = s["per_class"]["sad"]
    assert sad == {"n": 2, "recall": 0.0, "no_face": 2}  # no face counts as wrong
    assert s["per_class"]["neutral"]["n"] == 2 and s["per_class"]["happy"]["n"] == 2
    assert s["per_class"]["anger"]["recall"] is None  # no anger images: no recall
    assert s["predicted_counts"]["none"] == 2 and sum(s["predicted_counts"].values()) == 6


def test_accuracy_agrees_with_the_confusion_matrix(report_dir: Path) -> None:
    (s,) = _report(report_dir)["labelled"]
    cm = np.asarray(s["confusion"]["matrix"])
    assert s["confusion"]["columns"][-1] == "none" and cm.shape == (7, 8)
    assert cm.sum() == s["n"] and cm[:, -1].sum() == s["n_no_face"]
    assert s["accuracy"] == pytest.approx(np.trace(cm[:, :7]) / cm.sum())
    recalls = [v["recall"] for v in s["per_class"].values() if v["recall"] is not None]
    assert len(recalls) == 3 and all(0.0 <= x <= 1.0 for x in recalls)
    assert s["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    for c, v in s["per_class"].items():
        i = s["confusion"]["rows"].index(c)
        assert cm[i].sum() == v["n"]
        if v["n"]:
            assert v["recall"] == pytest.approx(cm[i, i] / v["n"])


def test_au_patterns_beside_mediapipe(report_dir: Path) -> None:
    (s,) = _report(report_dir)["labelled"]
    au = s["au_patterns"]
    assert list(au) == ["AU12", "AU06", "AU04", "AU09", "AU01", "AU02", "AU26", "AU15"]
    smile = au["AU12"]
    assert smile["rises_for"] == ["happy"] and smile["n_pos"] == 2 and smile["n_neg"] == 2
    for k in ("auc_prob", "auc_intensity", "auc_mediapipe"):
        assert 0.0 <= smile[k] <= 1.0
    # MediaPipe reads the two London smiles as smiles: its AU12 separates them fully
    assert smile["auc_mediapipe"] == 1.0
    assert au["AU01"]["n_pos"] == 0 and au["AU01"]["auc_prob"] is None  # no surprise: undefined
    assert au["AU04"]["rises_for"] == ["anger", "sad"]
    assert au["AU09"]["mediapipe_flat"]  # noseSneer is ~0 in this bundle


def test_confusion_png_and_csv(report_dir: Path) -> None:
    (s,) = _report(report_dir)["labelled"]
    png = Path(s["confusion_png"])
    assert png.parent == report_dir and png.stat().st_size > 10_000
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and float(img.std()) > 10.0
    rows = list(csv.DictReader((report_dir / "images.csv").open()))
    tiny = [row for row in rows if row["set"] == "tiny"]
    assert len(tiny) == 7  # 6 scored + the unreadable one
    assert {row["predicted"] for row in tiny if row["label"] == "sad"} == {"none", "unreadable"}
    md = (report_dir / "report.md").read_text()
    for section in ("## Labelled real faces", "| tiny | 6 | 2 |", "![confusion matrix of tiny]",
                    "## London set, held-out people", "## Labelled video segments"):
        assert section in md, section
    assert "Yardstick 1" not in md  # no --media: no label-free sections


def test_london_held_out_only(report_dir: Path) -> None:
    lon = _report(report_dir)["london"]
    assert lon["split"] == "held_out" and lon["people"] == LONDON_LIMIT
    a = lon["all"]
    assert a["people"] == LONDON_LIMIT and a["n_neutral"] == LONDON_LIMIT
    assert a["n_smiling"] == LONDON_LIMIT and lon["n_images"] == 2 * LONDON_LIMIT
    for k in ("neutral_as_neutral", "smiling_as_happy"):
        assert 0.0 <= a[k] <= 1.0
    assert a["aus"]["AU12"]["auc_mediapipe"] > 0.75  # MediaPipe reads posed smiles as smiles
    assert 0.0 <= a["aus"]["AU12"]["auc_intensity"] <= 1.0
    assert a["aus"]["AU06"]["mediapipe_flat"]
    for key in ("ethnicity", "gender", "age_group"):
        groups = lon["groups"][key]
        assert sum(g["people"] for g in groups.values()) == LONDON_LIMIT, key
        assert sum(g["n_neutral"] for g in groups.values()) == LONDON_LIMIT
    rows = [row for row in csv.DictReader((report_dir / "images.csv").open())
            if row["set"] == "london-held-out"]
    ids = {Path(row["path"]).name[:3] for row in rows}
    assert len(ids) == LONDON_LIMIT and all(int(i) % 3 == 0 for i in ids)  # never training people


def test_segments_of_a_real_video(report_dir: Path) -> None:
    seg = _report(report_dir)["segments"]
    happy, sad = seg["segments"]
    assert (happy["label"], sad["label"]) == ("happy", "sad")
    assert happy["frames"] + sad["frames"] == 72  # 2.4 s at 30 fps; END past the end is fine
    assert happy["frames"] >= 30 and sad["frames"] >= 30
    for s in (happy, sad):
        assert s["frames_with_face"] >= s["frames"] - 2  # one man, frontal, all along
        assert sum(s["read_as"].values()) == pytest.approx(1.0)
        assert s["read_as_label"] == s["read_as"][s["label"]]
        assert sum(s["mean_prob"].values()) == pytest.approx(1.0, abs=1e-3)
        assert set(s["mean_prob"]) >= {"contempt"}  # mean probabilities of every output
    (pair,) = seg["happy_vs_sad"]
    assert pair["n_happy"] == happy["frames_with_face"] and pair["n_sad"] == sad["frames_with_face"]
    for k in ("auc_au12_intensity", "auc_au12_prob", "auc_mediapipe_smile"):
        assert 0.0 <= pair[k] <= 1.0


def test_side_by_side_of_two_models(report_dir: Path, labelled_dir: Path, tiny_model_dir: Path,
                                    landmarker_path: Path, tmp_path: Path) -> None:
    from train.__main__ import main

    other = tmp_path / "untrained"
    assert main(["evaluate-real", "--model-dir", str(tiny_model_dir), "--labelled",
                 str(labelled_dir), "--out", str(other), "--landmarker",
                 str(landmarker_path)]) == 0
    md_file = tmp_path / "side.md"
    assert main(["evaluate-real", "--side-by-side", str(report_dir / "report.json"),
                 str(other / "report.json"), "--out", str(md_file)]) == 0
    md = md_file.read_text()
    a, b = _report(report_dir)["model"]["model_id"], _report(other)["model"]["model_id"]
    assert a != b and f"`{a}`" in md and f"`{b}`" in md
    assert "| tiny: balanced accuracy |" in md and "| tiny: images (no face) | 6 (2) | 6 (2) |" in md
    # London and the segments only in the first report: shown, with – for the other model
    london_rows = [line for line in md.splitlines() if line.startswith("| London held-out, all")]
    assert london_rows and all(line.endswith("| – |") for line in london_rows)


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to evaluate"),
    (["--segment", "clip.mp4=sad"], "expected VIDEO@START-END=LABEL"),
    (["--labelled", "/nonexistent/set"], "--labelled: no such folder"),
    (["--media", "/nonexistent.mp4"], "--media: no such file"),
    (["--renders", "/tmp", "--segment", "x.mp4@0-1=sad"], "--renders needs real faces"),
    (["--classes", "neutral", "joy", "--london"], "'joy' is not an emotion"),
    (["--side-by-side", "/nonexistent/a.json", "/nonexistent/b.json"], "no such report"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv: list[str], message: str,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from train.__main__ import main

    assert main(["evaluate-real", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "evaluate-real: error:" in err and message in err


@pytest.fixture(scope="module")
def geometry_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model set that also consumes MediaPipe's blendshapes."""
    import torch

    from norface_rt.config import ModelConfig
    from norface_rt.export import save_model_set
    from norface_rt.export.untrained import resolve_target
    from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES
    from norface_rt.models import create_model
    from norface_rt.preprocess import preprocess

    g = len(MEDIAPIPE_BLENDSHAPES)
    cfg = ModelConfig.for_size("tiny", trained=False, model_id="norface-tiny-geometry-untrained",
                               geometry_inputs=("blendshapes",),
                               blendshape_names=MEDIAPIPE_BLENDSHAPES,
                               geometry_reference=(0.1,) * g, geometry_spread=(0.1,) * g)
    target = resolve_target(None, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("norface", cfg).eval()
    model.set_target(torch.from_numpy(preprocess(target.image[None], cfg)))
    return Path(save_model_set(model, cfg, tmp_path_factory.mktemp("model-geometry"),
                               target_image=target.image))


def test_a_model_with_a_geometry_input(geometry_model_dir: Path, labelled_dir: Path,
                                       media_dir: Path, landmarker_path: Path,
                                       tmp_path: Path) -> None:
    """Stills feed the largest face's blendshapes, videos the baseline-corrected ones."""
    from train.__main__ import main

    video = media_dir / "single_face.mp4"
    assert main(["evaluate-real", "--model-dir", str(geometry_model_dir), "--labelled",
                 str(labelled_dir), "--segment", f"{video}@0-1=happy",
                 "--out", str(tmp_path), "--landmarker", str(landmarker_path)]) == 0
    r = _report(tmp_path)
    assert r["model"]["model_id"] == "norface-tiny-geometry-untrained"
    (s,) = r["labelled"]
    assert s["n"] == 6 and s["n_no_face"] == 2 and s["per_class"]["sad"]["no_face"] == 2
    (seg,) = r["segments"]["segments"]
    assert seg["frames"] == 30 and seg["frames_with_face"] >= 28
    assert "UNTRAINED" in (tmp_path / "report.md").read_text()
