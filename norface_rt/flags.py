"""Options declared once: a dataclass field carries its default, its command-line flag and help.

Each options class (:class:`norface_rt.pipeline.options.PipelineOptions`,
:class:`~norface_rt.pipeline.options.SinkOptions`, the CLI's own) declares its fields with
:func:`option`; the CLI generates its parsers from them (:func:`norface_rt.cli.args.add_options`)
and the Python API builds the same classes, so a default is written in one place and the
command line and the API cannot disagree. Adding an option is adding one field.

The argument parsers below refuse a bad value with the option's name and the value given, so
the CLI exits 2 before doing any work; ``python -m train`` uses them too.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar

# The key of an option field's metadata.
OPTION = "norface_rt.option"
N = TypeVar("N", int, float)


def _number(name: str, convert: Callable[[str], N], what: str, ok: Callable[[N], bool],
            bound: str) -> Callable[[str], N]:
    """A parser for flag ``name``: ``convert`` the text (else "must be ``what``"), then check it
    (else "must be ``bound``"), naming the flag and the value given."""
    def parse(text: str) -> N:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {v}")
        return v

    return parse


def positive_int(name: str) -> Callable[[str], int]:
    return _number(name, int, "an integer", lambda v: v >= 1, ">= 1")


def nonneg_float(name: str) -> Callable[[str], float]:
    return _number(name, float, "a number", lambda v: v >= 0, ">= 0")  # (NaN fails too)


def positive_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        v = nonneg_float(name)(text)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {v}")
        return v

    return parse


# Parsers made for one flag (they name it in their errors): an option names the factory, the
# parser generator binds it to the flag.
NAMED_PARSERS: tuple[Callable[[str], Callable[[str], Any]], ...] = (
    positive_int, nonneg_float, positive_float)


@dataclass(frozen=True)
class Option:
    """How one field appears to users: its flag (or positional name), help and group.

    ``parse`` is a type (``int``, ``float``) or one of :data:`NAMED_PARSERS`; a ``bool`` field is
    a switch (``store_true``), and ``inverted`` switches (``--no-baseline``) set the field to
    False. ``receives`` marks an output that receives the results (the default-output rule of
    :class:`~norface_rt.pipeline.options.SinkOptions`); ``api`` a run option the Python API's
    ``Analyzer`` takes too."""

    flag: str  # "--max-faces", or the name of a positional argument
    help: str
    group: str | None = None  # the title of the --help group it is listed under
    parse: Callable[..., Any] | None = None
    metavar: str | None = None
    choices: Sequence[str] | None = None
    nargs: str | None = None
    append: bool = False  # repeatable: each use adds one value to a list
    inverted: bool = False
    receives: bool = False
    api: bool = False

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")


def option(default: Any = MISSING, *, flag: str, help: str,  # noqa: A002  (argparse's word)
           default_factory: Callable[[], Any] | Any = MISSING, **how: Any) -> Any:
    """A dataclass field with its default and its :class:`Option` (``how``: the other fields)."""
    meta = {OPTION: Option(flag=flag, help=help, **how)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def options_of(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    """The fields of an options class that users set, with their :class:`Option`, in order."""
    for f in dataclasses.fields(cls):
        opt = f.metadata.get(OPTION)
        if isinstance(opt, Option):
            yield f, opt


def api_options(cls: type) -> tuple[str, ...]:
    """The fields of an options class that the Python API's ``Analyzer`` takes too (``api``)."""
    return tuple(f.name for f, opt in options_of(cls) if opt.api)


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's declared default (a fresh one for a default factory)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def flag_for(cls: type, name: str) -> str:
    """The flag of field ``name`` of ``cls`` (what error messages call it)."""
    for f, opt in options_of(cls):
        if f.name == name:
            return opt.flag
    raise KeyError(f"{cls.__name__} has no option field {name!r}")


def default_for(cls: type, name: str) -> Any:
    """The declared default of option ``name`` of ``cls``: what a helper that takes the same
    option outside a run (the normalize tool, a face stage built for evaluation) defaults to."""
    for f, _ in options_of(cls):
        if f.name == name:
            return default_of(f)
    raise KeyError(f"{cls.__name__} has no option field {name!r}")
