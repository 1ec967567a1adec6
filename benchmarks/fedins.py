"""FedIns vs federated SSF vs head-only FedAvg vs full-model FedAvg (issue 9; DESIGN.md §6.6).

Every method starts from the same frozen SSF ViT, pre-trained supervised on Fashion-MNIST in the
project (``fedsim pretrain --dataset fashion-mnist``; cached), and learns a *different* target:
``mnist-mixed`` (MNIST digits, a seeded half inverted, so every client mixes two domains), split
over ``--clients`` clients by Dirichlet(β) label skew, one local epoch per round:

* **fedins**: pools of ``--entries`` SSF sets + keys + heads, top-``--top-n`` per instance, λ 0.1;
* **federated SSF**: one SSF set and head per client, FedAvg'd (``entries: 1, top_n: 1``);
* **head-only FedAvg**: only the linear head trains and travels;
* **full FedAvg**: the backbone trains too (the communication reference).

    .venv/bin/python -m benchmarks.fedins [--betas 0.1 0.2 0.5] [--rounds 10] [--clients 5]
        [--quick] [--out results/bench-fedins]

Prints accuracy per β and method, bytes up per client per round (and as a fraction of full
FedAvg), and wall time per round; writes ``<out>/fedins.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedsim.core.results import read_rounds
from fedsim.progress import ProgressObserver
from fedsim.runner import run

ROOT = Path(__file__).resolve().parents[1]


def _methods(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    base = {"kind": "fedins", "lr": args.lr, "local_epochs": 1, "batch_size": 32}
    base["backbone"] = {"dataset": "fashion-mnist", "steps": args.backbone_steps}
    single = {"entries": 1, "top_n": 1, "key_weight": 0.0}
    return {
        "fedins": {**base, "entries": args.entries, "top_n": args.top_n, "key_weight": 0.1},
        "federated SSF": {**base, **single},
        "head-only FedAvg": {**base, **single, "train": "head"},
        "full FedAvg": {**base, **single, "train": "all"},
    }


def _scenario(args: argparse.Namespace, beta: float, algorithm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "fedins-bench",
        "seed": 0,
        "task": {"dataset": "mnist-mixed", "model": "ssf-vit"},
        "fleet": {
            "groups": [{"profile": "rpi4", "count": args.clients}],
            "partition": {"kind": "dirichlet", "alpha": beta, "min_partition_size": 10},
        },
        "algorithm": algorithm,
        "rounds": args.rounds,
        "evaluation": {"every": args.rounds},
        "execution": {"engine": "inline"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fedins", description=__doc__)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--entries", type=int, default=25)
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--backbone-steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="β 0.5 only, 3 rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-fedins")
    args = parser.parse_args(argv)
    if args.quick:
        args.betas, args.rounds = [0.5], 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for beta in args.betas:
            for label, algorithm in _methods(args).items():
                path = Path(tmp) / f"{label.replace(' ', '-')}-{beta}.yaml"
                path.write_text(yaml.safe_dump(_scenario(args, beta, algorithm)), encoding="utf-8")
                out = args.out / f"beta{beta}" / label.replace(" ", "-")
                result = run(
                    path, out, overwrite=True, observer=ProgressObserver(f"{label} β={beta}")
                )
                s = result.summary
                last = read_rounds(result.out)[-1]
                rows.append(
                    (
                        beta,
                        label,
                        last["accuracy"],
                        s["per_device_round"]["bytes_up"],
                        s["wall_s"] / args.rounds,
                    )
                )
    full = {beta: up for beta, label, _, up, _ in rows if label == "full FedAvg"}
    lines = [
        f"### FedIns on mnist-mixed: {args.clients} clients, Dirichlet β, {args.rounds} rounds, "
        "one local epoch; backbone pre-trained on Fashion-MNIST",
        "",
        "| β | method | accuracy | bytes up / client / round | vs full FedAvg | wall s / round |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for beta, label, acc, up, wall in rows:
        lines.append(
            f"| {beta:g} | {label} | {acc:.4f} | {up:,.0f} | {up / full[beta]:.1%} | {wall:.1f} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fedins.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
