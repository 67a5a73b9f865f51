"""``norface-rt models``: create an untrained model set, download the landmarker, show a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from norface_rt.cli.args import add_command, fail
from norface_rt.config import SIZES, ConfigFileError, ModelConfig
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    m = add_command(sub, "models", help="manage model files: create an untrained set, download "
                                        "the MediaPipe landmarker, show a config")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    mi = add_command(msub, "init-untrained", help="write a randomly initialised model set "
                                                  "(plumbing only; needs the 'export' extra)")
    mi.add_argument("out_dir", help="folder to write the model set to")
    mi.add_argument("--size", default="small", choices=list(SIZES), help="network size")
    mi.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    mi.add_argument("--geometry", action="store_true",
                    help="with the blendshape geometry input (default: image-only)")
    md = add_command(msub, "download", help="download the MediaPipe face landmarker "
                                            "(sha256-checked; exit 1 when the download fails)")
    md.add_argument("--dest", help="directory (default: the user cache, "
                                   "~/.cache/norface-rt/models)")
    mf = add_command(msub, "info", help="print the config of a model set")
    mf.add_argument("model_dir", nargs="?",
                    help="model set folder (default: the one `run` would use)")
    mm = add_command(msub, "manifest", help="write manifest.json (sha256 of each file) into a "
                                            "model set made before manifests existed")
    mm.add_argument("model_dir", help="model set folder (its files must load as a model set)")
    mv = add_command(msub, "verify", help="check a model set against its manifest and load it "
                                          "(exit 2 naming a damaged file, 1 without a manifest)")
    mv.add_argument("model_dir", nargs="?",
                    help="model set folder (default: the one `run` would use)")


def run(args: argparse.Namespace) -> int:
    if args.models_command == "init-untrained":
        from norface_rt.export import init_untrained

        out = init_untrained(Path(args.out_dir), size=args.size, seed=args.seed,
                             geometry=args.geometry)
        print(f"wrote an UNTRAINED {args.size} model set to {out} (results will be flagged untrained)")
        return ExitCode.OK
    if args.models_command == "download":
        from norface_rt.tools.download import download_landmarker

        try:
            path = download_landmarker(Path(args.dest) if args.dest else None)
        except RuntimeError as exc:  # offline, refused, checksum mismatch: one line, exit 1
            return fail(str(exc), ExitCode.FAILED)
        except OSError as exc:  # the destination cannot be written
            return fail(f"--dest: cannot write the landmarker there: {exc}", ExitCode.USAGE)
        print(f"MediaPipe face landmarker at {path}")
        return ExitCode.OK
    if args.models_command == "manifest":
        from norface_rt.model_set import write_manifest

        d = Path(args.model_dir)
        _check_loads(d)  # never vouch for files that do not load as a model set
        print(f"wrote {write_manifest(d)}")
        return ExitCode.OK
    if args.models_command == "verify":
        from norface_rt.model_set import read_manifest
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        cfg = _check_loads(d)
        if read_manifest(d) is None:
            return fail(f"model set {d}: {cfg.model_id}: loads, but has no manifest.json to check "
                        f"its files against (`norface-rt models manifest {d}` adds one)", ExitCode.FAILED)
        print(f"model set {d}: {cfg.model_id}: every file matches its manifest and loads")
        return ExitCode.OK
    if args.models_command == "info":
        from norface_rt.model_set import load_config
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        print(f"model set: {d}")
        print(load_config(d).to_json())
        return ExitCode.OK
    raise AssertionError(args.models_command)


def _check_loads(model_dir: Path) -> ModelConfig:
    """Load every file of the set that a manifest vouches for: the graphs with ONNX Runtime
    (which checks the manifest when there is one, the config's bounds and its agreement with
    the graphs), the weights as safetensors (every tensor's bytes in place, the embedded config
    the same) and the target image; errors name the file."""
    from norface_rt.backends import load_backend
    from norface_rt.model_set import TARGET_FILE, WEIGHTS_FILE, check_weights_file, read_target_image

    with load_backend(model_dir) as backend:
        cfg = backend.config
    if (model_dir / WEIGHTS_FILE).is_file():
        check_weights_file(model_dir / WEIGHTS_FILE, cfg)
    try:
        read_target_image(model_dir, cfg.img_size)
    except ValueError as exc:
        raise ConfigFileError(f"{model_dir / TARGET_FILE}: {exc}") from exc
    return cfg
