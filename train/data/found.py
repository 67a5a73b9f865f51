"""Further permissive real faces ("found" data) as training shards for distillation.

Real faces found in public repositories and packages whose licence allows commercial use and
modification (``../shared/README.md``, "Permissive training data", item 3) are gathered by hand
into a folder with a ``manifest.json`` that records, per source, the origin (repository and
commit, or package and version), the licence with its evidence and the attribution, and per file
its sha256 (the model card cites each source from it). This module turns them into shards: every
face of every photo, and faces of a subsample of every video's frames, through the runtime's own
face recipe (MediaPipe image mode, five-point alignment), with MediaPipe's blendshapes.

They carry no emotion or AU label (-1 / NaN): what a file name or a clip's intended emotion says
is one curator's word at best, so the emotion targets come from the teachers (the harness labels
the shards; ``"teachers": FILE`` in the data spec). A file whose bytes differ from the manifest's
sha256 is refused.

CLI: ``python -m train prepare-found --manifest DIR/manifest.json --out DIR [--exclude SOURCE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES, ModelConfig
from norface_rt.faces.align import Aligner
from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, blendshape_vector
from norface_rt.types import FramePacket
from train.data.sample import au_vector
from train.data.shards import write_shard

SOURCE = "found"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".flv", ".avi", ".mpg", ".mpeg", ".webm", ".gif")
MAX_FACES = 8


def read_manifest(path: str | os.PathLike[str]) -> tuple[Path, list[dict[str, Any]]]:
    """(folder of the sources, sources) of a found-data manifest."""
    p = Path(path)
    m = json.loads(p.read_text())
    if not isinstance(m, dict) or not isinstance(m.get("sources"), list):
        raise ValueError(f"{p}: expected an object with a 'sources' list")
    for s in m["sources"]:
        missing = [k for k in ("name", "licence", "licence_evidence", "attribution", "files")
                   if k not in s]
        if missing:
            raise ValueError(f"{p}: source {s.get('name')!r} lacks {missing}: every source needs "
                             "its licence, the evidence and the attribution")
    return p.parent, m["sources"]


def _frames(path: Path, per_clip: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) of at most ``per_clip`` frames spread over a video."""
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if not frames:
        return
    idx = np.unique(np.linspace(0, len(frames) - 1, min(per_clip, len(frames))).round().astype(int))
    for i in idx:
        yield int(i), np.ascontiguousarray(frames[i])


def found_samples(root: Path, sources: list[dict[str, Any]], landmarker: str | os.PathLike[str],
                  cfg: ModelConfig, per_clip: int = 24,
                  exclude: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    from norface_rt.faces.landmarker import Landmarker
    from norface_rt.images import read_rgb

    aligner = Aligner(cfg)
    with Landmarker(Path(landmarker), max_faces=MAX_FACES, mode="image", tiling=1.0) as lm:
        for src in sources:
            if src["name"] in exclude:
                continue
            for f in src["files"]:
                path = root / src["name"] / f["path"]
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != f["sha256"]:
                    raise ValueError(f"{path}: sha256 {digest} differs from the manifest's "
                                     f"{f['sha256']}: not the file whose licence was checked")
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    frames: Iterator[tuple[int, np.ndarray]] = _frames(path, per_clip)
                else:
                    frames = iter([(0, read_rgb(path))])
                person = f.get("person") or f"{src['name']}/{Path(f['path']).stem}"
                for i, image in frames:
                    faces = lm.detect(FramePacket(SOURCE, 0, image, None, 0.0))
                    for k, face in enumerate(faces):
                        crop, _ = aligner.crop_for_points(image, face.points5)
                        yield {
                            "image": crop,
                            "au_occurrence": au_vector(),
                            "au_intensity": au_vector(),
                            "emotion": np.int64(-1),
                            "mp_blendshapes": blendshape_vector(face.blendshapes,
                                                                MEDIAPIPE_BLENDSHAPES),
                            "subject": f"{SOURCE}/{person}" + (f"#{k}" if len(faces) > 1 else ""),
                            "source": SOURCE,
                            "key": f"{SOURCE}/{src['name']}/{f['path']}@{i}/{k}",
                        }


def prepare_found(manifest: str | os.PathLike[str], out: str | os.PathLike[str],
                  landmarker: str | os.PathLike[str], img_size: int = 112, per_clip: int = 24,
                  exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    root, sources = read_manifest(manifest)
    unknown = set(exclude) - {s["name"] for s in sources}
    if unknown:
        raise ValueError(f"--exclude: no such source {sorted(unknown)}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if list(out_dir.glob("shard-*.npz")):
        raise FileExistsError(f"{out_dir} already holds shards; use an empty directory")
    samples = list(found_samples(root, sources, landmarker, ModelConfig(img_size=img_size),
                                 per_clip=per_clip, exclude=exclude))
    if not samples:
        raise RuntimeError("no face found in any found file")
    shard = 256
    for n, start in enumerate(range(0, len(samples), shard)):
        write_shard(out_dir / f"shard-{n:05d}.npz", samples[start:start + shard])
    used = [s for s in sources if s["name"] not in exclude]
    per_source: dict[str, int] = {}
    for s in samples:
        name = str(s["key"]).split("/")[1]
        per_source[name] = per_source.get(name, 0) + 1
    meta: dict[str, Any] = {
        "format": "norface-rt found-face shards", "source": SOURCE, "count": len(samples),
        "img_size": img_size, "au_names": list(AU_NAMES), "emotion_names": list(EMOTION_NAMES),
        "labels": "none (emotion -1, AUs NaN): the teachers label these",
        "faces_per_source": per_source, "excluded": list(exclude),
        "mp_blendshape_names": list(MEDIAPIPE_BLENDSHAPES),
        "citations": {s["name"]: {"licence": s["licence"], "attribution": s["attribution"],
                                  "origin": s.get("origin"),
                                  "licence_evidence": s["licence_evidence"]} for s in used},
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.json of the found-data folder")
    p.add_argument("--out", required=True, help="empty output directory")
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task "
                   "(default: the runtime's search order)")
    p.add_argument("--img-size", type=int, default=112, help="crop side (default 112)")
    p.add_argument("--per-clip", type=int, default=24, help="frames taken from each video")
    p.add_argument("--exclude", action="append", default=[], help="a source to leave out "
                   "(repeatable)")


def run_cli(args: argparse.Namespace) -> int:
    from norface_rt.paths import resolve_landmarker

    meta = prepare_found(args.manifest, args.out, resolve_landmarker(args.landmarker),
                         img_size=args.img_size, per_clip=args.per_clip,
                         exclude=tuple(args.exclude))
    print(json.dumps({k: meta[k] for k in ("count", "faces_per_source", "excluded")}))
    return 0
