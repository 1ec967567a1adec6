"""How accurate is fedsim's device model? Every MLPerf Tiny result on a board fedsim has a profile
for, published vs predicted (issue 24).

The figures are fitted on rounds v0.5-v1.1 only (``devices/calibration.py``); rounds v1.2 and v1.3
are held out. For each result the table gives the published and predicted latency (at the result's
own clock) and their error, and, where an energy result was published, the published and predicted
energy (the profile's active power × the predicted latency). Then the median absolute error per
core class, for the fit rounds and for the held-out rounds, and the same with two alternatives the
calibration rejected (all fit rounds pooled instead of each library's newest; the validation that
chose the model form).

    .venv/bin/python -m benchmarks.calibration [--out results/bench-calibration] [--write]

``--write`` rewrites ``devices/data/kernel_figures.json`` from the data (what every run and
``fedsim devices predict`` read); without it the committed file is checked against the data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks import publish
from devices.calibration import (
    FIT_ROUNDS,
    Result,
    benchmark_macs,
    board_key,
    calibrate,
    fit_figures,
    load_results,
    predict,
    training_figures,
    write_figures,
)
from devices.kernels import FIGURES_FILE, KernelFigure
from fedsim.core.profiles import DeviceProfile

ROOT = Path(__file__).resolve().parent.parent


def _profiles() -> dict[str, DeviceProfile]:
    from ontology.registry import default_registry

    profiles: dict[str, DeviceProfile] = {}
    for p in default_registry().profiles():
        key = board_key(p.board)
        if key in profiles:
            raise SystemExit(f"profiles {profiles[key].name} and {p.name} match the same board")
        profiles[key] = p
    return profiles


def rows(
    results: Sequence[Result],
    figures: Sequence[KernelFigure],
    profiles: dict[str, DeviceProfile],
    skipped: list[str],
) -> list[dict[str, object]]:
    """One row per result on a profiled board that the figures can predict (``skipped`` gains
    the others on profiled boards)."""
    table = []
    for r in results:
        profile = profiles.get(board_key(r.board))
        if profile is None:
            continue
        if r.kernels == "other":  # an accelerator or an unknown library: not the core's work
            skipped.append(f"{r.round} {r.system} {r.benchmark} (not on the core alone)")
            continue
        try:
            p = predict(
                figures, r.core, r.precision, r.kernels, benchmark_macs(r.benchmark), r.clock_mhz
            )
        except LookupError:
            skipped.append(f"{r.round} {r.system} {r.benchmark}")
            continue
        energy = profile.active_mw * p.latency_ms  # mW × ms = µJ
        table.append(
            {
                "round": r.round,
                "split": "fit" if r.round in FIT_ROUNDS else "held-out",
                "submitter": r.submitter,
                "profile": profile.name,
                "core": r.core,
                "clock_mhz": r.clock_mhz,
                "kernels": r.kernels,
                "precision": r.precision,
                "benchmark": r.benchmark,
                "published_ms": r.latency_ms,
                "predicted_ms": round(p.latency_ms, 4),
                "error": p.latency_ms / r.latency_ms - 1,
                "basis": p.basis,
                "published_uj": r.energy_uj,
                "predicted_uj": round(energy, 2) if r.energy_uj is not None else None,
                "energy_error": energy / r.energy_uj - 1 if r.energy_uj is not None else None,
            }
        )
    return table


def medians(
    table: Sequence[dict[str, object]], key: str = "error"
) -> dict[tuple[str, str], tuple[float, int]]:
    """Median absolute ``key`` per (split, core class), and per split over all cores."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in table:
        value = row[key]
        if value is None:
            continue
        for core in (str(row["core"]), "all"):
            groups[(str(row["split"]), core)].append(abs(float(value)))  # type: ignore[arg-type]
    return {k: (statistics.median(v), len(v)) for k, v in sorted(groups.items())}


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def render(
    table: Sequence[dict[str, object]],
    alternatives: dict[str, dict[tuple[str, str], tuple[float, int]]],
) -> str:
    lines = [
        "# MLPerf Tiny: published vs predicted (fit on v0.5-v1.1, held out v1.2-v1.3)",
        "",
        "| round | profile | core | MHz | kernels | prec. | bench | published ms | predicted ms "
        "| error | basis | published µJ | predicted µJ | error |",
        "|---|---|---|--:|---|---|---|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in table:
        energy = (
            f"{r['published_uj']:.4g} | {r['predicted_uj']:.4g} | {_pct(float(r['energy_error']))}"  # type: ignore[arg-type]
            if r["published_uj"] is not None
            else "- | - | -"
        )
        lines.append(
            f"| {r['round']} | {r['profile']} | {r['core']} | {r['clock_mhz']:g} | "
            f"{r['kernels']} | "
            f"{r['precision']} | {r['benchmark']} | {r['published_ms']:.4g} | "
            f"{r['predicted_ms']:.4g} | {_pct(float(r['error']))} | {r['basis']} | {energy} |"  # type: ignore[arg-type]
        )
    lat, energy = medians(table), medians(table, "energy_error")
    lines += [
        "",
        "## Median absolute error per core class",
        "",
        "| split | core | latency error | results | energy error | results |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for key, (value, n) in lat.items():
        e = energy.get(key)
        etext = f"{e[0]:.0%} | {e[1]}" if e else "- | 0"
        lines.append(f"| {key[0]} | {key[1]} | {value:.0%} | {n} | {etext} |")
    lines += ["", "## Alternatives (median absolute latency error, all cores)", ""]
    lines += ["| calibration | fit rounds | held-out rounds |", "|---|--:|--:|"]
    for name, med in alternatives.items():
        fit = med.get(("fit", "all"), (float("nan"), 0))
        held = med.get(("held-out", "all"), (float("nan"), 0))
        lines.append(f"| {name} | {fit[0]:.0%} (n={fit[1]}) | {held[0]:.0%} (n={held[1]}) |")
    held = lat.get(("held-out", "all"))
    if held is not None:
        verdict = "met" if held[0] <= 0.25 else "missed"
        lines += [
            "",
            "Goal: median absolute latency error ≤ 25% on the held-out rounds: "
            f"{held[0]:.1%} ({verdict}).",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-calibration")
    parser.add_argument(
        "--write", action="store_true", help="rewrite devices/data/kernel_figures.json"
    )
    args = parser.parse_args(argv)
    results = load_results()
    if args.write:
        write_figures()
    elif json.loads(FIGURES_FILE.read_text(encoding="utf-8")) != json.loads(
        json.dumps(calibrate(results))
    ):
        print(f"{FIGURES_FILE} is not what the data gives: run with --write", file=sys.stderr)
        return 1
    profiles = _profiles()
    measured = training_figures()
    skipped: list[str] = []
    table = rows(results, fit_figures(results) + measured, profiles, skipped)
    pooled = rows(results, fit_figures(results, newest=False) + measured, profiles, [])
    alternatives = {
        "each library's newest fit round (used)": medians(table),
        "every fit round pooled": medians(pooled),
    }
    text = render(table, alternatives)
    if skipped:
        text += f"\n\nLeft out: {'; '.join(skipped)}."
    publish(text, args.out, "calibration.md")
    (args.out / "calibration.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
