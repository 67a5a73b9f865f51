"""Hostile files and names, for real on disk: a file name that is not UTF-8, a 2 GiB file, a PNG
whose header declares 200 megapixels, a 157-byte 20000x1 PNG, a 1 GiB config.json, and model
weights that cannot be read. Each costs its own file (flagged, counted) and never the run."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import free_port

from norface_rt.files import DEFAULT_MAX_PIXELS, max_file_bytes

pytestmark = pytest.mark.timeout(300)


def cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout)


def run_measured(*args: str, timeout: float = 150) -> tuple[int, str, int]:
    """Run the CLI; (exit status, stderr, peak RSS in bytes of that process alone)."""
    proc = subprocess.Popen([sys.executable, "-m", "norface_rt", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        err = proc.stderr.read()  # (until the run closes it: it ends)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss * 1024


def png_declaring(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` black pixels: 200 megapixels deflate to
    about 200 KB, what an attacker uploads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile_folder(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder an attacker (or an unlucky camera share) would leave: good photos around
    a name that is not UTF-8, a 2 GiB file (sparse: no disk is used), a 200-megapixel PNG bomb
    and a 20000x1 strip."""
    d = tmp_path_factory.mktemp("hostile")
    shutil.copy(media_dir / "single_face.jpg", d / "a_face.jpg")
    latin1 = os.fsencode(d) + b"/b_caf\xe9_face.jpg"  # 'café' in Latin-1: not UTF-8
    shutil.copy(media_dir / "single_face.jpg", latin1)
    with open(d / "c_huge.jpg", "wb") as f:
        f.truncate(2 * 2**30)
    (d / "d_bomb.png").write_bytes(png_declaring(20000, 10000))
    assert cv2.imwrite(str(d / "e_strip.png"), np.zeros((1, 20000, 3), np.uint8))
    shutil.copy(media_dir / "single_face.jpg", d / "f_face.jpg")
    return d


def test_a_hostile_image_folder_costs_only_its_bad_files(model_args, hostile_folder,
                                                          tmp_path) -> None:
    """Issue 22, points 5, 6, 7 and 14: the non-UTF-8 name lost its result from every output
    (traceback, exit 1); the 2 GiB file was read whole (2.3 GB) and an OpenCV assertion ended
    the folder; the 200-megapixel PNG took 2.56 GB; the 20000x1 strip cost 268 s of CPU."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = subprocess.Popen(
        [sys.executable, "-m", "norface_rt", "listen", endpoint, "--until-eos", "--timeout",
         "150", "--out", str(tmp_path / "zmq.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc, err, peak = run_measured("run", str(hostile_folder), *model_args, "--zmq", endpoint,
                                     "--wait-subscribers", "1", "--jsonl",
                                     str(tmp_path / "r.jsonl"), "--csv",
                                     str(tmp_path / "r.csv"))
        assert listener.wait(timeout=60) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
    assert rc == 1, err  # the folder ends with an error that lists its unreadable files
    assert "Traceback" not in err
    assert peak < 1.5e9, f"peak RSS {peak / 1e9:.2f} GB"
    for path in (tmp_path / "r.jsonl", tmp_path / "zmq.jsonl"):
        msgs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        frames = [m for m in msgs if m["type"] == "frame"]
        assert [Path(m["source"]).name for m in frames] == [
            "a_face.jpg", "b_caf\\xe9_face.jpg", "c_huge.jpg", "d_bomb.png", "e_strip.png",
            "f_face.jpg"]
        faces = [len(m["faces"]) for m in frames]
        assert faces[0] == faces[1] == faces[5] == 1 and faces[2:5] == [0, 0, 0]
        assert [m["error"] is None for m in frames] == [True, True, False, False, True, True]
        assert f"expected at most {max_file_bytes(DEFAULT_MAX_PIXELS)} bytes" in frames[2]["error"]
        assert "2147483648 bytes" in frames[2]["error"]
        assert "expected at most 100000000 pixels (--max-image-pixels)" in frames[3]["error"]
        eos = msgs[-1]
        assert eos["type"] == "eos" and eos["frames"] == 6
        assert eos["error"].startswith("2 of 6 images could not be decoded")
    rows = (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 3 and "b_caf\\xe9_face.jpg" in rows[2]


@pytest.mark.timeout(90)  # (it took 268 s of CPU)
def test_a_strip_image_is_analysed_at_once_by_the_python_api(tiny_model_dir, landmarker_path,
                                                             tmp_path) -> None:
    """Point 5, through the API: a 157-byte 20000x1 PNG asked for 1,249 tiles, each its own
    MediaPipe graph; tiling now stops at a minimum tile size (tests/faces: the bounds)."""
    import norface_rt

    strip = tmp_path / "strip.png"
    assert cv2.imwrite(str(strip), np.zeros((1, 20000, 3), np.uint8))
    assert strip.stat().st_size < 200
    analyzer = norface_rt.Analyzer(model_dir=tiny_model_dir, landmarker=landmarker_path)
    assert analyzer.analyze_image(strip) == []
    big = tmp_path / "bomb.png"
    big.write_bytes(png_declaring(20000, 10000))
    with pytest.raises(ValueError, match=r"expected at most 100000000 pixels"):
        analyzer.analyze_image(big)
    small = norface_rt.Analyzer(model_dir=tiny_model_dir, landmarker=landmarker_path,
                                max_image_pixels=10_000)
    with pytest.raises(ValueError, match=r"expected at most 10000 pixels .* got 20000x1"):
        small.analyze_image(strip)


def test_a_huge_config_is_refused_without_being_read(tiny_model_dir, landmarker_path, media_dir,
                                                     tmp_path) -> None:
    """Point 14: a 1 GiB config.json was read whole (2.18 GB) before the clean refusal."""
    d = tmp_path / "set"
    shutil.copytree(tiny_model_dir, d)
    (d / "manifest.json").unlink()  # a set from before manifests: its config is read
    with open(d / "config.json", "ab") as f:
        f.truncate(2**30)
    rc, err, peak = run_measured("run", str(media_dir / "single_face.jpg"), "--model-dir",
                                 str(d), "--landmarker", str(landmarker_path), "--zmq", "none")
    assert rc == 2, err
    assert f"{d / 'config.json'}: expected a model config of at most 1048576 bytes, got " \
           f"{2**30} bytes" in err
    assert "Traceback" not in err and peak < 1e9


def test_models_verify_and_manifest_load_the_weights_they_vouch_for(tiny_model_dir,
                                                                    tmp_path) -> None:
    """Point 19: `models manifest` wrote a manifest for a set whose weights.safetensors could
    not be read, and `models verify` said it "loads"."""
    d = tmp_path / "set"
    shutil.copytree(tiny_model_dir, d)
    (d / "manifest.json").unlink()
    w = d / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size - 1000])  # the last tensor cut short
    made = cli("models", "manifest", str(d))
    assert made.returncode == 2, made.stdout + made.stderr
    assert f"{w}: not a readable safetensors weights file" in made.stderr
    assert not (d / "manifest.json").exists()
    shutil.copy(tiny_model_dir / "manifest.json", d / "manifest.json")  # an old, intact one
    shutil.copy(tiny_model_dir / "weights.safetensors", w)
    assert cli("models", "verify", str(d)).returncode == 0
    header = w.read_bytes()
    n = int.from_bytes(header[:8], "little")
    # same size, a header that lies: the manifest alone would not see it without its sha256,
    # the reader does
    bad = header[:8] + header[8:8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[9,') \
        + header[8 + n:]
    assert bad != header
    (d / "manifest.json").unlink()
    w.write_bytes(bad)
    verify = cli("models", "verify", str(d))
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert f"{w}: not a readable safetensors weights file" in verify.stderr


@pytest.fixture
def model_args(tiny_model_dir: Path, landmarker_path: Path) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path),
            "--no-progress"]
