"""Progress of long work, on stderr so stdout stays the command's answer.

In a terminal, a bar: for a run, rounds done, latest accuracy, simulated time, and the devices so
far that failed, were cut (stragglers, dropouts) or could not train (memory); for pre-training,
steps and loss. When stderr is not a terminal (a pipe, a CI log) no bar is drawn: the same facts
come as plain lines, about every tenth of the work and at least every ``EVERY_S`` seconds, so a
log shows that a long pre-training is moving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.core.records import RoundRecord

__all__ = ["EVERY_S", "ProgressLines", "ProgressObserver", "headline", "training_bar"]

EVERY_S = 30.0  # a plain progress line at least this often (wall seconds), however slow the work


def _stderr() -> Console:
    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True, emoji=False)


class ProgressLines:
    """When to print a plain progress line: at the first step, each time another tenth of
    ``total`` is done, when ``every_s`` seconds have passed since the last line, and at the end."""

    def __init__(self, total: int, every_s: float = EVERY_S) -> None:
        self.total = max(total, 1)
        self.every_s = every_s
        self._tenth = -1
        self._last = time.monotonic()

    def due(self, done: int) -> bool:
        tenth = 10 * done // self.total
        now = time.monotonic()
        if tenth > self._tenth or done >= self.total or now - self._last >= self.every_s:
            self._tenth, self._last = tenth, now
            return True
        return False


class ProgressObserver:
    """A run's progress (``server.loop.RoundObserver``): a bar in a terminal, lines otherwise."""

    def __init__(self, label: str, console: Console | None = None) -> None:
        self._console = console or _stderr()
        self._label = label
        self._bar = self._console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "rounds · {task.fields[acc]} · sim {task.fields[sim]} · failures "
                "{task.fields[failures]} · cut {task.fields[cut]} · skipped {task.fields[skipped]}"
            ),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
            disable=not self._bar,
        )
        self._task = self._progress.add_task(
            label, total=None, acc="acc -", sim="0 s", failures=0, cut=0, skipped=0
        )
        self._failures = self._cut = self._skipped = 0
        self._done = 0
        self._acc = "acc -"
        self._lines = ProgressLines(1)

    def start(self, total_rounds: int) -> None:
        self._lines = ProgressLines(total_rounds)
        self._progress.update(self._task, total=total_rounds)
        self._progress.start()

    def round(self, record: RoundRecord) -> None:
        self._failures += record.failures
        self._cut += record.stragglers + record.dropouts
        self._skipped += record.memory_skips
        self._done += 1
        self._acc = headline(record) or self._acc
        sim = _duration(record.sim_time_s)
        self._progress.update(
            self._task,
            advance=1,
            acc=self._acc,
            sim=sim,
            failures=self._failures,
            cut=self._cut,
            skipped=self._skipped,
        )
        if not self._bar and self._lines.due(self._done):
            self._console.print(
                f"{self._label}: round {record.round}/{self._lines.total}, {self._acc}, "
                f"sim {sim}, failures {self._failures}, cut {self._cut}, "
                f"skipped {self._skipped}",
                markup=False,
                highlight=False,
            )

    def end(self) -> None:
        self._progress.stop()


def headline(record: RoundRecord) -> str | None:
    """The round's evaluation in a few characters (None: not evaluated this round)."""
    if record.adapted is not None:
        return f"adapted {'acc' if record.accuracy is not None else 'mse'} {record.adapted:.3g}"
    if record.accuracy is not None:
        return f"acc {record.accuracy:.3f}"
    if record.loss is not None:
        return f"mse {record.loss:.3g}"
    return None


def _duration(seconds: float) -> str:
    """Simulated time as a person reads it: 42 s, 12.5 min, 3.2 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@contextmanager
def training_bar(
    label: str, unit: str, total: int, console: Console | None = None
) -> Iterator[Callable[[int, float], None]]:
    """Progress of a pre-training loop; yields the ``progress(step, loss)`` callback it expects:
    a bar in a terminal, else lines such as ``pretrain: episodes 400/2000, loss 0.412``."""
    console = console or _stderr()
    if not console.is_terminal:
        lines = ProgressLines(total)

        def line(step: int, loss: float) -> None:
            if lines.due(step):
                console.print(
                    f"{label}: {unit} {step}/{total}, loss {loss:.3f}",
                    markup=False,
                    highlight=False,
                )

        yield line
        return
    columns = (
        TextColumn(label, style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit} · loss {{task.fields[loss]}}", markup=False),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, loss="-")
        yield lambda step, loss: bar.update(task, completed=step, loss=f"{loss:.3f}")
