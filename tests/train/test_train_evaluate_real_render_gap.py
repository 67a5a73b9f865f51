"""The renders-vs-real statistic of ``evaluate-real --renders``: 16 real renders (the synthetic
engine with MediaPipe reading each full render), real London faces through real MediaPipe, and
the transfer classifier between them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES

TEXTURE_IDS = ("canada/003f", "composite/f_multi")
COUNT = 16


@pytest.fixture(scope="session")
def render_shards(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path,
                  landmarker_path: Path) -> Path:
    """16 renders with mp_blendshapes, from a two-photo texture cache (about 15 s)."""
    try:
        import moderngl
    except ImportError:
        pytest.skip("moderngl not installed (pip install moderngl)")
    try:
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # noqa: BLE001 - any failure means no GL renderer here
        pytest.skip(f"no headless EGL context ({e}); apt-get install libegl1 libgl1-mesa-dri "
                    "libegl-mesa0")
    ctx.release()
    if not (shared_dir / "ict" / "ict_facekit_v1.npz").is_file():
        pytest.skip(f"ICT-FaceKit archive not found under {shared_dir / 'ict'}")
    for pid in TEXTURE_IDS:
        if not (shared_dir / "faces" / f"{pid}.tem").is_file():
            pytest.skip(f"face photo template not found: {shared_dir / 'faces' / pid}.tem")
    from train.synth.dataset import generate_dataset
    from train.synth.engine import SynthSettings
    from train.synth.textures import build_texture_cache

    tmp = tmp_path_factory.mktemp("render-gap")
    cache = build_texture_cache(shared_dir, tmp / "textures", ids=TEXTURE_IDS, tile=128,
                                log=lambda m: None)
    out = tmp / "shards"
    generate_dataset(out, COUNT, 1, 1, cache, shared=str(shared_dir),
                     settings=SynthSettings(img_size=64, render_size=256), log=lambda m: None,
                     landmarker=landmarker_path)
    return out


@pytest.fixture(scope="module")
def gap_report(tmp_path_factory: pytest.TempPathFactory, render_shards: Path, shared_dir: Path,
               landmarker_path: Path) -> dict:
    from train.__main__ import main

    if not (shared_dir / "faces" / "london" / "_info.csv").is_file():
        pytest.skip("London set not found")
    out = tmp_path_factory.mktemp("render-gap-report")
    assert main(["evaluate-real", "--london", "--shared", str(shared_dir), "--london-limit", "4",
                 "--renders", str(render_shards), "--out", str(out),
                 "--landmarker", str(landmarker_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    report["_md"] = (out / "report.md").read_text()
    return report


def test_render_counts(gap_report: dict, render_shards: Path) -> None:
    from train.data.shards import ShardDataset

    g = gap_report["render_gap"]
    ds = ShardDataset(render_shards)
    x, emo = ds.column("mp_blendshapes"), ds.column("emotion")
    usable = np.isfinite(x).all(1) & (emo >= 0) & (emo != 7)  # 7 = contempt: not a scored class
    r = g["renders"]
    assert r["n"] == COUNT and r["n_usable"] == int(usable.sum()) > 0
    assert r["n_no_face"] == int((~np.isfinite(x).all(1)).sum())
    assert g["real_sets"] == [{"name": "london-held-out", "n": 8, "n_no_face": 0, "n_usable": 8}]


def test_class_means_of_every_blendshape(gap_report: dict, render_shards: Path) -> None:
    from train.data.shards import ShardDataset

    g = gap_report["render_gap"]
    means = g["class_means"]
    assert set(means) == {"renders", "london-held-out"}
    assert set(means["london-held-out"]) == {"neutral", "happy"}
    for per in means.values():
        for v in per.values():
            assert list(v["mean"]) == list(MEDIAPIPE_BLENDSHAPES)
            assert all(0.0 <= m <= 1.0 for m in v["mean"].values())
    # the render means are those of the shards, recomputed here
    ds = ShardDataset(render_shards)
    x, emo = ds.column("mp_blendshapes"), ds.column("emotion")
    for name, v in means["renders"].items():
        rows = np.isfinite(x).all(1) & (emo == ["neutral", "happy", "sad", "surprise", "fear",
                                                 "disgust", "anger"].index(name))
        assert v["n"] == int(rows.sum())
        j = MEDIAPIPE_BLENDSHAPES.index("jawOpen")
        assert v["mean"]["jawOpen"] == pytest.approx(float(x[rows, j].mean()), abs=1e-6)
    # real smiles: MediaPipe's mouthSmile is far higher on smiling than on neutral photos
    lon = means["london-held-out"]
    assert lon["happy"]["mean"]["mouthSmileLeft"] > lon["neutral"]["mean"]["mouthSmileLeft"] + 0.2


def test_transfer_score(gap_report: dict) -> None:
    t = gap_report["render_gap"]["transfer"]
    assert t["features"] == 51 and len(t["trained_on"]["classes"]) >= 2
    assert sum(t["trained_on"]["classes"].values()) == t["trained_on"]["n"]
    v = t["per_set"]["london-held-out"]
    assert v["n"] == 8 and 0.0 <= v["accuracy"] <= 1.0 and 0.0 <= v["balanced_accuracy"] <= 1.0
    recalls = [r for r in v["per_class_recall"].values() if r is not None]
    assert len(recalls) == 2  # London has neutral and happy only
    assert v["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    cm = np.asarray(v["confusion"]["matrix"])
    assert cm.sum() == 8 and cm[:, -1].sum() == 0  # every face has blendshapes: no "none"


def test_markdown_table(gap_report: dict) -> None:
    md = gap_report["_md"]
    assert "## Renders vs real faces, as MediaPipe sees them" in md
    assert ("| class | domain | n | browDown | browInnerUp | browOuterUp | eyeSquint | eyeBlink | "
            "mouthSmile | mouthUpperUp | jawOpen |") in md
    assert "| neutral | london-held-out | 4 |" in md
    assert "| london-held-out | 8 | 0 |" in md


def test_renders_without_blendshapes_fail_clearly(tmp_path: Path, shared_dir: Path,
                                                  landmarker_path: Path, render_shards: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from train.__main__ import main

    bare = tmp_path / "bare"
    shutil.copytree(render_shards, bare)
    for f in bare.glob("shard-*.npz"):
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files if k not in ("mp_blendshapes", "mp_neutral")}
        np.savez_compressed(f, **arrays)
    assert main(["evaluate-real", "--london", "--shared", str(shared_dir), "--london-limit", "1",
                 "--renders", str(bare), "--out", str(tmp_path / "out"),
                 "--landmarker", str(landmarker_path)]) == 2
    assert "carry no mp_blendshapes" in capsys.readouterr().err
