"""What every command shares: the parsers generated from options classes (:func:`add_options`,
:func:`options_from`), the help formatter, logging set-up and error reporting.

The argument types (:func:`positive_int`, ...) live in :mod:`norface_rt.flags` with the options
they serve; they are re-exported here for ``python -m train``."""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from norface_rt.flags import (
    NAMED_PARSERS,
    Option,
    default_of,
    nonneg_float,
    options_of,
    positive_float,
    positive_int,
)
from norface_rt.wire.exits import ExitCode

T = TypeVar("T")


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str, code: int = ExitCode.USAGE) -> int:
    """Print ``norface-rt: error: message`` to stderr and return ``code`` (the exit status)."""
    print(f"norface-rt: error: {message}", file=sys.stderr)
    return code


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<given>.*?)' \(choose from (?P<choices>.*)\)")


def did_you_mean(given: str, candidates: Iterable[str]) -> str | None:
    """The candidate a misspelled ``given`` most likely meant: the only one it begins, else the
    closest by spelling (None when none is close)."""
    names = list(candidates)
    starts = [c for c in names if c.startswith(given)]
    if given and len(starts) == 1:
        return starts[0]
    found = difflib.get_close_matches(given, names, n=1, cutoff=0.75)
    return found[0] if found else None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with short errors: one line naming the problem, a "did you mean" for a misspelled
    option, choice or command, and where the full help is (instead of the whole usage, which for
    ``run`` is dozens of lines above the one that matters). Exit status 2, as argparse's."""

    def error(self, message: str) -> NoReturn:
        hint = ""
        m = _INVALID_CHOICE.search(message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group("choices"))
            close = did_you_mean(m.group("given"), choices)
            if close:
                hint = f"; did you mean {close!r}?"
        self.exit(2, f"{self.prog}: error: {message}{hint}\n"
                     f"(`{self.prog} --help` lists the options)\n")

    def unknown_options(self, extras: Sequence[str], command: argparse.ArgumentParser) -> NoReturn:
        """Refuse arguments ``command`` (the sub-command's parser) did not recognise, suggesting
        the closest of its options for each misspelled one."""
        flags = [f for a in command._actions for f in a.option_strings if f.startswith("--")]
        hints = {}
        for token in extras:
            if token.startswith("-"):
                given = token.split("=", 1)[0]
                close = did_you_mean(given, flags)
                if close:
                    hints[given] = close
        hint = ""
        if len(hints) == 1:
            hint = f" (did you mean {next(iter(hints.values()))}?)"
        elif hints:
            hint = " (did you mean " + ", ".join(f"{v} for {k}" for k, v in hints.items()) + "?)"
        command.exit(2, f"{command.prog}: error: unrecognized arguments: {' '.join(extras)}{hint}\n"
                        f"(`{command.prog} --help` lists the options)\n")


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


def _metavar(opt: Option) -> str:
    """What argparse would call the value of ``opt.flag`` (its name without dashes, upper case)."""
    return opt.flag.lstrip("-").replace("-", "_").upper()


def add_options(parser: argparse.ArgumentParser, cls: type, *,
                groups: dict[str, argparse._ArgumentGroup] | None = None,
                only: Iterable[str] | None = None, skip: Iterable[str] = (),
                grouped: bool | None = None,
                help: Mapping[str, str] | None = None) -> None:  # noqa: A002  (argparse's word)
    """Add an argument for each option field of ``cls`` (in field order), with the field's
    default, flag, help and group: the parser is generated from the class, so the command line
    and the Python API share every default. ``only`` / ``skip`` select fields by name, and
    ``grouped`` those with (True) or without (False) a group; ``help`` replaces a field's help
    text for this command; ``groups`` holds the argument groups made so far by title (shared
    between calls, so several classes can fill one group)."""
    groups = {} if groups is None else groups
    wanted = None if only is None else set(only)
    for f, opt in options_of(cls):
        if (wanted is not None and f.name not in wanted) or f.name in skip:
            continue
        if grouped is not None and grouped != (opt.group is not None):
            continue
        target: argparse._ActionsContainer = parser
        if opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            target = groups[opt.group]
        text = (help or {}).get(f.name, opt.help)
        if opt.positional:
            target.add_argument(f.name, nargs=opt.nargs, metavar=opt.metavar, help=text)
            continue
        kw: dict[str, Any] = {"dest": f.name, "help": text}
        if f.type in (bool, "bool") or opt.inverted:
            kw["action"] = "store_true"  # a switch: the flag turns the default over
        else:
            kw["default"] = default_of(f)
            kw["metavar"] = opt.metavar or _metavar(opt)
            if opt.append:
                kw["action"] = "append"
            if opt.nargs is not None:
                kw["nargs"] = opt.nargs
            if opt.choices is not None:
                kw["choices"] = list(opt.choices)
                kw["metavar"] = opt.metavar  # argparse shows {a,b} unless told otherwise
            if opt.parse is not None:
                kw["type"] = opt.parse(opt.flag) if opt.parse in NAMED_PARSERS else opt.parse
        target.add_argument(opt.flag, **kw)


def options_from(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """An instance of ``cls`` from parsed ``args`` (only the fields that are there, so one
    namespace can fill several classes) plus ``given`` values."""
    kw: dict[str, Any] = {}
    for f, opt in options_of(cls):
        if f.name in given or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        kw[f.name] = (not value) if opt.inverted else value
    return cls(**kw, **given)


__all__ = ["ArgumentParser", "HelpFormatter", "add_command", "add_options", "did_you_mean", "fail",
           "nonneg_float", "options_from", "positive_float", "positive_int", "setup_logging"]
