"""A terminal progress bar for a run: rounds done, latest accuracy, simulated time, and the
devices so far that failed, were cut (stragglers, dropouts) or could not train (memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.core.records import RoundRecord

__all__ = ["ProgressObserver", "training_bar"]


class ProgressObserver:
    def __init__(self, label: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "rounds · {task.fields[acc]} · sim {task.fields[sim]} · failures "
                "{task.fields[failures]} · cut {task.fields[cut]} · skipped {task.fields[skipped]}"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._label = label
        self._task = self._progress.add_task(
            label, total=None, acc="acc -", sim="0 s", failures=0, cut=0, skipped=0
        )
        self._failures = self._cut = self._skipped = 0

    def start(self, total_rounds: int) -> None:
        self._progress.update(self._task, total=total_rounds)
        self._progress.start()

    def round(self, record: RoundRecord) -> None:
        self._failures += record.failures
        self._cut += record.stragglers + record.dropouts
        self._skipped += record.memory_skips
        self._progress.update(
            self._task,
            advance=1,
            acc=headline(record) or self._progress.tasks[self._task].fields["acc"],
            sim=_duration(record.sim_time_s),
            failures=self._failures,
            cut=self._cut,
            skipped=self._skipped,
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
    """A bar for a pre-training loop; yields the ``progress(step, loss)`` callback it expects."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit} · loss {{task.fields[loss]}}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, loss="-")
        yield lambda step, loss: bar.update(task, completed=step, loss=f"{loss:.3f}")
