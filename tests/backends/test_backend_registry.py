"""The backend table is the one place a backend name means something: every name list, choice
and rule is read from it, and each row describes the class it names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from norface_rt.backends import BACKEND_NAMES, LOCAL_BACKENDS, REMOTE_BACKENDS, connect_backend, load_backend
from norface_rt.backends.base import Backend
from norface_rt.backends.registry import BACKENDS, backend_spec

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "norface_rt" / "backends" / "registry.py"
# Words that are backend names in another namespace: pip extras (extras.py) and Triton's own
# platforms (serving/repository.py). A comparison with an expression ending in one of these
# names is about that namespace.
OTHER_NAMESPACES = ("extra", "platform")


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_each_row_names_a_class_that_agrees_with_it(name: str) -> None:
    spec = backend_spec(name)
    cls = getattr(importlib.import_module(spec.module), spec.cls)  # no extra needed to import
    assert issubclass(cls, Backend)
    assert cls.name == name and cls.aligns_on_device == spec.aligns_on_device
    assert (name in REMOTE_BACKENDS) == spec.remote and (name in LOCAL_BACKENDS) != spec.remote


def test_the_table_is_read_only_and_unknown_names_list_its_keys(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        BACKENDS["tflite"] = BACKENDS["torch"]  # type: ignore[index]
    with pytest.raises(ValueError, match=r"name must be one of \['onnxruntime', 'torch', "
                                         r"'tensorrt', 'torch-cuda', 'triton'\], got 'tflite'"):
        backend_spec("tflite")
    # a URL is not a model folder, and a folder is not a URL
    with pytest.raises(ValueError, match="connect_backend"):
        load_backend(tmp_path, "triton")
    with pytest.raises(ValueError, match="load_backend"):
        connect_backend("grpc://127.0.0.1:1", "onnxruntime")


def test_device_and_thread_options_come_from_the_row() -> None:
    assert backend_spec("onnxruntime").options(None, 2) == {"device": "auto",
                                                            "intra_op_threads": 2}
    assert backend_spec("onnxruntime").options("cuda:1", None) == {"device": "cuda:1"}
    assert backend_spec("torch").options(None, 3) == {"device": "cpu", "num_threads": 3}
    assert backend_spec("torch-cuda").options(None, None) == {"device": "cuda", "fp16": True}
    assert backend_spec("torch-cuda").options("cpu", None) == {"device": "cpu", "fp16": False}
    assert backend_spec("tensorrt").options(None, 4) == {"device": "cuda"}


def _literal_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in BACKENDS:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in BACKENDS]
    return []


def _namespace(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def test_no_name_list_or_if_chain_outside_the_table() -> None:
    """No code compares a value with a backend name or offers backend names as argparse choices
    except by reading the table (the CLI, options, factory, bench and evaluation tools all do)."""
    offenders = []
    for folder in ("norface_rt", "train", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == TABLE:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                    if any(_namespace(o) in OTHER_NAMESPACES for o in operands):
                        continue
                    if any(_literal_names(o) for o in operands):
                        offenders.append(f"{where}: {ast.unparse(node)}")
                elif isinstance(node, ast.Call):
                    flag = ast.unparse(node.args[0]) if node.args else ""
                    for kw in node.keywords:
                        if (kw.arg == "choices" and _literal_names(kw.value)
                                and not any(w in flag for w in OTHER_NAMESPACES)):
                            offenders.append(f"{where}: {flag} choices={ast.unparse(kw.value)}")
    assert not offenders, offenders


def test_every_backend_choice_is_the_table() -> None:
    import argparse

    from norface_rt.cli import build_parser
    from train.evaluate_real.cli import add_arguments

    def choices(parser: argparse.ArgumentParser, dest: str) -> list[str]:
        (action,) = [a for a in parser._actions if a.dest == dest]
        assert action.choices is not None
        return list(action.choices)

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert choices(commands["run"], "backend") == list(BACKENDS)
    assert choices(commands["bench"], "backends") == list(LOCAL_BACKENDS)
    evaluate_real = argparse.ArgumentParser()
    add_arguments(evaluate_real)
    assert choices(evaluate_real, "backend") == list(LOCAL_BACKENDS)
