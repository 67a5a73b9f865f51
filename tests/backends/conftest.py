"""Backend tests run on the suite's shared untrained tiny model set (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir: Path) -> Path:
    """Read-only: tests that need to alter a model set copy it first."""
    return tiny_model_dir


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the 2 shared cores are busy, and spinning thread pools then stall.
    Opt in per module (torch is imported lazily so ORT-only tests never load it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def join_graphs(model_dir: Path, out: Path) -> Path:
    """Write the joined graph ``norface.onnx`` of a model set before v0.2 (normalizer then
    classifier in one graph, sharing ``face``), the way those sets were exported."""
    import onnx
    import onnx.compose
    import onnx.helper

    normalizer = onnx.load(str(model_dir / "normalizer.onnx"))
    classifier = onnx.load(str(model_dir / "classifier.onnx"))
    g1 = onnx.compose.add_prefix_graph(normalizer.graph, "normalizer/", rename_inputs=False,
                                       rename_outputs=False)
    g2 = onnx.compose.add_prefix_graph(classifier.graph, "classifier/", rename_inputs=False,
                                       rename_outputs=False)
    face = next(i for i in g1.input if i.name == "face")
    joined = onnx.helper.make_graph(
        [*g1.node, *g2.node], "norface", [face], [*g1.output, *g2.output],
        initializer=[*g1.initializer, *g2.initializer],
        value_info=[*g1.value_info, *g2.value_info])
    proto = onnx.helper.make_model(joined, opset_imports=list(normalizer.opset_import),
                                   ir_version=normalizer.ir_version)
    for prop in normalizer.metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


@pytest.fixture(scope="session")
def legacy_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model set as written before v0.2: config, the joined graph norface.onnx, weights only."""
    import shutil

    old = tmp_path_factory.mktemp("legacy-model")
    for name in ("config.json", "weights.safetensors"):
        shutil.copy(tiny_model_dir / name, old / name)
    join_graphs(tiny_model_dir, old / "norface.onnx")
    return old
