"""Online federated meta-learning at equal device budgets (issue 7; design §6.2-6.4).

(The reproduction of the papers' claim, with tuned learning rates, seeds and resource to a target,
is ``benchmarks.reptile``; this one compares every family at the scenarios' own settings.)

For each family (a base scenario in ``scenarios/meta/``), every method gets the same device-side
budget: the same number of device rounds in total, and the same samples processed per device
round; the table then shows what each costs per device round (bytes up, simulated energy, peak
training RAM at its batch size) and how well θ adapts on held-out devices (mean ± 95% CI):

* **tinyreptile**: serial (one device per round), the base scenario's online steps;
* **tinyreptile b=1**: the same samples one at a time (online, batch 1: least RAM), the learning
  rate divided by the batch size so a round moves φ as far;
* **tinymetafed P=…**: serial, local head reconstructed (from zero) on the first batch, top-P
  upload; held-out devices reconstruct the head first too (half the adaptation steps, or online
  half the support samples, on the head, then all);
* **fedavg**: ``cohort`` devices per round, the same local steps, θ ← mean φᵢ (FedAvg with K local
  steps is batched Reptile with ε = 1, itself a first-order meta-learner: a strong baseline);
* **fedsgd**: the same devices and rounds, one step on all the samples: the jointly trained model;
* **sequential fine-tuning**: serial, θ ← each device's φ (ε = 1 throughout);
* **local-only**: no federation; each held-out device adapts the untrained θ₀.

``--reference`` adds FedAvg at ``cohort`` × the budget (the design §6.4 reference row).

    .venv/bin/python -m benchmarks.meta [--family NAME|all] [--quick] [--reference]
        [--out results/bench-meta]          # NAME: sine kws har presence kanjivg omniglot

A method whose training does not fit the family's device is skipped by the memory model (0 device
rounds trained); its row says so, and it runs again on an ESP32-S3 (512 KB SRAM, BLE).

Prints one table per family and writes ``<out>/<family>.md``, ``.csv`` and ``.png`` (adapted score
vs device rounds spent, per method). ``--quick`` divides the budget by 10 (a smoke run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedsim.core.data import load_task_data
from fedsim.core.models import build_model, get_arrays
from fedsim.core.results import read_rounds
from fedsim.core.scenario_load import load_scenario
from fedsim.core.seeds import derive_seed
from fedsim.progress import ProgressObserver
from fedsim.runner import run
from server.adapt import adapt_and_score, held_out_devices

ROOT = Path(__file__).resolve().parents[1]
ROOMY = {"profile": "esp32-s3", "link": "ble"}  # 512 KB of SRAM, for methods a Nano cannot hold
META = ROOT / "scenarios" / "meta"


@dataclass(frozen=True)
class Family:
    base: str  # scenario file in scenarios/meta (a tinyreptile scenario)
    budget: int  # device rounds per method
    cohort: int  # devices per round for FedAvg / FedSGD
    tops: tuple[float, ...] = (0.25,)  # TinyMetaFed's P values


FAMILIES = {
    "sine": Family("sine-tinyreptile.yaml", 3000, 10, (0.1, 0.25, 0.5)),
    "kws": Family("kws-tinyreptile.yaml", 400, 10),
    "har": Family("har-tinyreptile.yaml", 400, 7),
    "presence": Family("presence-tinyreptile.yaml", 400, 8),
    "kanjivg": Family("kanjivg-tinyreptile.yaml", 2000, 10),
    "omniglot": Family("omniglot-tinyreptile.yaml", 2000, 10),
}


@dataclass(frozen=True)
class Row:
    method: str
    device_rounds: int
    trained: int  # device rounds that delivered (not skipped for memory, cut or failed)
    samples: float  # per device round
    bytes_up: float  # per device round
    energy_mj: float  # per device round
    train_ram_kb: float
    metric: str
    adapted: float
    ci95: float
    before: float
    wall_s: float
    sim_h: float = 0.0  # simulated time the whole run took (rounds run one after another)
    curve: tuple[tuple[int, float], ...] = ()  # (device rounds spent, adapted score)


def _methods(base: dict[str, Any], family: Family, budget: int, reference: bool) -> list[Any]:
    """(label, scenario overrides) per method, all at ``budget`` device rounds."""
    reptile = base["algorithm"]
    steps, batch, lr = reptile["steps"], reptile["batch_size"], reptile["lr"]
    samples = steps * batch
    every = max(1, budget // 12)
    serial = {"clients_per_round": 1, "rounds": budget, "evaluation": _every(base, every)}
    rounds = max(1, budget // family.cohort)
    cohort = {
        "clients_per_round": family.cohort,
        "rounds": rounds,
        "evaluation": _every(base, max(1, every // family.cohort)),
    }
    # FedAvg with K local steps per round is batched Reptile with ε = 1 (θ ← mean φᵢ): run it that
    # way, so every device processes exactly the same samples as in the serial methods (FedAvg's
    # epochs over a natural device's whole data would not); FedSGD is one step on all of them.
    averaged = {**reptile, "epsilon": 1.0, "schedule": "constant"}
    out: list[Any] = [
        ("tinyreptile", {**serial, "algorithm": reptile}),
        (
            "tinyreptile b=1",
            {
                **serial,
                "algorithm": {**reptile, "steps": samples, "batch_size": 1, "lr": lr / batch},
            },
        ),
    ]
    for top in family.tops:
        meta = {
            **reptile,
            "kind": "tinymetafed",
            "support_steps": 1,
            "steps": steps - 1,  # equal samples: 1 support + (steps − 1) query batches
            "top_p": top,
            "local": "head",
        }
        # a new device reconstructs the head first, as TinyMetaFed's devices do (same total steps)
        adapt = dict(serial["evaluation"]["adapt"])
        if adapt.get("online"):  # online: the first half of the support samples train the head
            adapt["head_steps"] = adapt["support"] // 2
        else:
            adapt["head_steps"] = adapt.get("steps", 32) // 2
            adapt["steps"] = adapt.get("steps", 32) - adapt["head_steps"]
        evaluation = {**serial["evaluation"], "adapt": adapt}
        out.append(
            (f"tinymetafed P={top:g}", {**serial, "algorithm": meta, "evaluation": evaluation})
        )
    out += [
        (f"fedavg ({steps} local steps)", {**cohort, "algorithm": averaged}),
        (
            f"fedsgd (1 step of {samples})",
            {**cohort, "algorithm": {**averaged, "steps": 1, "batch_size": samples}},
        ),
        ("sequential fine-tuning", {**serial, "algorithm": averaged}),
    ]
    if reference:
        far = {**cohort, "rounds": budget, "evaluation": _every(base, every)}
        out.append((f"fedavg x{family.cohort} budget", {**far, "algorithm": averaged}))
    return out


def _every(base: dict[str, Any], every: int) -> dict[str, Any]:
    return {**base["evaluation"], "every": every}


def _run(
    label: str, base: dict[str, Any], overrides: dict[str, Any], folder: Path, out: Path
) -> Row:
    scenario = {**base, **overrides, "name": f"{base['name']}-{_slug(label)}"}
    scenario.pop("extends", None)
    path = folder / f"{_slug(label)}.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
    result = run(path, out / _slug(label), overwrite=True, observer=ProgressObserver(label))
    s = result.summary
    per, adapted = s["per_device_round"], s["adapted"]
    cohort = scenario.get("clients_per_round") or 1
    curve = tuple(
        (r["round"] * cohort, r["adapted"]) for r in read_rounds(result.out) if r["adapted"]
    )
    return Row(
        label,
        s["rounds"] * cohort,
        s["device_rounds"]["trained"],
        per["samples"],
        per["bytes_up"],
        per["energy_mj"],
        s["train_ram_bytes"] / 1000,
        adapted["metric"],
        adapted["mean"],
        adapted["ci95"],
        adapted["before"],
        s["wall_s"],
        s["sim_time_s"] / 3600,
        curve,
    )


def _local_only(base_path: Path) -> Row:
    """Each held-out device adapts the untrained θ₀ alone: no federation at all."""
    scenario = load_scenario(base_path)
    assert scenario.evaluation.adapt is not None
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = build_model(
        scenario.task.model, data.num_features, data.num_outputs, derive_seed(scenario.seed, "init")
    )
    devices = held_out_devices(data, scenario.evaluation.adapt, scenario.seed)
    result = adapt_and_score(
        model, get_arrays(model), devices, scenario.evaluation.adapt, scenario.seed
    )
    return Row(
        "local-only", 0, 0, 0, 0, 0, 0, result.metric, result.mean, result.ci95, result.before, 0
    )


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in label).strip("-")


def _table(family: str, rows: list[Row], budget: int) -> str:
    metric = rows[0].metric
    better = "lower is better" if metric == "mse" else "higher is better"
    lines = [
        f"### {family}: {budget} device rounds per method; held-out devices' {metric} after "
        f"adaptation ({better})",
        "",
        "| method | device rounds | trained | samples / dev-round | bytes up / dev-round | "
        f"energy mJ / dev-round | train RAM KB | {metric} adapted (95% CI) | {metric} before "
        "| simulated h | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.device_rounds} | {r.trained} | {r.samples:.0f} | "
            f"{r.bytes_up:,.0f} | "
            f"{r.energy_mj:.3g} | {r.train_ram_kb:.1f} | {r.adapted:.4g} ± {r.ci95:.2g} | "
            f"{r.before:.4g} | {r.sim_h:.3g} | {r.wall_s:.0f} |"
        )
    return "\n".join(lines)


def _plot(family: str, rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for r in rows:
        if r.curve:
            x, y = zip(*r.curve, strict=True)
            ax.plot(x, y, marker="o", ms=2, label=r.method)
        else:
            ax.axhline(r.adapted, ls="--", color="grey", label=r.method)
    metric = rows[0].metric
    ax.set(xlabel="device rounds spent", ylabel=f"{metric} after adaptation", title=family)
    finite = [y for r in rows for _, y in r.curve if math.isfinite(y) and y > 0]
    if metric == "mse" and finite:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench(family: str, out: Path, quick: bool, reference: bool) -> list[Row]:
    spec = FAMILIES[family]
    base_path = META / spec.base
    base = load_scenario(base_path).model_dump(mode="json", exclude_none=True)
    budget = spec.budget // 10 if quick else spec.budget
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in _methods(base, spec, budget, reference):
            row = _run(label, base, overrides, Path(tmp), out / family)
            rows.append(row)
            if row.trained == 0 and len(base["fleet"]["groups"]) == 1:
                # it does not fit the family's device: say so, and measure it on a bigger MCU
                rows[-1] = replace(row, method=f"{label} (does not fit: skipped)")
                roomy = {**base["fleet"], "groups": [{**base["fleet"]["groups"][0], **ROOMY}]}
                bigger = f"{label} on {ROOMY['profile']}"
                rows.append(
                    _run(bigger, base, {**overrides, "fleet": roomy}, Path(tmp), out / family)
                )
    rows.append(_local_only(base_path))
    out.mkdir(parents=True, exist_ok=True)
    table = _table(family, rows, budget)
    (out / f"{family}.md").write_text(table + "\n", encoding="utf-8")
    with (out / f"{family}.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([k for k in Row.__dataclass_fields__ if k != "curve"])
        for r in rows:
            writer.writerow([getattr(r, k) for k in Row.__dataclass_fields__ if k != "curve"])
    (out / f"{family}-curves.json").write_text(
        json.dumps({r.method: r.curve for r in rows}, indent=1), encoding="utf-8"
    )
    _plot(family, rows, out / f"{family}.png")
    print(table, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.meta", description=__doc__)
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="sine")
    parser.add_argument("--quick", action="store_true", help="a tenth of the budget")
    parser.add_argument("--reference", action="store_true", help="add FedAvg at cohort × budget")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-meta")
    args = parser.parse_args(argv)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    for family in families:
        bench(family, args.out, args.quick, args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
