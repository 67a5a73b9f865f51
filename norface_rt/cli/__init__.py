"""The ``norface-rt`` command line: one module per command, dispatched from here.

Exit codes are :class:`norface_rt.wire.exits.ExitCode` (0 = every stream ended cleanly; 1 = a
stream ended with an error, results up to the error still delivered, an output lost messages, or
``models download`` failed; 2 = bad arguments or missing or damaged model files; 130 =
interrupted (SIGINT), 143 = terminated (SIGTERM)); every ``--help`` epilog is generated from it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from norface_rt import __version__
from norface_rt.cli import (
    bench,
    build_engines,
    keys,
    listen,
    models,
    normalize,
    plot,
    run,
    triton_repo,
    triton_server,
)
from norface_rt.cli.args import (
    ArgumentParser,
    HelpFormatter,
    fail,
    nonneg_float,
    positive_int,
    setup_logging,
)
from norface_rt.cli.stderr import tolerant_stderr
from norface_rt.config import ConfigFileError
from norface_rt.native_logs import quiet_native_logs
from norface_rt.wire.exits import ExitCode, exit_epilog

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run.run, "listen": listen.run, "plot": plot.run, "normalize": normalize.run,
    "models": models.run,
    "bench": bench.run, "build-engines": build_engines.run, "triton-repo": triton_repo.run,
    "triton-server": triton_server.run, "keys": keys.run,
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="norface-rt", formatter_class=HelpFormatter,
        description="Real-time facial expression analysis (FACS AUs, emotions) per tracked face.",
        epilog=exit_epilog(note="`norface-rt COMMAND --help` describes each command."))
    p.add_argument("--version", action="version", version=f"norface-rt {__version__}",
                   help="print the version and exit")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-vv: debug), and keep the native log lines of MediaPipe / "
                        "TensorFlow Lite that are silenced by default")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, listen, plot, normalize, models, bench, build_engines, triton_repo,
                   triton_server, keys):
        module.add_parser(sub)
    return p


def parse(parser: ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed; arguments the chosen command does not know are refused by that command,
    with the closest option it has (argparse would report them from the top level, which knows
    none of the command's options)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser.unknown_options(extras, sub.choices[args.command])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    with quiet_native_logs(enabled=not args.verbose), tolerant_stderr():
        setup_logging(args.verbose)
        try:
            return COMMANDS[args.command](args)
        except (FileNotFoundError, ImportError, ConfigFileError) as exc:  # said plainly, exit 2
            return fail(str(exc))
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED


__all__ = ["build_parser", "main", "nonneg_float", "positive_int"]

if __name__ == "__main__":
    sys.exit(main())
