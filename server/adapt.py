"""Evaluation on held-out devices: adapt θ with a few samples, then score (design §6.2).

A meta-learned θ is judged by what it becomes on a device it never saw: each held-out natural group
of the test split (a sine task, a speaker, a writer, a subject, a room) starts from θ, takes
``steps`` SGD steps on ``support`` of its samples and is scored on its query samples. The support
samples are drawn once per run (seeded), so every evaluation adapts on the same ones and rounds
compare. Results are the mean over held-out devices with a 95% confidence interval (Student t),
and the mean score after each adaptation step (the adaptation curve).

``online`` adapts as the TinyReptile and TinyMetaFed papers evaluate: the support samples arrive
one at a time, in the order drawn (a seeded stream in which the classes take turns), and each gets
one SGD step of batch 1, once; the full-batch steps stay the default for the other scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedsim.core.data import TaskData
from fedsim.core.errors import FedsimError
from fedsim.core.models import set_arrays, sgd_step, task_loss
from fedsim.core.reduce import Arrays
from fedsim.core.scenario import AdaptSpec
from fedsim.core.seeds import derive_seed
from fedsim.core.stats import mean_ci95

__all__ = ["AdaptResult", "HeldOutDevice", "adapt_and_score", "held_out_devices", "mean_ci95"]


@dataclass(frozen=True)
class HeldOutDevice:
    group: int
    x_support: NDArray[np.float32]
    y_support: NDArray[np.generic]
    x_query: NDArray[np.float32]
    y_query: NDArray[np.generic]


@dataclass(frozen=True)
class AdaptResult:
    metric: str  # "accuracy" (higher is better) or "mse" (lower is better)
    mean: float  # after adaptation, over held-out devices
    ci95: float  # half-width of the 95% confidence interval of the mean
    before: float  # the same devices' query score of θ itself, no adaptation
    curve: tuple[float, ...]  # mean score after 0, 1, ..., steps adaptation steps
    per_device: tuple[float, ...]


def held_out_devices(data: TaskData, spec: AdaptSpec, seed: int) -> list[HeldOutDevice]:
    """The test split's natural groups as held-out devices, with their support samples drawn."""
    if data.groups_test is None:
        raise FedsimError(
            "evaluation.adapt",
            f"'{data.name}' has no held-out natural groups in its test split",
            "remove evaluation.adapt, or use a dataset with natural groups (fedsim data list)",
        )
    groups = np.unique(data.groups_test)
    train = data.groups_train if data.groups_train is not None else np.zeros(0, np.int64)
    seen = np.intersect1d(groups, train)
    if len(seen):
        raise FedsimError(
            "evaluation.adapt",
            f"'{data.name}''s test split shares {len(seen)} {data.group_kind or 'group'}(s) with "
            f"training (e.g. {int(seen[0])}): they are not held-out devices",
            "use a dataset whose test groups are unseen (e.g. presence-rooms instead of presence)",
        )
    if spec.max_devices is not None and len(groups) > spec.max_devices:
        rng = np.random.default_rng(derive_seed(seed, "adapt-devices"))
        groups = np.sort(rng.choice(groups, spec.max_devices, replace=False))
    devices = []
    for g in groups.tolist():
        rows = np.flatnonzero(data.groups_test == g)
        spare = 1 if spec.query == "rest" else 0  # a sample left to score on
        if len(rows) < spec.support + spare:
            raise FedsimError(
                "evaluation.adapt.support",
                f"held-out {data.group_kind or 'group'} {g} has {len(rows)} samples, too few for "
                f"{spec.support} support samples{' and one to score' if spare else ''}",
                f"set evaluation.adapt.support to at most {len(rows) - spare}",
            )
        rng = np.random.default_rng(derive_seed(seed, "adapt-support", g))
        order = _stratified(rows, data.y_test[rows], rng)
        # online: the support stays in stream order (it is the order the device sees them in)
        support = order[: spec.support] if spec.online else np.sort(order[: spec.support])
        query = rows if spec.query == "all" else np.sort(order[spec.support :])
        devices.append(
            HeldOutDevice(
                g,
                data.x_test[support],
                data.y_test[support],
                data.x_test[query],
                data.y_test[query],
            )
        )
    return devices


def _stratified(
    rows: NDArray[np.int64], y: NDArray[np.generic], rng: np.random.Generator
) -> NDArray[np.int64]:
    """``rows`` shuffled so that for class labels any prefix covers the classes evenly (K support
    samples of a 5-way task are K/5 per class, as in N-way K-shot); regression: just shuffled."""
    if y.dtype.kind == "f":
        return rng.permutation(rows)
    ranks = np.empty(len(rows), dtype=np.int64)  # position within its class, in random order
    for label in np.unique(y):
        mine = np.flatnonzero(y == label)
        ranks[mine] = rng.permutation(len(mine))
    ties = rng.permutation(len(rows))  # which class goes first within a rank
    return rows[np.lexsort((ties, ranks))]


@torch.no_grad()
def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    outputs = model(x)
    if y.is_floating_point():
        return float(task_loss(outputs, y).item())
    return float((outputs.argmax(dim=1) == y).float().mean().item())


def _adapt(
    model: nn.Module, theta: Arrays, device: HeldOutDevice, spec: AdaptSpec, seed: int
) -> list[float]:
    """One held-out device: θ, then ``head_steps`` on the head, then ``steps`` on everything;
    its query score before and after each step."""
    set_arrays(model, theta)
    xs, ys = torch.from_numpy(device.x_support), torch.from_numpy(device.y_support)
    xq, yq = torch.from_numpy(device.x_query), torch.from_numpy(device.y_query)
    head = list(
        [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1].parameters()
    )
    everything = list(model.parameters())
    batch, total, order = _plan(spec, len(ys), derive_seed(seed, "adapt-order", device.group))
    curve = [_score(model, xq, yq)]
    for step in range(total):
        rows = order[step * batch : (step + 1) * batch]
        model.train()
        params = head if step < spec.head_steps else everything
        sgd_step(params, task_loss(model(xs[rows]), ys[rows]), spec.lr)
        curve.append(_score(model, xq, yq))
    return curve


def _plan(spec: AdaptSpec, support: int, seed: int) -> tuple[int, int, torch.Tensor]:
    """(batch size, steps, the support rows in the order they are used): online, each sample
    once in stream order; else seeded permutations of the support, as many as the steps need."""
    if spec.online:
        return 1, support, torch.arange(support)
    batch = spec.batch_size or support
    total = spec.head_steps + spec.steps
    generator = torch.Generator().manual_seed(seed)
    passes = -(-total * batch // support) or 1
    order = torch.cat([torch.randperm(support, generator=generator) for _ in range(passes)])
    return batch, total, order


def adapt_and_score(
    model: nn.Module, theta: Arrays, devices: list[HeldOutDevice], spec: AdaptSpec, seed: int
) -> AdaptResult:
    """Adapt a copy of θ on each held-out device's support samples; score on its query."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the devices train; put back for the caller afterwards
    try:
        curves = np.array([_adapt(model, theta, d, spec, seed) for d in devices])
    finally:
        torch.set_num_threads(threads)
        set_arrays(model, theta)
    metric = "mse" if devices and devices[0].y_query.dtype.kind == "f" else "accuracy"
    mean, ci = mean_ci95(curves[:, -1])
    return AdaptResult(
        metric,
        mean,
        ci,
        float(curves[:, 0].mean()),
        tuple(float(v) for v in curves.mean(axis=0)),
        tuple(float(v) for v in curves[:, -1]),
    )
