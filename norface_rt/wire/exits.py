"""Exit codes of every ``norface-rt`` command: one enum, from which the ``--help`` epilogs are
generated, so a code and its meaning are written once."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means (shell convention: 128 + N for signal N)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    HUNG_UP = 128 + signal.SIGHUP  # 129
    INTERRUPTED = 128 + signal.SIGINT  # 130
    TERMINATED = 128 + signal.SIGTERM  # 143

    @classmethod
    def for_signal(cls, signum: int) -> int:
        """The status of a run ended by signal ``signum``."""
        return 128 + int(signum)

    @property
    def meaning(self) -> str:
        """What the code means for any command (a command may say more in its epilog)."""
        return _MEANINGS[self]


_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "a stream or download ended with an error, or an output lost messages",
    ExitCode.USAGE: "bad arguments or missing or damaged model files",
    ExitCode.HUNG_UP: "hung up (SIGHUP: its terminal closed)",
    ExitCode.INTERRUPTED: "interrupted (SIGINT)",
    ExitCode.TERMINATED: "terminated (SIGTERM)",
}


def exit_epilog(meanings: Mapping[ExitCode, str] | None = None, note: str = "") -> str:
    """``exit codes: 0 ...; 1 ...; ...`` for a command's ``--help``, with its own meanings of
    some codes (``meanings``) and a closing ``note``."""
    said = {**_MEANINGS, **(meanings or {})}
    text = "exit codes: " + "; ".join(f"{int(code)} {said[code]}" for code in ExitCode) + "."
    return f"{text} {note}" if note else text
