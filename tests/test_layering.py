"""Imports point one way: no cycle between the package's parts, and nothing but the CLI reaches
the TensorRT engine builder (the builder depends on the runtime, never the reverse).

Read from the source with ``ast`` (every import, lazy ones inside functions included), so a
dependency hidden in a function body counts like one at the top of a module."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import norface_rt

PKG = Path(norface_rt.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every norface_rt / train module ``path`` imports, as dotted names."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from norface_rt import protocol` imports the module norface_rt.protocol
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in ("norface_rt", "train")}


def _part(module: str) -> str | None:
    """The part of the package a module belongs to: norface_rt.backends.onnx_backend -> backends,
    norface_rt.model_set -> model_set; None for the package root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "norface_rt" and len(parts) > 1 else None


def _sources() -> list[Path]:
    """Every .py file of the package."""
    return sorted(PKG.rglob("*.py"))


def _graph() -> dict[str, set[str]]:
    """module -> norface_rt modules it imports (existing ones only)."""
    files = {_module_name(p): p for p in _sources()}
    return {mod: {m for m in _imports(path) if m in files or m.split(".")[0] == "train"}
            for mod, path in files.items()}


def _part_deps() -> dict[str, set[str]]:
    """part -> the other parts it imports directly."""
    deps: dict[str, set[str]] = {}
    for mod, imported in _graph().items():
        src = _part(mod)
        if src is None:
            continue
        deps.setdefault(src, set()).update(
            dst for m in imported if (dst := _part(m)) is not None and dst != src)
    return deps


def _reach(deps: dict[str, set[str]], part: str) -> set[str]:
    """Every part ``part`` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(deps.get(part, ()))
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(deps.get(p, ()))
    return seen


def test_no_import_cycle_between_the_parts_of_the_package() -> None:
    deps = _part_deps()
    try:
        order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle between parts of norface_rt: {e.args[1]}") from None
    # the layers the guide names, lowest first
    for low, high in (("types", "backends"), ("model_set", "backends"), ("backends", "pipeline"),
                      ("sinks", "pipeline"), ("pipeline", "cli"), ("backends", "engines"),
                      ("pipeline", "api"), ("smoothing", "pipeline"), ("sources", "pipeline"),
                      ("backends", "serving"), ("serving", "cli"), ("config", "wire"),
                      ("wire", "types"), ("wire", "sinks"), ("types", "tools"),
                      ("tools", "cli")):
        assert order.index(low) < order.index(high), (low, high)


def test_the_wire_sits_on_the_config_and_nothing_below_the_types_imports_it() -> None:
    deps = _part_deps()
    # messages, schema and codec need the model config's label names and nothing else
    assert deps["wire"] <= {"config"}, deps["wire"]
    assert "wire" in deps["types"]  # results become messages at the types' edge
    # a part that imports the wire sits above the types (depends on them), or is the types
    offenders = sorted(p for p, d in deps.items()
                       if "wire" in d and p != "types" and "types" not in _reach(deps, p))
    assert not offenders, f"imported below the types: {offenders}"


def _imported_outside_the_cli(part: str) -> list[str]:
    """Imports of ``norface_rt.<part>`` by modules other than the CLI's and the part's own."""
    return sorted(
        f"{mod} imports {m}" for mod, imported in _graph().items() for m in imported
        if (m == f"norface_rt.{part}" or m.startswith(f"norface_rt.{part}."))
        and _part(mod) not in ("cli", part))


def test_only_the_cli_runs_the_tools() -> None:
    assert not _imported_outside_the_cli("tools")


def test_only_the_cli_imports_the_engine_builder() -> None:
    assert not _imported_outside_the_cli("engines")


def test_only_the_cli_imports_the_triton_repository_builder() -> None:
    # the Triton backend (runtime) owns the repository's names; the builder imports them
    assert not _imported_outside_the_cli("serving")


def test_the_package_never_imports_train() -> None:
    offenders = sorted(f"{mod} imports {m}" for mod, imported in _graph().items()
                       for m in imported if m.split(".")[0] == "train")
    assert not offenders, offenders


def test_the_checks_see_lazy_imports() -> None:
    # build_engines is imported inside a function of the CLI: the graph must still see it
    assert "norface_rt.engines" in _graph()["norface_rt.cli.build_engines"]
