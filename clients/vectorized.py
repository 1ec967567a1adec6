"""Train many devices of one architecture at once: each learner's batched kernel.

Each kernel reproduces one learner's ``train``, device by device: the same draws (each device's own
``torch.Generator``), the same batches, the same mean loss (plus FedProx's proximal term and
FedIns's key loss), the same SGD update ``p ← p − lr·∇``. Only the arithmetic differs (batched
matrix products instead of one product per device), so results agree with the learner to float32
rounding (``tests/test_vectorized_learners.py`` bounds the difference), not bit for bit. The
steps themselves, unequal sample counts and frozen parameters included, are
``clients.batched_steps``'s. Models with buffers (e.g. BatchNorm running statistics) are not
vectorised: ``supports`` says so, and the caller falls back to the sequential loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from clients.batched_steps import CHUNK, Batch, Phase, Rule, no_buffers, padded_phase, train_phases
from fedsim.core.algorithms import Learner
from fedsim.core.algorithms.batched_head import BatchedOnlineHead
from fedsim.core.algorithms.local import LocalSgd, OnlineHeadLearner, OnlineSteps, stream_order
from fedsim.core.algorithms.tinymetafed import ReconstructThenUpdate
from fedsim.core.models import head_parameters
from fedsim.core.reduce import Arrays

__all__ = [
    "CHUNK",
    "KERNELS",
    "BatchTrainer",
    "BatchedOnlineSteps",
    "BatchedReconstruct",
    "BatchedSgd",
    "can_vectorize",
    "train_vectorized",
    "vectorizable",
]


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


class _Phased:
    """A kernel that describes its learner's round as ``phases`` and trains them with
    ``train_phases`` by its ``rule`` (plain SGD at the learner's rate unless it says otherwise);
    models with buffers train one by one."""

    learner: Any

    def supports(self, model: nn.Module) -> bool:
        return no_buffers(model)

    def rule(self) -> Rule:
        return Rule(self.learner.lr)

    def phases(
        self, model: nn.Module, trainable: frozenset[str], sizes: list[int], seeds: list[int]
    ) -> list[Phase]:
        raise NotImplementedError

    def train_many(
        self, model: nn.Module, global_arrays: Arrays, data: Sequence[Batch], seeds: Sequence[int]
    ) -> list[tuple[Arrays, float]]:
        return train_phases(model, global_arrays, data, seeds, self.phases, self.rule())


@dataclass(frozen=True)
class BatchedSgd(_Phased):
    """``LocalSgd.train`` (FedProx's term included) for many devices at once: per epoch a
    ``randperm`` of each device's samples, cut into batches (the last one short)."""

    learner: LocalSgd

    def supports(self, model: nn.Module) -> bool:
        keyed = self.learner.key_weight == 0 or hasattr(model, "last_key_loss")
        return keyed and no_buffers(model)

    def rule(self) -> Rule:
        learner = self.learner
        return Rule(learner.lr, learner.mu, learner.key_weight)

    def phases(
        self, model: nn.Module, trainable: frozenset[str], sizes: list[int], seeds: list[int]
    ) -> list[Phase]:
        epochs, width = self.learner.epochs, self.learner.batch_size
        rows, valid = [], []
        for n, seed in zip(sizes, seeds, strict=True):
            generator = torch.Generator().manual_seed(seed)
            batches = -(-n // width)  # per epoch, the last one short
            order = torch.zeros(epochs, batches * width, dtype=torch.long)
            real = torch.zeros(epochs, batches * width, dtype=torch.bool)
            for e in range(epochs):
                order[e, :n] = torch.randperm(n, generator=generator)
                real[e, :n] = True
            rows.append(order.reshape(-1, width))
            valid.append(real.reshape(-1, width))
        return [padded_phase(rows, valid, stepping=trainable)]


@dataclass(frozen=True)
class BatchedOnlineSteps(_Phased):
    """``OnlineSteps.train`` (TinyReptile) for many devices at once: ``steps`` whole batches from
    each device's ``stream_order``, so every device takes the same number of steps."""

    learner: OnlineSteps

    def phases(
        self, model: nn.Module, trainable: frozenset[str], sizes: list[int], seeds: list[int]
    ) -> list[Phase]:
        width = self.learner.batch_size
        length = self.learner.steps * width
        rows = [
            stream_order(n, length, seed).reshape(-1, width)
            for n, seed in zip(sizes, seeds, strict=True)
        ]
        return [padded_phase(rows, None, stepping=trainable)]


@dataclass(frozen=True)
class BatchedReconstruct(_Phased):
    """``ReconstructThenUpdate.train`` (TinyMetaFed) for many devices at once: the head steps on
    the support batches (``support_passes`` times over them), the rest on the query batches;
    only the query losses count."""

    learner: ReconstructThenUpdate

    def phases(
        self, model: nn.Module, trainable: frozenset[str], sizes: list[int], seeds: list[int]
    ) -> list[Phase]:
        learner, width = self.learner, self.learner.batch_size
        support = learner.support_steps * width if learner.local_head else 0
        head = frozenset(head_parameters(model)) if learner.local_head else frozenset()
        orders = [
            stream_order(n, support + learner.steps * width, seed)
            for n, seed in zip(sizes, seeds, strict=True)
        ]
        query = [o[support:].reshape(-1, width) for o in orders]
        phases = [padded_phase(query, None, stepping=trainable - head)]
        if support:
            passes = [o[:support].repeat(learner.support_passes).reshape(-1, width) for o in orders]
            phases.insert(0, padded_phase(passes, None, stepping=trainable & head, counted=False))
        return phases


# the built-in learners' batched kernels, by the learner's exact type (``vectorizable``)
KERNELS: dict[type, Callable[[Any], BatchTrainer]] = {
    LocalSgd: BatchedSgd,
    OnlineSteps: BatchedOnlineSteps,
    ReconstructThenUpdate: BatchedReconstruct,
    OnlineHeadLearner: BatchedOnlineHead,
}
