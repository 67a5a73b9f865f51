"""train.evaluate_real: the label-free real-face report, end to end on real media and a real
(untrained, tiny) ONNX model set, plus the statistics on signals whose answer is known."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.config import AU_NAMES
from train.evaluate_real import (
    BlendshapeReference,
    MediaItem,
    MediaRecords,
    correlate,
    expand_media,
    expression_blendshapes,
    summarize,
)

CLIP_FRAMES = 20


# ---- statistics with a known answer --------------------------------------------------------------

def test_correlate_recovers_a_known_correlation() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    r = 0.6
    y = r * x + math.sqrt(1 - r * r) * rng.standard_normal(4000)
    c = correlate(x, y)
    assert c.n == 4000
    assert c.pearson == pytest.approx(r, abs=0.03)
    # for bivariate normals Spearman's rho is (6/pi) asin(r/2)
    assert c.spearman == pytest.approx(6 / math.pi * math.asin(r / 2), abs=0.03)
    assert correlate(x, -2.0 * x + 1.0).pearson == pytest.approx(-1.0)
    mono = correlate(x, np.exp(3 * x))  # monotone but not linear
    assert mono.spearman == pytest.approx(1.0) and mono.pearson < 0.9
    assert abs(correlate(x, rng.standard_normal(4000)).pearson) < 0.05


def test_correlate_undefined_cases_report_n() -> None:
    x = np.arange(10.0)
    const = correlate(x, np.full(10, 0.3))
    assert math.isnan(const.pearson) and math.isnan(const.spearman) and const.n == 10
    y = x.copy()
    y[[1, 4, 7]] = np.nan  # pairs with a NaN on either side are dropped, not zero-filled
    c = correlate(x, y)
    assert c.n == 7 and c.pearson == pytest.approx(1.0)
    few = correlate([1.0, 2.0], [2.0, 1.0])
    assert few.n == 2 and math.isnan(few.pearson)
    with pytest.raises(ValueError, match="same length"):
        correlate([1.0, 2.0, 3.0], [1.0, 2.0])


def test_reference_uses_the_synthetic_label_rules() -> None:
    with pytest.raises(ValueError, match="blendshape names lack .*browInnerUp"):
        BlendshapeReference(["mouthSmileLeft", "mouthSmileRight"])
    # the real MediaPipe category set, as the landmarker reports it
    full = _mediapipe_names()
    ref = BlendshapeReference(full)
    assert ref.missing == ["cheekRaiser"]  # ICT-only shape, entered as 0
    d = {n: 0.0 for n in full}
    d.update(mouthSmileLeft=0.4, mouthSmileRight=0.2, jawOpen=0.3, browInnerUp=0.1,
             cheekSquintLeft=0.5, eyeBlinkLeft=0.9, eyeBlinkRight=0.3)
    a = dict(zip(AU_NAMES, ref.intensities(d)))
    assert a["AU12"] == pytest.approx(2.0)  # 5 * max(L, R)
    assert a["AU26"] == pytest.approx(1.5)
    assert a["AU01"] == pytest.approx(0.5)
    assert a["AU06"] == pytest.approx(2.5)  # cheekSquint alone (cheekRaiser absent)
    assert a["AU43"] == pytest.approx(1.5)  # the weaker eye: one closed eye is a wink
    assert a["AU25"] == pytest.approx(1.5)
    assert a["AU04"] == 0.0
    expr = expression_blendshapes(full)
    assert "mouthSmileLeft" in expr and "jawOpen" in expr
    assert not {"_neutral", "eyeLookInLeft", "cheekPuff"} & set(expr)
    with pytest.raises(ValueError, match="blendshapes: missing"):
        ref.intensities({"jawOpen": 0.5})


def _mediapipe_names() -> list[str]:
    sided = ["browDown", "browOuterUp", "cheekSquint", "eyeBlink", "eyeLookDown", "eyeLookIn",
             "eyeLookOut", "eyeLookUp", "eyeSquint", "eyeWide", "mouthDimple", "mouthFrown",
             "mouthLowerDown", "mouthPress", "mouthSmile", "mouthStretch", "mouthUpperUp",
             "noseSneer"]
    mid = ["_neutral", "browInnerUp", "cheekPuff", "jawForward", "jawLeft", "jawOpen", "jawRight",
           "mouthClose", "mouthFunnel", "mouthLeft", "mouthPucker", "mouthRight", "mouthRollLower",
           "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper"]
    return mid + [f"{s}{side}" for s in sided for side in ("Left", "Right")]


def test_yardsticks_on_a_perfect_model_and_normalizer() -> None:
    """Outputs equal to the reference and I_n read exactly like I_o: every defined score is 1."""
    rng = np.random.default_rng(1)
    names = _mediapipe_names()
    ref = BlendshapeReference(names)
    rec = MediaRecords(MediaItem(Path("synthetic.mp4"), "video"), fps=25.0)
    n = 60
    for i in range(n):
        d = {k: float(v) for k, v in zip(names, rng.uniform(0, 0.4, len(names)))}
        d["cheekSquintLeft"] = d["cheekSquintRight"] = 0.0  # MediaPipe's habit: AU06 stays flat
        rec.frame_index.append(i)
        rec.time_s.append(i / 25.0)
        rec.track_id.append(0)
        rec.area.append(1.0)
        rec.au_intensity.append(ref.intensities(d))
        rec.au_prob.append(ref.intensities(d) / 5.0)
        rec.emotion_prob.append(np.eye(8)[max(ref.emotion(d), 0)])
        rec.frame_blend.append(d)
        rec.probed.append(True)
        rec.crop_blend.append(d)
        rec.norm_blend.append(dict(d) if i % 4 else None)  # I_n not detected on every 4th face
    rec.frames = rec.frames_with_face = n
    out = summarize([rec], fidelity=True)
    y1 = out["au_vs_mediapipe"]["per_au"]
    assert y1["AU06"]["ref_flat"] and math.isnan(y1["AU06"]["pearson"]) and y1["AU06"]["n"] == n
    for au in set(AU_NAMES) - {"AU06"}:
        assert y1[au]["pearson"] == pytest.approx(1.0), au
        assert y1[au]["spearman"] == pytest.approx(1.0) and y1[au]["icc31"] == pytest.approx(1.0)
        assert y1[au]["mae"] == pytest.approx(0.0, abs=1e-6)
    emo = out["emotion_vs_mediapipe"]
    assert emo["n_labelled"] == 0 or emo["accuracy"] == pytest.approx(1.0)
    fid = out["normalization_fidelity"]
    assert fid["faces_probed"] == n and fid["detect_rate_original"] == 1.0
    assert fid["detect_rate_normalized"] == pytest.approx(0.75)
    assert fid["mean_expression_pearson"] == pytest.approx(1.0)
    assert fid["mean_expression_ceiling_pearson"] == pytest.approx(1.0)
    assert fid["per_blendshape"]["jawOpen"]["n"] == 45
    assert fid["per_blendshape"]["cheekSquintLeft"]["flat"]
    assert fid["per_au"]["AU12"]["pearson"] == pytest.approx(1.0)


def test_expand_media(tmp_path: Path, media_dir: Path) -> None:
    items = expand_media([media_dir])
    kinds = {(i.path.name, i.kind) for i in items}
    assert ("single_face.mp4", "video") in kinds and (media_dir.name, "images") in kinds
    assert expand_media([media_dir / "single_face.jpg"]) == [
        MediaItem(media_dir / "single_face.jpg", "images")]
    with pytest.raises(FileNotFoundError, match="--media"):
        expand_media([tmp_path / "nope.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--media: folder .* holds no video"):
        expand_media([tmp_path / "empty"])


# ---- end to end ------------------------------------------------------------------------------

def _cut_clip(src: Path, dst: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src``, re-encoded with PyAV (MPEG-4, same size and rate)."""
    import av
    from fractions import Fraction

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or 25).limit_denominator(1001)
        vout = out.add_stream("mpeg4", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, \
            "yuv420p"
        vout.bit_rate = 4_000_000
        n = 0
        for frame in inp.decode(vin):
            img = frame.to_ndarray(format="rgb24")
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = n
            out.mux(vout.encode(vf))
            n += 1
            if n == frames:
                break
        out.mux(vout.encode(None))
    return dst


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, media_dir: Path,
               landmarker_path: Path) -> Path:
    from train.__main__ import main

    tmp = tmp_path_factory.mktemp("evaluate-real")
    clip = _cut_clip(media_dir / "single_face.mp4", tmp / "clip.mp4", CLIP_FRAMES)
    stills = tmp / "stills"
    stills.mkdir()
    for name in ("single_face.jpg", "grace_hopper_512x512.jpg"):
        shutil.copy(media_dir / name, stills / name)
    out = tmp / "report"
    rc = main(["evaluate-real", "--model-dir", str(tiny_model_dir), "--media", str(clip),
               str(stills), "--out", str(out), "--landmarker", str(landmarker_path)])
    assert rc == 0
    return out


def _is_corr(v: object) -> bool:
    return v is None or (isinstance(v, float) and -1.0 <= v <= 1.0)


def test_report_files_and_counts(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert report["model"]["model_id"] == "norface-tiny-untrained"
    assert report["model"]["trained"] is False
    media = {m["name"]: m for m in report["media"]}
    assert set(media) == {"clip.mp4", "stills/"}
    clip, stills = media["clip.mp4"], media["stills/"]
    assert clip["kind"] == "video" and clip["frames"] == CLIP_FRAMES and clip["error"] is None
    assert clip["frames_with_face"] >= CLIP_FRAMES - 2  # one man, frontal, all along
    assert stills["kind"] == "images" and stills["frames"] == 2 and stills["faces"] >= 2
    assert report["totals"]["faces"] == clip["faces"] + stills["faces"]
    md = (report_dir / "report.md").read_text()
    assert "UNTRAINED" in md and "norface-tiny-untrained" in md
    for section in ("Yardstick 1", "Yardstick 2", "AU12", "clip.mp4", "stills/"):
        assert section in md
    rows = (report_dir / "faces.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + report["totals"]["faces"]


def test_au_correlations_are_bounded_with_n(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    pooled = report["pooled"]["au_vs_mediapipe"]
    assert set(pooled["per_au"]) == set(AU_NAMES)
    total = report["totals"]["faces"]
    for au, v in pooled["per_au"].items():
        assert v["n"] == total, au  # every face has MediaPipe blendshapes
        for k in ("pearson", "spearman", "spearman_prob", "icc31"):
            assert _is_corr(v[k]), (au, k, v[k])
        assert (v["pearson"] is None) or not v["ref_flat"]
    # the clip is a man smiling: MediaPipe's smile must move, so AU12 is a real number
    assert pooled["per_au"]["AU12"]["pearson"] is not None
    for m in report["media"]:
        per = m["metrics"]["au_vs_mediapipe"]["per_au"]
        assert all(per[a]["n"] == m["faces"] and _is_corr(per[a]["spearman"]) for a in AU_NAMES)


def test_fidelity_section(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    fid = report["pooled"]["normalization_fidelity"]
    assert fid["faces_probed"] == report["totals"]["faces"]
    assert fid["detect_rate_original"] > 0.9  # the aligned crop of a real face is a face
    assert 0.0 <= fid["detect_rate_normalized"] <= 1.0  # untrained: a grey blur, ~0
    assert "mouthSmileLeft" in fid["expression_blendshapes"]
    for name, v in fid["per_blendshape"].items():
        assert _is_corr(v["pearson"]) and _is_corr(v["ceiling_pearson"]), name
        assert isinstance(v["n"], int)
    # cropping and upscaling alone keep MediaPipe's reading of the smile
    assert fid["per_blendshape"]["mouthSmileLeft"]["ceiling_pearson"] > 0.8


def test_timeseries_plot(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    png = Path(report["plot"])
    assert png.parent == report_dir and png.name == "timeseries_clip.png"
    assert png.stat().st_size > 20_000
    img = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 900
    assert float(img.std()) > 10.0  # lines and text, not a blank canvas


def test_bad_media_fails_clearly(tmp_path: Path, tiny_model_dir: Path,
                                 landmarker_path: Path) -> None:
    from train.evaluate_real import run

    with pytest.raises(FileNotFoundError, match="--media: no such file"):
        run(tiny_model_dir, [tmp_path / "missing.mp4"], tmp_path / "out",
            landmarker=landmarker_path)
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="--plot-video"):
        run(tiny_model_dir, [tmp_path / "x.jpg"], tmp_path / "out", landmarker=landmarker_path,
            plot_video=tmp_path / "other.mp4")


def test_media_without_faces_is_reported_not_crashed(tmp_path: Path, tiny_model_dir: Path,
                                                      landmarker_path: Path, media_dir: Path) -> None:
    # a folder of real media always has items with no face; they must appear with 0 faces
    import json

    from train.evaluate_real import run

    run(tiny_model_dir, [media_dir / "no_face.mp4", media_dir / "single_face.jpg"], tmp_path / "out",
        landmarker=landmarker_path, max_frames=6)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    by_name = {m["name"]: m for m in rep["media"]}
    assert by_name["no_face.mp4"]["faces"] == 0 and by_name["no_face.mp4"]["error"] is None
    assert by_name["single_face.jpg"]["faces"] == 1
