"""TinyOL's device round for many devices at once: ``OnlineHeadLearner.train``, batched.

The maths is the sequential learner's, device by device: features from the frozen body (eval
mode, one forward), each device's own ``stream_order``, the running statistics of a
``NormalizedLinear`` resumed from the received layer and updated sample by sample (Welford), then
one SGD step per sample on the output layer (softmax cross-entropy, or ½ squared error for float
targets). Step t of every device runs as one batched numpy operation on ``[devices, out, in]``
weights; a device whose stream is shorter (fewer samples) has stopped: it takes no step and adds no
loss. Devices are sorted by stream length so that the devices still stepping at step t are a
prefix of the batch (slices, no masks). The body's forward runs per device, and the elementwise
operations are those of ``edge.online_head`` in the same order; only the products ``W·f`` (batched
instead of one per device) may round differently, so results agree with the sequential learner to
float32 rounding (``tests/test_vectorized_head.py``; measured bit-identical on har's mlp-100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge.online_head import RunningNorm
from fedsim.core.algorithms.feature_norm import NormalizedLinear
from fedsim.core.algorithms.local import OnlineHeadLearner, stream_order
from fedsim.core.models import set_arrays
from fedsim.core.reduce import Arrays

__all__ = ["CHUNK", "BatchedOnlineHead"]

CHUNK = 256  # devices stepping together: their padded streams are [steps, CHUNK, features]
F32 = NDArray[np.float32]
Batch = tuple[F32, NDArray[Any]]


def _head(model: nn.Module) -> nn.Module:
    """The layer TinyOL trains: the model's last ``Linear`` or ``Conv2d`` (as the learner's)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]


def _features(model: nn.Module, head: nn.Module, xs: Sequence[F32]) -> list[F32]:
    """What the head receives for every sample of every device, ``[n_d, in]`` per device: one
    forward per device, as the learner's (one forward of all devices' samples is 2-3x faster for
    har's mlp-100 but rounds the body's products differently, and the running statistics amplify
    that by up to 1/√eps: 3e-6 on the head, against 0 this way)."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    features = []
    try:
        model.eval()
        with torch.no_grad():
            for x in xs:
                captured.clear()
                model(torch.from_numpy(x))
                features.append(captured[0].numpy().astype(np.float32))
    finally:
        hook.remove()
    return features


@dataclass
class _Norms:
    """The running statistics of ``k`` devices, all resumed from the received layer's."""

    count: int  # samples seen by every device still stepping (they all start at the same count)
    mean: F32  # [devices, in]
    m2: F32  # [devices, in]

    def update_and_apply(self, x: F32) -> F32:
        """``RunningNorm.update`` then ``.apply`` for the first ``len(x)`` devices, in float32."""
        k = len(x)
        self.count += 1
        c = np.float32(self.count)
        mean, m2 = self.mean[:k], self.m2[:k]
        delta = x - mean
        mean += delta / c
        m2 += delta * (x - mean)
        var = self.var(k)
        scaled: F32 = ((x - mean) / np.sqrt(var + np.float32(RunningNorm.eps))).astype(np.float32)
        return scaled

    def var(self, k: int, count: int | None = None) -> F32:
        n = self.count if count is None else count
        if n < 2:
            return np.ones((k, self.mean.shape[1]), np.float32)
        return (self.m2[:k] / np.float32(n)).astype(np.float32)


@dataclass(frozen=True)
class BatchedOnlineHead:
    """``OnlineHeadLearner.train`` for many devices at once, on a model whose output layer (its
    last ``Linear``/``Conv2d``) is a ``Linear``; a ``NormalizedLinear``'s statistics included.

    ``train_many`` loads ``global_arrays`` into ``model`` (the body's forward needs them) and
    returns, per device, what ``clients.work.train_device`` sends: every tensor of
    ``model.state_dict()`` (parameters and buffers, in that order), the frozen body's as received
    (one read-only array shared by all devices), the trained layer and statistics per device."""

    learner: OnlineHeadLearner

    def supports(self, model: nn.Module) -> bool:
        return isinstance(_head(model), nn.Linear)

    def train_many(
        self, model: nn.Module, global_arrays: Arrays, data: Sequence[Batch], seeds: Sequence[int]
    ) -> list[tuple[Arrays, float]]:
        head = _head(model)
        if not isinstance(head, nn.Linear):
            raise TypeError("tinyol trains a linear output layer; this model ends in a Conv2d")
        _check(data, head.out_features)
        set_arrays(model, global_arrays)
        names = list(model.state_dict())
        prefix = next(name for name, m in model.named_modules() if m is head)
        prefix = f"{prefix}." if prefix else ""
        shared = [np.asarray(a, np.float32).copy() for a in global_arrays]
        for a in shared:
            a.setflags(write=False)
        results: list[tuple[Arrays, float]] = []
        for c in range(0, len(data), CHUNK):
            chunk = data[c : c + CHUNK]
            trained = self._chunk(model, head, chunk, seeds[c : c + CHUNK])
            for layer, loss in trained:
                mine = {f"{prefix}{k}": v for k, v in layer.items()}
                results.append(([mine.get(k, a) for k, a in zip(names, shared, strict=True)], loss))
        return results

    def _chunk(
        self, model: nn.Module, head: nn.Linear, data: Sequence[Batch], seeds: Sequence[int]
    ) -> list[tuple[dict[str, F32], float]]:
        """Each device's trained layer (by its names in the head) and mean loss."""
        passes = self.learner.passes
        lengths = [len(y) * passes for _, y in data]
        orders = [
            stream_order(len(y), n, s).numpy()
            for (_, y), n, s in zip(data, lengths, seeds, strict=True)
        ]
        features = _features(model, head, [x for x, _ in data])
        rank = sorted(range(len(data)), key=lambda d: -lengths[d])  # stable: longest first
        steps = lengths[rank[0]]
        # [steps, devices, in]: step t of the device ranked j; zeros past a device's stream
        stream = np.zeros((steps, len(data), head.in_features), np.float32)
        targets = [data[d][1][orders[d]] for d in rank]
        for j, d in enumerate(rank):
            stream[: lengths[d], j] = features[d][orders[d]]
        active = np.searchsorted(-np.asarray([lengths[d] for d in rank]), -np.arange(steps), "left")
        norms = _resumed(head, len(data)) if isinstance(head, NormalizedLinear) else None
        if norms is not None:
            for t in range(steps):
                stream[t, : active[t]] = norms.update_and_apply(stream[t, : active[t]])
        weight = np.repeat(head.weight.detach().numpy()[None], len(data), axis=0)
        bias = np.repeat(head.bias.detach().numpy()[None], len(data), axis=0)
        totals = _steps(self.learner.lr, weight, bias, stream, targets, active)
        out: list[tuple[dict[str, F32], float] | None] = [None] * len(data)
        for j, d in enumerate(rank):
            layer = {"weight": weight[j], "bias": bias[j]}
            if norms is not None:
                count = norms.count - steps + lengths[d]  # the statistics stop with the stream
                layer["norm_mean"] = norms.mean[j]
                layer["norm_var"] = norms.var(j + 1, count)[j]
                layer["norm_count"] = np.array([count], np.float32)
            out[d] = (layer, float(totals[j]) / max(lengths[d], 1))
        return [r for r in out if r is not None]


def _check(data: Sequence[Batch], classes: int) -> None:
    """What would make a device fail in ``OnlineHeadLearner.train`` fails the whole batch here (the
    caller then trains the devices one by one, and the failing one fails alone)."""
    if any(len(y) == 0 for _, y in data):
        raise ValueError("a device has no samples: its stream is empty")
    kinds = {y.dtype.kind == "f" for _, y in data}
    if len(kinds) > 1:
        raise ValueError("devices of one batch mix class labels and regression targets")
    if kinds == {False}:
        labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in data])
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"a label lies outside the head's {classes} classes")


def _resumed(head: NormalizedLinear, devices: int) -> _Norms:
    """``RunningNorm.resume`` of the received layer's statistics, once per device."""
    one = RunningNorm.resume(
        head.norm_mean.detach().numpy(),
        head.norm_var.detach().numpy(),
        round(float(head.norm_count)),
    )
    return _Norms(
        one.count,
        np.repeat(one.mean[None], devices, axis=0),
        np.repeat(one.m2[None], devices, axis=0),
    )


def _steps(
    lr: float,
    weight: F32,
    bias: F32,
    stream: F32,
    targets: list[NDArray[Any]],
    active: NDArray[np.intp],
) -> NDArray[np.float64]:
    """``OnlineHead.step`` for every device still stepping, step by step, in place on ``weight``
    ``[devices, out, in]`` and ``bias`` ``[devices, out]``; each device's summed loss."""
    devices, outputs, _ = weight.shape
    softmax = targets[0].dtype.kind != "f"
    width = max(len(y) for y in targets)
    if softmax:
        labels = np.zeros((width, devices), np.intp)
        for j, y in enumerate(targets):
            labels[: len(y), j] = np.asarray(y).reshape(len(y))
    else:
        wanted = np.zeros((width, devices, outputs), np.float32)
        for j, y in enumerate(targets):
            wanted[: len(y), j] = np.asarray(y, np.float32).reshape(len(y), -1)
    totals = np.zeros(devices, np.float64)
    rate = np.float32(lr)
    outer = np.empty_like(weight)
    for t in range(len(stream)):
        k = int(active[t])
        f, w, b = stream[t, :k], weight[:k], bias[:k]
        z = np.matmul(w, f[:, :, None])[:, :, 0] + b
        if softmax:
            rows, label = np.arange(k), labels[t, :k]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            grad = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
            picked = np.maximum(grad[rows, label].astype(np.float64), 1e-12)
            totals[:k] -= np.log(picked)
            grad[rows, label] -= np.float32(1.0)
        else:
            grad = (z - wanted[t, :k]).astype(np.float32)
            totals[:k] += np.einsum("ko,ko->k", np.float32(0.5) * grad, grad)
        step = outer[:k]
        np.multiply(grad[:, :, None], f[:, None, :], out=step)
        step *= rate
        w -= step
        b -= rate * grad
    return totals
