"""TinyOL (Ren et al.): on-device online learning of an output layer behind a frozen extractor.

The extractor (in flash) turns each arriving sample into a feature vector; the trainable output
layer (in RAM) takes one SGD step on it, batch size 1, and the sample is dropped: nothing is
stored. Features may be normalised on the fly with running statistics (Welford's algorithm, so a
device keeps two vectors, not the stream). New classes are added by appending output rows.
Trainable state: ``classes × (features + 1)`` floats (64 → 10: 650 floats, 2.6 KB).

This is the reference the simulated devices use, the Pi agent runs and the C firmware mirrors
(``firmware/core/fs_learner.c``, without ``RunningNorm``), so it is plain numpy float32
arithmetic, one sample at a time. It lives in ``edge`` so that the agent installs with numpy alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["OnlineHead", "RunningNorm"]

F32 = NDArray[np.float32]


@dataclass
class RunningNorm:
    """Per-feature running mean and variance (Welford), updated one sample at a time."""

    features: int
    count: int = 0
    mean: F32 = field(init=False)
    m2: F32 = field(init=False)  # sum of squared deviations
    eps: float = 1e-5

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.features, np.float32)
        self.m2 = np.zeros(self.features, np.float32)

    @classmethod
    def resume(cls, mean: F32, var: F32, count: int) -> RunningNorm:
        """Statistics carried over from ``count`` earlier samples (e.g. a federation's averaged
        ones): Welford goes on as if it had seen them."""
        norm = cls(len(mean), count)
        norm.mean = np.asarray(mean, np.float32).copy()
        if count >= 2:  # below two samples ``var`` is a placeholder (ones); m2 is 0
            norm.m2 = (np.asarray(var, np.float32) * np.float32(count)).astype(np.float32)
        return norm

    def update(self, x: F32) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / np.float32(self.count)
        self.m2 += delta * (x - self.mean)

    @property
    def var(self) -> F32:
        if self.count < 2:
            return np.ones(self.features, np.float32)
        return (self.m2 / np.float32(self.count)).astype(np.float32)

    def apply(self, x: F32) -> F32:
        scaled: F32 = ((x - self.mean) / np.sqrt(self.var + np.float32(self.eps))).astype(
            np.float32
        )
        return scaled


@dataclass
class OnlineHead:
    """A linear output layer trained by one SGD step per sample.

    ``loss="softmax"``: classification with softmax cross-entropy (labels are class indices);
    ``loss="mse"``: regression with squared error ½‖Wf + b − y‖² (targets are vectors).
    """

    weight: F32  # [outputs, features]
    bias: F32  # [outputs]
    lr: float
    loss: Literal["softmax", "mse"] = "softmax"
    norm: RunningNorm | None = None
    seen: int = 0

    @classmethod
    def zeros(
        cls,
        features: int,
        outputs: int,
        lr: float,
        loss: Literal["softmax", "mse"] = "softmax",
        normalize: bool = False,
    ) -> OnlineHead:
        return cls(
            np.zeros((outputs, features), np.float32),
            np.zeros(outputs, np.float32),
            lr,
            loss,
            RunningNorm(features) if normalize else None,
        )

    @property
    def state_floats(self) -> int:
        """Floats a device keeps: the layer, plus two vectors if it normalises."""
        extra = 2 * self.weight.shape[1] if self.norm is not None else 0
        return int(self.weight.size + self.bias.size + extra)

    def _prepare(self, feature: F32, learn: bool) -> F32:
        f = np.asarray(feature, np.float32).reshape(-1)
        if self.norm is None:
            return f
        if learn:
            self.norm.update(f)
        return self.norm.apply(f)

    def predict(self, feature: F32) -> F32:
        """Scores (softmax probabilities, or regression outputs) for one feature vector."""
        z = self.weight @ self._prepare(feature, learn=False) + self.bias
        return _softmax(z) if self.loss == "softmax" else z

    def step(self, feature: F32, target: int | F32) -> float:
        """One SGD step on one sample; returns its loss before the step."""
        f = self._prepare(feature, learn=True)
        z = self.weight @ f + self.bias
        if self.loss == "softmax":
            label = int(np.asarray(target))
            if not 0 <= label < len(self.bias):
                raise ValueError(f"label {label} outside the head's {len(self.bias)} classes")
            p = _softmax(z)
            loss = float(-np.log(max(float(p[label]), 1e-12)))
            grad = p
            grad[label] -= 1.0
        else:
            y = np.asarray(target, np.float32).reshape(-1)
            grad = (z - y).astype(np.float32)
            loss = float(0.5 * grad @ grad)
        lr = np.float32(self.lr)
        self.weight -= lr * np.outer(grad, f).astype(np.float32)
        self.bias -= lr * grad
        self.seen += 1
        return loss

    def add_class(self) -> int:
        """Append an output row (a new class) initialised to zero; return its index."""
        self.weight = np.vstack([self.weight, np.zeros((1, self.weight.shape[1]), np.float32)])
        self.bias = np.append(self.bias, np.float32(0.0)).astype(np.float32)
        return len(self.bias) - 1


def _softmax(z: F32) -> F32:
    e = np.exp(z - z.max())
    p: F32 = (e / e.sum()).astype(np.float32)
    return p
