"""User-facing errors (where, what, how to fix) and the CLI's exit-code catalog."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum

__all__ = [
    "EXIT_CODE_HELP",
    "ExitCode",
    "FedsimError",
    "RunStoppedError",
    "clip",
    "did_you_mean",
    "known_names",
    "shown",
]


class ExitCode(IntEnum):
    """Exit codes of the ``fedsim`` command. Every code has a help line in ``EXIT_CODE_HELP``."""

    OK = 0
    RUN_FAILED = 1
    BAD_INPUT = 2
    UNTRUSTED_RESULT = 3
    INTERRUPTED = 130


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.RUN_FAILED: "the run itself failed (a bug or a crashed engine); see the traceback",
    ExitCode.BAD_INPUT: "bad input: the printed line names the file, key, problem and a fix",
    ExitCode.UNTRUSTED_RESULT: "the run stopped because its result cannot be trusted (the global "
    "model became NaN/inf, or no device update succeeded); the printed line and summary.json say "
    "why",
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
        return _printable(f"{text}; {self.fix}" if self.fix else text)

    def lines(self) -> list[str]:
        """Every problem, one line each (subclasses may carry several)."""
        return [self.line()]


# An error message quotes at most this many characters of what the user wrote: a message must
# stay one readable line, and must not reproduce a file (or an alias-expanded YAML value) whole.
SHOWN_CHARS = 60


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``): an error stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut), control characters
    escaped."""
    text = text if len(text) <= limit else f"{text[: limit - 1]}…"
    return _printable(text)


def shown(value: object) -> str:
    """A bounded description of a value for an error message: a scalar's clipped ``repr`` and
    its type (``'ten' (str)``), a collection by its kind and size only. Never formats a whole
    collection: a YAML alias bomb is a list of a billion shared items."""
    if isinstance(value, str):
        return f"{clip(value)!r} (str)"
    if isinstance(value, bool | float) or value is None:
        return f"{value!r} ({type(value).__name__})"
    if isinstance(value, int):
        if value.bit_length() > 3 * SHOWN_CHARS:  # str() of a huge int is slow, or refused
            return f"an integer of about {int(value.bit_length() * 0.30103)} digits (int)"
        return f"{value} (int)"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    if len(name) > 2 * SHOWN_CHARS:  # nothing that long is close to a name; spare difflib
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def known_names(kind: str, name: str, known: Iterable[str]) -> str:
    """The standard message for an unknown name: what exists and the closest match."""
    names = sorted(known)
    return f"unknown {kind} '{clip(name)}'; known: {', '.join(names)}{did_you_mean(name, names)}"


class RunStoppedError(FedsimError):
    """A run that stopped without a result: ``status`` is its ``summary.json`` status. A result
    that cannot be trusted (``diverged``: the global model is not finite; ``no-updates``: no
    device update succeeded in the whole run) exits 3; input refused once the run had started
    (``refused``, e.g. a damaged checkpoint under the Ray engine) exits 2; a crash (``failed``)
    exits 1."""

    def __init__(self, status: str, where: str, what: str, fix: str = "") -> None:
        self.status = status
        self.exit_code = (
            ExitCode.UNTRUSTED_RESULT
            if status in UNTRUSTED
            else ExitCode.BAD_INPUT
            if status == "refused"
            else ExitCode.RUN_FAILED
        )
        super().__init__(where, what, fix)

    def __reduce__(self) -> tuple[type[RunStoppedError], tuple[str, str, str, str]]:
        return (RunStoppedError, (self.status, self.where, self.what, self.fix))


# run statuses (summary.json) of a run stopped because its result cannot be trusted
UNTRUSTED = ("diverged", "no-updates")
