"""``fedsim sweep``: a scenario over a grid of settings and seeds (``fedsim/sweep.py`` plans,
runs and compares; this says what it does as it goes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import FormatOpt, Records, check_format, err, out, print_records
from fedsim.cli.run import ScenarioArg, check_engine
from fedsim.core.out_path import check_out

__all__ = ["register", "sweep"]


def register(app: typer.Typer) -> None:
    app.command()(sweep)


def sweep(
    scenario: Path = ScenarioArg,
    sets: list[str] = typer.Option(
        [], "--set", help="KEY=V1,V2,...: a grid axis (repeat for more), e.g. algorithm.lr=0.01,0.1"
    ),
    seeds: int = typer.Option(1, min=1, help="runs per variant: the scenario's seed, +1, ..."),
    output: Path | None = typer.Option(
        None, "--out", help="sweep folder (default: <output.dir>/<name>-sweep)"
    ),
    engine: str | None = typer.Option(None, help="auto, ray or inline (as for run)"),
    fmt: str = FormatOpt,
) -> None:
    """Run a scenario over a grid of settings and seeds; compare with mean ± 95% CI: one row per
    variant (as sweep.csv) and where the page is on stdout, what each run did on stderr."""
    from fedsim.core.scenario_load import load_scenario
    from fedsim.sweep import plan_sweep, run_sweep

    check_format(fmt)
    check_engine(engine)
    if output is not None:
        check_out(output, "--out", "folder")
    base = load_scenario(scenario)
    folder = output or Path(base.output.dir) / f"{base.name}-sweep"
    runs = plan_sweep(scenario, sets, seeds, folder)

    def announce(i: int, run: Any, state: str) -> None:
        err.print(f"[{i + 1}/{len(runs)}] {run.variant.name}, seed {run.seed}: {state}")

    page = run_sweep(runs, folder, engine, announce)  # type: ignore[arg-type]
    failed = sum(1 for r in runs if r.error)
    table = page.with_suffix(".csv")
    print_records(_variants(table), fmt)
    # a table is read by a person: the line under it; CSV and JSON stay records only
    (out if fmt == "table" else err).print(
        f"{len(runs)} runs ({failed} failed) → {page} and {table}"
    )


def _variants(table: Path) -> Records:
    """sweep.csv as records: numbers as numbers (NaN, a mean of nothing: empty)."""
    import csv

    with table.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [{k: _number(v) for k, v in row.items()} for row in reader]
        return Records(rows, list(reader.fieldnames or []), "variants")


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    if value != value:  # NaN: JSON has no such number
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value
