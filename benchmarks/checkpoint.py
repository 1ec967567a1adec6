"""What resumability costs: a run with a checkpoint every round (the default) against the same run
with ``output.checkpoint: false``, each in a fresh process, inline engine, alternating, and
the ratio of their median wall times.

    .venv/bin/python -m benchmarks.checkpoint [--scenario scenarios/quickstart.yaml] [--repeats 3]

Prints a table and writes ``<out>/checkpoint.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks import publish
from fedsim.core.scenario_load import merged_data, with_changes

ROOT = Path(__file__).resolve().parents[1]


def _wall(scenario: Path, out: Path) -> float:
    command = [sys.executable, "-m", "fedsim.cli", "run", str(scenario), "--out", str(out)]
    command += ["--overwrite", "--engine", "inline"]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return float(json.loads((out / "summary.json").read_text())["wall_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-checkpoint")
    args = parser.parse_args(argv)
    base = merged_data(args.scenario)
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for on in (True, False):
            paths[on] = Path(tmp) / f"checkpoint-{on}.yaml"
            data = with_changes(base, {"output.checkpoint": on})
            paths[on].write_text(yaml.safe_dump(data), encoding="utf-8")
        for _ in range(args.repeats):
            for on in (True, False):
                times[on].append(_wall(paths[on], Path(tmp) / f"out-{on}"))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    rounds = int(base["rounds"])
    text = "\n".join(
        [
            f"## Checkpoints: {args.scenario.name}, {rounds} rounds, inline, "
            f"median of {args.repeats}",
            "",
            "| checkpoint every round | wall s (run loop) | per round |",
            "|---|---|---|",
            f"| on | {on:.2f} | {on / rounds * 1e3:.0f} ms |",
            f"| off | {off:.2f} | {off / rounds * 1e3:.0f} ms |",
            "",
            f"ratio on/off: {on / off:.3f} ({(on - off) / rounds * 1e3:+.1f} ms per round)",
        ]
    )
    publish(text, args.out, "checkpoint.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
