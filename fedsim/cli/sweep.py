"""``fedsim sweep``: a scenario over a grid of settings and seeds (``fedsim/sweep.py`` plans,
runs and compares; this says what it does as it goes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import err, out
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
) -> None:
    """Run a scenario over a grid of settings and seeds; compare with mean ± 95% CI."""
    from fedsim.core.scenario_load import load_scenario
    from fedsim.sweep import plan_sweep, run_sweep

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
    out.print(f"{len(runs)} runs ({failed} failed) → {page} and {page.with_suffix('.csv')}")
