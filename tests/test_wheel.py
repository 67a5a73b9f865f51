"""The release as a user installs it: one import package, no torch, the default path end to end.

Builds the sdist and the wheel (``python -m build``), checks them with ``twine check`` and their
metadata (licence, URLs, classifiers, the bundled landmarker with its licence), installs the
wheel without extras into a fresh virtual environment (its dependencies come from the package
index, so this needs network access to it and a few minutes), and runs README's first command
there, as written, on the sample video with the packaged default model and the bundled
landmarker. It runs in CI (``CI=true``, which .ci/run's environment sets) or when
``NORFACE_RT_WHEEL_TEST=1``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENABLED = os.environ.get("CI", "").lower() == "true" or os.environ.get("NORFACE_RT_WHEEL_TEST") == "1"

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(not ENABLED, reason="builds the wheel and installs it with its dependencies "
                       "from the package index into a fresh venv (minutes, network): runs in CI "
                       "(CI=true) or with NORFACE_RT_WHEEL_TEST=1"),
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def readme_first_command() -> list[str]:
    """The `norface-rt run ...` of README's first command (Set-up, "Run"), as a user types it."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"```bash\npip install -e \. && (norface-rt run [^\n]+)\n```", text)
    assert m, "README's first command is no longer `pip install -e . && norface-rt run ...`"
    return shlex.split(m.group(1))


def test_wheel_installs_one_package_without_torch_and_runs(tmp_path: Path, media_dir: Path,
                                                           landmarker_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], cwd=tmp_path)
    (wheel,) = dist.glob("norface_rt-*.whl")
    (sdist,) = dist.glob("norface_rt-*.tar.gz")
    check = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                 cwd=tmp_path)
    assert check.stdout.count("PASSED") == 2, check.stdout
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT AND Apache-2.0" in meta and "Project-URL: " in meta
    assert "Classifier: Development Status :: 3 - Alpha" in meta
    assert "License-File: norface_rt/assets/landmarker/NOTICE" in meta
    requires = [x for x in meta.splitlines() if x.startswith("Requires-Dist:")]
    assert requires and not [x for x in requires if "onnxruntime-gpu" in x], requires  # README, GPU
    with tarfile.open(sdist) as tf:
        in_sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"CHANGELOG.md", "docs/protocol.md", "docs/schema/frame.schema.json",
            "norface_rt/assets/landmarker/face_landmarker_v2_with_blendshapes.task"} <= in_sdist
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"norface_rt"}, f"the wheel installs {sorted(tops)}"
    assert "norface_rt/assets/model/classifier.onnx" in names
    # the MediaPipe bundle ships with its licence, notice and manifest (Apache-2.0)
    for name in ("face_landmarker_v2_with_blendshapes.task", "LICENSE", "NOTICE", "manifest.json"):
        assert f"norface_rt/assets/landmarker/{name}" in names, name
    assert not any(n.endswith("norface.onnx") for n in names), "each graph ships once"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--only-binary=:all:", str(wheel)], cwd=tmp_path)

    probe = ("import importlib.util, json, norface_rt\n"
             "print(json.dumps({'file': norface_rt.__file__,\n"
             "  'torch': importlib.util.find_spec('torch') is not None,\n"
             "  'engines': importlib.util.find_spec('engines') is not None,\n"
             "  'train': importlib.util.find_spec('train') is not None}))\n")
    seen = json.loads(_run([str(py), "-c", probe], cwd=tmp_path).stdout)
    assert Path(seen["file"]).is_relative_to(venv), seen
    assert not seen["torch"], "installing norface-rt without extras must not install torch"
    assert not seen["engines"] and not seen["train"], seen

    env = {k: v for k, v in os.environ.items()
           if k not in ("NORFACE_RT_MODEL_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env["NORFACE_RT_CACHE"] = str(tmp_path / "empty-cache")  # the packaged model is what runs
    # README's first command as written (no --landmarker: the bundled one; no network), with
    # ../shared standing for the shared data folder beside a fresh clone
    env.pop("NORFACE_RT_LANDMARKER", None)
    env.pop("NORFACE_RT_SHARED_MODELS", None)
    first = readme_first_command()
    assert "--landmarker" not in first
    args = [str(venv / "bin" / first[0]), *(a.replace("../shared", str(media_dir.parent))
                                            for a in first[1:])]
    res = _run(args, cwd=tmp_path, env=env, timeout=600)
    assert "UNTRAINED" not in res.stderr.upper()
    for name in ("results.jsonl", "results.csv", "overlay.mp4"):
        assert (tmp_path / "out" / name).stat().st_size > 1000, name
    out = tmp_path / "out" / "results.jsonl"
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [m for m in msgs if m["type"] == "frame"]
    assert len(frames) == 72 and msgs[-1]["type"] == "eos" and msgs[-1]["error"] is None
    assert sum(1 for m in frames if m["faces"]) == 72
    assert all(not m["untrained"] for m in frames)

    # what needs an extra says which one, without a traceback
    cli = str(venv / "bin" / "norface-rt")
    for args, extra in ((["run", str(media_dir / "single_face.jpg"), "--landmarker",
                          str(landmarker_path), "--zmq", "none", "--backend", "torch"], "torch"),
                        (["models", "init-untrained", str(tmp_path / "m")], "export")):
        res = subprocess.run([cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 2, res.stderr[-2000:]
        assert f"pip install 'norface-rt[{extra}]'" in res.stderr and "Traceback" not in res.stderr
