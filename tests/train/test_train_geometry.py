"""Geometry input at training time: the London split, the real neutral pool, renders moved onto
real neutral faces, a classifier grown into a wider one, and a short geometry training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, neutral_distance
from train import classifier
from train.common import model_config, read_log
from train.data.london import age_group, is_held_out, london_people
from train.data.sample import collate
from train.data.shards import write_shard
from train.geometry import GeometryPool, geometry_batch, held_out_geometry, pool_model_fields

from train_helpers import TINY_MODEL, make_shards, run_section

G = len(MEDIAPIPE_BLENDSHAPES)


def test_london_split_is_fixed_by_id_and_disjoint(shared_dir: Path) -> None:
    train, held = london_people(shared_dir, "train"), london_people(shared_dir, "held_out")
    assert len(train) + len(held) == len(london_people(shared_dir)) == 102
    assert {p.id for p in train}.isdisjoint({p.id for p in held})
    assert all(int(p.id) % 3 == 0 for p in held) and all(int(p.id) % 3 for p in train)
    assert all(p.held_out for p in held) and is_held_out("london/003") and not is_held_out("004")
    assert {p.ethnicity for p in held} >= {"white", "black", "east_asian", "west_asian"}
    assert age_group(None) == "unknown" and age_group(29) == "18-29" and age_group(50) == "45+"
    with pytest.raises(ValueError, match="split"):
        london_people(shared_dir, "all-of-them")


def test_texture_sets_never_include_held_out_london_people(shared_dir: Path) -> None:
    from train.synth.textures import list_photos

    ids = [pid for pid, _, _ in list_photos(shared_dir)]
    london = [i for i in ids if i.startswith("london/")]
    assert len(london) == len(london_people(shared_dir, "train"))
    assert not any(is_held_out(i) for i in london)


@pytest.fixture()
def pool_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    neutral = rng.uniform(0.0, 0.2, (10, G)).astype(np.float32)
    p = tmp_path / "geometry_pool.npz"
    np.savez_compressed(p, neutral=neutral, names=np.asarray(MEDIAPIPE_BLENDSHAPES))
    return p


def test_renders_are_moved_onto_real_neutral_faces(pool_file: Path) -> None:
    pool = GeometryPool(pool_file)
    render = {"mp_blendshapes": np.full(G, 0.5, np.float32), "mp_neutral": np.full(G, 0.2, np.float32)}
    real = {"mp_blendshapes": np.full(G, 0.7, np.float32)}
    base = {"image": np.zeros((8, 8, 3), np.uint8), "au_occurrence": np.zeros(18, np.float32),
            "au_intensity": np.zeros(18, np.float32), "emotion": np.int64(0),
            "subject": "s", "source": "t", "key": "k"}
    batch = collate([{**base, **render}, {**base, **real}])
    fixed = geometry_batch(batch, pool, random=False)
    np.testing.assert_allclose(fixed[0].numpy(), np.clip(0.3 + pool.reference, 0, 1), atol=1e-6)
    np.testing.assert_allclose(fixed[1].numpy(), 0.7, atol=1e-6)  # real photos keep their reading
    np.testing.assert_allclose(held_out_geometry(batch, pool.reference), fixed.numpy(), atol=1e-6)
    gen = torch.Generator().manual_seed(1)
    rand = geometry_batch(batch, pool, random=True, generator=gen)
    rows = np.clip(0.3 + pool.neutral, 0, 1)
    assert np.abs(rows - rand[0].numpy()).max(axis=1).min() < 1e-6  # one real person's face
    noisy = geometry_batch(batch, pool, random=False, noise=1.0, generator=gen)
    assert not torch.allclose(noisy, fixed) and float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    batch["mp_blendshapes"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="require_geometry"):
        geometry_batch(batch, pool, random=False)


def test_pool_calibrates_the_model_config(pool_file: Path, tmp_path: Path) -> None:
    fields = pool_model_fields(pool_file, {"size": "tiny", "geometry_inputs": ["blendshapes"]})
    pool = GeometryPool(pool_file)
    assert fields["blendshape_names"] == MEDIAPIPE_BLENDSHAPES
    np.testing.assert_allclose(fields["geometry_reference"], pool.reference, rtol=1e-6)
    assert min(fields["geometry_spread"]) >= 0.01
    # the baseline's neutral gate: 99 % of the pool's own faces are within it, and it survives
    # into a valid ModelConfig
    d = neutral_distance(pool.neutral, pool.reference, pool.spread)
    assert fields["geometry_neutral_radius"] == pytest.approx(np.quantile(d, 0.99), abs=1e-4)
    assert float(np.mean(d <= fields["geometry_neutral_radius"])) >= 0.9
    assert model_config(fields).geometry_neutral_radius == fields["geometry_neutral_radius"]
    assert pool_model_fields(None, {"size": "tiny"}) == {"size": "tiny"}
    with pytest.raises(ValueError, match="geometry_pool"):
        pool_model_fields(None, {"geometry_inputs": ["blendshapes"]})
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, neutral=np.zeros((3, 4), np.float32), names=np.asarray(["a"] * 4))
    with pytest.raises(ValueError, match="names differ"):
        GeometryPool(bad)


def geometry_shards(directory: Path, n: int = 16) -> Path:
    """make_shards plus what --landmarker adds: MediaPipe readings of the render and its neutral,
    with the smile readable in the geometry (so geometry alone can learn the emotion)."""
    make_shards(directory, n=n, size=32)
    for f in sorted(directory.glob("shard-*.npz")):
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
        expr = arrays["blendshapes"][:, 0]
        mp = np.full((len(expr), G), 0.05, np.float32)
        mp[:, MEDIAPIPE_BLENDSHAPES.index("mouthSmileLeft")] = expr
        arrays["mp_blendshapes"] = mp
        arrays["mp_neutral"] = np.full((len(expr), G), 0.05, np.float32)
        if f.name.endswith("00000.npz"):
            arrays["mp_blendshapes"][0] = np.nan  # MediaPipe missed one render
        np.savez_compressed(f, **arrays)
    return directory


def test_geometry_training_trains_both_readouts_and_drops_unread_renders(
        pool_file: Path, tmp_path: Path) -> None:
    data = geometry_shards(tmp_path / "sh")
    spec = {"kind": "shards", "path": str(data), "require_geometry": True}
    cfg: dict[str, Any] = {
        "model": {**TINY_MODEL, "geometry_inputs": ["blendshapes"], "emotion_readout": "geometry"},
        "data": spec, "test_data": spec,
        "classifier": {"task": "multi", "geometry_pool": str(pool_file)}, "optim": {"lr": 2e-3},
        "run": run_section(tmp_path / "run", 30, log_every=10)}
    out = classifier.run(cfg)
    log = read_log(out / "log.csv")
    assert "emotion_other" in log[0] and log[-1]["emotion"] < log[0]["emotion"]
    m = json.loads((out / "metrics_test.json").read_text())
    assert m["n"] == 15  # the render MediaPipe could not read is left out
    assert {"emotion_accuracy_fused", "emotion_accuracy_geometry"} <= set(m)


def test_a_finished_classifier_grows_into_one_with_geometry(pool_file: Path, tmp_path: Path) -> None:
    from norface_rt.models.registry import create_model
    from train.common import model_config

    old = create_model("classifier", model_config(TINY_MODEL))
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path))
    new = create_model("classifier", model_config(pool_model_fields(
        pool_file, {**TINY_MODEL, "geometry_inputs": ["blendshapes"]})))
    changed = classifier.grow_module_weights(new, f"{path}")
    assert any("moe_output.w1 (grown" in c for c in changed)
    assert any(c.startswith("geometry_expert.net.0.weight (new)") for c in changed)
    d = old.moe_output.in_dim
    torch.testing.assert_close(new.moe_output.w1[:, :d], old.moe_output.w1)
    assert torch.count_nonzero(new.moe_output.w_gate[d:]) == 0  # new rows do not reroute
    torch.testing.assert_close(new.encoder.state_dict()["blocks.0.attn.qkv.weight"],
                               old.encoder.state_dict()["blocks.0.attn.qkv.weight"])
    shrunk = create_model("classifier", model_config({**TINY_MODEL, "moe_hidden": 16}))
    with pytest.raises(ValueError, match="cannot grow"):
        classifier.grow_module_weights(shrunk, path)


def test_prepare_real_labels_and_pool(shared_dir: Path, landmarker_path: Path, tmp_path: Path) -> None:
    """The real-face recipe on a few permissive photos (the whole set takes ~30 s)."""
    from norface_rt.config import EMOTION_NAMES, ModelConfig
    from train.data.real_faces import RealPhoto, permissive_photos, real_samples

    photos = permissive_photos(shared_dir)
    subjects = {p.subject for p in photos}
    assert not any(is_held_out(s) for s in subjects if s.startswith("london/"))
    assert {p.emotion for p in photos} == {"neutral", "happy"}
    one = next(p for p in photos if p.emotion == "happy")
    pair = [p for p in photos if p.subject == one.subject]
    blank = tmp_path / "blank.jpg"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    out = list(real_samples([*pair, RealPhoto(blank, "x", "neutral")], landmarker_path,
                            ModelConfig(img_size=112)))
    assert isinstance(out[-1], RealPhoto)  # no face: handed back, not invented
    samples = [s for s in out if isinstance(s, dict)]
    assert len(samples) == 2
    smile = MEDIAPIPE_BLENDSHAPES.index("mouthSmileLeft")
    by = {EMOTION_NAMES[int(s["emotion"])]: s for s in samples}  # type: ignore[call-overload]
    assert by["happy"]["mp_blendshapes"][smile] > by["neutral"]["mp_blendshapes"][smile] + 0.2  # type: ignore[index]
    assert by["happy"]["image"].shape == (112, 112, 3)  # type: ignore[union-attr]
    write_shard(tmp_path / "shard-00000.npz", samples)  # the shard format takes them as they are


def test_response_gain_scales_only_the_expression(pool_file: Path) -> None:
    pool = GeometryPool(pool_file)
    base = {"image": np.zeros((8, 8, 3), np.uint8), "au_occurrence": np.zeros(18, np.float32),
            "au_intensity": np.zeros(18, np.float32), "emotion": np.int64(0),
            "subject": "s", "source": "t", "key": "k"}
    render = {"mp_blendshapes": np.full(G, 0.6, np.float32), "mp_neutral": np.full(G, 0.2, np.float32)}
    batch = collate([{**base, **render}] * 64)
    gen = torch.Generator().manual_seed(3)
    out = geometry_batch(batch, pool, random=False, gain=(0.5, 1.5), generator=gen).numpy()
    shift = out - pool.reference  # the pool mean sits well below 0.6 - 0.2 + mean, no clipping
    ratio = shift / 0.4
    assert np.allclose(ratio, ratio[:, :1], atol=1e-5)  # one gain per face, all features alike
    assert 0.5 <= ratio.min() < 0.7 and 1.3 < ratio.max() <= 1.5
    with pytest.raises(ValueError, match="gain"):
        geometry_batch(batch, pool, random=False, gain=(1.5, 0.5))
