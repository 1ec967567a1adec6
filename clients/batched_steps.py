"""The engine of ``clients.vectorized``'s kernels: SGD steps for many devices at once, with
``torch.func`` over parameters stacked ``[devices, ...]``.

A kernel describes a device's round as ``Phase``s: per step, each device's sample rows, which of
them are real, and which parameters step; ``Rule`` says what is minimised. Devices with unequal
sample counts share one batched step: a short last batch is padded and masked out of the mean
loss, and a device whose round has fewer steps sits out the extra ones (its parameters do not
move, FedProx's drift gradient included). A batch-mean term the model computes itself (FedIns's
key loss) cannot be masked: such a step runs unpadded, one batched step per batch width. Devices
are sorted by sample count and trained in chunks of ``CHUNK``, so padding stays small and memory
bounded. Only parameters with ``requires_grad`` ever step (a frozen backbone is a constant of the
objective, returned as received).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.core.models import task_loss
from fedsim.core.reduce import Arrays

__all__ = [
    "CHUNK",
    "Batch",
    "Phase",
    "Rule",
    "Schedule",
    "no_buffers",
    "padded_phase",
    "train_phases",
]

CHUNK = 32  # devices per vectorised step; measured best of 16-128 for mlp-100 (cache-sized)
Batch = tuple[NDArray[np.float32], NDArray[Any]]
Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """A stretch of a round in which the same parameters step, for a chunk of devices.

    ``rows[d, s]``: the indices (into device d's own samples) of its batch at step s;
    ``valid[d, s]``: which of them are real (False: padding of a short batch, or no batch at all);
    both ``[devices, steps, batch_size]``. ``stepping``: the parameters that step (the others
    are held); ``counted``: whether its losses make the reported mean loss."""

    rows: torch.Tensor
    valid: torch.Tensor
    stepping: frozenset[str]
    counted: bool = True


# (model, trainable parameter names, sample counts, seeds) → the chunk's phases, in order
Schedule = Callable[[nn.Module, frozenset[str], list[int], list[int]], list[Phase]]


@dataclass(frozen=True)
class Rule:
    """The objective and step: SGD at ``lr`` on the mean task loss, plus FedProx's
    ``mu``/2·‖w − w_t‖², then (1 − λ)·that + λ·``model.last_key_loss`` (``key_weight`` λ, the key
    term FedIns's model computes in its forward, a mean over the batch)."""

    lr: float
    mu: float = 0.0
    key_weight: float = 0.0


def _padded(parts: Sequence[torch.Tensor], fill: int | bool) -> torch.Tensor:
    """Per-device ``[steps_d, batch]`` tensors as one ``[devices, max steps, batch]``."""
    most = max(len(p) for p in parts)
    out = torch.full((len(parts), most, parts[0].shape[1]), fill, dtype=parts[0].dtype)
    for d, part in enumerate(parts):
        out[d, : len(part)] = part
    return out


def padded_phase(
    rows: Sequence[torch.Tensor], valid: Sequence[torch.Tensor] | None, **kw: Any
) -> Phase:
    """A phase from each device's ``[steps, batch]`` rows (and validity; None: all real)."""
    masks = valid or [torch.ones(r.shape, dtype=torch.bool) for r in rows]
    return Phase(_padded(rows, 0), _padded(masks, False), **kw)


def _masked_loss(outputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``task_loss`` over the real samples of a padded batch (0 where there are none)."""
    weight = valid.to(outputs.dtype)
    if targets.is_floating_point():  # mean squared error: per sample, the mean over its outputs
        if targets.shape != outputs.shape:  # a broadcast would mix samples (and padding) in
            raise ValueError(f"targets {tuple(targets.shape)} vs outputs {tuple(outputs.shape)}")
        each = ((outputs - targets) ** 2).reshape(weight.shape[0], -1).mean(1)
    else:
        each = nn.functional.cross_entropy(outputs, targets, reduction="none")
    return (each * weight).sum() / weight.sum().clamp(min=1.0)


def _objective(
    model: nn.Module, fixed: Params, start: Params, rule: Rule, masked: bool
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """One device's (objective, task loss) from its stepping and held parameters and batch."""

    def objective(
        moving: Params, held: Params, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = functional_call(model, {**fixed, **held, **moving}, (x,))
        loss = _masked_loss(outputs, y, valid) if masked else task_loss(outputs, y)
        objective = loss
        if rule.mu > 0:
            drift = sum(((moving[k] - start[k]) ** 2).sum() for k in moving)
            objective = loss + 0.5 * rule.mu * drift
        if rule.key_weight > 0:  # set by the forward just run, for this device's batch
            key: torch.Tensor = model.last_key_loss  # type: ignore[assignment]
            objective = (1 - rule.key_weight) * objective + rule.key_weight * key
        return objective, loss.detach()

    return objective


def _run_phase(
    model: nn.Module,
    fixed: Params,
    start: Params,
    params: Params,
    phase: Phase,
    samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rule: Rule,
) -> torch.Tensor:
    """Step ``params`` (stacked per device, in place) through ``phase``; each device's summed
    ``loss × batch size`` (float64, as the learners sum it)."""
    xs, ys, offsets = samples
    rows = (phase.rows + offsets.view(-1, 1, 1)).clamp(max=max(len(ys) - 1, 0))
    moving = {k: v for k, v in params.items() if k in phase.stepping}
    held = {k: v for k, v in params.items() if k not in phase.stepping}
    counts = phase.valid.sum(2).double()  # [devices, steps]
    full = phase.valid.all(2).all(0).tolist()  # steps at which every batch is whole
    everyone = phase.valid.any(2).all(0).tolist()  # steps at which every device steps
    kernels = {masked: _objective(model, fixed, start, rule, masked) for masked in (False, True)}
    steps = {m: vmap(grad(f, has_aux=True)) for m, f in kernels.items()}
    losses_only = {m: vmap(lambda *a, f=f: f(*a)[1]) for m, f in kernels.items()}
    totals = torch.zeros(len(offsets), dtype=torch.float64)
    for s in range(phase.rows.shape[1]):
        batch, valid = rows[:, s], phase.valid[:, s]
        args = (moving, held, xs[batch], ys[batch], valid)
        if not moving:  # nothing steps (all of it frozen): the loss alone, as the learner has it
            losses = losses_only[not full[s]](*args)
        elif rule.key_weight > 0 and not full[s]:  # a batch-mean key term: cannot be masked
            losses = _by_width(steps[False], moving, held, (xs, ys), batch, valid, rule.lr)
        else:
            grads, losses = steps[not full[s]](*args)
            for k, g in grads.items():  # in place: no fresh chunk-sized allocation per step
                if not everyone[s]:  # a device without a batch at this step stays where it is
                    g = torch.where(valid.any(1).view(-1, *[1] * (g.dim() - 1)), g, 0.0)
                moving[k].add_(g, alpha=-rule.lr)
        totals += losses.double() * counts[:, s]
    return totals


def _by_width(
    step: Callable[..., tuple[Params, torch.Tensor]],
    moving: Params,
    held: Params,
    samples: tuple[torch.Tensor, torch.Tensor],
    batch: torch.Tensor,
    valid: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """One step with short batches (``valid``: a prefix of each row), unpadded: the devices
    grouped by batch width, one batched step per width; each device's loss."""
    xs, ys = samples
    widths = valid.sum(1)
    losses = torch.zeros(len(widths))
    for w in sorted(set(widths.tolist()) - {0}):  # a device without a batch sits the step out
        idx = (widths == w).nonzero().squeeze(1)
        rows = batch[idx, :w]
        part = {k: v[idx] for k, v in moving.items()}
        grads, losses[idx] = step(
            part, {k: v[idx] for k, v in held.items()}, xs[rows], ys[rows], valid[idx, :w]
        )
        for k, g in grads.items():
            moving[k].index_add_(0, idx, g, alpha=-lr)
    return losses


def _train_chunk(
    model: nn.Module,
    start: Params,
    trainable: frozenset[str],
    data: Sequence[Batch],
    seeds: list[int],
    schedule: Schedule,
    rule: Rule,
) -> tuple[Params, list[float]]:
    """A chunk's trained parameters (stacked ``[devices, ...]``; frozen ones as received) and
    mean losses."""
    devices = len(data)
    sizes = [len(y) for _, y in data]
    xs = torch.from_numpy(np.concatenate([x for x, _ in data]))
    ys = torch.from_numpy(np.concatenate([y for _, y in data]))
    offsets = torch.tensor([0, *np.cumsum(sizes)[:-1].tolist()], dtype=torch.long)
    fixed = {k: v for k, v in start.items() if k not in trainable}
    params = {  # a copy per device of what trains only (a frozen backbone is shared, not copied)
        k: v.unsqueeze(0).repeat(devices, *[1] * v.dim())
        for k, v in start.items()
        if k in trainable
    }
    totals = torch.zeros(devices, dtype=torch.float64)
    seen = torch.zeros(devices, dtype=torch.float64)
    # always asked, devices without samples too: a learner that cannot train one raises here
    phases = schedule(model, trainable, sizes, seeds)
    for phase in phases:
        if phase.rows.numel() == 0:  # no device has a step in it
            continue
        summed = _run_phase(model, fixed, start, params, phase, (xs, ys, offsets), rule)
        if phase.counted:
            totals += summed
            seen += phase.valid.sum((1, 2)).double()
    for k, v in fixed.items():  # frozen: every device returns the tensor it received
        params[k] = v.unsqueeze(0).expand(devices, *v.shape)
    return params, (totals / seen.clamp(min=1.0)).tolist()


def train_phases(
    model: nn.Module,
    global_arrays: Arrays,
    data: Sequence[Batch],
    seeds: Sequence[int],
    schedule: Schedule,
    rule: Rule,
) -> list[tuple[Arrays, float]]:
    """``(arrays, mean loss)`` per device, in the order of ``data``, by chunks of devices of
    similar sample counts (little padding)."""
    names = [name for name, _ in model.named_parameters()]
    trainable = frozenset(name for name, p in model.named_parameters() if p.requires_grad)
    start = {
        k: torch.from_numpy(np.asarray(a, dtype=np.float32))  # as ``set_arrays`` loads them
        for k, a in zip(names, global_arrays, strict=True)
    }
    by_size = sorted(range(len(data)), key=lambda i: len(data[i][1]))
    results: list[tuple[Arrays, float] | None] = [None] * len(data)
    model.train()
    key = getattr(model, "last_key_loss", None)
    with torch.no_grad():  # torch.func computes the gradients; no autograd graph is kept
        for c in range(0, len(data), CHUNK):
            chunk = by_size[c : c + CHUNK]
            params, losses = _train_chunk(
                model,
                start,
                trainable,
                [data[i] for i in chunk],
                [seeds[i] for i in chunk],
                schedule,
                rule,
            )
            stacked = [params[k].numpy() for k in names]
            for j, i in enumerate(chunk):
                results[i] = ([s[j].copy() for s in stacked], losses[j])
    if key is not None:  # not the value of a batched forward, which outlives its transform
        model.last_key_loss = key
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def no_buffers(model: nn.Module) -> bool:
    """Buffers (BatchNorm's running statistics) would need per-device copies: not batched."""
    return not any(True for _ in model.buffers())
