"""When a run stops on its own, and what its ``summary.json`` then says.

A run stops when the global model is no longer finite or scores NaN or inf (``diverged``), and
when no device ever delivered an update (``no-updates``): every later number would be noise.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence

from fedsim.core.cohort import DeviceOutcome
from fedsim.core.errors import FedsimError, RunStoppedError
from fedsim.core.payload import non_finite
from fedsim.core.records import RoundRecord, RunBinding
from fedsim.core.reduce import Arrays
from server.outputs import Usage

__all__ = [
    "check_delivered",
    "check_global",
    "check_scores",
    "interrupted_record",
    "stop_record",
]


def stop_record(exc: BaseException) -> dict[str, str]:
    """What ``summary.json`` says of a run that stopped: its status and error line, and the
    error's parts, so that ``fedsim run`` prints the same line on every engine."""
    if isinstance(exc, FedsimError):
        status = exc.status if isinstance(exc, RunStoppedError) else "refused"
        return {"status": status, "error": exc.line(), **_parts(exc)}
    what = f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "error": what, "where": "", "what": what, "fix": ""}


def _parts(exc: FedsimError) -> dict[str, str]:
    return {"where": exc.where, "what": exc.what, "fix": exc.fix}


def check_global(
    names: Sequence[str], arrays: Arrays, round_: int, outcomes: list[DeviceOutcome]
) -> None:
    """Stop the run when the global model (``names``: its tensors) is no longer finite: every
    later round, metric and the saved model would be NaN, reported as numbers."""
    problem = non_finite(list(names), arrays)
    if problem:
        ok = sum(o.status == "ok" for o in outcomes)
        raise RunStoppedError(
            "diverged",
            f"round {round_}",
            f"the global model is not finite ({problem}) after aggregating {ok} device updates",
            "the federation diverged: lower algorithm.lr (or the server step); "
            "devices.csv has each device's training loss up to the round before",
        )


def check_scores(round_: int, scores: Mapping[str, float | None]) -> None:
    """A finite model can still score NaN or inf (its outputs overflow): as useless as a NaN one,
    and not a number to record."""
    for name, value in scores.items():
        if value is not None and not math.isfinite(value):
            raise RunStoppedError(
                "diverged",
                f"round {round_}",
                f"the global model's test {name} is {value} (its outputs overflow)",
                "the federation diverged: lower algorithm.lr (or the server step)",
            )


def check_delivered(usage: Usage, records: list[RoundRecord], first_error: str) -> None:
    """A run in which no device ever delivered an update learned nothing: it failed."""
    if usage.delivered or not records:
        return
    failures = sum(r.failures for r in records)
    why = f"; the first device error: {first_error}" if first_error else ""
    raise RunStoppedError(
        "no-updates",
        f"{len(records)} rounds",
        f"no device update succeeded ({usage.selected} device rounds selected, {failures} "
        f"failed or did not reply){why}",
        "see the error column of devices.csv; fedsim validate checks the scenario",
    )


def interrupted_record(
    binding: RunBinding, rounds: int, checkpointed: bool, asynchronous: bool
) -> dict[str, str]:
    """What ``summary.json`` says of a run stopped by Ctrl-C (``KeyboardInterrupt`` has no
    message): how far it got, and the command that continues it (or runs it again)."""
    out = binding.out
    what = f"interrupted (Ctrl-C) after {rounds} rounds; their results are kept"
    resume = f"fedsim run --resume {shlex.quote(out)}"
    if asynchronous:  # the devices in flight are not checkpointed
        fix = f"an asynchronous run cannot resume: fedsim run {shlex.quote(binding.scenario)}"
    elif checkpointed:
        fix = f"continue it: {resume}"
    else:
        fix = f"{resume} runs it again from round 1 (output.checkpoint is off)"
    return {
        "status": "interrupted",
        "error": f"{out}: {what}; {fix}",
        "where": out,
        "what": what,
        "fix": fix,
    }
