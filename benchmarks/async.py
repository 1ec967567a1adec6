"""Synchronous vs asynchronous federations of tiny devices (issue 25): what it costs to reach a
target accuracy, and what it costs to simulate.

The fleet: 8 Nano 33 (BLE), 8 ESP32-S3 on BLE, both Markov-available; 6 Pi Zero 2 W and 6 Pi 4
on WiFi (the Pi 4s crash now and then). The task: MNIST (mnist-5k), the 784-32-10 MLP, Dirichlet
0.5 split. Methods, each with the same budget of device updates (``--updates``):

- ``sync``: FedAvg rounds of 16 devices drawn among those online, waiting for the slowest;
  it runs until it has delivered the budget, like every method (``--updates``, delivered device
  updates: a deadline's cut devices do not count);
- ``sync-deadline``: the same, cut at 4 simulated seconds (the BLE devices miss it);
- ``fedasync``: FedAsync, mixing α = 0.6, polynomial staleness (a = 0.5);
- ``fedbuff-K``: FedBuff with buffers of K = 4, 8, 16, 16 devices at once, η = 1.

Each method's client learning rate is tuned on {0.03, 0.1, 0.3, 1} on the tuning seed (accuracy at
the budget), then run on ``--seeds`` fresh seeds. Reported, mean ± 95% CI over the seeds: the
simulated time, the fleet's energy and the bytes moved until the global model first reaches
``--target`` accuracy (evaluated after every round or server update; a seed that never reaches it
counts as missing and is said), the accuracy at the budget (its last evaluation), the share of
applied updates that came from the MCUs (the fairness effect), and the simulator's own wall time
per 1,000 delivered device updates. Every method is evaluated about once per 16 delivered
updates, so that evaluation costs them alike.

Fleet energy counts every device, idle ones included, so that a synchronous round's waiting Pis
and an asynchronous run's busy ones are charged alike: every device's idle power over the time,
plus what each device's work drew above idle (from ``devices.csv``, and for devices still
training at the target, the ``in_flight`` of its record). Offline devices are charged idle too.

    .venv/bin/python -m benchmarks.async [--seeds 3] [--updates 1200] [--target 0.8]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks import publish
from benchmarks.repro import TUNE_SEED, Measured, Store, digest, edge_note, one_thread, tune
from fedsim.core.stats import mean_ci95

ROOT = Path(__file__).resolve().parent.parent
GRID = (0.03, 0.1, 0.3, 1.0)
SYNC_COHORT = 16
MCUS = ("nano33-ble-sense", "esp32-s3")


def fleet() -> dict[str, Any]:
    markov = {"kind": "markov", "mean_on_s": 300, "mean_off_s": 120}
    return {
        "groups": [
            {"profile": "nano33-ble-sense", "count": 8, "availability": markov},
            {"profile": "esp32-s3", "count": 8, "link": "ble", "availability": markov},
            {"profile": "rpi-zero2w", "count": 6},
            {"profile": "rpi4", "count": 6, "faults": {"crash_prob": 0.05}},
        ],
        "partition": {"kind": "dirichlet", "alpha": 0.5},
        "memory_policy": "head-only",
        "payload_dtype": "float32",
    }


def methods() -> dict[str, dict[str, Any]]:
    """Each method's scenario keys beyond the shared ones (rounds come from the budget)."""
    staleness = {"kind": "polynomial", "a": 0.5}
    out: dict[str, dict[str, Any]] = {
        "sync": {"clients_per_round": SYNC_COHORT},
        "sync-deadline": {"clients_per_round": SYNC_COHORT, "deadline_s": 4.0},
        "fedasync": {
            "asynchrony": {
                "strategy": "fedasync",
                "concurrency": SYNC_COHORT,
                "server_lr": 0.6,
                "staleness": staleness,
            }
        },
    }
    for k in (4, 8, 16):
        out[f"fedbuff-{k}"] = {
            "asynchrony": {
                "strategy": "fedbuff",
                "buffer_size": k,
                "concurrency": SYNC_COHORT,
                "server_lr": 1.0,
                "staleness": staleness,
            }
        }
    return out


def per_update(method: str) -> int:
    """Device updates one server update applies (FedBuff K, FedAsync 1); 0 for rounds."""
    keys = methods()[method]
    if "asynchrony" not in keys:
        return 0
    spec = keys["asynchrony"]
    return 1 if spec["strategy"] == "fedasync" else int(spec["buffer_size"])


def scenario(method: str, lr: float, seed: int, updates: int) -> dict[str, Any]:
    """Async methods run exactly ``updates`` delivered device updates; rounds run long enough to
    deliver them (a deadline cuts about half: the analysis stops at the budget). Every method is
    evaluated about once per SYNC_COHORT delivered updates, so the evaluations cost alike."""
    k = per_update(method)
    # a round delivers up to 16, fewer for crashes and dropouts, about half under the deadline
    per_round = 5 if "deadline_s" in methods()[method] else 12
    rounds = updates // k if k else math.ceil(updates / per_round)
    return {
        "name": f"async-bench-{method}",
        "seed": seed,
        "task": {"dataset": "mnist-5k", "model": "mlp"},
        "fleet": fleet(),
        "algorithm": {"kind": "fedavg", "lr": lr, "local_epochs": 1, "batch_size": 32},
        "rounds": max(1, rounds),
        "evaluation": {"every": max(1, SYNC_COHORT // k) if k else 1},
        "execution": {"engine": "inline", "mode": "cohort"},
        **methods()[method],
    }


def _idle_mw() -> dict[str, float]:
    from ontology.registry import default_registry

    return {p.name: p.idle_mw for p in default_registry().profiles()}


def measure(spec: dict[str, Any], target: float, budget: int) -> Measured:
    """Run ``spec``; accuracy at ``budget`` delivered updates, and time, energy and bytes until
    ``target``."""
    from fedsim.runner import run

    work = Path(tempfile.mkdtemp(prefix="fedsim-async-"))
    try:
        path = work / "scenario.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        started = time.perf_counter()
        result = run(path, work / "out")
        wall = time.perf_counter() - started
        out = Path(result.out)
        rounds = [json.loads(line) for line in (out / "rounds.jsonl").open(encoding="utf-8")]
        with (out / "devices.csv").open(encoding="utf-8", newline="") as handle:
            devices = list(csv.DictReader(handle))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _outcome(spec, rounds, devices, wall, target, budget)


def _outcome(
    spec: dict[str, Any],
    rounds: list[dict[str, Any]],
    devices: list[dict[str, str]],
    wall: float,
    target: float,
    budget: int,
) -> Measured:
    """The budget is ``budget`` delivered device updates: the record where the running count of
    participants reaches it ends the run's comparison. Time, energy and bytes are up to the first
    evaluated record at or above ``target`` (within the budget); devices still training then count
    what they had downloaded and drawn so far."""
    asynchronous = "asynchrony" in spec
    idle = _idle_mw()
    fleet_idle_mw = sum(idle[g["profile"]] * g["count"] for g in spec["fleet"]["groups"])
    delivered, end = 0, len(rounds)
    for i, r in enumerate(rounds):
        delivered += r["participants"]
        if delivered >= budget:
            end = i + 1
            break
    within = rounds[:end]
    evaluated = [r for r in within if r["accuracy"] is not None]
    reached = next((r for r in evaluated if r["accuracy"] >= target), None)
    last = reached["round"] if reached else within[-1]["round"]
    round_s = {r["round"]: r["round_s"] for r in rounds}
    extra_mj = 0.0  # what the devices' work drew above idle, up to the record that reached it
    moved = 0.0
    for d in devices:
        if int(d["round"]) > last:
            continue
        mine = idle[d["profile"]]
        busy = float(d["busy_s"])
        waited = busy if asynchronous or d["status"] == "dropout" else round_s[int(d["round"])]
        extra_mj += max(0.0, float(d["energy_mj"]) - mine * waited)
        moved += int(d["bytes_down"]) + int(d["bytes_up"])
    flying = rounds[last - 1].get("in_flight") or {}
    extra_mj += max(0.0, flying.get("energy_mj", 0.0) - flying.get("idle_mj", 0.0))
    moved += flying.get("bytes_down", 0.0)
    t = rounds[last - 1]["sim_time_s"]
    applied = [d for d in devices if d["status"] == "ok" and int(d["round"]) <= within[-1]["round"]]
    measured = {
        "time_s": t if reached else math.nan,
        "energy_j": (fleet_idle_mw * t + extra_mj) / 1000 if reached else math.nan,
        "mbytes": moved / 1e6 if reached else math.nan,
        "wall_per_1000": wall / max(sum(r["participants"] for r in rounds), 1) * 1000,
        "mcu_share": sum(d["profile"] in MCUS for d in applied) / max(len(applied), 1),
        "delivered": float(delivered),
    }
    final = evaluated[-1]["accuracy"] if evaluated else 0.0
    return Measured(final, measured)


def _cell(values: Sequence[float], digits: int = 3) -> str:
    done = [v for v in values if math.isfinite(v)]
    if not done:
        return "not reached"
    mean, ci = mean_ci95(done)
    missing = len(values) - len(done)
    text = f"{mean:.{digits}g} ± {ci:.2g}" if len(done) > 1 else f"{mean:.{digits}g}"
    return text + (f" ({missing} of {len(values)} not reached)" if missing else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--updates", type=int, default=1200, help="delivered device updates per method and seed"
    )
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-async")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--methods", default=",".join(methods()))
    args = parser.parse_args(argv)
    one_thread()
    store = Store(args.out / "runs.jsonl", fresh=args.fresh)
    names = args.methods.split(",")
    rows = []
    for method in names:

        def run_one(lr: float, seed: int, method: str = method) -> Measured:
            spec = scenario(method, lr, seed, args.updates)
            key = {"method": method, "digest": digest(spec), "target": args.target, "v": 2}
            return store.get(key, lambda: measure(spec, args.target, args.updates))

        lr = tune(GRID, lambda lr: run_one(lr, TUNE_SEED).score)
        runs = [run_one(lr, seed) for seed in range(args.seeds)]
        rows.append((method, lr, runs))
        print(f"{method}: lr {lr:g} done", flush=True)
    head = (
        "| method | lr | accuracy at budget | delivered | sim. time to target (s) | fleet "
        "energy to target (J) | MB to target | MCU share of updates | wall s / 1000 updates |"
    )
    lines = [
        f"# Sync vs async to {args.target:.0%} accuracy (mnist-5k, 28 devices, "
        f"{args.updates} device updates, {args.seeds} seeds)",
        "",
        head,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    walls: dict[str, float] = {}
    for method, lr, runs in rows:
        acc_mean, acc_ci = mean_ci95([r.score for r in runs])
        b = {k: [r.budget[k] for r in runs] for k in runs[0].budget}
        walls[method] = sum(b["wall_per_1000"]) / len(runs)
        note = edge_note(GRID, lr)
        lines.append(
            f"| {method} | {lr:g}{' (' + note + ')' if note else ''} | "
            f"{acc_mean:.3f} ± {acc_ci:.3f} | {min(b['delivered']):.0f} | "
            f"{_cell(b['time_s'])} | {_cell(b['energy_j'])} | "
            f"{_cell(b['mbytes'])} | {_cell(b['mcu_share'], 2)} | {_cell(b['wall_per_1000'])} |"
        )
    if "sync" in walls:
        ratios = ", ".join(f"{m} {w / walls['sync']:.2f}x" for m, w in walls.items() if m != "sync")
        lines += ["", f"Simulator wall time per 1,000 device updates, relative to sync: {ratios}."]
    publish("\n".join(lines), args.out, "async.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
