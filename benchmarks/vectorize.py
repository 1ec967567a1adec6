"""Batched device training (``clients.vectorized``) vs each learner's own loop, per learner.

For every case the same devices (unequal sample counts, seeded) train one round from the same
global model twice, in this process on one thread: one by one with ``learner.train`` on one model
(what a cohort worker does without ``execution.vectorize``), and all at once with
``train_vectorized``, each the best of 3 timings. Prints a markdown table: device-rounds per
second both ways, the speed-up, and the largest parameter difference between the two (the cohort
tests' tolerance is 1e-5).

    .venv/bin/python -m benchmarks.vectorize [--quick] [--devices D] [--cases a,b]

A case is one ``Case`` entry in ``CASES``: a learner, the model and the data the scenarios give it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.vectorized import train_vectorized
from fedsim.core.algorithms import Learner
from fedsim.core.algorithms.feature_norm import with_feature_norm
from fedsim.core.algorithms.local import LocalSgd, OnlineHeadLearner, OnlineSteps
from fedsim.core.algorithms.ssf import FedInsNet, SsfViT
from fedsim.core.algorithms.tinymetafed import ReconstructThenUpdate
from fedsim.core.models import build_model, get_arrays, set_arrays
from fedsim.core.reduce import Arrays

WARM_UP = 8  # devices trained untimed first, each way
TOLERANCE = 1e-5  # tests/test_cohort.py: vectorised vs per-device final model
Data = list[tuple[Any, Any]]


def classes(features: int, outputs: int, low: int, high: int) -> Callable[[int, int], Data]:
    """Gaussian inputs, uniform class labels; ``low``–``high`` samples a device."""

    def make(devices: int, seed: int) -> Data:
        rng = np.random.default_rng(seed)
        data = []
        for n in rng.integers(low, high + 1, devices):
            x = rng.normal(size=(n, features)).astype(np.float32)
            data.append((x, rng.integers(0, outputs, n).astype(np.int64)))
        return data

    return make


def sine(low: int, high: int) -> Callable[[int, int], Data]:
    """One sine wave A·sin(x + φ) a device (``fedsim.core.datasets.sine``'s tasks)."""

    def make(devices: int, seed: int) -> Data:
        rng = np.random.default_rng(seed)
        data = []
        for n in rng.integers(low, high + 1, devices):
            amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
            x = rng.uniform(-5.0, 5.0, size=(n, 1)).astype(np.float32)
            data.append((x, (amplitude * np.sin(x + phase)).astype(np.float32)))
        return data

    return make


@dataclass(frozen=True)
class Case:
    """A learner with the settings of a shipped scenario, on its model and data shapes."""

    name: str
    learner: Learner
    model: str
    features: int
    outputs: int
    data: Callable[[int, int], Data]  # (devices, seed) → each device's (x, y)
    build: Callable[[], nn.Module] | None = None  # default: the registry's ``model``
    most: int | None = None  # devices at most (a slow model)

    def fresh(self) -> nn.Module:
        """The model, as every device receives it."""
        if self.build is not None:
            return self.build()
        return build_model(self.model, self.features, self.outputs, 0)


def fedins_pool() -> nn.Module:
    """FedIns's pool (25 entries, top 3) on an untrained 28×28 SSF ViT of the default size
    (dim 64, depth 4): its pre-training does not change the cost of a step."""
    torch.manual_seed(0)
    return FedInsNet(SsfViT(side=28, patch=7, dim=64, depth=4, heads=4), 10, 25, 3, 0)


CASES = [  # settings from scenarios/quickstart*.yaml, scenarios/meta/*.yaml, scenarios/fedins/*
    Case("fedavg", LocalSgd(0.1, 2, 16), "mlp", 64, 10, classes(64, 10, 60, 300)),
    Case("fedprox", LocalSgd(0.1, 2, 16, mu=0.05), "mlp", 64, 10, classes(64, 10, 60, 300)),
    Case("tinyreptile", OnlineSteps(0.05, 5, 10), "mlp", 784, 5, classes(784, 5, 25, 50)),
    Case("tinyreptile-sine", OnlineSteps(0.02, 5, 10), "tanh-64x2", 1, 1, sine(30, 50)),
    Case(
        "tinymetafed",
        ReconstructThenUpdate(0.02, 5, 2, 10, True, 1),
        "tanh-64x2",
        1,
        1,
        sine(50, 70),
    ),
    Case("tinyol", OnlineHeadLearner(0.05, 1), "mlp-100", 561, 6, classes(561, 6, 10, 20)),
    Case(
        "tinyol-normalized",
        OnlineHeadLearner(0.05, 3),
        "mlp-100",
        561,
        6,
        classes(561, 6, 10, 20),
        lambda: with_feature_norm(build_model("mlp-100", 561, 6, 0)),
    ),
    Case(
        "fedins",
        LocalSgd(0.05, 1, 32, key_weight=0.1),
        "ssf-vit",
        784,
        10,
        classes(784, 10, 40, 120),
        fedins_pool,
        most=32,
    ),
]


def sequential(case: Case, start: Arrays, data: Data, seeds: list[int]) -> list[Arrays]:
    model = case.fresh()
    trained = []
    for (x, y), seed in zip(data, seeds, strict=True):
        set_arrays(model, start)
        case.learner.train(model, x, y, seed, {})
        trained.append(get_arrays(model))
    return trained


def vectorised(case: Case, start: Arrays, data: Data, seeds: list[int]) -> list[Arrays]:
    model = case.fresh()
    return [arrays for arrays, _ in train_vectorized(model, start, case.learner, data, seeds)]


def measure(case: Case, devices: int, repeats: int) -> dict[str, Any]:
    devices = min(devices, case.most or devices)
    data = case.data(devices, 0)
    seeds = list(range(1, devices + 1))
    start = get_arrays(case.fresh())
    timed = {}
    results = {}
    for label, train in (("sequential", sequential), ("vectorised", vectorised)):
        train(case, start, data[:WARM_UP], seeds[:WARM_UP])  # first calls: allocations, dispatch
        best = float("inf")
        for _ in range(repeats):  # the best of a few: the machine may be shared
            began = time.perf_counter()
            results[label] = train(case, start, data, seeds)
            best = min(best, time.perf_counter() - began)
        timed[label] = devices / best
    worst = max(
        float(np.abs(a - b).max())
        for one, other in zip(results["sequential"], results["vectorised"], strict=True)
        for a, b in zip(one, other, strict=True)
    )
    sizes = [len(y) for _, y in data]
    return {
        "learner": f"{case.name} ({type(case.learner).__name__})",
        "model": f"{case.model} {case.features}→{case.outputs}",
        "devices": f"{devices} ({min(sizes)}–{max(sizes)} samples)",
        "sequential/s": f"{timed['sequential']:,.0f}",
        "vectorised/s": f"{timed['vectorised']:,.0f}",
        "speed-up": f"{timed['vectorised'] / timed['sequential']:.1f}×",
        "max |Δ|": f"{worst:.1e}",
        "within 1e-5": "yes" if worst <= TOLERANCE else "no",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 devices, timed once (not 256, 3)")
    parser.add_argument("--devices", type=int, help="devices per case")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a cohort worker runs: one core
    devices = args.devices or (32 if args.quick else 256)
    wanted = set(args.cases.split(",")) if args.cases else {c.name for c in CASES}
    repeats = 1 if args.quick else 3
    rows = [measure(case, devices, repeats) for case in CASES if case.name in wanted]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
