"""A terminal progress bar for a run: rounds done, latest accuracy, failures so far."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.core.records import RoundRecord

__all__ = ["ProgressObserver"]


class ProgressObserver:
    def __init__(self, label: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds · acc {task.fields[acc]} · failures {task.fields[failures]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._label = label
        self._task = self._progress.add_task(label, total=None, acc="-", failures=0)
        self._failures = 0

    def start(self, total_rounds: int) -> None:
        self._progress.update(self._task, total=total_rounds)
        self._progress.start()

    def round(self, record: RoundRecord) -> None:
        self._failures += record.failures
        acc = f"{record.accuracy:.3f}" if record.accuracy is not None else "-"
        self._progress.update(self._task, advance=1, acc=acc, failures=self._failures)

    def end(self) -> None:
        self._progress.stop()
