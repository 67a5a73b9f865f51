"""The Triton server's own Python environment (``norface-rt triton-server setup``).

PyPI's ``nvidia-pytriton`` bundles a real ``tritonserver`` (Triton 2.51) with the Python backend
(no ONNX Runtime or TensorRT backend): enough to serve a ``--platform python`` repository on a
machine without Docker or a GPU. Its environment is kept apart from the edge's, in a virtualenv
under the user cache (``$NORFACE_RT_TRITON_ENV``, else ``<cache>/triton-env``), because:

* numpy 2 in the server's Python makes the Python backend return empty outputs without an error,
  so the server's environment pins ``numpy<2`` while the project's may move on;
* the Python backend ignores ``PYTHONPATH``: its stub finds packages through the ``python3`` first
  on ``PATH``, so the launcher puts this environment's ``bin`` first;
* the stub links ``libpython3.X.so``: ``LD_LIBRARY_PATH`` must name the library of the
  interpreter that made the environment before any system copy.

Setup is idempotent and cached: a manifest records the pins, and a second run with the same pins
only checks the files (seconds). Only ``nvidia-pytriton`` itself is installed without its
dependencies (the server binary needs none of its Python client code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from norface_rt.paths import cache_dir

ENV_VAR = "NORFACE_RT_TRITON_ENV"
PYTRITON = "nvidia-pytriton==0.7.0"  # bundles tritonserver 2.51 with the Python backend
SERVER_PACKAGES: tuple[str, ...] = ("numpy>=1.26,<2", "onnxruntime>=1.18")
MANIFEST = "norface-triton-env.json"
SETUP_COMMAND = "norface-rt triton-server setup"


class ServerEnvMissing(FileNotFoundError):
    """No usable server environment; the message gives the command that makes one."""


def default_env_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else cache_dir() / "triton-env"


@dataclass(frozen=True)
class ServerEnv:
    """Where the pieces of a set-up server environment are."""

    root: Path
    python_version: str
    libpython_dir: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def site_packages(self) -> Path:
        return self.root / "lib" / f"python{self.python_version}" / "site-packages"

    @property
    def tritonserver(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def backends_dir(self) -> Path:
        """Triton's --backend-directory: python/ with the backend and the stub for this Python."""
        return self.root / "triton-backends"

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server process's environment (see the module docstring for why each entry)."""
        env = dict(os.environ if base is None else base)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        libs = [str(self.libpython_dir), str(self.libs_dir)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        return env

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None) -> ServerEnv:
        """The environment at ``root`` (default :func:`default_env_dir`); ServerEnvMissing with
        the setup command when it is absent or incomplete."""
        r = Path(root) if root is not None else default_env_dir()
        manifest = r / MANIFEST
        if not manifest.is_file():
            raise ServerEnvMissing(f"no Triton server environment at {r}: run `{SETUP_COMMAND}` "
                                   "(once; about a minute, needs the package index)")
        info = json.loads(manifest.read_text())
        env = cls(r, str(info["python_version"]), Path(info["libpython_dir"]))
        missing = [p for p in (env.tritonserver, *(env.backends_dir / "python" / f for f in (
            "libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub")))
                   if not p.is_file()]
        if missing:
            raise ServerEnvMissing(f"the Triton server environment at {r} is incomplete (missing "
                                   f"{[str(m) for m in missing]}): run `{SETUP_COMMAND} --force`")
        return env


def _pins() -> dict[str, object]:
    return {"pytriton": PYTRITON, "packages": list(SERVER_PACKAGES)}


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def setup_env(root: str | os.PathLike[str] | None = None, *, force: bool = False,
              python: str | None = None) -> ServerEnv:
    """Create (or reuse, when its manifest has the same pins) the server environment at ``root``.

    ``python`` is the interpreter the environment is made from (default: this one); it must be
    3.8-3.13 with a shared libpython (the Python backend's stub links it)."""
    r = Path(root) if root is not None else default_env_dir()
    manifest = r / MANIFEST
    if manifest.is_file() and not force:
        info = json.loads(manifest.read_text())
        if info.get("pins") == _pins():
            try:
                return ServerEnv.load(r)
            except ServerEnvMissing:
                pass  # incomplete: rebuild below
    py = python or sys.executable
    probe = subprocess.run(
        [py, "-c", "import json, sys, sysconfig; print(json.dumps({'v': '%d.%d' % sys.version_info[:2],"
         " 'shared': sysconfig.get_config_var('Py_ENABLE_SHARED'), "
         "'libdir': sysconfig.get_config_var('LIBDIR')}))"], capture_output=True, text=True, check=True)
    info = json.loads(probe.stdout)
    version, libdir = str(info["v"]), str(info["libdir"])
    if not info["shared"]:
        raise RuntimeError(f"{py}: Python {version} was built without a shared libpython, which "
                           "the Triton Python backend's stub needs; use a Python built with "
                           "--enable-shared (distribution Pythons are) via --python")
    if r.exists():
        shutil.rmtree(r)
    _run([py, "-m", "venv", str(r)])
    pip = [str(r / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run([*pip, "--no-deps", PYTRITON])
    _run([*pip, *SERVER_PACKAGES])
    env = ServerEnv(r, version, Path(libdir))
    stub = env.site_packages / "pytriton" / "tritonserver" / "python_backend_stubs" / version / \
        "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"{PYTRITON} has no Python backend stub for Python {version} "
                           f"(looked for {stub}); use Python 3.8-3.13 via --python")
    pydir = env.backends_dir / "python"
    # The backend folder: the backend, its Python utilities and the stub of this Python version.
    shutil.copytree(env.site_packages / "pytriton" / "tritonserver" / "backends" / "python", pydir,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, pydir / "triton_python_backend_stub")
    manifest.write_text(json.dumps({"pins": _pins(), "python_version": version,
                                    "libpython_dir": libdir, "python": py,
                                    "platform": sysconfig.get_platform()}, indent=2) + "\n")
    return ServerEnv.load(r)
