"""The ``norface-rt`` command line: one module per command, dispatched from here.

Exit codes: 0 = every stream ended cleanly; 1 = a stream ended with an error (results up to the
error were still delivered) or an output lost messages; 2 = bad arguments or missing or damaged
model files; 130 = interrupted (SIGINT), 143 = terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from norface_rt import __version__
from norface_rt.cli import bench, build_engines, keys, listen, models, normalize, run
from norface_rt.cli.args import fail, nonneg_float, positive_int, setup_logging
from norface_rt.config import ConfigFileError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run.run, "listen": listen.run, "normalize": normalize.run, "models": models.run,
    "bench": bench.run, "build-engines": build_engines.run, "keys": keys.run,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="norface-rt",
        description="Real-time facial expression analysis (FACS AUs, emotions) per tracked face.")
    p.add_argument("--version", action="version", version=f"norface-rt {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (run, listen, normalize, models, bench, build_engines, keys):
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except (FileNotFoundError, ImportError, ConfigFileError) as exc:  # said plainly, exit 2
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main", "nonneg_float", "positive_int"]

if __name__ == "__main__":
    sys.exit(main())
