"""Renderer, paired samples, determinism, shards and MediaPipe on renders (real GL, real data)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.faces.align import transform_points
from train.synth.render import Camera, Lighting, Renderer, rotation_matrix


def test_renderer_draws_a_lit_textured_head(face_model, gl_available) -> None:  # noqa: ANN001
    r = Renderer(face_model, 96, 96, samples=0)
    try:
        tex = np.zeros((64, 128, 3), np.uint8)
        tex[:, :64] = (200, 150, 120)  # face tile
        r.set_texture("t", tex)
        cam = Camera(focal=200, width=96, height=96)
        w = np.zeros(len(face_model.expression_names), np.float32)
        verts = face_model.mesh(face_model.neutral, w)
        normals = face_model.vertex_normals(verts)
        posed = verts + np.array([0, 0, -60], np.float32)
        img = r.render(posed, normals, "t", cam, Lighting())
        assert img.shape == (96, 96, 4) and img.dtype == np.uint8
        assert img[48, 48, 3] == 255 and img[0, 0, 3] == 0  # head in the middle, clear corners
        nose = cam.project(posed[face_model.landmarks68[30:31]])[0]
        px = img[int(round(nose[1])), int(round(nose[0]))]
        assert px[0] > px[2]  # skin texture (red > blue), not a flat material
        with pytest.raises(KeyError, match="not uploaded"):
            r.render(posed, normals, "missing", cam, Lighting())
        with pytest.raises(ValueError, match="camera size"):
            r.render(posed, normals, "t", Camera(focal=200, width=64, height=64), Lighting())
        with pytest.raises(ValueError, match="uint8"):
            r.set_texture("bad", tex.astype(np.float32))
    finally:
        r.release()


def test_two_renderers_in_one_process_do_not_interfere(face_model, gl_available) -> None:  # noqa: ANN001
    """Each render makes its own context current (a second context once broke the first)."""
    w = np.zeros(len(face_model.expression_names), np.float32)
    verts = face_model.mesh(face_model.neutral, w) + np.array([0, 0, -60], np.float32)
    normals = face_model.vertex_normals(verts)
    cam = Camera(focal=200, width=64, height=64)
    tex = np.full((32, 64, 3), 180, np.uint8)
    a = Renderer(face_model, 64, 64)
    a.set_texture("t", tex)
    first = a.render(verts, normals, "t", cam, Lighting())
    b = Renderer(face_model, 64, 64)
    b.set_texture("t", tex)
    b.render(verts, normals, "t", cam, Lighting(ambient=(1.0, 0.0, 0.0)))
    b.release()
    np.testing.assert_array_equal(a.render(verts, normals, "t", cam, Lighting()), first)
    a.release()


def test_texture_cache_records_fits(texture_cache: Path) -> None:
    meta = json.loads((texture_cache / "identities.json").read_text())
    assert [r["id"] for r in meta["identities"]] == ["canada/003f", "composite/f_multi"]
    assert all(r["fit_error"] < 0.08 for r in meta["identities"])
    tex = cv2.imread(str(texture_cache / "target.png"))
    assert tex.shape == (128, 256, 3)
    face = tex[32:96, 32:96].reshape(-1, 3).astype(float)
    assert face.std(axis=0).max() > 5  # a real photo texture, not a flat fill


def test_pair_shares_expression_and_target_identity(generator) -> None:  # noqa: ANN001
    g = generator
    seed = 11
    samples = [g.sample(seed, i) for i in range(3)]
    for i, s in enumerate(samples):
        rng = np.random.default_rng([seed, i])
        g.draw_identity(rng)
        np.testing.assert_array_equal(s["blendshapes"], g.sampler.sample(rng).weights)
        # I_n is exactly the expression rendered on the target, framed by the fixed matrix
        view = g.view_target(s["blendshapes"])
        norm = cv2.warpAffine(view.image, g.target_matrix, s["image"].shape[:2][::-1],
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        np.testing.assert_array_equal(s["normalized"], norm)
        # ... whose geometry is the ICT mean shape (target identity), frontal, canonical camera
        verts = g.model.mesh(g.model.neutral, s["blendshapes"])
        cam = g._target_camera
        lm = cam.project(verts[g.model.landmarks68] + np.array([0, 0, -g._target_distance]))
        np.testing.assert_allclose(s["normalized_landmarks"],
                                   transform_points(g.target_matrix, lm), atol=1e-3)
    # originals show different identities/poses; the neutral target frame is shared by all
    assert not np.allclose(samples[0]["landmarks"], samples[1]["landmarks"], atol=1.0)
    assert {s["subject"] for s in samples} <= {"canada/003f", "composite/f_multi"}


def test_sample_format_and_crop_alignment(generator) -> None:  # noqa: ANN001
    from train.data.sample import validate_sample

    s = generator.sample(5, 0)
    validate_sample(s, img_size=64)
    assert s["landmarks"].shape == (68, 2) and s["blendshapes"].shape == (55,)
    # the aligner put the eyes where the template says (on a neutral face: a squint or a
    # blink moves the lid landmarks whose mean this checks)
    s = next(smp for smp, info in (generator.sample_with_info(5, i) for i in range(40))
             if info["category"] == "neutral")
    eyes = s["landmarks"][36:42].mean(axis=0), s["landmarks"][42:48].mean(axis=0)
    tmpl = np.asarray(generator.aligner.template_px)
    assert np.linalg.norm(eyes[0] - tmpl[0]) < 3.0 and np.linalg.norm(eyes[1] - tmpl[1]) < 3.0


def test_deterministic_for_a_seed(generator) -> None:  # noqa: ANN001
    a = generator.sample(21, 4)
    b = generator.sample(21, 4)
    c = generator.sample(22, 4)
    for k in ("image", "normalized", "landmarks", "au_intensity", "blendshapes"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["key"] == b["key"] != c["key"]
    assert not np.array_equal(a["blendshapes"], c["blendshapes"])


def test_generate_writes_readable_shards(shared_dir: Path, texture_cache: Path,
                                        tmp_path: Path) -> None:
    from train.data.sample import validate_sample
    from train.data.shards import ShardDataset
    from train.synth.dataset import generate_dataset
    from train.synth.engine import SynthSettings

    settings = SynthSettings(img_size=64, render_size=128)
    meta = generate_dataset(tmp_path / "one", 5, 3, 1, texture_cache, shared=str(shared_dir),
                            shard_size=3, settings=settings, log=lambda m: None)
    assert meta["count"] == 5 and meta["shards"] == 2
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "meta.json", "shard-00000.npz", "shard-00001.npz"]
    on_disk = json.loads((tmp_path / "one" / "meta.json").read_text())
    assert on_disk["label_mapping_version"] and on_disk["target_identity"].startswith("target:")
    ds = ShardDataset(tmp_path / "one", img_size=64)
    assert len(ds) == 5
    for i in range(5):
        validate_sample(ds[i], img_size=64)
    # two worker processes write the same bytes as one process
    generate_dataset(tmp_path / "two", 5, 3, 2, texture_cache, shared=str(shared_dir),
                     shard_size=3, settings=settings, log=lambda m: None)
    for name in ("shard-00000.npz", "shard-00001.npz"):
        with np.load(tmp_path / "one" / name) as x, np.load(tmp_path / "two" / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k])
    with pytest.raises(FileExistsError, match="already holds"):
        generate_dataset(tmp_path / "one", 2, 3, 1, texture_cache, shared=str(shared_dir),
                         settings=settings, log=lambda m: None)
    # an interrupted run resumed: the finished shard is kept as it is, the missing one written
    (tmp_path / "two" / "shard-00001.npz").unlink()
    kept = (tmp_path / "two" / "shard-00000.npz").stat().st_mtime_ns
    meta = generate_dataset(tmp_path / "two", 5, 3, 1, texture_cache, shared=str(shared_dir),
                            shard_size=3, settings=settings, log=lambda m: None, resume=True)
    assert meta["count"] == 5 and meta["shards"] == 2
    assert (tmp_path / "two" / "shard-00000.npz").stat().st_mtime_ns == kept
    with np.load(tmp_path / "one" / "shard-00001.npz") as x, \
            np.load(tmp_path / "two" / "shard-00001.npz") as y:
        np.testing.assert_array_equal(x["image"], y["image"])
    with pytest.raises(ValueError, match="expected 2"):  # shards of another size are refused
        generate_dataset(tmp_path / "two", 5, 3, 1, texture_cache, shared=str(shared_dir),
                         shard_size=2, settings=settings, log=lambda m: None, resume=True)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        generate_dataset(tmp_path / "x", 0, 3, 1, texture_cache, settings=settings)


def test_mediapipe_finds_the_rendered_faces(generator, landmarker_path: Path) -> None:  # noqa: ANN001
    from train.synth.check import check_detection

    rep = check_detection(generator, landmarker_path, count=12, seed=2)
    assert rep.detection_rate >= 0.75, rep
    # MediaPipe's alignment points agree with the renderer's within a fraction of the IOD
    assert rep.points5_error_iod < 0.15, rep


def test_cli_rejects_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    from train.synth.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["generate", "--out", "x", "--count", "0"])
    assert e.value.code == 2
    assert "--count must be >= 1, got 0" in capsys.readouterr().err


def test_rotation_matrix_convention() -> None:
    r = rotation_matrix(90, 0, 0)
    np.testing.assert_allclose(r @ np.array([0, 0, 1.0]), [1, 0, 0], atol=1e-6)


def test_target_crop_is_the_neutral_normalized_face(generator) -> None:  # noqa: ANN001
    # I_t given to training and export: same framing as every sample's I_n, neutral expression
    crop = generator.target_crop()
    s = generator.settings.img_size
    assert crop.shape == (s, s, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, generator.target_crop())
    n = len(generator.model.expression_names)
    neutral_view = generator.view_target(np.zeros(n, np.float32))
    np.testing.assert_array_equal(crop, generator.target_crop(neutral_view))
    smile = np.zeros(n, np.float32)
    smile[[i for i, k in enumerate(generator.model.expression_names) if k.startswith("mouthSmile")]] = 1.0
    other = generator.target_crop(generator.view_target(smile))
    diff = np.abs(other.astype(int) - crop.astype(int)).mean(axis=2)
    # only the face changes: the canonical grey background (corners) stays put
    assert diff[:8, :8].max() == 0 and diff.max() > 40


def test_shards_carry_mediapipe_geometry_and_relabel_in_place(
        shared_dir: Path, texture_cache: Path, landmarker_path: Path, tmp_path: Path) -> None:
    """--landmarker stores MediaPipe's reading of each full render and of the same person's
    neutral view; relabelling recomputes labels from the stored weights without rendering."""
    from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES
    from train.synth.dataset import generate_dataset, relabel_dataset
    from train.synth.engine import SynthSettings

    settings = SynthSettings(img_size=64, render_size=192)
    out = tmp_path / "geo"
    meta = generate_dataset(out, 6, 4, 1, texture_cache, shared=str(shared_dir), shard_size=6,
                            settings=settings, log=lambda m: None, landmarker=landmarker_path)
    assert meta["mp_blendshape_names"] == list(MEDIAPIPE_BLENDSHAPES)
    with np.load(out / "shard-00000.npz") as z:
        mp, neutral, emotion = z["mp_blendshapes"], z["mp_neutral"], z["emotion"]
    assert mp.shape == neutral.shape == (6, len(MEDIAPIPE_BLENDSHAPES))
    read = np.isfinite(mp).all(axis=1) & np.isfinite(neutral).all(axis=1)
    assert read.sum() >= 4  # MediaPipe finds most rendered faces
    assert not np.allclose(mp[read], neutral[read])  # the expression moved the reading
    meta_path = out / "meta.json"
    m = json.loads(meta_path.read_text())
    m["label_mapping_version"] = "old"
    m["counts"]["emotions"] = {}
    meta_path.write_text(json.dumps(m))
    new = relabel_dataset(out, log=lambda s: None)
    with np.load(out / "shard-00000.npz") as z:
        np.testing.assert_array_equal(z["emotion"], emotion)  # same mapping: same labels
        np.testing.assert_array_equal(z["mp_blendshapes"], mp)  # nothing else touched
    assert new["label_mapping_version"] != "old" and sum(new["counts"]["emotions"].values()) == 6
