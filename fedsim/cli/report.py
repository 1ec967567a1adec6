"""``fedsim report``: one run's report.html (re)written, or several runs compared in one page."""

from __future__ import annotations

from pathlib import Path

import typer

from fedsim.cli.format import out
from fedsim.core.out_path import check_out

__all__ = ["register", "report"]


def register(app: typer.Typer) -> None:
    app.command()(report)


def report(
    runs: list[Path] = typer.Argument(..., help="run folders (a run's --out)"),
    output: Path = typer.Option(
        Path("compare.html"), "--out", "-o", help="where the comparison of several runs goes"
    ),
) -> None:
    """One run: (re)write its report.html. Several: compare them side by side in one page."""
    from fedsim.report import compare_report, run_report

    if len(runs) > 1:  # one run's report goes into the run's folder
        check_out(output, "--out", "file")
    path = run_report(runs[0]) if len(runs) == 1 else compare_report(runs, output)
    out.print(f"wrote {path} (opens offline in a browser)")
