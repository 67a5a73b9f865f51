"""Write synthetic samples as shards, in parallel worker processes.

Layout (read by ``train/data/shards.py``): ``shard-XXXXX.npz`` (arrays keyed like the sample
fields, stacked on axis 0, strings as numpy unicode arrays, zip-compressed) plus ``meta.json``.
Shard ``k`` always holds samples ``[k * shard_size, (k + 1) * shard_size)`` of the seed, so the
output does not depend on the number of workers.

Each worker process owns one GL context and writes its own fixed list of shards (no image data
crosses a process boundary); the parent collects small per-shard statistics through a bounded
queue, each ``get`` with a timeout so a stuck worker fails the run instead of hanging it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train.synth.labels import (
    LABEL_MAPPING_VERSION,
    OCCURRENCE_MARGIN,
    OCCURRENCE_THRESHOLD,
    au_rules_table,
    prototypes_table,
)
from train.synth.textures import TARGET_ID

STRING_KEYS = ("subject", "source", "key")
SHARD_TIMEOUT_S = 1800.0  # one shard of 256 samples takes ~1 min on one core


def write_shard(path: Path, samples: list[dict[str, Any]]) -> None:
    """Stack samples into one compressed npz (atomic: written to a temp name, then renamed)."""
    arrays: dict[str, np.ndarray] = {}
    for k in samples[0]:
        if k in STRING_KEYS:
            arrays[k] = np.asarray([str(s[k]) for s in samples], dtype=np.str_)
        else:
            arrays[k] = np.stack([np.asarray(s[k]) for s in samples])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ worker side
def _make_shard(gen: Any, task: tuple[str, int, int, int, int]) -> dict[str, Any]:
    out, seed, shard, start, stop = task
    samples = []
    cats: collections.Counter[str] = collections.Counter()
    t0 = time.time()
    for i in range(start, stop):
        s, info = gen.sample_with_info(seed, i)
        samples.append(s)
        cats[info["category"]] += 1
    write_shard(Path(out) / f"shard-{shard:05d}.npz", samples)
    emo = collections.Counter(int(s["emotion"]) for s in samples)
    occ = np.nansum(np.stack([s["au_occurrence"] for s in samples]), axis=0)
    return {"shard": shard, "n": len(samples), "seconds": time.time() - t0,
            "categories": dict(cats), "emotions": {str(k): v for k, v in emo.items()},
            "au_positive": occ.tolist()}


def _make_generator(kind: str, shared: str | None, cache: str, settings: dict[str, Any],
                    landmarker: str | None) -> Any:
    """``render`` (the ICT head, textured from the photos) or ``reenact`` (the photos themselves,
    :mod:`train.synth.reenact`)."""
    if kind == "reenact":
        from train.synth.reenact import ReenactGenerator

        if landmarker is None:
            raise ValueError("re-enacted samples need --landmarker: their crops and geometry come "
                             "from MediaPipe as at run time")
        return ReenactGenerator(shared, landmarker, img_size=int(settings["img_size"]))
    if kind != "render":
        raise ValueError(f"kind must be 'render' or 'reenact', got {kind!r}")
    from train.synth.engine import SampleGenerator, SynthSettings

    return SampleGenerator(shared, cache, SynthSettings(**settings), landmarker=landmarker)


def _worker_main(shared: str | None, cache: str, settings: dict[str, Any],
                 tasks: list[tuple[str, int, int, int, int]], results: Any,
                 landmarker: str | None = None, kind: str = "render") -> None:
    """Worker process: one generator (one GL context), a fixed list of shards to write."""
    gen = None
    try:
        gen = _make_generator(kind, shared, cache, settings, landmarker)
        for t in tasks:
            results.put(_make_shard(gen, t), timeout=SHARD_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        results.put({"error": f"{type(e).__name__}: {e}"}, timeout=60)
    finally:
        if gen is not None:
            gen.close()


# ------------------------------------------------------------------------------ parent side
def generate_dataset(out: str | os.PathLike[str], count: int, seed: int, workers: int,
                     texture_cache: str | os.PathLike[str], shared: str | None = None,
                     shard_size: int = 256, settings: Any = None,
                     log: Callable[[str], None] = print,
                     landmarker: str | os.PathLike[str] | None = None,
                     kind: str = "render", resume: bool = False) -> dict[str, Any]:
    """Generate ``count`` samples into ``out``; returns (and writes) the meta.json content.

    With ``landmarker`` (a MediaPipe .task file) every sample also carries ``mp_blendshapes`` and
    ``mp_neutral`` (see :mod:`train.synth.engine`). ``kind="reenact"`` writes re-enacted photos
    instead of renders (:mod:`train.synth.reenact`; no I_n, no ``mp_neutral``). ``resume`` keeps
    the shards an interrupted run of the same seed and size finished (each is written atomically
    and depends only on the seed and its index) and writes the rest."""
    from train.synth.engine import GENERATOR_VERSION, SynthSettings
    from train.synth.reenact import REENACT_VERSION

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    settings = settings or SynthSettings()
    settings.validate()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(out_dir.glob("shard-*.npz"))
    if stale and not resume:
        raise FileExistsError(f"{out_dir} already holds {len(stale)} shards; use an empty directory "
                              "(or resume an interrupted run of the same seed and size)")
    tasks = [(str(out_dir), int(seed), k, k * shard_size, min(count, (k + 1) * shard_size))
             for k in range((count + shard_size - 1) // shard_size)]
    results: list[dict[str, Any]] = []
    if resume:
        done = {p.name for p in stale}
        for t in [t for t in tasks if f"shard-{t[2]:05d}.npz" in done]:
            results.append(_shard_stats(out_dir / f"shard-{t[2]:05d}.npz", t))
        tasks = [t for t in tasks if f"shard-{t[2]:05d}.npz" not in done]
    workers = max(1, min(workers, len(tasks)))
    sdict = dataclasses.asdict(settings)
    t0 = time.time()
    lm = None if landmarker is None else str(landmarker)
    if not tasks:
        pass  # a resumed run that had finished every shard
    elif workers == 1:
        gen = _make_generator(kind, shared, str(texture_cache), sdict, lm)
        try:
            for t in tasks:
                results.append(_make_shard(gen, t))
                log(_progress(results, count, t0))
        finally:
            gen.close()
    else:
        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: GL contexts do not fork
        # Bounded: a worker blocks when the parent lags; results are a few hundred bytes each.
        queue = ctx.Queue(maxsize=2 * workers)
        procs = [ctx.Process(target=_worker_main, daemon=True,
                             args=(shared, str(texture_cache), sdict, tasks[w::workers], queue,
                                   lm, kind))
                 for w in range(workers)]
        for p in procs:
            p.start()
        try:
            for _ in tasks:
                r = queue.get(timeout=SHARD_TIMEOUT_S)
                if "error" in r:
                    raise RuntimeError(f"synthetic worker failed: {r['error']}")
                results.append(r)
                log(_progress(results, count, t0))
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=10)
    elapsed = time.time() - t0
    meta = _meta(results, count, seed, shard_size, settings, elapsed, workers,
                 REENACT_VERSION if kind == "reenact" else GENERATOR_VERSION)
    meta["kind"] = kind
    from train.synth.ict import ICT_RELPATH, shared_root
    from train.synth.textures import TextureBank

    with np.load(shared_root(shared) / ICT_RELPATH) as ict:
        meta["blendshape_names"] = [str(n) for n in ict["expression_names"]]
    meta["photo_sources"] = TextureBank(texture_cache).meta.get("citations", {})
    if landmarker is not None:
        from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES

        meta["mp_blendshape_names"] = list(MEDIAPIPE_BLENDSHAPES)
        meta["mp_landmarker"] = Path(landmarker).name
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _shard_stats(path: Path, task: tuple[str, int, int, int, int]) -> dict[str, Any]:
    """The statistics _make_shard reports, read back from a finished shard (a resumed run);
    the sampler's categories are not stored, so they count as 'resumed'."""
    with np.load(path, allow_pickle=False) as z:
        emotion = z["emotion"]
        occ = np.nansum(z["au_occurrence"], axis=0)
    expected = task[4] - task[3]
    if len(emotion) != expected:
        raise ValueError(f"{path}: holds {len(emotion)} samples, expected {expected}; not a shard "
                         "of this run (same seed, count and shard size)")
    return {"shard": task[2], "n": int(len(emotion)), "seconds": 0.0,
            "categories": {"resumed": int(len(emotion))},
            "emotions": {str(k): int(v) for k, v in collections.Counter(emotion.tolist()).items()},
            "au_positive": occ.tolist()}


def _progress(results: list[dict[str, Any]], count: int, t0: float) -> str:
    done = sum(r["n"] for r in results)
    dt = time.time() - t0
    return f"{done}/{count} samples, {done / max(dt, 1e-9):.2f} samples/s"


def _meta(results: list[dict[str, Any]], count: int, seed: int, shard_size: int, settings: Any,
          elapsed: float, workers: int, version: str) -> dict[str, Any]:
    cats: collections.Counter[str] = collections.Counter()
    emos: collections.Counter[str] = collections.Counter()
    au = np.zeros(len(AU_NAMES))
    for r in results:
        cats.update(r["categories"])
        emos.update(r["emotions"])
        au += np.asarray(r["au_positive"])
    emotion_counts = {(EMOTION_NAMES[int(k)] if int(k) >= 0 else "ambiguous(-1)"): v
                      for k, v in sorted(emos.items(), key=lambda kv: int(kv[0]))}
    return {
        "format": "norface-rt synthetic shards",
        "generator_version": version,
        "label_mapping_version": LABEL_MAPPING_VERSION,
        "seed": int(seed),
        "count": int(count),
        "shards": len(results),
        "shard_size": int(shard_size),
        "img_size": int(settings.img_size),
        "render_size": int(settings.render_size),
        "target_identity": TARGET_ID,
        "au_names": list(AU_NAMES),
        "emotion_names": list(EMOTION_NAMES),
        "occurrence_threshold": OCCURRENCE_THRESHOLD,
        "occurrence_margin": OCCURRENCE_MARGIN,
        "au_mapping": au_rules_table(),
        "emotion_prototypes": prototypes_table(),
        "counts": {"categories": dict(cats), "emotions": emotion_counts,
                   "au_positive": dict(zip(AU_NAMES, au.astype(int).tolist()))},
        "settings": dataclasses.asdict(settings),
        "seconds": round(elapsed, 2),
        "workers": int(workers),
        "samples_per_second": round(count / max(elapsed, 1e-9), 3),
    }


def relabel_dataset(directory: str | os.PathLike[str],
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Recompute every shard's labels from its stored expression weights with the current AU
    mapping (after a change of :mod:`train.synth.labels`), without rendering again; updates
    meta.json's mapping version and label counts. Returns the new meta."""
    from train.synth.labels import AULabeler

    d = Path(directory)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"not a shard directory (no meta.json): {d}")
    meta = json.loads(meta_path.read_text())
    names = meta.get("blendshape_names")
    if not names:
        raise ValueError(f"{meta_path}: no blendshape_names; cannot relabel")
    labeler = AULabeler(names)
    emos: collections.Counter[str] = collections.Counter()
    au = np.zeros(len(AU_NAMES))
    files = sorted(d.glob("shard-*.npz"))
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        labels = [labeler.labels(w) for w in arrays["blendshapes"]]
        arrays["au_intensity"] = np.stack([lab["au_intensity"] for lab in labels])
        arrays["au_occurrence"] = np.stack([lab["au_occurrence"] for lab in labels])
        arrays["emotion"] = np.asarray([lab["emotion"] for lab in labels], np.int64)
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, f)
        emos.update(str(int(e)) for e in arrays["emotion"])
        au += np.nansum(arrays["au_occurrence"], axis=0)
        log(f"relabelled {f.name}")
    meta["label_mapping_version"] = LABEL_MAPPING_VERSION
    meta["au_mapping"] = au_rules_table()
    meta["emotion_prototypes"] = prototypes_table()
    meta["counts"]["emotions"] = {(EMOTION_NAMES[int(k)] if int(k) >= 0 else "ambiguous(-1)"): v
                                  for k, v in sorted(emos.items(), key=lambda kv: int(kv[0]))}
    meta["counts"]["au_positive"] = dict(zip(AU_NAMES, au.astype(int).tolist()))
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta

