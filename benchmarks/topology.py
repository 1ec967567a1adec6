"""Where aggregation happens: the building scenario as a star, and through per-floor gateways
with 1, 2 and 4 local rounds, with floor 3's LTE uplink always up or flaky. Same seed, same data;
each run in a fresh process, inline engine.

    .venv/bin/python -m benchmarks.topology [--scenario scenarios/building-gateways.yaml]
                                            [--rounds 12] [--repeats 1]

Prints a table (accuracy, simulated time, energy of devices and gateways, backhaul bytes against a
star through forwarding gateways, gateway outages, and the wall time against the star's: what the
hierarchical path costs the simulator) and writes ``<out>/topology.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks import publish
from fedsim.core.scenario_load import merged_data, with_changes

ROOT = Path(__file__).resolve().parents[1]


def _variants(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    steady = [
        {k: v for k, v in g.items() if k != "availability"} for g in base["topology"]["gateways"]
    ]
    return {
        "star (no gateways)": {"topology": None},
        "gateways, 1 local round, LTE up": {
            "topology.gateways": steady,
            "topology.local_rounds": 1,
        },
        "gateways, 1 local round, LTE flaky": {"topology.local_rounds": 1},
        "gateways, 2 local rounds, LTE flaky": {"topology.local_rounds": 2},
        "gateways, 4 local rounds, LTE flaky": {"topology.local_rounds": 4},
    }


def _run(scenario: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "fedsim.cli", "run", str(scenario), "--out", str(out)]
    command += ["--overwrite", "--engine", "inline"]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", type=Path, default=ROOT / "scenarios" / "building-gateways.yaml"
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (median wall)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-topology")
    args = parser.parse_args(argv)
    base = with_changes(merged_data(args.scenario), {"rounds": args.rounds})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, changes in _variants(base).items():
            data = with_changes(base, changes)
            if data.get("topology") is None:
                data.pop("topology", None)
            path = Path(tmp) / "variant.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            runs = [_run(path, Path(tmp) / f"out-{i}") for i in range(args.repeats)]
            rows.append((label, runs[-1], statistics.median(r["wall_s"] for r in runs)))
    star_wall = rows[0][2]
    star_bytes = rows[0][1]["bytes_down"] + rows[0][1]["bytes_up"]
    lines = [
        f"## {args.scenario.name}: {args.rounds} global rounds, inline, "
        f"median wall of {args.repeats}",
        "",
        "| variant | accuracy | sim s | device rounds trained | devices J | gateways J | "
        "backhaul bytes | vs a star | gateways down / late / lost | wall s | wall vs star |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, s, wall in rows:
        t = s.get("topology")
        backhaul = f"{t['backhaul_bytes']:,}" if t else f"{star_bytes:,} (all device traffic)"
        versus = f"{t['backhaul_vs_star']:.3f}" if t else "1"
        outages = (
            f"{t['gateways_down']} / {t['gateways_late']} / {t['gateways_lost']}" if t else "-"
        )
        lines.append(
            f"| {label} | {s['final_accuracy']:.4f} | {s['sim_time_s']:.1f} | "
            f"{s['device_rounds']['trained']} | {s['energy_j']:.2f} | "
            f"{s.get('gateway_energy_j', 0.0):.1f} | {backhaul} | {versus} | {outages} | "
            f"{wall:.1f} | {wall / star_wall:.2f} |"
        )
    text = "\n".join(lines)
    publish(text, args.out, "topology.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
