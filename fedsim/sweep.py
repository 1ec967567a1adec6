"""``fedsim sweep``: one scenario over a grid of settings and seeds, compared with mean ± 95% CI.

    fedsim sweep scenarios/quickstart.yaml --set algorithm.lr=0.01,0.1 --seeds 3

Every combination of the ``--set`` values is a *variant*; each variant runs with ``--seeds``
seeds (the scenario's seed, +1, +2, ...). All variants are validated before the first run. The
sweep folder holds each variant's scenario (merged, standalone), each run's results, and
``sweep.csv`` and ``sweep.html``: per variant the mean and Student-t 95% CI over seeds of the final
metrics, and the mean accuracy curve with its CI band. A run that fails is reported and the sweep
goes on; running the same sweep again skips the runs that completed (a killed sweep continues).
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from fedsim.core.errors import FedsimError
from fedsim.core.results import SUMMARY, read_rounds
from fedsim.core.scenario_load import load_scenario, merged_data, with_changes
from fedsim.core.stats import mean_ci95
from fedsim.plots import clip_band
from fedsim.report import FINAL, html_page, img_tag
from fedsim.runner import Engine, run

__all__ = ["SweepRun", "Variant", "curve_bands", "parse_sets", "plan_sweep", "run_sweep"]


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "algorithm.lr=0.01,fleet.partition.alpha=0.5"
    changes: dict[str, Any]


@dataclass
class SweepRun:
    variant: Variant
    seed: int
    scenario: Path
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def parse_sets(sets: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``key=v1,v2`` → (key, [v1, v2]), each value read as YAML (0.1 → float, true → bool)."""
    parsed = []
    for item in sets:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise FedsimError(
                "--set", f"'{item}' is not KEY=V1,V2,...", "e.g. algorithm.lr=0.01,0.1"
            )
        parsed.append((key.strip(), [yaml.safe_load(v) for v in values.split(",")]))
    return parsed


def _variants(sets: list[tuple[str, list[Any]]]) -> list[Variant]:
    if not sets:
        return [Variant("base", {})]
    keys = [k for k, _ in sets]
    return [
        Variant(
            ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True)),
            dict(zip(keys, combo, strict=True)),
        )
        for combo in itertools.product(*(values for _, values in sets))
    ]


def plan_sweep(scenario: Path, sets: Sequence[str], seeds: int, out: Path) -> list[SweepRun]:
    """Write every variant × seed scenario into ``out/scenarios`` and validate them all."""
    base = merged_data(scenario)
    first_seed = int(base.get("seed", 0))
    runs = []
    for v, variant in enumerate(_variants(parse_sets(sets))):
        for s in range(seeds):
            seed = first_seed + s
            try:
                data = with_changes(base, {**variant.changes, "seed": seed})
            except KeyError as exc:
                raise FedsimError("--set", str(exc.args[0]), "set keys inside mappings") from None
            data["name"] = f"{base.get('name', scenario.stem)}-v{v}-s{seed}"
            path = out / "scenarios" / f"v{v}-seed{seed}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            try:
                load_scenario(path)
            except FedsimError as exc:
                raise FedsimError(f"--set {variant.name}", str(exc).replace("\n", "; ")) from None
            runs.append(SweepRun(variant, seed, path, out / "runs" / f"v{v}" / f"seed-{seed}"))
    return runs


def _completed(out: Path) -> dict[str, Any] | None:
    path = out / SUMMARY
    if not path.exists():
        return None
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary if summary.get("status") == "completed" else None


def run_sweep(
    runs: list[SweepRun],
    out: Path,
    engine: Engine | None = None,
    announce: Callable[[int, SweepRun, str], None] = lambda i, r, state: None,
) -> Path:
    """Run what is not done yet; write ``sweep.csv`` and ``sweep.html``; the page's path."""
    for i, sweep_run in enumerate(runs):
        done = _completed(sweep_run.out)
        if done is not None:
            sweep_run.summary = done
            announce(i, sweep_run, "done earlier")
            continue
        announce(i, sweep_run, "running")
        try:
            result = run(
                sweep_run.scenario,
                sweep_run.out,
                overwrite=True,
                engine=engine,
                command="fedsim sweep",
            )
            sweep_run.summary = result.summary
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failed run is a row in the report, not the sweep's end
            sweep_run.error = f"{type(exc).__name__}: {exc}"[:300]
            announce(i, sweep_run, f"failed: {sweep_run.error}")
    rows = _table(runs)
    _write_csv(rows, out / "sweep.csv")
    return _write_html(runs, rows, out / "sweep.html")


def _table(runs: list[SweepRun]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r.variant.name for r in runs):
        mine = [r for r in runs if r.variant.name == name]
        ok = [r for r in mine if not r.error and r.summary]
        row: dict[str, Any] = {"variant": name, "seeds": len(mine), "completed": len(ok)}
        for key, _, _ in FINAL:
            values = [float(r.summary[key]) for r in ok if r.summary.get(key) is not None]
            mean, ci = mean_ci95(values) if values else (math.nan, math.nan)
            row[key], row[f"{key}_ci95"] = mean, ci
        rows.append(row)
    return rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def curve_bands(runs: list[SweepRun]) -> dict[str, tuple[NDArray[Any], ...]]:
    """Per variant: rounds, mean accuracy over seeds, and its 95% CI band, cut to [0, 1]."""
    bands: dict[str, tuple[NDArray[Any], ...]] = {}
    for name in dict.fromkeys(r.variant.name for r in runs):
        curves = [
            [r["accuracy"] for r in read_rounds(run.out)]
            for run in runs
            if run.variant.name == name and run.summary and not run.error
        ]
        curves = [c for c in curves if c and None not in c]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        stats = [mean_ci95([c[i] for c in curves]) for i in range(length)]
        mean = np.array([m for m, _ in stats])
        ci = np.array([h for _, h in stats])
        low, high = clip_band(mean - ci, mean + ci, "accuracy")
        bands[name] = (np.arange(1, length + 1), mean, low, high)
    return bands


def _curves(runs: list[SweepRun], path: Path) -> Path:
    """Mean accuracy vs round per variant, with the 95% CI band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for name, (x, mean, low, high) in curve_bands(runs).items():
        ax.plot(x, mean, marker="o", ms=3, label=name)
        ax.fill_between(x, low, high, alpha=0.2)
    ax.set(xlabel="round", ylabel="accuracy (mean over seeds)", title="accuracy, 95% CI bands")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_html(runs: list[SweepRun], rows: list[dict[str, Any]], path: Path) -> Path:
    def cell(row: dict[str, Any], key: str) -> str:
        mean, ci = row[key], row[f"{key}_ci95"]
        if math.isnan(mean):
            return "<td>–"
        return f"<td>{mean:,.4g} ± {ci:,.2g}"

    head = "<tr><th>variant<th>runs" + "".join(f"<th>{label}" for _, label, _ in FINAL) + "</tr>"
    body_rows = "".join(
        f"<tr><td>{html.escape(r['variant'])}<td>{r['completed']}/{r['seeds']}"
        + "".join(cell(r, key) for key, _, _ in FINAL)
        + "</tr>"
        for r in rows
    )
    failures = "".join(
        f"<li>{html.escape(r.variant.name)}, seed {r.seed}: {html.escape(r.error)}</li>"
        for r in runs
        if r.error
    )
    image = _curves(runs, path.with_suffix(".png"))
    body = (
        f"<h1>Sweep: {len(rows)} variants × {max(r['seeds'] for r in rows)} seeds</h1>"
        "<p class=meta>mean ± half-width of the Student-t 95% confidence interval over seeds</p>"
        f"<table>{head}{body_rows}</table>"
        + (f"<h2>Failed runs</h2><ul>{failures}</ul>" if failures else "")
        + f"<h2>Accuracy</h2>{img_tag(image, 'accuracy of every variant')}"
    )
    image.unlink()
    path.write_text(html_page("fedsim: sweep", body), encoding="utf-8")
    return path
