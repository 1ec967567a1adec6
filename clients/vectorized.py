"""Train many devices of one architecture at once: ``torch.func`` over stacked parameters.

The maths is ``LocalSgd.train``'s, device by device: the same shuffles (each device's own
``torch.Generator``), the same batches, the same mean cross-entropy (plus FedProx's proximal term),
the same SGD update ``p ← p − lr·∇``. Only the kernels differ (batched matrix products instead of
one product per device), so results agree with the sequential loop to float32 rounding
(``tests/test_cohort.py`` bounds the difference), not bit for bit.

Only the parameters that train in ``LocalSgd`` train here: those with ``requires_grad`` (a frozen
backbone is a constant of the objective, never stepped; ``tests/test_cohort.py`` holds both paths to
the same frozen tensors). All devices given must have the same number of local samples (identical
batch schedules; the caller groups them); they train in chunks of ``CHUNK`` to bound memory. Models
with buffers (e.g. BatchNorm running statistics) are not vectorised: ``can_vectorize`` says so, and
the caller falls back to the sequential loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.core.algorithms import Learner
from fedsim.core.algorithms.local import LocalSgd
from fedsim.core.models import task_loss
from fedsim.core.reduce import Arrays

__all__ = ["CHUNK", "KERNELS", "BatchTrainer", "can_vectorize", "train_vectorized"]

CHUNK = 32  # devices per vectorised step; measured best of 16-128 for mlp-100 (cache-sized)
Batch = tuple[NDArray[np.float32], NDArray[Any]]


class BatchTrainer(Protocol):
    """Trains many devices of one learner at once, each as the learner's ``train`` would."""

    def supports(self, model: nn.Module) -> bool:
        """Whether this model can train batched (else the devices train one by one)."""
        ...

    def train_many(
        self, model: nn.Module, global_arrays: Arrays, data: Sequence[Batch], seeds: Sequence[int]
    ) -> list[tuple[Arrays, float]]:
        """``(arrays, mean loss)`` per device, in the order of ``data``: every parameter of
        ``model``, frozen ones (``requires_grad`` off) as received."""
        ...


def vectorizable(learner: Learner) -> BatchTrainer | None:
    """How to train many devices of ``learner`` at once, or None (one by one).

    A learner opts in with ``vectorized()``, returning either an object with ``train_many`` (a
    plugin's own ``BatchTrainer``) or a learner whose type ``KERNELS`` knows (a built-in returns
    itself when its exact type is the one the kernel reproduces: a subclass may train otherwise).
    """
    say = getattr(learner, "vectorized", None)
    spec = say() if callable(say) else None
    if spec is None:
        return None
    if callable(getattr(spec, "train_many", None)):
        return spec  # type: ignore[no-any-return]
    kernel = KERNELS.get(type(spec))
    return None if kernel is None else kernel(spec)


def can_vectorize(model: nn.Module, learner: Learner) -> bool:
    """Whether ``learner``'s devices can train batched on ``model``."""
    trainer = vectorizable(learner)
    return trainer is not None and trainer.supports(model)


def train_vectorized(
    model: nn.Module,
    global_arrays: Arrays,
    learner: Learner,
    data: Sequence[Batch],
    seeds: Sequence[int],
) -> list[tuple[Arrays, float]]:
    """``(arrays, mean loss)`` per device, in the order of ``data``: every parameter of ``model``
    (frozen ones as received)."""
    trainer = vectorizable(learner)
    if trainer is None:
        raise TypeError(f"cannot vectorise {type(learner).__name__}; use the sequential loop")
    return trainer.train_many(model, global_arrays, data, seeds)


def _orders(n: int, seeds: Sequence[int], epochs: int) -> torch.Tensor:
    """Each device's shuffles as ``LocalSgd.train`` draws them: ``[devices, epochs, n]``."""
    per_device = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        per_device.append(
            torch.stack([torch.randperm(n, generator=generator) for _ in range(epochs)])
        )
    return torch.stack(per_device)


def _train_chunk(
    model: nn.Module,
    start: dict[str, torch.Tensor],
    learner: LocalSgd,
    xs: torch.Tensor,
    ys: torch.Tensor,
    orders: torch.Tensor,
    trainable: frozenset[str],
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """``trainable``: the parameters that step; the others (frozen) are constants, shared by all
    devices of the chunk and returned unchanged."""
    devices, n = ys.shape
    names = [k for k in start if k in trainable]
    fixed = {k: v for k, v in start.items() if k not in trainable}

    def objective(
        params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss = task_loss(functional_call(model, {**fixed, **params}, (x,)), y)
        if learner.mu <= 0:
            return loss, loss.detach()
        drift = sum(((params[k] - start[k]) ** 2).sum() for k in names)
        return loss + 0.5 * learner.mu * drift, loss.detach()

    step = vmap(grad(objective, has_aux=True))
    params = {k: start[k].unsqueeze(0).repeat(devices, *([1] * start[k].dim())) for k in names}
    rows = torch.arange(devices).unsqueeze(1)
    totals = [0.0] * devices
    seen = 0
    for epoch in range(learner.epochs):
        for first in range(0, n, learner.batch_size):
            batch = orders[:, epoch, first : first + learner.batch_size]
            grads, losses = step(params, xs[rows, batch], ys[rows, batch])
            for k in names:  # in place: no fresh chunk-sized allocation per step
                params[k].add_(grads[k], alpha=-learner.lr)
            width = batch.shape[1]
            totals = [t + loss * width for t, loss in zip(totals, losses.tolist(), strict=True)]
            seen += width
    for k, v in fixed.items():  # frozen: every device returns the tensor it received
        params[k] = v.unsqueeze(0).expand(devices, *v.shape)
    return params, [t / max(seen, 1) for t in totals]


@dataclass(frozen=True)
class BatchedSgd:
    """``LocalSgd.train`` (FedProx's term included) for many devices at once; on models without
    buffers (BatchNorm's running statistics would need per-device copies)."""

    learner: LocalSgd

    def supports(self, model: nn.Module) -> bool:
        return not any(True for _ in model.buffers())

    def train_many(
        self, model: nn.Module, global_arrays: Arrays, data: Sequence[Batch], seeds: Sequence[int]
    ) -> list[tuple[Arrays, float]]:
        learner = self.learner
        sizes = {len(y) for _, y in data}
        if len(sizes) > 1:
            raise ValueError(
                f"devices of one vectorised group need equal sample counts, got {sizes}"
            )
        names = [name for name, _ in model.named_parameters()]
        trainable = frozenset(name for name, p in model.named_parameters() if p.requires_grad)
        start = {
            k: torch.from_numpy(np.asarray(a)) for k, a in zip(names, global_arrays, strict=True)
        }
        results: list[tuple[Arrays, float] | None] = [None] * len(data)
        model.train()
        with torch.no_grad():  # torch.func computes the gradients; no autograd graph is kept
            for c in range(0, len(data), CHUNK):
                chunk = range(c, min(c + CHUNK, len(data)))
                xs = torch.from_numpy(np.stack([data[i][0] for i in chunk]))
                ys = torch.from_numpy(np.stack([data[i][1] for i in chunk]))
                orders = _orders(len(data[c][1]), [seeds[i] for i in chunk], learner.epochs)
                params, losses = _train_chunk(model, start, learner, xs, ys, orders, trainable)
                stacked = [params[k].numpy() for k in names]
                for j, i in enumerate(chunk):
                    results[i] = ([s[j].copy() for s in stacked], losses[j])
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]


# the built-in learners' batched kernels, by the learner's exact type (``vectorizable``)
KERNELS: dict[type, Callable[[Any], BatchTrainer]] = {LocalSgd: BatchedSgd}
