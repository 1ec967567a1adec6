"""Simulation overhead: stock Flower vs a plain PyTorch loop vs fedsim's two modes (design §3.1).

Each runner (``benchmarks.runners``) runs in a fresh child process, one at a time, so Ray's
start-up and memory count per runner and nothing leaks between them. The parent measures each
child's whole process tree (``benchmarks.proctree``) and prints a markdown table, then whether
this run met design §12's targets. Progress and each runner's final accuracy go to stderr.

    .venv/bin/python -m benchmarks.cohort [--quick] [--skip-large] [--million] [--runners a,b]
                                          [--json PATH]
    .venv/bin/python -m benchmarks.cohort --child RUNNER N R [K [BASE]]   # one run, unmeasured

``--million`` runs only the million-registered-device workload (``scenarios/fleet-1m.yaml``:
1,000,000 registered, 10,000 a round, 10 rounds) with every runner, each stopped at
``MILLION_TIMEOUT_S`` or ``MAX_TREE_GB`` (stock Flower does not finish it); the full run includes
it after the other large workloads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.proctree import become_subreaper, measure
from benchmarks.runners import RUNNERS, write_scenario

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "bench-result: "  # the child's last stdout line: this mark, then JSON


@dataclass(frozen=True)
class Workload:
    devices: int
    rounds: int
    per_round: int | None = None  # clients_per_round; None: every device
    base: str | None = None  # a shipped scenario (relative to the repository) it runs instead

    @property
    def label(self) -> str:
        label = f"{self.devices}×{self.rounds}"
        return label if self.per_round is None else f"{label} ({self.per_round}/round)"


SMALL = [Workload(10, 5), Workload(100, 5), Workload(1000, 2)]
LARGE = [Workload(10_000, 10), Workload(100_000, 10, 1_000)]  # fedsim-cohort only
MILLION = Workload(1_000_000, 10, 10_000, "scenarios/fleet-1m.yaml")  # every runner
MILLION_TIMEOUT_S = 600.0  # twice the target (5 min): a runner that takes longer has missed it
MAX_TREE_GB = 8.0  # twice the target (4 GB): stop a runner before it takes the machine down
COLUMNS = (
    "workload",
    "runner",
    "status",
    "wall s",
    "CPU s",
    "peak tree RSS MB",
    "wall / plain",
    "stock / wall",
)
TARGET_WORKLOAD, SCALE_WORKLOAD, MILLION_WORKLOAD = "1000×2", "10000×10", MILLION.label


def child(runner: str, workload: Workload) -> int:
    """Run one runner on one workload; print the result as the last stdout line; an exit code."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    w = workload
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{runner}-") as scratch:
            path = Path(scratch) / "scenario.yaml"
            base = ROOT / w.base if w.base else None
            write_scenario(path, runner, w.devices, w.rounds, w.per_round, base)
            accuracy, failures = RUNNERS[runner].run(path, Path(scratch))
    except Exception as exc:
        traceback.print_exc()
        # one line last, for the parent's status column
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(RESULT_MARK + json.dumps({"accuracy": accuracy, "failures": failures}), flush=True)
    return 0


@dataclass(frozen=True)
class Row:
    workload: str
    runner: str
    status: str
    wall_s: float | None = None
    cpu_s: float | None = None
    cpu_sampled_s: float | None = None
    cpu_rusage_s: float | None = None
    peak_rss_mb: float | None = None
    accuracy: float | None = None
    killed_after_exit: tuple[str, ...] = ()  # still running 3 s after the child exited
    log: str = ""


def _last_line(path: Path) -> str:
    lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
    return lines[-1][:160] if lines else "(no output)"


def _result(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith(RESULT_MARK):
            return dict(json.loads(line[len(RESULT_MARK) :]))
    return {}


def _status(
    returncode: int | None, result: dict[str, Any], err: Path, timeout_s: float, over: bool
) -> str:
    if over:
        return f"stopped: tree RSS over {MAX_TREE_GB:.0f} GB"
    if returncode is None:
        return f"timeout after {timeout_s:.0f} s"
    if returncode != 0 or not result:
        return f"failed: {_last_line(err)}"
    failures = int(result.get("failures", 0))
    return f"ok ({failures} device failures)" if failures else "ok"


def _measure_one(runner: str, workload: Workload, logs: Path, timeout_s: float) -> Row:
    w = workload
    cmd = [sys.executable, "-m", "benchmarks.cohort", "--child", runner]
    cmd += [str(v) for v in (w.devices, w.rounds, w.per_round, w.base) if v is not None]
    if w.base:
        timeout_s = min(timeout_s, MILLION_TIMEOUT_S)
    # a fresh local Ray instance per child, never a cluster someone started on this machine
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_ADDRESS": "local"}
    out, err = (logs / f"{w.devices}x{w.rounds}-{runner}{ext}" for ext in (".out", ".err"))
    with out.open("wb") as stdout, err.open("wb") as stderr:
        usage = measure(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout_s=timeout_s,
            max_rss_bytes=int(MAX_TREE_GB * 2**30),
        )
    result = _result(out)
    return Row(
        workload=w.label,
        runner=runner,
        status=_status(usage.returncode, result, err, timeout_s, usage.over_memory),
        wall_s=usage.wall_s,
        cpu_s=usage.cpu_s,
        cpu_sampled_s=usage.cpu_sampled_s,
        cpu_rusage_s=usage.cpu_rusage_s,
        peak_rss_mb=usage.peak_rss_bytes / 2**20,
        accuracy=result.get("accuracy"),
        killed_after_exit=usage.killed,
        log=str(err),
    )


# the million-device workload's runners: per-device fedsim would be stock Flower's cost again
MILLION_RUNNERS = ("plain", "stock", "fedsim-cohort-inline", "fedsim-cohort")


def _plan(args: argparse.Namespace) -> list[tuple[str, Workload]]:
    million = [(r, MILLION) for r in MILLION_RUNNERS if r in args.runners]
    if args.million:
        return million
    grid = SMALL[:2] if args.quick else SMALL
    plan = [(runner, w) for w in grid for runner in args.runners]
    if not (args.quick or args.skip_large):
        if "fedsim-cohort" in args.runners:
            plan += [("fedsim-cohort", w) for w in LARGE]
        plan += million
    return plan


def _wall(rows: list[Row], workload: str, runner: str) -> float | None:
    for row in rows:
        if (row.workload, row.runner) == (workload, runner) and row.status.startswith("ok"):
            return row.wall_s
    return None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---:|" * (len(COLUMNS) - 3),
    ]
    for row in rows:
        ok = row.status.startswith("ok")
        wall = row.wall_s if ok else None
        plain, stock = _wall(rows, row.workload, "plain"), _wall(rows, row.workload, "stock")
        ratio = wall / plain if wall and plain else None
        speedup = stock / wall if wall and stock else None
        cells = [
            row.workload,
            row.runner,
            row.status.replace("|", "\\|"),
            _fmt(row.wall_s, ".1f"),
            _fmt(row.cpu_s, ".1f"),
            _fmt(row.peak_rss_mb, ".0f"),
            _fmt(ratio, ".2f", "×"),
            _fmt(speedup, ".1f", "×"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def targets(rows: list[Row]) -> str:
    """design §12's simulation-overhead targets, and whether this run met them."""
    cohort = _wall(rows, TARGET_WORKLOAD, "fedsim-cohort")
    plain, stock = _wall(rows, TARGET_WORKLOAD, "plain"), _wall(rows, TARGET_WORKLOAD, "stock")
    vs_plain = None if cohort is None or plain is None else cohort <= 1.5 * plain
    vs_stock = None if cohort is None or stock is None else stock >= 10 * cohort
    inline_cpu, plain_cpu = (
        _cpu(rows, TARGET_WORKLOAD, r) for r in ("fedsim-cohort-inline", "plain")
    )
    cpu_ok = None if inline_cpu is None or plain_cpu is None else inline_cpu <= 1.2 * plain_cpu
    million = [
        _fits(_row(rows, MILLION_WORKLOAD, r)) for r in ("fedsim-cohort-inline", "fedsim-cohort")
    ]
    return (
        f"Targets (design §12), fedsim-cohort: {TARGET_WORKLOAD} within 1.5× of plain: "
        f"{_verdict(vs_plain)}; ≥10× faster than stock on {TARGET_WORKLOAD}: {_verdict(vs_stock)}; "
        f"{SCALE_WORKLOAD} in < 300 s with < 4 GB tree RSS: "
        f"{_verdict(_fits(_row(rows, SCALE_WORKLOAD, 'fedsim-cohort')))}.\n"
        f"Targets (issue 27): {TARGET_WORKLOAD} inline CPU ≤ 1.2× plain's: {_verdict(cpu_ok)}; "
        f"{MILLION_WORKLOAD} in < 300 s with < 4 GB tree RSS: inline {_verdict(million[0])}, "
        f"Ray {_verdict(million[1])}."
    )


def _row(rows: list[Row], workload: str, runner: str) -> Row | None:
    return next((r for r in rows if (r.workload, r.runner) == (workload, runner)), None)


def _cpu(rows: list[Row], workload: str, runner: str) -> float | None:
    row = _row(rows, workload, runner)
    return row.cpu_s if row is not None and row.status.startswith("ok") else None


def _fits(row: Row | None) -> bool | None:
    """< 5 min and < 4 GB of tree RSS (None: not run)."""
    if row is None:
        return None
    return row.status.startswith("ok") and (row.wall_s or 0) < 300 and (row.peak_rss_mb or 0) < 4096


def _progress(i: int, total: int, runner: str, workload: str, text: str) -> None:
    print(f"[{i}/{total}] {workload} {runner}: {text}", file=sys.stderr, flush=True)


def _done_text(row: Row) -> str:
    text = f"{row.status}, {_fmt(row.wall_s, '.1f')} s wall, {_fmt(row.cpu_s, '.1f')} s CPU"
    text += f", {_fmt(row.peak_rss_mb, '.0f')} MB, accuracy {_fmt(row.accuracy, '.4f')}"
    if row.killed_after_exit:
        text += f", killed {len(row.killed_after_exit)} leftover processes"
        text += f" ({', '.join(row.killed_after_exit)})"
    return text if row.status.startswith("ok") else f"{text} (log: {row.log})"


def _child_args(parser: argparse.ArgumentParser, values: list[str]) -> tuple[str, Workload]:
    runner, *sizes = values
    base = sizes.pop() if len(sizes) == 4 else None
    if runner not in RUNNERS or len(sizes) not in (2, 3) or not all(v.isdigit() for v in sizes):
        parser.error(
            f"--child RUNNER N R [K [BASE]]: got {' '.join(values)}; runners: {', '.join(RUNNERS)}"
        )
    n, rounds, *k = (int(v) for v in sizes)
    return runner, Workload(n, rounds, k[0] if k else None, base)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cohort", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only 10×5 and 100×5")
    parser.add_argument(
        "--skip-large", action="store_true", help="skip 10,000×10, 100,000 and the million"
    )
    parser.add_argument(
        "--million", action="store_true", help="only 1,000,000 registered × 10 (10,000/round)"
    )
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated runners")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.child = _child_args(parser, args.child)
    args.runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = sorted(set(args.runners) - set(RUNNERS))
    if unknown:
        parser.error(f"--runners: unknown {', '.join(unknown)}; known: {', '.join(RUNNERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.child:
        return child(*args.child)
    become_subreaper()  # Ray daemons that outlive a child are re-parented here, then ended
    logs = Path(tempfile.mkdtemp(prefix="fedsim-bench-cohort-"))
    plan, rows = _plan(args), []
    for i, (runner, workload) in enumerate(plan, 1):
        _progress(i, len(plan), runner, workload.label, "started")
        row = _measure_one(runner, workload, logs, args.timeout)
        _progress(i, len(plan), runner, workload.label, _done_text(row))
        rows.append(row)
    print(table(rows))
    print()
    print(targets(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(f"child logs: {logs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
