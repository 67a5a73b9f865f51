"""The GPU kit (benchmarks/gpu_kit): its inputs, the replay that stands in for PyAV and MediaPipe,
and its dry run on the CPU, run the way the GPU machine will run it: without PyAV, MediaPipe,
pyzmq and the other packages that machine lacks (hidden from every Python process of the run).
CI runs this, so the kit cannot rot before a GPU is available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gpu_kit import REPO
from benchmarks.gpu_kit.inputs import (
    CLIPS,
    InputsError,
    PingPong,
    ReplayLandmarker,
    load_inputs,
    prepare,
)
from norface_rt.types import EndOfStream, FramePacket

# What the GPU machine lacks, among what the package and its tests import (docs/gpu.md).
MISSING_THERE = ("av", "mediapipe", "zmq", "moderngl", "jsonschema", "nats", "tritonclient")
HIDE = '''"""Hide packages from this interpreter as if they were not installed (tests/test_gpu_kit.py)."""
import sys

HIDDEN = set({hidden!r})


class _Without:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Without(f) for f in sys.meta_path]
'''
RESULT_FILES = {"results.json", "results.md", "environment.txt", "gpu-tests.xml", "gpu-tests.log",
                "kit.log"}


@pytest.fixture(scope="session")
def kit_inputs(shared_dir: Path, landmarker_path: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """The kit's inputs, made by its own --prepare code from the shared media."""
    out = tmp_path_factory.mktemp("gpu-kit") / "inputs"
    prepare(shared_dir, landmarker_path, out)
    return out


@pytest.fixture(scope="session")
def gpu_machine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process that sees none of MISSING_THERE (a sitecustomize hides them
    from every import system finder)."""
    d = tmp_path_factory.mktemp("hide")
    (d / "sitecustomize.py").write_text(HIDE.format(hidden=list(MISSING_THERE)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(d), env.get("PYTHONPATH")) if p)
    return env


def kit(*args: str, env: dict[str, str] | None = None, timeout: float = 400
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_kit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_kit_imports_without_what_the_gpu_machine_lacks(gpu_machine_env: dict[str, str]) -> None:
    code = ("import importlib.util as u\n"
            f"assert all(u.find_spec(m) is None for m in {MISSING_THERE!r})\n"
            "import benchmarks.gpu_kit.cli, benchmarks.gpu_kit.end_to_end, benchmarks.gpu_kit.model\n"
            "import benchmarks.gpu_kit.environment, norface_rt.pipeline, norface_rt.faces.stage\n"
            "try:\n    import av\nexcept ModuleNotFoundError:\n    print('hidden')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=gpu_machine_env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "hidden", p.stderr


def test_prepare_writes_frames_and_landmarks(kit_inputs: Path) -> None:
    manifest = json.loads((kit_inputs / "manifest.json").read_text())
    clips = {c["name"]: c for c in manifest["clips"]}
    assert list(clips) == [c.name for c in CLIPS]
    assert all(c["frames"] == spec.frames for c, spec in zip(clips.values(), CLIPS))
    assert clips["single_face"]["faces"] == 72 and clips["wolfgang"]["faces"] == 72
    assert 0 < clips["face_noface"]["frames_with_faces"] < 72  # the face leaves half way
    assert clips["five_faces"]["faces"] >= 4 * 48
    total = sum(f["bytes"] for f in manifest["files"].values())
    assert total < 24 * 2**20, total  # travels beside the repository (64 MiB in all)
    inputs = load_inputs(kit_inputs)
    five = inputs.clips[-1]
    assert five.frames[0].shape == (720, 1280, 3) and five.fps == 25.0
    face = five.faces[0][0]
    assert face.landmarks.shape == (478, 3) and face.points5.shape == (5, 2)
    assert face.blendshapes is not None and len(face.blendshapes) == 52 and face.pose is not None
    assert inputs.face_count == sum(c["faces"] for c in clips.values())


def test_damaged_or_missing_inputs_are_refused_by_name(kit_inputs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "inputs"
    shutil.copytree(kit_inputs, copy)
    jpg = copy / "wolfgang" / "000003.jpg"
    jpg.write_bytes(jpg.read_bytes()[:1000])  # truncated in transit
    with pytest.raises(InputsError, match=r"wolfgang/000003\.jpg: expected \d+ bytes, got 1000"):
        load_inputs(copy)
    (copy / "manifest.json").unlink()
    p = kit("--device", "cpu", "--dry-run", "--inputs", str(copy), "--out", str(tmp_path / "o"),
            timeout=120)
    assert p.returncode == 2, p.stderr
    assert "no kit inputs in" in p.stderr and "python -m benchmarks.gpu_kit --prepare" in p.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_replay_follows_the_clip_there_and_back(kit_inputs: Path) -> None:
    schedule = PingPong(4, offset=1)
    assert [schedule(i) for i in range(9)] == [1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [PingPong(1)(i) for i in range(3)] == [0, 0, 0]
    clip = load_inputs(kit_inputs, max_frames=6).clips[-1]  # five faces
    finder = ReplayLandmarker(clip, PingPong(len(clip)))
    frame = FramePacket("s", 7, clip.frames[4], None, 0.0)  # index 7 of a 6-frame clip shows frame 3
    faces = finder.detect(frame)
    assert [f.box for f in faces] == [f.box for f in clip.faces[3]]
    assert finder.faces_cut == clip.faces_cut[3]
    faces[0].track_id = 9  # copies: the clip's faces are not changed
    assert clip.faces[3][0].track_id == -1


@pytest.mark.parametrize("paced", [True, False])
def test_replay_source_paces_like_a_camera_or_runs_lossless(kit_inputs: Path, paced: bool) -> None:
    from benchmarks.gpu_kit.end_to_end import ReplaySource

    clip = load_inputs(kit_inputs, max_frames=5).clips[0]  # 30 frames/s
    src = ReplaySource("cam", clip, PingPong(len(clip)), seconds=0.5, paced=paced, queue_size=4)
    assert src.live is paced and src.policy == ("drop_oldest" if paced else "lossless")
    frames: list[FramePacket] = []
    t0 = time.monotonic()
    with src:
        while True:
            item = src.read(timeout=5.0)
            assert item is not None, "no frame or end within 5 s"
            if isinstance(item, EndOfStream):
                break
            frames.append(item)
            time.sleep(0.001)
    assert item.error is None and item.frames == len(frames) + item.dropped
    assert [f.frame_index for f in frames] == sorted({f.frame_index for f in frames})
    if paced:  # 15 frames due in 0.5 s
        assert 12 <= item.frames <= 16 and time.monotonic() - t0 >= 0.45
    else:
        assert item.frames > 30 and item.dropped == 0


def gpu_test_ids() -> set[str]:
    """Every test the kit should run, as a full install collects them (`pytest --co`), in the
    JUnit form the kit reports (tests/a/test_b.py::t -> tests.a.test_b::t)."""
    p = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "gpu or tensorrt", "--co",
                        "-q", "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    ids = {line.strip() for line in p.stdout.splitlines() if "::" in line}
    assert p.returncode == 0 and ids, p.stdout[-2000:]
    return {i.replace(".py::", "::").replace("/", ".") for i in ids}


@pytest.mark.slow
def test_dry_run_takes_every_path_without_what_the_gpu_machine_lacks(
        kit_inputs: Path, gpu_machine_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "kit"
    p = kit("--device", "cpu", "--dry-run", "--inputs", str(kit_inputs), "--out", str(out),
            env=gpu_machine_env)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:], (out / "kit.log").read_text()[-3000:])
    assert {f.name for f in out.iterdir()} == RESULT_FILES  # at most 8 files come back
    res: dict[str, Any] = json.loads((out / "results.json").read_text())
    sections = res["sections"]
    assert {k: s["status"] for k, s in sections.items()} == dict.fromkeys(
        ("environment", "tests", "model", "end_to_end"), "ok")
    assert res["kit"]["dry_run"] is True and res["kit"]["settings"]["batches"] == [1, 2]

    env = sections["environment"]
    assert env["torch"]["cuda_available"] is False and env["gpu"].startswith("none")
    assert env["nvidia_smi"]["found"] is (shutil.which("nvidia-smi") is not None)
    assert "# nvidia-smi" in (out / "environment.txt").read_text()

    tests = sections["tests"]
    got = {t["id"]: t for t in tests["tests"]}
    assert set(got) == gpu_test_ids()  # every GPU test collected though PyAV etc. are missing
    for t in got.values():
        assert t["outcome"] == "skipped" and ("CUDA" in t["message"] or "TensorRT" in t["message"]), t
    # modules that need PyAV or pyzmq at import are listed apart, not counted as failures
    assert tests["collection_errors"] and all(e["reason"] for e in tests["collection_errors"])
    assert tests["counts"]["failed"] == tests["counts"]["error"] == 0

    model = sections["model"]
    assert [(r["variant"], r["batch"]) for r in model["rows"]] == [
        ("cuda graphs", 1), ("cuda graphs", 2), ("eager", 1), ("eager", 2)]
    for r in model["rows"]:
        assert r["cuda_graphs"] is False and r["runs"] >= 3 and r["median_ms"] > 0
        assert r["faces_per_s"] == pytest.approx(r["batch"] / r["median_ms"] * 1e3)
        # the same fp32 model on the same crops: differences are float summation order only
        assert max(r["max_abs_err"].values()) < 1e-5, r

    e2e = sections["end_to_end"]
    check = e2e["device_align_check"]
    assert check["faces"] >= 32
    # OpenCV's crops are rounded to uint8, the device's are not: measured 2e-3 / 1.1e-2 / 4.8e-3
    assert check["align_err"]["au_prob"] < 1e-2 and check["align_err"]["emotion_prob"] < 1e-2
    assert check["align_err"]["au_intensity"] < 5e-2
    assert [(r["mode"], r["streams"]) for r in e2e["rows"]] == [
        ("paced", 1), ("paced", 2), ("unpaced", 1), ("unpaced", 2)]
    for r in e2e["rows"]:
        assert "error" not in r, r
        assert r["streams_ended"] == r["streams"] and r["frames_failed"] == r["sink_losses"] == 0
        assert r["frames_published"] == r["frames_made"] - r["frames_dropped"]
        assert r["steady_faces"] > 0 and 0 < r["latency_p50_ms"] <= r["latency_p99_ms"]
        assert r["faces_per_s"] > 0 and {"normalize", "classify", "latency"} <= set(r["stage_p50_ms"])
    two = next(r for r in e2e["rows"] if r["mode"] == "paced" and r["streams"] == 2)
    assert two["offered_frames_per_s"] == pytest.approx(30.0 + 23.98, abs=0.1)

    md = (out / "results.md").read_text()
    assert "these are not GPU figures" in md
    for heading in ("## GPU tests", "## Model alone", "## End to end", "| variant | batch |",
                    "| mode | streams |"):
        assert heading in md


JUNIT_CASES = '''
import pytest

def test_ok():
    pass

def test_bad():
    assert 1 == 2, "one is not two"

@pytest.mark.skipif(True, reason="CUDA not available here")
def test_gpu():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_broken(broken):
    pass
'''


def test_junit_outcomes_and_collection_errors_are_read_back(tmp_path: Path) -> None:
    """Every outcome a GPU run can have (the dry run only sees skips), from a real pytest run."""
    from benchmarks.gpu_kit.cli import exit_code
    from benchmarks.gpu_kit.gpu_tests import parse_junit

    (tmp_path / "test_cases.py").write_text(JUNIT_CASES)
    (tmp_path / "test_needs_av.py").write_text("import av_not_installed_here\n")
    xml = tmp_path / "out.xml"
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "no:cacheprovider",
                    "--continue-on-collection-errors", f"--junitxml={xml}",
                    "-o", "junit_family=xunit2"], cwd=tmp_path, capture_output=True, timeout=120)
    res = parse_junit(xml)
    outcomes = {t["id"].rsplit("::", 1)[1]: (t["outcome"], t["message"]) for t in res["tests"]}
    assert outcomes["test_ok"] == ("passed", "")
    assert outcomes["test_bad"][0] == "failed" and "one is not two" in outcomes["test_bad"][1]
    assert outcomes["test_gpu"] == ("skipped", "CUDA not available here")
    assert outcomes["test_broken"][0] == "error" and "fixture broke" in outcomes["test_broken"][1]
    assert res["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    (err,) = res["collection_errors"]
    assert err["module"] == "test_needs_av" and "No module named 'av_not_installed_here'" in err["reason"]
    ok = {"status": "ok"}
    assert exit_code({"sections": {"tests": {**ok, "counts": res["counts"]}}}) == 1
    assert exit_code({"sections": {"tests": {**ok, "counts": {"passed": 1, "skipped": 3}},
                                   "model": {"status": "skipped (--skip)"}}}) == 0
    assert exit_code({"sections": {"model": {"status": "timed out after 73 s"}}}) == 1


def test_a_gpu_run_renders_its_gpu_fields() -> None:
    """The report's GPU branches, which a dry run cannot reach. Placeholder values (1, 2, ...):
    this checks the rendering, it measures nothing."""
    from benchmarks.gpu_kit.environment import gpus_from_csv
    from benchmarks.gpu_kit.report import render_markdown

    (gpu,) = gpus_from_csv("NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB, 9.0, 1980 MHz, "
                           "700.00 W, 00000000:00:05.0\n")
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["driver_version"] == "580.159.04"
    assert gpu["memory.total"] == "81559 MiB" and gpu["compute_cap"] == "9.0"
    err = {"au_prob": 1e-3, "au_intensity": 2e-3, "emotion_prob": 3e-3}
    results = {
        "kit": {"command": "python -m benchmarks.gpu_kit", "dry_run": False, "device": "cuda",
                "started": "2027-01-01T00:00:00+00:00", "seconds": 1.0},
        "sections": {
            "environment": {
                "status": "ok", "gpu": gpu["name"], "driver": gpu["driver_version"],
                "machine": {"cpu": "cpu", "cores": 16}, "python": {"version": "3.12.3"},
                "versions": {"numpy": "2", "onnxruntime": "1"}, "git": {"commit": "abc"},
                "torch": {"version": "2.11.0+cu130", "cuda_build": "13.0", "cudnn": 1,
                          "devices": [{"name": gpu["name"], "memory_gib": 1.0,
                                       "capability": "9.0"}]}},
            "tests": {"status": "ok", "command": "pytest", "collection_errors": [],
                      "counts": {"passed": 1, "failed": 0, "error": 0, "skipped": 0},
                      "tests": [{"id": "tests.a::t", "outcome": "passed", "seconds": 1.0,
                                 "message": ""}]},
            "model": {"status": "ok", "device": "cuda:0", "fp16": True, "buckets": [1],
                      "input": "faces", "reference": "fp32",
                      "model": {"model_id": "m", "size": "tiny", "img_size": 112},
                      "rows": [{"variant": "cuda graphs", "cuda_graphs": True, "batch": 1,
                                "runs": 1, "median_ms": 1.0, "p90_ms": 1.0,
                                "device_median_ms": 1.0, "faces_per_s": 1.0, "max_abs_err": err}],
                      "variants": [{"variant": "cuda graphs", "load_s": 1.0, "capture_s": 1.0,
                                    "cuda_max_memory_allocated_mib": 1.0}]},
            "end_to_end": {"status": "ok", "warmup_s": 1.0, "rows": [
                {"mode": "paced", "streams": 1, "error": "TimeoutError: pipeline did not finish"}]},
        }}
    md = render_markdown(results)
    assert "not GPU figures" not in md
    assert "GPU: NVIDIA H100 80GB HBM3 (1.0 GiB, sm 9.0); driver 580.159.04" in md
    assert "| cuda graphs | 1 | 1 |" in md and "peak CUDA memory 1.0 MiB" in md
    assert "| paced | 1 | error: TimeoutError: pipeline did not finish |" in md


SMI_TABLE = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |
+-----------------------------------------------------------------------------------------+"""


def test_nvidia_smi_is_run_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nvidia-smi branch, which no machine here reaches: a stand-in executable on PATH
    answers like the driver of the machine the kit is written for (its table's first lines and
    a query line), including refusing one query field as an older driver would."""
    from benchmarks.gpu_kit import environment

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   'case "$1" in\n'
                   f"  '') cat <<'EOT'\n{SMI_TABLE}\nEOT\n;;\n"
                   "  --query-gpu=name,driver_version,memory.total) "
                   "echo 'NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB';;\n"
                   "  *) echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2;;\n"
                   "esac\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    got = environment.nvidia_smi()
    assert got["found"] and got["text"] == SMI_TABLE
    assert got["query"] == environment.SMI_QUERY_MINIMAL
    assert got["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "580.159.04",
                            "memory.total": "81559 MiB"}]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert environment.nvidia_smi() == {"found": False, "gpus": [],
                                        "text": "nvidia-smi: not found on PATH (no NVIDIA driver here)"}
