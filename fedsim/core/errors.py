"""User-facing errors (where, what, how to fix) and the CLI's exit-code catalog."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum

__all__ = ["EXIT_CODE_HELP", "ExitCode", "FedsimError", "did_you_mean", "known_names"]


class ExitCode(IntEnum):
    """Exit codes of the ``fedsim`` command. Every code has a help line in ``EXIT_CODE_HELP``."""

    OK = 0
    RUN_FAILED = 1
    BAD_INPUT = 2
    INTERRUPTED = 130


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.RUN_FAILED: "the run itself failed (a bug or a crashed engine); see the traceback",
    ExitCode.BAD_INPUT: "bad input: the printed line names the file, key, problem and a fix",
    ExitCode.INTERRUPTED: "interrupted by the user (Ctrl-C); results written so far are kept",
}


class FedsimError(Exception):
    """An error in the user's input, rendered as one line ``where: what; fix``.

    ``where`` is a file (optionally ``file:line``) and/or a dotted path into it.
    """

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, where: str, what: str, fix: str = "") -> None:
        self.where = where
        self.what = what
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text}; {self.fix}" if self.fix else text

    def lines(self) -> list[str]:
        """Every problem, one line each (subclasses may carry several)."""
        return [self.line()]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def known_names(kind: str, name: str, known: Iterable[str]) -> str:
    """The standard message for an unknown name: what exists and the closest match."""
    names = sorted(known)
    return f"unknown {kind} '{name}'; known: {', '.join(names)}{did_you_mean(name, names)}"
