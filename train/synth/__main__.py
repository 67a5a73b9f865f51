"""``python -m train.synth {textures,generate,check,preview,bench}``; see docs/synthetic.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from norface_rt.cli import positive_int

if TYPE_CHECKING:
    from train.synth.engine import SampleGenerator, SynthSettings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shared", default=None,
                   help="shared data root (ict/, faces/, backgrounds/); default $NORFACE_RT_SHARED")
    p.add_argument("--cache", default=None,
                   help="texture cache directory; default <norface-rt cache>/synth/textures-v<N>")


def _cache(args: argparse.Namespace) -> Path:
    from train.synth.textures import default_cache_dir

    return Path(args.cache) if args.cache else default_cache_dir()


def _ensure_textures(args: argparse.Namespace) -> Path:
    from train.synth.textures import build_texture_cache, is_built

    cache = _cache(args)
    if not is_built(cache):
        print(f"texture cache {cache} not built yet: fitting the photos first", file=sys.stderr)
        build_texture_cache(args.shared, cache, log=lambda m: print(m, file=sys.stderr))
    return cache


def _settings(args: argparse.Namespace) -> SynthSettings:
    from train.synth.engine import SynthSettings

    return SynthSettings(img_size=args.img_size, render_size=args.render_size)




def _write_target(out_dir: str, cache: Path, shared: str | None, settings: SynthSettings) -> Path:
    """``target.png`` beside the shards: the neutral target crop the normalizer stage and the
    export take as I_t (train/configs/default_cpu_*.json point at it)."""
    import cv2

    from train.synth.engine import SampleGenerator

    gen = SampleGenerator(shared, cache, settings)
    try:
        crop = gen.target_crop()
    finally:
        gen.close()
    path = Path(out_dir) / "target.png"
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    print(f"wrote {path}", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.synth",
                                 description="Synthetic paired-face data engine (ICT-FaceKit).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("textures", help="fit the landmarked photos and build the texture cache")
    _common(t)
    t.add_argument("--ids", nargs="*", default=None, help="only these photo ids (set/stem)")
    t.add_argument("--tile", type=positive_int("--tile"), default=512)

    for name, helptext in (("generate", "write paired samples as shards"),
                           ("check", "MediaPipe detection rate on renders"),
                           ("preview", "write a PNG grid of sample pairs"),
                           ("bench", "images/s of the renderer and of full samples")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--count", type=positive_int("--count"), default=16)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--img-size", type=positive_int("--img-size"), default=112)
        p.add_argument("--render-size", type=positive_int("--render-size"), default=256)
        if name == "generate":
            p.add_argument("--out", required=True)
            p.add_argument("--workers", type=positive_int("--workers"), default=1)
            p.add_argument("--shard-size", type=positive_int("--shard-size"), default=256)
            p.add_argument("--landmarker", default=None,
                           help="MediaPipe face_landmarker .task: also store the blendshapes "
                                "MediaPipe reads on each full render (mp_blendshapes, mp_neutral), "
                                "which models with a geometry input train on")
            p.add_argument("--resume", action="store_true",
                           help="keep the shards an interrupted run of the same seed, count and "
                                "shard size finished, write the rest")
            p.add_argument("--kind", choices=("render", "reenact"), default="render",
                           help="render: the textured ICT head (default); reenact: the permissive "
                                "photos themselves, warped into the expressions (needs "
                                "--landmarker; see train/synth/reenact.py)")
        if name == "check":
            p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task")
            p.add_argument("--min-rate", type=float, default=0.0,
                           help="exit 1 when the detection rate is below this")
        if name == "preview":
            p.add_argument("--out", required=True, help="PNG file")
    rl = sub.add_parser("relabel", help="recompute the labels of existing shards with the current "
                                         "AU mapping (no rendering)")
    rl.add_argument("dir", help="shard directory")
    args = ap.parse_args(argv)

    if args.cmd == "relabel":
        from train.synth.dataset import relabel_dataset

        meta = relabel_dataset(args.dir, log=lambda m: print(m, file=sys.stderr))
        print(json.dumps(meta["counts"]["emotions"]))
        return 0
    if args.cmd == "textures":
        from train.synth.textures import build_texture_cache

        out = build_texture_cache(args.shared, _cache(args), ids=args.ids, tile=args.tile)
        print(f"texture cache written to {out}")
        return 0

    cache = _ensure_textures(args)
    settings = _settings(args)
    if args.cmd == "generate":
        from train.synth.dataset import generate_dataset

        meta = generate_dataset(args.out, args.count, args.seed, args.workers, cache,
                                shared=args.shared, shard_size=args.shard_size, settings=settings,
                                log=lambda m: print(m, file=sys.stderr),
                                landmarker=args.landmarker, kind=args.kind,
                                resume=args.resume)
        print(json.dumps({k: meta[k] for k in ("count", "shards", "seconds",
                                                "samples_per_second")}))
        print(json.dumps(meta["counts"]["emotions"]))
        if args.kind == "render":
            _write_target(args.out, cache, args.shared, settings)
        return 0

    from train.synth.engine import SampleGenerator

    gen = SampleGenerator(args.shared, cache, settings)
    try:
        if args.cmd == "check":
            from norface_rt.paths import resolve_landmarker
            from train.synth.check import check_detection

            rep = check_detection(gen, resolve_landmarker(args.landmarker), args.count, args.seed)
            print(json.dumps(rep.to_dict()))
            return 0 if rep.detection_rate >= args.min_rate else 1
        if args.cmd == "preview":
            import cv2

            tiles = []
            for i in range(args.count):
                s = gen.sample(args.seed, i)
                tiles.append(np.concatenate([s["image"], s["normalized"]], axis=0))
            cols = min(8, len(tiles))
            while len(tiles) % cols:
                tiles.append(np.zeros_like(tiles[0]))
            rows = [np.concatenate(tiles[r:r + cols], axis=1) for r in range(0, len(tiles), cols)]
            cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
            print(f"wrote {args.out}")
            return 0
        if args.cmd == "bench":
            return _bench(gen, args.count, args.seed)
    finally:
        gen.close()
    return 2


def _bench(gen: SampleGenerator, count: int, seed: int) -> int:
    """Raw renderer throughput (one posed head, no post-processing) and full paired samples."""
    m = gen.model
    rng = np.random.default_rng(seed)
    weights = [gen.sampler.sample(rng).weights for _ in range(count)]
    gen.sample(seed, 0)  # warm up (texture upload, shader compile)
    t0 = time.perf_counter()
    for w in weights:
        gen.view_target(w)
    render_s = (time.perf_counter() - t0) / count
    t0 = time.perf_counter()
    for i in range(count):
        gen.sample(seed, i)
    sample_s = (time.perf_counter() - t0) / count
    size = gen.settings.render_size
    print(json.dumps({
        "render_size": size, "vertices": int(m.n_vertices),
        "triangles": int(len(m.topology.triangles)),
        "renders_per_second": round(1.0 / render_s, 2),
        "pairs_per_second": round(1.0 / sample_s, 2),
        "note": "renders = mesh + normals + raster + readback + composite; pairs = original and "
                "target render, backgrounds, degradations, alignment, labels; one process",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
