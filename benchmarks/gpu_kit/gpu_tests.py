"""The GPU tests: every test marked ``gpu`` or ``tensorrt`` (torch-cuda backend, device
alignment, CUDA training step, TensorRT engines), run by pytest in a child process, outcomes
read back from its JUnit XML.

Test modules that cannot be imported on the machine (one that needs PyAV or pyzmq at import
time) are collection errors: pytest is told to carry on without them, and they are listed
apart from test failures. CI checks that every GPU test still collects without PyAV,
MediaPipe and pyzmq (tests/test_gpu_kit.py), so such an error never hides a GPU test.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks.gpu_kit.proc import child_env, run_bounded

MARKERS = "gpu or tensorrt"
XML_NAME = "gpu-tests.xml"
LOG_NAME = "gpu-tests.log"
OUTCOMES = ("passed", "failed", "error", "skipped")


def command(xml: Path, per_test_s: float) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", MARKERS, "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "-rA", f"--junitxml={xml}",
           "-o", "junit_family=xunit2"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += ["--timeout", f"{per_test_s:.0f}"]
    return cmd


def _first_line(text: str | None, limit: int = 240) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def parse_junit(xml: Path) -> dict[str, Any]:
    """Tests and collection errors of a pytest JUnit XML file."""
    root = ET.parse(xml).getroot()
    tests: list[dict[str, Any]] = []
    collection_errors: list[dict[str, str]] = []
    for tc in root.iter("testcase"):
        classname, name = tc.get("classname", ""), tc.get("name", "")
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                # an error in teardown after a failure keeps "failed"
                if outcome == "passed" or child.tag == "failure":
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    message = child.get("message") or _first_line(child.text)
        if not classname and outcome == "error":  # a module that could not be collected
            reason = next((ln.strip() for ln in (tc.find("error").text or "").splitlines()  # type: ignore[union-attr]
                           if "Error:" in ln), message)
            collection_errors.append({"module": name,
                                      "reason": _first_line(reason.removeprefix("E").strip())})
            continue
        tests.append({"id": f"{classname}::{name}", "outcome": outcome,
                      "seconds": round(float(tc.get("time") or 0.0), 2),
                      "message": _first_line(message)})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in OUTCOMES}
    return {"counts": counts, "tests": tests, "collection_errors": collection_errors}


def run(out_dir: Path, *, timeout: float, per_test_s: float = 150.0) -> dict[str, Any]:
    """Run the GPU tests; the section's result (``status`` ok when pytest ended in time and
    wrote its report, whatever the outcomes: those are the result)."""
    xml, log = out_dir / XML_NAME, out_dir / LOG_NAME
    xml.unlink(missing_ok=True)
    cmd = command(xml, min(per_test_s, timeout))
    done = run_bounded(cmd, timeout=timeout, log=log, env=child_env())
    res: dict[str, Any] = {"command": shlex.join(["python", *cmd[1:]]), "markers": MARKERS,
                           "exit_code": done.exit_code, "seconds": round(done.seconds, 1)}
    if done.timed_out:
        res["status"] = f"timed out after {timeout:.0f} s (see {LOG_NAME})"
    elif not xml.is_file():
        res["status"] = f"error: pytest wrote no {XML_NAME} (exit code {done.exit_code}; see {LOG_NAME})"
    else:
        res["status"] = "ok"
    if xml.is_file():
        try:
            res.update(parse_junit(xml))
        except ET.ParseError as e:  # killed while writing it
            res["status"] = f"error: {XML_NAME} unreadable ({e})"
    return res
