"""``python -m benchmarks.gpu_kit``: make the inputs (``--prepare``), or run the kit.

A run goes through the sections in order (environment, GPU tests, model alone, end to end), each
in its own child process with its share of the time budget (:mod:`.settings`), and rewrites
``results.json`` / ``results.md`` after each one: a run cut short still leaves what it measured.
Exit code 0 when every section finished and no GPU test failed, 1 otherwise, 2 for bad
arguments or missing inputs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.gpu_kit import DEFAULT_INPUTS, REPO, gpu_tests, report
from benchmarks.gpu_kit.inputs import InputsError, folder_bytes, read_manifest
from benchmarks.gpu_kit.part import Part
from benchmarks.gpu_kit.proc import child_env, run_bounded
from benchmarks.gpu_kit.settings import SECTIONS, Settings

DEFAULT_OUT = REPO / "out" / "gpu-kit"
LANDMARKER = "face_landmarker_v2_with_blendshapes.task"
RESULT_FILES = ("results.json", "results.md", "environment.txt", gpu_tests.XML_NAME,
                gpu_tests.LOG_NAME, "kit.log")
PER_TEST_S = 90.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_kit",
        description="Check and measure norface-rt's GPU paths in one run (a few minutes) and "
                    "write every result to one folder. Run from the repository root.")
    p.add_argument("--prepare", action="store_true",
                   help="make the inputs (JPEG frames and landmarks) from the shared media; "
                        "needs PyAV, MediaPipe and the shared data")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"results folder (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--dry-run", action="store_true",
                   help="the smallest run that takes every code path (CI: --device cpu --dry-run)")
    p.add_argument("--inputs", type=Path, default=DEFAULT_INPUTS,
                   help=f"inputs folder (default {DEFAULT_INPUTS.relative_to(REPO)})")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="model set (default: the packaged default model)")
    p.add_argument("--batches", type=int, nargs="+", help="model-alone batch sizes")
    p.add_argument("--streams", type=int, nargs="+", help="end-to-end stream counts")
    p.add_argument("--seconds", type=float, help="seconds per end-to-end run")
    p.add_argument("--budget", type=float, help="wall-clock seconds for the whole run (default "
                   "330; each section gets its share)")
    p.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="sections to leave out")
    p.add_argument("--shared", type=Path, default=None,
                   help="--prepare: shared data folder (default $NORFACE_RT_SHARED, else ../shared)")
    p.add_argument("--landmarker", type=Path, default=None,
                   help=f"--prepare: MediaPipe bundle (default SHARED/models/{LANDMARKER})")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    from norface_rt.paths import packaged_model_dir

    kw: dict[str, Any] = {"device": args.device, "inputs": str(args.inputs.resolve()),
                          "model_dir": str((args.model_dir or packaged_model_dir()).resolve()),
                          "out": str(args.out.resolve())}
    for name in ("batches", "streams", "seconds"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.budget is not None:
        kw["budget_s"] = args.budget
    return Settings.dry(**kw) if args.dry_run else Settings(**kw)


def validate(settings: Settings) -> None:
    """Arguments and inputs, before anything runs (a mistake costs seconds, not the GPU time)."""
    if settings.device != "cpu" and not settings.cuda:
        raise ValueError(f"--device: expected cuda, cuda:N or cpu, got {settings.device!r}")
    for name in ("batches", "streams"):
        values = getattr(settings, name)
        if not values or any(v < 1 for v in values):
            raise ValueError(f"--{name}: expected integers >= 1, got {values}")
    if not settings.seconds > 0:
        raise ValueError(f"--seconds: expected a duration > 0, got {settings.seconds}")
    if not settings.budget_s > 0:
        raise ValueError(f"--budget: expected seconds > 0, got {settings.budget_s}")
    if not (Path(settings.model_dir) / "config.json").is_file():
        raise ValueError(f"--model-dir: no model set in {settings.model_dir} (config.json missing)")
    read_manifest(settings.inputs)  # InputsError says how to make them
    if settings.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {settings.device}: torch {torch.__version__} sees no CUDA "
                             "device here; check the kit on the CPU with --device cpu --dry-run")


def run_section(name: str, settings_path: Path, part_path: Path) -> int:
    """One section, in this (child) process: its results go to ``part_path`` as it goes."""
    from benchmarks.gpu_kit import end_to_end, environment, model

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.load(settings_path)
    part = Part(part_path)
    part.save()
    try:
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        if name == "environment":
            part.update(**environment.collect(Path(settings.out)))
        elif name == "model":
            model.run(settings, part)
        elif name == "end_to_end":
            end_to_end.run(settings, part)
        else:
            raise ValueError(f"--section: {name!r} does not run in a child process")
    except Exception as exc:
        traceback.print_exc()
        part.update(status=f"error: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    return 0


def _child(name: str, settings_path: Path, tmp: Path, limit: float, log: Path) -> dict[str, Any]:
    part_path = tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_kit", "--section", name,
           "--settings", str(settings_path), "--part", str(part_path)]
    done = run_bounded(cmd, timeout=limit, log=log, env=child_env())
    data = Part.read(part_path) or {"rows": []}
    if done.timed_out:
        data["status"] = f"timed out after {limit:.0f} s" + (
            f" ({len(data['rows'])} rows finished before)" if data.get("rows") else "")
    elif data.get("status") in (None, "running"):
        data["status"] = f"error: the section process ended with exit code {done.exit_code} " \
                         "(see kit.log)"
    data["seconds"] = round(done.seconds, 1)
    return data


def run_kit(settings: Settings, skip: list[str], command: str) -> int:
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # an earlier run's files never mix with this one's
        (out / name).unlink(missing_ok=True)
    t_start = time.monotonic()
    results: dict[str, Any] = {"kit": {
        "command": command, "dry_run": settings.dry_run, "device": settings.device,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "settings": settings.as_dict()}, "sections": {}}
    log = out / "kit.log"
    log.write_text(f"{command}\n")
    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as tmp_name:
        tmp = Path(tmp_name)
        settings_path = tmp / "settings.json"
        settings.save(settings_path)
        for name in SECTIONS:
            if name in skip:
                sec: dict[str, Any] = {"status": "skipped (--skip)"}
            else:
                limit = settings.limits[name]
                print(f"[gpu-kit] {name}: running (limit {limit:.0f} s)", flush=True)
                if name == "tests":
                    sec = gpu_tests.run(out, timeout=limit, per_test_s=PER_TEST_S)
                else:
                    sec = _child(name, settings_path, tmp, limit, log)
                print(f"[gpu-kit] {name}: {sec['status']} ({sec.get('seconds')} s)", flush=True)
            results["sections"][name] = sec
            results["kit"]["seconds"] = round(time.monotonic() - t_start, 1)
            report.write(results, out)
    results["kit"]["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    report.write(results, out)
    print(report.render_markdown(results))
    print(f"[gpu-kit] results in {out}: {', '.join(n for n in RESULT_FILES if (out / n).exists())}")
    return exit_code(results)


def exit_code(results: dict[str, Any]) -> int:
    """0: every section finished and no GPU test failed or errored; else 1."""
    for sec in results["sections"].values():
        if sec["status"] != "ok" and not sec["status"].startswith("skipped"):
            return 1
    counts = results["sections"].get("tests", {}).get("counts", {})
    return 1 if counts.get("failed") or counts.get("error") else 0


def tree_bytes() -> int | None:
    """Bytes of what a copy of the working tree holds: tracked and untracked files that git does
    not ignore (None outside a git checkout)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=REPO, capture_output=True,
                               check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(os.lstat(REPO / n).st_size for n in names if n and os.path.lexists(REPO / n))


def run_prepare(args: argparse.Namespace) -> int:
    from benchmarks.gpu_kit.inputs import prepare

    shared = args.shared or Path(os.environ.get("NORFACE_RT_SHARED") or REPO.parent / "shared")
    landmarker = args.landmarker or shared / "models" / LANDMARKER
    if not landmarker.is_file():
        raise InputsError(f"--landmarker: {landmarker} not found (pass --landmarker or --shared)")
    manifest = prepare(shared, landmarker, args.inputs)
    size = folder_bytes(args.inputs)
    tree = tree_bytes()
    for c in manifest["clips"]:
        print(f"{c['name']}: {c['frames']} frames {c['width']}x{c['height']} at {c['fps']:.2f} fps, "
              f"{c['faces']} faces ({c['source']})")
    print(f"inputs: {size / 2**20:.1f} MiB in {len(manifest['files'])} files, {args.inputs} "
          "(git-ignored: shared data, never commit)")
    if tree is not None:
        print(f"working tree (tracked + untracked, not ignored): {tree / 2**20:.1f} MiB; with the "
              f"inputs: {(tree + size) / 2**20:.1f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.section:
        if args.settings is None or args.part is None:
            parser().error("--section needs --settings and --part")
        return run_section(args.section, args.settings, args.part)
    try:
        if args.prepare:
            return run_prepare(args)
        settings = settings_from(args)
        validate(settings)
    except (InputsError, ValueError) as e:
        print(f"python -m benchmarks.gpu_kit: error: {e}", file=sys.stderr)
        return 2
    command = " ".join(["python -m benchmarks.gpu_kit",
                        *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))])
    return run_kit(settings, args.skip, command)
