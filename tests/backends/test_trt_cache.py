"""The engine cache key and the on-disk cache, without TensorRT: the key is a pure function of a
small dataclass, and the lookup / reuse / invalidation logic works on real model-set files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest

from norface_rt.backends.trt_cache import (
    ENGINE_CACHE_ENV,
    ENGINES,
    MANIFEST_FILE,
    BuildOptions,
    CacheKeyInputs,
    build_options,
    cache_entry,
    cache_key,
    default_cache_root,
    entry_name,
    load_manifest,
    publish,
    staging_dir,
    write_manifest,
)

GPU: dict[str, Any] = dict(gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                           trt_version="10.7.0.23")
HASHES = {"normalizer.onnx": "a" * 64, "classifier.onnx": "b" * 64}


def inputs(**changes: object) -> CacheKeyInputs:
    base = CacheKeyInputs(onnx_sha256=dict(HASHES), options=BuildOptions(), **GPU)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_key_is_stable_for_equal_inputs() -> None:
    a = inputs()
    b = CacheKeyInputs(onnx_sha256=list(reversed(list(HASHES.items()))), options=BuildOptions(),
                       gpu_name=GPU["gpu_name"], compute_capability=[9, 0],
                       trt_version=GPU["trt_version"])
    assert cache_key(a) == cache_key(b) == cache_key(inputs())
    assert len(cache_key(a)) == 64 and int(cache_key(a), 16) >= 0
    # lists of fp32 patterns and tuples of them are the same option
    assert cache_key(inputs(options=BuildOptions(fp32_layers=["*/emm/*"]))) == \
        cache_key(inputs(options=BuildOptions(fp32_layers=("*/emm/*",))))


@pytest.mark.parametrize("change", [
    {"gpu_name": "NVIDIA H200"},
    {"compute_capability": (8, 9)},
    {"trt_version": "10.8.0.43"},
    {"onnx_sha256": {**HASHES, "classifier.onnx": "c" * 64}},
    {"options": BuildOptions(max_batch=32)},
    {"options": BuildOptions(opt_batch=16)},
    {"options": BuildOptions(fp16=False)},
    {"options": BuildOptions(workspace_gib=2.0)},
    {"options": BuildOptions(fp32_layers="auto")},
    {"options": BuildOptions(fp32_layers="norm")},
    {"options": BuildOptions(fp32_layers=("*/norm1/*",))},
], ids=lambda c: next(iter(c)) + ("=" + str(next(iter(c.values()))) if "options" in c else ""))
def test_key_changes_with_every_field(change: dict[str, object]) -> None:
    assert cache_key(inputs(**change)) != cache_key(inputs())
    assert entry_name(inputs(**change)) != entry_name(inputs())


def test_entry_name_is_readable_and_filesystem_safe() -> None:
    name = entry_name(inputs())
    assert name.startswith("nvidia-h100-80gb-hbm3-sm90-trt10.7.0.23-")
    assert name.endswith(cache_key(inputs())[:16])
    assert "/" not in name and " " not in name


@pytest.mark.parametrize("opts, field", [
    (BuildOptions(max_batch=0), "max_batch"),
    (BuildOptions(max_batch=4, opt_batch=8), "opt_batch"),
    (BuildOptions(workspace_gib=0), "workspace_gib"),
    (BuildOptions(fp32_layers="everything"), "fp32_layers"),
    (BuildOptions(fp32_layers=("",)), "fp32_layers"),
    (BuildOptions(graphs="both"), "graphs"),  # type: ignore[arg-type]
    (BuildOptions(graphs="fused"), "no longer built: model sets no longer ship the joined graph"),  # type: ignore[arg-type]
])
def test_invalid_options_name_the_field(opts: BuildOptions, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        opts.validate()


def test_options_round_trip_through_json() -> None:
    opts = BuildOptions(max_batch=16, opt_batch=4, fp16=True, workspace_gib=2.5,
                        fp32_layers=("*/emm/*", "*Softmax"), graphs="split")
    assert BuildOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts


def test_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv(ENGINE_CACHE_ENV, str(tmp_path / "x"))
    assert default_cache_root() == tmp_path / "x"
    monkeypatch.delenv(ENGINE_CACHE_ENV)
    monkeypatch.delenv("NORFACE_RT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_root() == Path.home() / ".cache" / "norface-rt" / "engines"
    # the engine cache lives under the one user cache root, wherever that is moved
    monkeypatch.setenv("NORFACE_RT_CACHE", str(tmp_path / "cache"))
    assert default_cache_root() == tmp_path / "cache" / "engines"


def test_build_options_defaults_and_errors() -> None:
    assert build_options(max_batch=4).opt_batch == 4 and build_options().opt_batch == 8
    assert build_options(fp32_layers=["*/emm/*"]).fp32_layers == ("*/emm/*",)
    with pytest.raises(ValueError, match="fp32_layers must be None"):
        build_options(fp32_layers=3)  # type: ignore[arg-type]


# -- on disk, with the real tiny model set ------------------------------------------------

def fake_build(model_dir: Path, opts: BuildOptions, root: Path, payload: bytes = b"plan") -> Path:
    """Publish an entry the way build_engines does (staging dir, manifest last, atomic move), with
    opaque bytes standing in for serialized engines: the cache never looks inside them."""
    entry = cache_entry(model_dir, opts, root=root, **GPU)
    stage = staging_dir(root, entry.directory.name)
    graphs = tuple(ENGINES)
    for g in graphs:
        (stage / ENGINES[g][1]).write_bytes(payload + g.encode())
    write_manifest(stage, {"key": entry.key, "key_inputs": entry.key_inputs.to_dict(),
                           "engines": {g: {"file": ENGINES[g][1]} for g in graphs},
                           "precision": {"choice": "fp16"}})
    return publish(stage, entry.directory)


def test_lookup_reuse_and_invalidation_on_disk(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    opts = BuildOptions(max_batch=8)
    entry = cache_entry(tiny_model_dir, opts, root=root, **GPU)
    assert entry.load() is None  # nothing built yet

    d = fake_build(tiny_model_dir, opts, root)
    assert d == entry.directory and not any(p.name.startswith(".staging") for p in root.iterdir())
    hit = cache_entry(tiny_model_dir, opts, root=root, **GPU).load()
    assert hit is not None and hit.cache_hit and hit.key == entry.key
    assert list(hit.engines) == ["normalizer", "classifier"]
    assert all(p.is_file() for p in hit.engines.values())
    assert hit.options == opts and hit.key_inputs["onnx_sha256"]["normalizer.onnx"]

    # other options, other GPU, other TensorRT: other entries, all misses
    bigger = BuildOptions(max_batch=16)
    assert cache_entry(tiny_model_dir, bigger, root=root, **GPU).load() is None
    other_gpu = {**GPU, "gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}
    assert cache_entry(tiny_model_dir, opts, root=root, **other_gpu).load() is None
    other_trt = {**GPU, "trt_version": "10.8.0.43"}
    assert cache_entry(tiny_model_dir, opts, root=root, **other_trt).load() is None

    # a new model (changed ONNX bytes) hashes differently: its entry is a miss
    changed = tmp_path / "model-changed"
    shutil.copytree(tiny_model_dir, changed)
    proto = onnx.load(str(changed / "classifier.onnx"))
    proto.doc_string += " (retrained)"
    onnx.save(proto, str(changed / "classifier.onnx"))
    moved = cache_entry(changed, opts, root=root, **GPU)
    assert moved.key != entry.key and moved.load() is None


def test_damaged_or_foreign_entries_are_misses(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    opts = BuildOptions(max_batch=8)
    d = fake_build(tiny_model_dir, opts, root)
    key = cache_entry(tiny_model_dir, opts, root=root, **GPU).key
    assert load_manifest(d, key) is not None
    assert load_manifest(d, "0" * 64) is None  # built for another key

    engine = d / ENGINES["classifier"][1]
    good = engine.read_bytes()
    engine.write_bytes(good[:-1] + b"X")  # same size, other content
    assert load_manifest(d, key) is None
    engine.write_bytes(good)
    assert load_manifest(d, key) is not None
    engine.unlink()
    assert load_manifest(d, key) is None
    engine.write_bytes(good)
    (d / MANIFEST_FILE).write_text("{not json")
    assert load_manifest(d, key) is None


def test_rebuild_replaces_an_entry_atomically(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    opts = BuildOptions(max_batch=8)
    d = fake_build(tiny_model_dir, opts, root, payload=b"old")
    d2 = fake_build(tiny_model_dir, opts, root, payload=b"new")  # what force=True does
    assert d2 == d
    assert (d / ENGINES["normalizer"][1]).read_bytes() == b"newnormalizer"
    assert sorted(p.name for p in root.iterdir()) == [d.name]  # no staging or old copies left
    assert cache_entry(tiny_model_dir, opts, root=root, **GPU).load() is not None


def test_missing_onnx_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_model_dir / "normalizer.onnx", partial)
    with pytest.raises(FileNotFoundError, match="classifier.onnx"):
        cache_entry(partial, BuildOptions(), root=tmp_path, **GPU)
