"""Ray's start-up and memory (stock vs lean), and where Ray starts to pay over inline (issue 27).

Part 1, start-up: the ``fedsim-cohort`` workload of ``benchmarks.runners`` (100 devices × 2
rounds, 2 actors) on Ray, in a fresh child process per try, the modes alternating:

- ``stock``: Ray started as fedsim started it before issue 27, i.e. Flower's ``ray.init`` with a
  job ``runtime_env`` and ``num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False``
  (the child puts that ``ray.init`` where the runner starts its local Ray);
- ``lean``: fedsim's own local Ray (``fedsim.runner.LEAN_RAY_NODE``).

The child times Ray's start, the two actors' processes being up, the first round done, and the
stop; it samples its process tree's RSS until the first round is done (the peak, and which Ray
processes make it). Medians over the tries.

Part 2, break-even: wall time of ``fedsim-cohort`` (Ray, lean, 2 actors) vs
``fedsim-cohort-inline`` at a few sizes in device-rounds, each a fresh child measured by
``benchmarks.cohort``; a line ``wall = a + b × device-rounds`` fitted per engine gives where Ray
starts to pay (``engine: auto``'s ``AUTO_RAY_MIN_DEVICE_ROUNDS``).

    .venv/bin/python -m benchmarks.ray_startup [--quick] [--repeats N] [--skip-break-even]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.cohort import Workload, _measure_one
from benchmarks.proctree import become_subreaper, measure
from benchmarks.runners import write_scenario

ROOT = Path(__file__).resolve().parents[1]
MARK = "ray-startup: "  # the child's last stdout line: this mark, then JSON
MODES = ("stock", "lean")
STARTUP = Workload(100, 2)
SIZES = [Workload(1000, 2), Workload(1000, 10), Workload(2000, 10), Workload(5000, 10)]
QUICK_SIZES = SIZES[:2]
STOCK_INIT: dict[str, Any] = {
    "num_cpus": 2,
    "num_gpus": 0,
    "include_dashboard": False,
    "log_to_driver": False,
}


def _kind(proc: psutil.Process) -> str:
    """Which Ray (or fedsim) process this is, from its command line."""
    cmd = " ".join(proc.cmdline())
    for needle, kind in (
        ("gcs_server", "gcs_server"),
        ("raylet/raylet", "raylet"),
        ("dashboard/dashboard.py", "dashboard (API server)"),
        ("autoscaler/_private/monitor.py", "autoscaler monitor"),
        ("log_monitor.py", "log monitor"),
        ("ray::DashboardAgent", "dashboard agent"),
        ("ray::RuntimeEnvAgent", "runtime-env agent"),
        ("ray::IDLE", "idle worker"),
        ("ray::ClientAppActor", "actor (ClientApp)"),
        ("ray_process_reaper", "reaper"),
    ):
        if needle in cmd:
            return kind
    return "driver" if proc.pid == os.getpid() else "other"


class _TreeWatch:
    """Samples this process's tree every 50 ms: when the two actors are first up (ready to
    train), the peak RSS until then and its make-up by process, and the peak until stopped."""

    def __init__(self) -> None:
        self.actors_up, self.ready_mb, self.peak_mb = 0.0, 0.0, 0.0
        self.ready_by_kind: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        by_kind: dict[str, float] = {}
        actors = 0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                kind = _kind(proc)
                by_kind[kind] = by_kind.get(kind, 0.0) + proc.memory_info().rss / 2**20
                actors += kind == "actor (ClientApp)"
        total = sum(by_kind.values())
        self.peak_mb = max(self.peak_mb, total)
        if not self.actors_up and total > self.ready_mb:
            self.ready_mb, self.ready_by_kind = total, by_kind
        if not self.actors_up and actors >= 2:
            self.actors_up = time.perf_counter()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> _TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _FirstRound:
    """A fedsim round observer that stops the tree watch at the first round."""

    def __init__(self, watch: _TreeWatch) -> None:
        self.watch, self.first, self.last = watch, 0.0, 0.0

    def start(self, total_rounds: int) -> None:
        pass

    def round(self, record: Any) -> None:
        self.last = time.perf_counter()
        if not self.first:
            self.first = self.last
            self.watch.__exit__()

    def end(self) -> None:
        pass


def _timed(fn: Callable[..., Any], marks: dict[str, float]) -> Callable[..., Any]:
    """``fn``, marking when it is first called (Ray's start)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault("start", time.perf_counter())
        return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _stock_ray(cpus: int) -> Iterator[None]:
    """Ray as fedsim had Flower start it before issue 27 (Flower's ``ray.init``: a job
    ``runtime_env`` and fedsim's ``init_args``); stopped when the child exits, as then."""
    import ray

    assert cpus == STOCK_INIT["num_cpus"]
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}, **STOCK_INIT)
    yield


def child(mode: str) -> int:
    """One run of the start-up workload on Ray in ``mode``; print the timings as JSON."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    import ray

    from fedsim import runner

    marks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-startup-") as scratch:
        path = Path(scratch) / "scenario.yaml"
        write_scenario(path, "fedsim-cohort", STARTUP.devices, STARTUP.rounds, None)
        with _TreeWatch() as watch:
            observer = _FirstRound(watch)
            init = ray.init

            def timed_init(*args: Any, **kwargs: Any) -> Any:
                done = init(*args, **kwargs)
                marks["init_done"] = time.perf_counter()
                return done

            setattr(ray, "init", timed_init)  # noqa: B010
            # the runner looks both up when it starts Ray: Ray's start is marked at the same point
            if mode == "stock":
                setattr(runner, "_local_ray", _timed(_stock_ray, marks))  # noqa: B010
            else:
                setattr(runner, "_start_node", _timed(runner._start_node, marks))  # noqa: B010
            summary = runner.run(path, Path(scratch) / "out", overwrite=True, observer=observer)
            summary_s = time.perf_counter()
        if mode == "stock":
            ray.shutdown()  # what the driver's exit did then
        stopped = time.perf_counter()
    start = marks["start"]
    print(
        MARK
        + json.dumps(
            {
                "actors_up_s": watch.actors_up - start,
                "first_round_s": observer.first - start,
                "stop_s": (summary_s - observer.last) + (stopped - summary_s),
                "ray_init_s": marks["init_done"] - start,
                "ready_mb": watch.ready_mb,
                "first_round_mb": watch.peak_mb,
                "ready_by_kind": watch.ready_by_kind,
                "status": summary.summary.get("status"),
            }
        ),
        flush=True,
    )
    return 0


def _one(mode: str, logs: Path, i: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.ray_startup", "--child", mode]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_ADDRESS": "local"}
    out, err = logs / f"startup-{mode}-{i}.out", logs / f"startup-{mode}-{i}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        usage = measure(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, timeout_s=300)
    lines = [s for s in out.read_text().splitlines() if s.startswith(MARK)]
    if usage.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} try {i} failed: see {err}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARK) :])
    result |= {"wall_s": usage.wall_s, "tree_peak_mb": usage.peak_rss_bytes / 2**20}
    return result


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def startup_table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        ("Ray start → ray.init returned, s", "ray_init_s", ".1f"),
        ("Ray start → both actors up (ready to train), s", "actors_up_s", ".1f"),
        ("Ray start → first round done, s", "first_round_s", ".1f"),
        ("last round → Ray stopped, s", "stop_s", ".1f"),
        ("peak tree RSS until ready to train, MB", "ready_mb", ".0f"),
        ("peak tree RSS until the first round done, MB", "first_round_mb", ".0f"),
        ("whole child: wall s", "wall_s", ".1f"),
        ("whole child: peak tree RSS, MB", "tree_peak_mb", ".0f"),
    ]
    n = min(len(v) for v in results.values())
    lines = [f"| median of {n} | " + " | ".join(MODES) + " |", "|---|" + "---:|" * len(MODES)]
    for label, key, spec in rows:
        cells = [f"{_median(results[m], key):{spec}}" for m in MODES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    kinds = sorted({k for m in MODES for r in results[m] for k in r["ready_by_kind"]})
    lines += ["", "| RSS by process, peak until ready, MB (median) | " + " | ".join(MODES) + " |"]
    lines.append("|---|" + "---:|" * len(MODES))
    for kind in kinds:
        cells = [
            f"{statistics.median(r['ready_by_kind'].get(kind, 0.0) for r in results[m]):.0f}"
            for m in MODES
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``wall = a + b × x``: (a, b)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    b, a = statistics.linear_regression(xs, ys)
    return a, b


def break_even(walls: dict[str, list[tuple[float, float]]]) -> str:
    """Where the fitted Ray line crosses the inline one, in device-rounds (a sentence)."""
    (a_ray, b_ray), (a_in, b_in) = _fit(walls["ray"]), _fit(walls["inline"])
    fits = (
        f"fits: inline {a_in:.1f} s + {b_in * 1000:.2f} ms/device-round; "
        f"ray {a_ray:.1f} s + {b_ray * 1000:.2f} ms/device-round"
    )
    if b_ray >= b_in:
        return f"Ray never pays on {os.cpu_count()} cores here ({fits})."
    point = (a_ray - a_in) / (b_in - b_ray)
    return f"Ray starts to pay at ~{point:,.0f} device-rounds on {os.cpu_count()} cores ({fits})."


def _progress(text: str) -> None:
    print(f"{text} ...", file=sys.stderr, flush=True)


def _break_even_table(sizes: list[Workload], logs: Path) -> tuple[str, str]:
    walls: dict[str, list[tuple[float, float]]] = {"ray": [], "inline": []}
    lines = [
        "| device-rounds | devices × rounds | inline s | ray s | ray / inline |",
        "|---:|---|---:|---:|---:|",
    ]
    for w in sizes:
        got: dict[str, float] = {}
        for engine, name in (("inline", "fedsim-cohort-inline"), ("ray", "fedsim-cohort")):
            _progress(f"break-even {w.label} {engine}")
            row = _measure_one(name, w, logs, 1800.0)
            if not row.status.startswith("ok") or row.wall_s is None:
                raise RuntimeError(f"{name} {w.label}: {row.status} (log: {row.log})")
            got[engine] = row.wall_s
            walls[engine].append((w.devices * w.rounds, row.wall_s))
        dr = w.devices * w.rounds
        lines.append(
            f"| {dr:,} | {w.label} | {got['inline']:.1f} | {got['ray']:.1f} | "
            f"{got['ray'] / got['inline']:.2f} |"
        )
    return "\n".join(lines), break_even(walls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_startup", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="break-even at 2k and 10k only")
    parser.add_argument("--repeats", type=int, default=3, help="start-up tries per mode (≥ 3)")
    parser.add_argument("--skip-break-even", action="store_true", help="start-up only")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    become_subreaper()  # Ray daemons that outlive a child are re-parented here, then ended
    logs = Path(tempfile.mkdtemp(prefix="fedsim-bench-ray-startup-"))
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for i in range(args.repeats):
        for mode in MODES:  # alternating, so a busy spell on the machine hits both
            _progress(f"start-up {mode} try {i + 1}/{args.repeats}")
            results[mode].append(_one(mode, logs, i))
    print(f"Ray start-up, {STARTUP.label} fedsim-cohort on 2 actors ({os.cpu_count()} cores):\n")
    print(startup_table(results))
    if not args.skip_break_even:
        table, verdict = _break_even_table(QUICK_SIZES if args.quick else SIZES, logs)
        print("\nWall time, fedsim-cohort inline vs Ray (lean, 2 actors), one child each:\n")
        print(table)
        print()
        print(verdict)
    print(f"child logs: {logs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
