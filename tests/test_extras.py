"""Optional extras: a feature whose packages are missing says which extra installs them.

(The wheel test checks the same on a real install without extras; here a missing module is
simulated by naming one that does not exist.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from norface_rt import extras


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    extras.require("torch", "the torch backend")  # installed here: nothing happens
    monkeypatch.setitem(extras.EXTRA_MODULES, "torch", ("torch", "no_such_module_for_this_test"))
    with pytest.raises(extras.MissingExtra, match=r"the torch backend needs "
                                                  r"no_such_module_for_this_test \(not installed "
                                                  r"here\): pip install 'norface-rt\[torch\]'"):
        extras.require("torch", "the torch backend")
    assert "pypi.nvidia.com" in extras.install_hint("tensorrt")
    with pytest.raises(ValueError, match="extra must be one of"):
        extras.install_hint("everything")


def test_load_backend_reports_a_missing_extra(monkeypatch: pytest.MonkeyPatch,
                                              tiny_model_dir: Path) -> None:
    from norface_rt.backends import BackendUnavailable, load_backend

    monkeypatch.setitem(extras.EXTRA_MODULES, "torch", ("no_such_module_for_this_test",))
    for name in ("torch", "torch-cuda"):
        with pytest.raises(BackendUnavailable, match=r"pip install 'norface-rt\[torch\]'"):
            load_backend(tiny_model_dir, name)
