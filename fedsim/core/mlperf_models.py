"""The four MLPerf Tiny reference models, rebuilt in torch layer for layer.

The references are the Keras models in github.com/mlcommons/tiny, ``benchmark/training/``: the
DS-CNN of keyword spotting, MobileNetV1 (α = 0.25) of visual wake words, ResNet-8 of image
classification and the fully connected autoencoder of anomaly detection (ToyADMOS). Rebuilt with
the same layers, so that a device's cost for a benchmark model is counted from the model itself
(``devices.footprint``): the forward MACs and the parameter counts equal the references'
(``MLPERF_MODELS`` states both; the tests hold them).

What follows the reference exactly: layers, kernel sizes, strides, widths, biases (Keras layers
have one unless told otherwise), BatchNorm after every convolution or hidden dense layer, plain
ReLU, the average poolings and dropouts. Keras ``padding="same"`` with stride 2 pads the extra
row and column at the bottom and right only; here an ``nn.ZeroPad2d`` does the same, so every
feature map has the reference's shape and the pixels line up with it. BatchNorm takes Keras's
epsilon (1e-3) so Keras weights would infer alike; its running-statistics momentum stays torch's
(0.1, Keras's 0.99 would barely move in a device's few local steps). Weights start from torch's
initialisation, not Keras's (he_normal in three of the four).

Inputs are flattened, as every fedsim model's: channel-first ``(C, H, W)`` images or MFCC maps
``(1, frames, coefficients)``, and ``(features,)`` for the autoencoder. A classifier's head
follows the task's number of classes; each builder refuses another input size with a
``ValueError`` naming the shape it takes. Only ``mlperf-kws`` has data in fedsim (``kws-mfcc``,
synthesised keywords); ``mlperf-vww`` (96×96 person / no person, from COCO), ``mlperf-ic``
(CIFAR-10) and ``mlperf-ad`` (ToyADMOS machine sounds) have no offline dataset here: they serve
cost prediction, and ``build_mlperf`` builds any of the four at its reference shape without one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fedsim.core.errors import FedsimError, known_names

__all__ = [
    "MLPERF_MODELS",
    "MlperfModel",
    "build_ad",
    "build_ic",
    "build_kws",
    "build_mlperf",
    "build_vww",
]

KERAS_BN_EPSILON = 1e-3
TRAINING = "benchmark/training"


@dataclass(frozen=True)
class MlperfModel:
    """One reference model: its input, outputs and the figures its Keras model has.

    ``reference_params`` is Keras's ``model.summary()`` total: trainable weights plus the
    BatchNorm moving means and variances. ``source`` is the file in mlcommons/tiny."""

    name: str
    input_shape: tuple[int, ...]  # (C, H, W), or (features,)
    num_outputs: int
    reference_macs: int  # forward, per sample
    reference_params: int
    task: Literal["kws", "vww", "ic", "ad"]
    source: str

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)


MLPERF_MODELS: dict[str, MlperfModel] = {
    m.name: m
    for m in (
        MlperfModel(
            "mlperf-kws", (1, 49, 10), 12, 2_656_768, 24_908, "kws",
            f"{TRAINING}/keyword_spotting/keras_model.py",
        ),
        MlperfModel(
            "mlperf-vww", (3, 96, 96), 2, 7_489_664, 221_794, "vww",
            f"{TRAINING}/visual_wake_words/vww_model.py",
        ),
        MlperfModel(
            "mlperf-ic", (3, 32, 32), 10, 12_501_632, 78_666, "ic",
            f"{TRAINING}/image_classification/keras_model.py",
        ),
        MlperfModel(
            "mlperf-ad", (640,), 640, 264_192, 269_992, "ad",
            f"{TRAINING}/anomaly_detection/keras_model.py",
        ),
    )
}  # fmt: skip


def _check_input(name: str, num_features: int) -> tuple[int, ...]:
    """The reference input shape of ``name``; ValueError if ``num_features`` is not its size."""
    spec = MLPERF_MODELS[name]
    if num_features != spec.num_features:
        shape = "×".join(str(d) for d in spec.input_shape)
        raise ValueError(
            f"{name} takes inputs of shape {shape} ({spec.num_features} values, as MLPerf Tiny's "
            f"{spec.task} reference), got {num_features} values"
        )
    return spec.input_shape


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels, eps=KERAS_BN_EPSILON), nn.ReLU()]


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
    """A square convolution with Keras's ``padding="same"``: symmetric at stride 1 (odd
    kernels), the extra row and column at the bottom and right at stride 2 (even inputs)."""
    if stride == 1:
        return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups)
    extra = kernel - stride  # total padding for an even side: (out−1)·s + k − in
    pad = (extra // 2, extra - extra // 2) * 2  # left, right, top, bottom
    return nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(c_in, c_out, kernel, stride, groups=groups))


def _separable(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """Depthwise 3×3 (one filter per channel), BN, ReLU, then pointwise 1×1, BN, ReLU."""
    return [
        _conv(c_in, c_in, 3, stride, groups=c_in),
        *_bn_relu(c_in),
        _conv(c_in, c_out, 1),
        *_bn_relu(c_out),
    ]


def build_kws(num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """DS-CNN: a 10×4 stride-2 convolution of 64 filters on the 49×10 MFCC map (→ 25×5), four
    depthwise-separable blocks of 64, average pooling over 24×5 (the reference's ``int(49/2)``
    drops the last row), a linear head."""
    shape = _check_input("mlperf-kws", num_features)
    torch.manual_seed(seed)
    filters = 64
    # Keras "same", stride 2: 49 rows pad 4 above, 5 below; 10 columns pad 1 each side
    layers: list[nn.Module] = [
        nn.Flatten(),
        nn.Unflatten(1, shape),
        nn.ZeroPad2d((1, 1, 4, 5)),
        nn.Conv2d(1, filters, (10, 4), stride=2),
        *_bn_relu(filters),
        nn.Dropout(0.2),
    ]
    for _ in range(4):
        layers += _separable(filters, filters)
    layers += [nn.Dropout(0.4), nn.AvgPool2d((24, 5)), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(filters, num_outputs))


def build_vww(num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """MobileNetV1 at α = 0.25 on 96×96 RGB: a 3×3 stride-2 convolution of 8 filters, 13
    depthwise-separable blocks (8 → 256 channels, four of them stride 2: 48 → 3), average
    pooling over 3×3, a linear head."""
    shape = _check_input("mlperf-vww", num_features)
    torch.manual_seed(seed)
    # (stride, output channels) of each separable block
    blocks = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)]
    blocks += [(1, 128)] * 5 + [(2, 256), (1, 256)]
    layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, shape), _conv(3, 8, 3, 2)]
    layers += _bn_relu(8)
    channels = 8
    for stride, out in blocks:
        layers += _separable(channels, out, stride)
        channels = out
    layers += [nn.AvgPool2d(3), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(channels, num_outputs))


class Residual(nn.Module):
    """ResNet v1 stack: ``relu(body(x) + shortcut(x))``."""

    def __init__(self, body: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.relu = body, shortcut, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.body(x) + self.shortcut(x))
        return out


def _stack(c_in: int, c_out: int, stride: int) -> Residual:
    """3×3 conv (stride), BN, ReLU, 3×3 conv, BN; added to the input, through a 1×1 convolution
    of the same stride when the shape changes (Keras "same" with a 1×1 kernel pads nothing)."""
    body = nn.Sequential(
        _conv(c_in, c_out, 3, stride),
        *_bn_relu(c_out),
        _conv(c_out, c_out, 3),
        nn.BatchNorm2d(c_out, eps=KERAS_BN_EPSILON),
    )
    shortcut = nn.Identity() if stride == 1 else nn.Conv2d(c_in, c_out, 1, stride)
    return Residual(body, shortcut)


def build_ic(num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """ResNet-8 on 32×32 RGB: a 3×3 convolution of 16 filters, three residual stacks of 16, 32
    and 64 filters (the last two stride 2: 32 → 8), average pooling over 8×8, a linear head.

    16 filters is the benchmark's reference (its trained ``pretrainedResnet.h5``, 12.5 M MACs);
    since March 2026 the repository's ``train.py`` calls ``resnet_v1_eembc(conv_filters=26)``,
    a wider development model that is not the reference."""
    shape = _check_input("mlperf-ic", num_features)
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Unflatten(1, shape),
        _conv(3, 16, 3),
        *_bn_relu(16),
        _stack(16, 16, 1),
        _stack(16, 32, 2),
        _stack(32, 64, 2),
        nn.AvgPool2d(8),
        nn.Flatten(),
        nn.Linear(64, num_outputs),
    )


def build_ad(num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """The ToyADMOS autoencoder on 5 frames × 128 log-mel bins: dense 128 ×4, a bottleneck of 8,
    dense 128 ×4 (each followed by BatchNorm and ReLU), then a linear layer back to the input.
    It reconstructs its input, so it refuses ``num_outputs`` other than the input size."""
    (features,) = _check_input("mlperf-ad", num_features)
    if num_outputs != features:
        raise ValueError(
            f"mlperf-ad is an autoencoder: it outputs its {features} inputs, got "
            f"{num_outputs} outputs (train it on targets = inputs)"
        )
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    width = features
    for hidden in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden, eps=KERAS_BN_EPSILON)]
        layers += [nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, features))


_BUILDERS = {
    "mlperf-kws": build_kws,
    "mlperf-vww": build_vww,
    "mlperf-ic": build_ic,
    "mlperf-ad": build_ad,
}


def build_mlperf(name: str, seed: int = 0) -> nn.Module:
    """Reference model ``name`` at its reference input and outputs (no dataset needed)."""
    if name not in MLPERF_MODELS:
        what = known_names("MLPerf Tiny model", name, list(MLPERF_MODELS))
        raise FedsimError("build_mlperf", what, f"use one of {', '.join(MLPERF_MODELS)}")
    spec = MLPERF_MODELS[name]
    return _BUILDERS[name](spec.num_features, spec.num_outputs, seed)
