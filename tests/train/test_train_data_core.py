"""Splits, sample format, alignment + crop cache, and the synthetic shard reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from norface_rt.config import ModelConfig
from norface_rt.faces.align import points5_from_ibug68
from train.data.crops import AlignedDataset, AlignmentError
from train.data.records import Record
from train.data.sample import au_vector, collate, validate_sample
from train.data.shards import ShardDataset, ShardError, write_shard
from train.data.splits import available, load_split

from train_helpers import write_image


def test_jaanet_splits_are_subject_disjoint_and_complete() -> None:
    assert {"bp4d_jaanet_3fold", "disfa_jaanet_3fold"} <= set(available())
    bp4d = load_split("bp4d_jaanet_3fold")
    assert len(bp4d.subjects) == 41 and len(set(bp4d.subjects)) == 41  # 23 female + 18 male
    assert sum(s.startswith("F") for s in bp4d.subjects) == 23
    assert all(re.fullmatch(r"[FM]0(0[1-9]|1\d|2[0-3])", s) for s in bp4d.subjects)
    f1 = bp4d.fold(1)
    assert set(f1.test_subjects) == set(bp4d.parts[2])
    assert not set(f1.train_subjects) & set(f1.test_subjects)
    assert len(f1.train_subjects) + len(f1.test_subjects) == 41
    disfa = load_split("disfa_jaanet_3fold")
    assert len(set(disfa.subjects)) == 27 and "SN013" in disfa.parts[1]
    assert "JAA-Net" in disfa.source and disfa.verification
    with pytest.raises(ValueError, match="fold must be in 1..3, got 4"):
        bp4d.fold(4)


def test_split_rejects_overlap(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"dataset": "x", "parts": [["a", "b"], ["b"]],
                             "folds": [{"name": "f", "train_parts": [1], "test_part": 2}]}))
    with pytest.raises(ValueError, match=r"subjects \['b'\] appear in more than one part"):
        load_split(p)


def _sample(i: int, size: int = 16) -> dict:  # type: ignore[type-arg]
    return {"image": np.full((size, size, 3), i, np.uint8), "au_occurrence": au_vector({1: 1, 2: 0}),
            "au_intensity": au_vector({6: 2.5}), "emotion": np.int64(i % 3 - 1),
            "subject": f"s{i}", "source": "t", "key": f"k{i}"}


def test_validate_and_collate() -> None:
    a, b = _sample(0), _sample(1)
    b["landmarks"] = np.ones((68, 2), np.float32)
    validate_sample(a, 16)
    batch = collate([a, b])
    assert batch["image"].dtype.is_floating_point is False and tuple(batch["image"].shape) == (2, 16, 16, 3)
    assert batch["emotion"].tolist() == [-1, 0]
    assert batch["has_landmarks"].tolist() == [False, True]
    assert float(batch["au_occurrence"][0, 0]) == 1.0 and np.isnan(float(batch["au_occurrence"][0, 3]))
    bad = dict(a, image=np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="image must be uint8"):
        validate_sample(bad)
    with pytest.raises(ValueError, match=r"image must be \(32, 32, 3\), got \(16, 16, 3\)"):
        validate_sample(a, 32)
    with pytest.raises(ValueError, match="emotion must be -1 or in"):
        validate_sample(dict(a, emotion=9))
    with pytest.raises(ValueError, match="au_occurrence values must be 0, 1 or NaN"):
        validate_sample(dict(a, au_occurrence=au_vector({1: 0.5})))


def _face_like_landmarks(cx: float, cy: float, s: float) -> np.ndarray:
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0], lm[:, 1] = cx, cy + 0.2 * s
    lm[36:42] = (cx - 0.3 * s, cy - 0.2 * s)
    lm[42:48] = (cx + 0.3 * s, cy - 0.2 * s)
    lm[30] = (cx, cy + 0.05 * s)
    lm[48] = (cx - 0.25 * s, cy + 0.35 * s)
    lm[54] = (cx + 0.25 * s, cy + 0.35 * s)
    return lm


def test_aligned_dataset_uses_landmarks_and_caches(tmp_path: Path) -> None:
    cfg = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, emm_heads=2)
    img_path = write_image(tmp_path / "a.png", 80, 100)
    lm = _face_like_landmarks(50, 40, 40)
    recs = [Record(key="x/a", image_path=img_path, subject="s", source="x", landmarks68=lm,
                   emotion=2)]
    ds = AlignedDataset(recs, cfg, cache_dir=tmp_path / "cache")
    s = ds[0]
    validate_sample(s, 32)
    # the dataset's landmarks land on the template in crop coordinates
    tpl = np.asarray(cfg.template) * 32 - 0.5
    p5 = points5_from_ibug68(s["landmarks"])
    assert np.abs(p5 - tpl).max() < 1.5
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    img_path.unlink()  # now only the cache can serve the crop
    assert np.array_equal(ds[0]["image"], s["image"])
    # a record without points and without a detector fails with a clear reason
    no_pts = Record(key="x/b", image_path=write_image(tmp_path / "b.png"), subject="s", source="x")
    ds2 = AlignedDataset([no_pts], cfg)
    with pytest.raises(AlignmentError, match="no landmarks and no detector"):
        ds2[0]
    ds3 = AlignedDataset([no_pts, recs[0]], cfg, cache_dir=tmp_path / "cache",
                         detector=lambda im: None)
    failed = ds3.prepare()
    assert [k for k, _ in failed] == ["x/b"] and len(ds3) == 1


def test_shard_reader(tmp_path: Path) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    samples = []
    for i in range(5):
        s = _sample(i, 24)
        s["normalized"] = np.full((24, 24, 3), 100 + i, np.uint8)
        s["landmarks"] = np.full((68, 2), 11.5, np.float32)
        s["blendshapes"] = np.linspace(0, 1, 7, dtype=np.float32)
        samples.append(s)
    write_shard(d / "shard-00000.npz", samples[:3])
    write_shard(d / "shard-00001.npz", samples[3:])
    with pytest.raises(ShardError, match="no meta.json"):
        ShardDataset(d)
    (d / "meta.json").write_text(json.dumps({"generator_version": "t", "seed": 1, "counts": {"samples": 5}}))
    ds = ShardDataset(d, img_size=24, keep_open=1)
    assert len(ds) == 5 and ds.meta["seed"] == 1
    for i in (4, 0, 3):  # cross shards in both directions
        s = ds[i]
        validate_sample(s, 24)
        assert s["key"] == f"k{i}" and isinstance(s["subject"], str)
        assert int(s["normalized"][0, 0, 0]) == 100 + i
        assert s["blendshapes"].shape == (7,)
    with pytest.raises(ShardError, match="expected img_size 12"):
        ShardDataset(d, img_size=12)[0]
    small = ShardDataset(d, img_size=12, resize=True)[1]
    assert small["image"].shape == (12, 12, 3) and small["normalized"].shape == (12, 12, 3)
    assert small["landmarks"][0].tolist() == pytest.approx([5.5, 5.5])  # (11.5+0.5)/2-0.5
    with pytest.raises(IndexError):
        ds[5]


def test_shard_subject_filters_hold_identities_out(tmp_path) -> None:
    from norface_rt.config import ModelConfig
    from train.data.build import build_dataset
    from train_helpers import make_shards

    d = make_shards(tmp_path / "sh", n=16, size=32, subjects=4)
    cfg = ModelConfig.for_size("tiny", img_size=32, patch_size=8)
    full = build_dataset({"kind": "shards", "path": str(d)}, cfg)
    subjects = sorted({full[i]["subject"] for i in range(len(full))})
    held = subjects[:1]
    train = build_dataset({"kind": "shards", "path": str(d), "exclude_subjects": held}, cfg)
    test = build_dataset({"kind": "shards", "path": str(d), "include_subjects": held}, cfg)
    assert len(train) + len(test) == len(full) and len(test) > 0
    assert {train[i]["subject"] for i in range(len(train))}.isdisjoint(held)
    assert {test[i]["subject"] for i in range(len(test))} == set(held)
    with pytest.raises(ValueError, match="no sample left"):
        build_dataset({"kind": "shards", "path": str(d), "include_subjects": ["nobody"]}, cfg)
