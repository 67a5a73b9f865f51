"""Model lookup order and the sha256-pinned landmarker download (exercised through file:// URLs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from norface_rt.tools.download import download_landmarker
from norface_rt.files import sha256_file
from norface_rt.paths import (LANDMARKER_SHA256, ModelNotFoundError, packaged_landmarker,
                              packaged_landmarker_dir, resolve_landmarker, resolve_model_dir)


def test_download_checks_sha256_and_is_idempotent(landmarker_path: Path, tmp_path: Path) -> None:
    url = landmarker_path.as_uri()
    got = download_landmarker(tmp_path, url=url, sha256=LANDMARKER_SHA256)
    assert got.parent == tmp_path and sha256_file(got) == LANDMARKER_SHA256
    mtime = got.stat().st_mtime_ns
    assert download_landmarker(tmp_path, url=url) == got and got.stat().st_mtime_ns == mtime


def test_download_refuses_a_file_with_the_wrong_hash(tmp_path: Path) -> None:
    bogus = tmp_path / "src" / "face_landmarker_v2_with_blendshapes.task"
    bogus.parent.mkdir()
    bogus.write_bytes(b"not the model")
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        download_landmarker(tmp_path / "dest", url=bogus.as_uri())
    assert list((tmp_path / "dest").iterdir()) == []  # nothing half-written is left behind


def test_download_failure_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--landmarker"):
        download_landmarker(tmp_path, url=(tmp_path / "missing.task").as_uri())


def test_model_dir_order_flag_env_cache(tiny_model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NORFACE_RT_CACHE", str(cache))
    monkeypatch.delenv("NORFACE_RT_MODEL_DIR", raising=False)
    monkeypatch.setattr("norface_rt.paths.packaged_model_dir", lambda: tmp_path / "no-package")
    with pytest.raises(ModelNotFoundError, match="NORFACE_RT_MODEL_DIR"):
        resolve_model_dir()
    shutil.copytree(tiny_model_dir, cache / "models" / "norface")
    assert resolve_model_dir() == cache / "models" / "norface"
    monkeypatch.setenv("NORFACE_RT_MODEL_DIR", str(tiny_model_dir))
    assert resolve_model_dir() == tiny_model_dir  # env beats the cache
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir(tmp_path / "flagged")  # an explicit flag never falls back


def test_landmarker_order(landmarker_path: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NORFACE_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NORFACE_RT_LANDMARKER", raising=False)
    monkeypatch.delenv("NORFACE_RT_SHARED_MODELS", raising=False)
    # nothing configured: the bundle shipped inside the package
    assert resolve_landmarker() == packaged_landmarker_dir() / landmarker_path.name
    with pytest.raises(ModelNotFoundError, match="--landmarker"):
        resolve_landmarker(tmp_path / "flagged.task")  # an explicit flag never falls back
    monkeypatch.setattr("norface_rt.paths.packaged_landmarker_dir", lambda: tmp_path / "none")
    with pytest.raises(ModelNotFoundError, match="models download"):
        resolve_landmarker()
    monkeypatch.setenv("NORFACE_RT_SHARED_MODELS", str(landmarker_path.parent))
    assert resolve_landmarker() == landmarker_path
    monkeypatch.setenv("NORFACE_RT_LANDMARKER", str(landmarker_path))
    assert resolve_landmarker() == landmarker_path
    assert resolve_landmarker(landmarker_path) == landmarker_path


def test_the_package_ships_the_landmarker_with_its_licence_and_manifest(
        landmarker_path: Path) -> None:
    d = packaged_landmarker_dir()
    bundled = packaged_landmarker()
    assert bundled is not None and bundled.parent == d
    assert sha256_file(bundled) == LANDMARKER_SHA256 == sha256_file(landmarker_path)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["files"][bundled.name]["sha256"] == LANDMARKER_SHA256
    assert manifest["files"][bundled.name]["license"] == "Apache-2.0"
    licence = (d / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    notice = (d / "NOTICE").read_text()
    assert "MediaPipe" in notice and "0179f0c4566ae78e02e1198cb73c60e4668395b5" in notice
    # the folder holds that file, its licence and its manifest, nothing else
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["LICENSE", "NOTICE", "manifest.json", bundled.name])


def test_a_damaged_bundled_landmarker_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "landmarker"
    shutil.copytree(packaged_landmarker_dir(), copy)
    monkeypatch.setattr("norface_rt.paths.packaged_landmarker_dir", lambda: copy)
    assert packaged_landmarker() == copy / "face_landmarker_v2_with_blendshapes.task"
    task = copy / "face_landmarker_v2_with_blendshapes.task"
    data = bytearray(task.read_bytes())
    data[1000] ^= 0xFF
    task.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match="damaged or was altered"):
        packaged_landmarker()


def test_run_and_analyzer_need_no_landmarker_flag(media_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, point 5: with no flag, no environment variable and an empty cache, the CLI and
    the Python API find the landmarker shipped in the package (they used to stop with "not
    found" and ask for --landmarker or a download)."""
    import subprocess
    import sys

    import norface_rt

    env = {k: v for k, v in os.environ.items()
           if k not in ("NORFACE_RT_LANDMARKER", "NORFACE_RT_SHARED_MODELS")}
    env["NORFACE_RT_CACHE"] = str(tmp_path / "empty-cache")
    res = subprocess.run([sys.executable, "-m", "norface_rt", "run",
                          str(media_dir / "single_face.jpg"), "--jsonl", str(tmp_path / "r.jsonl"),
                          "--quiet"], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr
    frame = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert len(frame["faces"]) == 1
    for name in ("NORFACE_RT_LANDMARKER", "NORFACE_RT_SHARED_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NORFACE_RT_CACHE", str(tmp_path / "empty-cache"))
    with norface_rt.Analyzer() as analyzer:
        assert len(analyzer.analyze_image(media_dir / "single_face.jpg")) == 1
