"""The runners of the simulation-overhead benchmark (design §3.1): one workload, five ways.

The workload: a 784-100-10 MLP (``mlp-100``), 32 generated ``blobs-784`` samples per client, one
local epoch, batch 16, SGD lr 0.05, FedAvg. Every runner starts from fedsim's initial model and
trains each device with fedsim's seed for it, so their final accuracies should agree when every
device trains every round. With fewer per round (the million-device workload), plain and stock
draw uniformly from all registered devices while fedsim draws from those online: the same number
of device-rounds, not the same devices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from numpy.typing import NDArray

from devices.fleet import load_fleet
from fedsim.core.algorithms.local import LocalSgd
from fedsim.core.models import build_model, get_arrays, set_arrays
from fedsim.core.seeds import derive_seed
from fedsim.runner import run
from server.evaluate import evaluate

__all__ = ["RUNNERS", "Runner", "write_scenario"]

MODEL, LR, EPOCHS, BATCH = "mlp-100", 0.05, 1, 16
Arrays = list[NDArray[np.float32]]
# (scenario path, scratch folder) → (final test accuracy, device failures)
RunFn = Callable[[Path, Path], tuple[float, int]]


def _model(scenario_path: Path, arrays: Arrays | None = None) -> torch.nn.Module:
    """An ``mlp-100``: fedsim's initial global model, or holding ``arrays``."""
    scenario, fleet = load_fleet(scenario_path)  # cached per process
    seed = derive_seed(scenario.seed, "init")
    model = build_model(MODEL, fleet.data.num_features, fleet.data.num_outputs, seed)
    if arrays is not None:
        set_arrays(model, arrays)
    return model


def _accuracy(scenario_path: Path, arrays: Arrays) -> float:
    _, fleet = load_fleet(scenario_path)
    return evaluate(_model(scenario_path, arrays), fleet.data.x_test, fleet.data.y_test)[0]


def _train_one(scenario_path: Path, model: torch.nn.Module, round_: int, device: int) -> Arrays:
    """One device's training, from the global model in ``model``, as fedsim's ClientApp does it."""
    scenario, fleet = load_fleet(scenario_path)
    x, y = fleet.local_data(device)
    seed = derive_seed(scenario.seed, "train", round_, device)  # rounds count from 1
    LocalSgd(lr=LR, epochs=EPOCHS, batch_size=BATCH).train(model, x, y, seed)
    return get_arrays(model)


def _run_plain(scenario_path: Path, scratch: Path) -> tuple[float, int]:
    """The floor: the same training as one loop; FedAvg as a running example-weighted sum."""
    torch.set_num_threads(1)
    scenario, fleet = load_fleet(scenario_path)
    model = _model(scenario_path)
    global_ = get_arrays(model)
    per_round = scenario.clients_per_round
    for round_ in range(1, scenario.rounds + 1):
        devices: Iterable[int] = range(len(fleet))
        if per_round is not None and per_round < len(fleet):  # uniform, availability ignored
            rng = np.random.default_rng(derive_seed(scenario.seed, "plain", round_))
            devices = rng.choice(len(fleet), size=per_round, replace=False).tolist()
        total = [np.zeros(a.shape, dtype=np.float64) for a in global_]
        examples = 0
        for device in devices:
            set_arrays(model, global_)
            update = _train_one(scenario_path, model, round_, device)
            weight = fleet[device].num_examples
            examples += weight
            for acc, a in zip(total, update, strict=True):
                acc += weight * a
        global_ = [(acc / examples).astype(np.float32) for acc in total]
    return _accuracy(scenario_path, global_), 0


def _run_stock(scenario_path: Path, scratch: Path) -> tuple[float, int]:
    """Stock Flower: a ClientApp per client, the built-in FedAvg, ``run_simulation`` on Ray."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    torch.set_num_threads(1)
    scenario, fleet = load_fleet(scenario_path)
    n, rounds = len(fleet), scenario.rounds
    client_app, server_app, final = ClientApp(), ServerApp(), []

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        device = int(context.node_config["partition-id"])
        round_ = int(msg.content["config"]["server-round"])  # type: ignore[arg-type]
        torch.set_num_threads(1)
        arrays = msg.content["arrays"].to_numpy_ndarrays()  # type: ignore[union-attr]
        update = _train_one(scenario_path, _model(scenario_path, arrays), round_, device)
        examples = load_fleet(scenario_path)[1][device].num_examples
        reply = RecordDict(
            {"arrays": ArrayRecord(update), "metrics": MetricRecord({"num-examples": examples})}
        )
        return Message(reply, reply_to=msg)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        k = scenario.clients_per_round or n
        strategy = FedAvg(
            fraction_train=k / n, fraction_evaluate=0.0, min_train_nodes=k, min_available_nodes=n
        )
        initial = ArrayRecord(get_arrays(_model(scenario_path)))
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
        final.append(result.arrays.to_numpy_ndarrays())

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": 2,
                "num_gpus": 0,
                "include_dashboard": False,
                "log_to_driver": False,
            },
        },
    )
    if not final:
        raise RuntimeError("stock Flower's ServerApp ended without a result; see the log above")
    return _accuracy(scenario_path, final[0]), 0


def _fedsim(engine: Literal["ray", "inline"]) -> RunFn:
    def run_fedsim(scenario_path: Path, scratch: Path) -> tuple[float, int]:
        summary = run(scenario_path, scratch / "out", overwrite=True, engine=engine).summary
        if summary.get("status") != "completed":
            raise RuntimeError(f"fedsim run {summary.get('status')}: {summary.get('error')}")
        return float(summary["final_accuracy"]), int(summary.get("failures", 0))

    return run_fedsim


@dataclass(frozen=True)
class Runner:
    run: RunFn
    execution: dict[str, Any]  # the scenario's execution block; stock and plain ignore it
    # how it draws clients_per_round: fedsim's selection (online devices), or uniformly from all
    # registered (plain: a seeded draw; stock: FedAvg's fraction_train), availability ignored
    selection: Literal["fedsim", "uniform"]


_PER_DEVICE = {"mode": "per-device", "engine": "ray", "actors": 2}
RUNNERS: dict[str, Runner] = {
    "stock": Runner(_run_stock, _PER_DEVICE, "uniform"),
    "plain": Runner(_run_plain, _PER_DEVICE, "uniform"),
    "fedsim-per-device": Runner(_fedsim("ray"), _PER_DEVICE, "fedsim"),
    "fedsim-cohort": Runner(_fedsim("ray"), {**_PER_DEVICE, "mode": "cohort"}, "fedsim"),
    "fedsim-cohort-inline": Runner(
        _fedsim("inline"), {**_PER_DEVICE, "mode": "cohort", "engine": "inline"}, "fedsim"
    ),
}


def write_scenario(
    path: Path, runner: str, n: int, rounds: int, k: int | None, base: Path | None = None
) -> None:
    """The benchmark's scenario: ``n`` rpi4 devices, ``k`` of them per round (default: all); or,
    with ``base``, that shipped scenario with the runner's execution block (``n``, ``rounds`` and
    ``k`` must be the base's)."""
    if base is not None:
        scenario: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8"))
        got = (sum(g["count"] for g in scenario["fleet"]["groups"]), scenario["rounds"])
        if (*got, scenario.get("clients_per_round")) != (n, rounds, k):
            raise ValueError(f"{base}: {got} devices × rounds, not {n}×{rounds} ({k}/round)")
        scenario["name"] = f"bench-{runner}-{base.stem}"
        scenario["execution"] = RUNNERS[runner].execution
        path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
        return
    scenario = {
        "name": f"bench-{runner}-{n}x{rounds}",
        "seed": 0,
        "task": {"dataset": "blobs-784", "model": MODEL},
        "fleet": {"groups": [{"profile": "rpi4", "count": n}]},
        "algorithm": {"kind": "fedavg", "lr": LR, "local_epochs": EPOCHS, "batch_size": BATCH},
        "rounds": rounds,
        "evaluation": {"every": rounds},
        "execution": RUNNERS[runner].execution,
    }
    if k is not None:
        scenario["clients_per_round"] = k
    path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
