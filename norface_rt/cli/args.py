"""Argument types shared by every command (and by ``python -m train``): a bad value is refused
by argparse with the option's name and the value given, so the CLI exits 2 before doing work."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from norface_rt.wire.exits import ExitCode


def positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v

    return parse


def nonneg_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {v}")
        return v

    return parse


def positive_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        v = nonneg_float(name)(text)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {v}")
        return v

    return parse


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str, code: int = ExitCode.USAGE) -> int:
    """Print ``norface-rt: error: message`` to stderr and return ``code`` (the exit status)."""
    import sys

    print(f"norface-rt: error: {message}", file=sys.stderr)
    return code


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the text already says it), so
    ``--help`` never leaves a user guessing what happens without the flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if "default" in text.lower() or d is None or d is False or d is argparse.SUPPRESS:
            return text  # (identity: a default of 0 is a default worth stating)
        if isinstance(action.default, (list, tuple)):
            return text + " (default: " + " ".join(map(str, action.default)) + ")"
        return text + " (default: %(default)s)"


def add_command(sub: Any, name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A sub-command parser with the shared formatter and ``-v/--verbose`` (also accepted after
    the command, where users type it)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=kw.pop("description", help),
                                                formatter_class=HelpFormatter, **kw)
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more logging (-vv: debug), and keep the native log lines of MediaPipe / "
                        "TensorFlow Lite that are silenced by default")
    return p
