"""Named torch models, and the conversions between a model and a list of numpy arrays.

A model is a builder ``(num_features, num_outputs, seed) -> nn.Module``. A user's builder needs no
change here: an installed package lists it under the entry-point group ``fedsim.models``, or a
scenario names it as ``task.model: "package.module:build"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedsim.core.errors import FedsimError, clip
from fedsim.core.plugins import Plugins

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "MODELS",
    "Builder",
    "build_model",
    "encoder_of",
    "get_arrays",
    "model_builder",
    "set_arrays",
    "sgd_step",
    "task_loss",
]

# (values per sample, number of classes, seed) → a freshly initialised model; models flatten
# their input, so image-shaped samples ([1, 28, 28]) and vectors both work
Builder = Callable[[int, int, int], "nn.Module"]
MODELS: Plugins[Builder] = Plugins("model", group="fedsim.models")


@MODELS.register("mlp")
def _mlp() -> Builder:
    def build(num_features: int, num_classes: int, seed: int) -> nn.Module:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(num_features, 32), nn.ReLU(), nn.Linear(32, num_classes)
        )

    return build


@MODELS.register("mlp-100")
def _mlp100() -> Builder:
    """The 784-100-10 MLP of the simulation-overhead benchmark (design §3.1)."""

    def build(num_features: int, num_classes: int, seed: int) -> nn.Module:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(num_features, 100), nn.ReLU(), nn.Linear(100, num_classes)
        )

    return build


@MODELS.register("logreg")
def _logreg() -> Builder:
    def build(num_features: int, num_classes: int, seed: int) -> nn.Module:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))

    return build


@MODELS.register("tanh-64x2")
def _tanh64() -> Builder:
    """1-64-64-1 tanh MLP: the Reptile sine-wave reference network (design §6.4)."""

    def build(num_features: int, num_outputs: int, seed: int) -> nn.Module:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(num_features, 64),
            nn.Tanh(),
            nn.Linear(64, 64),
            nn.Tanh(),
            nn.Linear(64, num_outputs),
        )

    return build


@MODELS.register("conv4")
def _conv4() -> Builder:
    """Conv-4 (Vinyals et al.; Snell et al.): 4 × [3×3 conv 64, BatchNorm, ReLU, 2×2 max-pool],
    flattened (64-d on 28×28 input), then a linear head. Without the head it is the prototypical
    encoder of federated reconnaissance (design §6.5)."""

    def build(num_features: int, num_outputs: int, seed: int) -> nn.Module:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        side = math.isqrt(num_features)
        if side * side != num_features or side < 16:
            raise ValueError(
                f"conv4 takes square single-channel images of side ≥ 16 (four 2×2 poolings), "
                f"got {num_features} values"
            )
        blocks: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
        channels = 1
        for _ in range(4):
            blocks += [
                nn.Conv2d(channels, 64, 3, padding=1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = 64
        for _ in range(4):
            side //= 2
        blocks += [nn.Flatten(), nn.Linear(64 * side * side, num_outputs)]
        return nn.Sequential(nn.Flatten(), *blocks)

    return build


@MODELS.register("conv4-proto")
def _conv4_proto() -> Builder:
    """Conv-4 encoder + a nearest-prototype head (federated reconnaissance, design §6.5): the
    head holds per class the sum of reported embeddings and their count (buffers, no parameters)
    and scores a sample by −(squared distance) to each seen class's mean (−inf if unseen)."""

    def build(num_features: int, num_outputs: int, seed: int) -> nn.Module:
        from torch import nn

        from fedsim.core.algorithms.prototype_head import PrototypeHead

        conv4 = MODELS.get("conv4")(num_features, num_outputs, seed)
        body = list(conv4.children())[:-1]
        return nn.Sequential(*body, PrototypeHead(64, num_outputs))

    return build


@MODELS.register("mlp-proto")
def _mlp_proto() -> Builder:
    """The mlp-100 encoder (inputs-100, ReLU) + a nearest-prototype head: federated
    reconnaissance on keyword spotting and activities, whose inputs Conv-4 does not take."""

    def build(num_features: int, num_outputs: int, seed: int) -> nn.Module:
        from torch import nn

        from fedsim.core.algorithms.prototype_head import PrototypeHead

        mlp = MODELS.get("mlp-100")(num_features, num_outputs, seed)
        body = list(mlp.children())[:-1]
        return nn.Sequential(*body, PrototypeHead(100, num_outputs))

    return build


@MODELS.register("ssf-vit")
def _ssf_vit() -> Builder:
    """The small ViT with SSF slots (``fedsim.core.algorithms.ssf``; 7×7 patches, 64-d, 4
    blocks): FedIns's backbone, and trained whole by plain FedAvg as the communication reference."""

    def build(num_features: int, num_outputs: int, seed: int) -> nn.Module:
        import torch

        from fedsim.core.algorithms.ssf import SsfViT

        side = math.isqrt(num_features)
        if side * side != num_features or side % 7:
            raise ValueError(
                f"ssf-vit takes square images of a side divisible by 7, got {num_features}"
            )
        torch.manual_seed(seed)
        return SsfViT(side, classes=num_outputs)

    return build


# The MLPerf Tiny reference models, in their own module, imported on first use
MODELS.lazy("mlperf-kws", "fedsim.core.mlperf_models:build_kws")
MODELS.lazy("mlperf-vww", "fedsim.core.mlperf_models:build_vww")
MODELS.lazy("mlperf-ic", "fedsim.core.mlperf_models:build_ic")
MODELS.lazy("mlperf-ad", "fedsim.core.mlperf_models:build_ad")


def encoder_of(model: nn.Module) -> nn.Module:
    """The model without its last layer (a ``Sequential``'s feature extractor)."""
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise TypeError("encoder_of needs an nn.Sequential model")
    return model[:-1]


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for class indices, mean squared error for float targets."""
    from torch import nn

    if targets.is_floating_point():
        return nn.functional.mse_loss(outputs, targets)
    return nn.functional.cross_entropy(outputs, targets)


def sgd_step(params: list[torch.nn.Parameter], loss: torch.Tensor, lr: float) -> None:
    """p ← p − lr·∇p: what ``torch.optim.SGD`` does without momentum, minus its ~4 ms set-up,
    which a device round paying it per call (serial meta-learning: thousands of rounds) notices."""
    import torch

    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:  # a parameter the loss does not reach stays as it is
                p.add_(g, alpha=-lr)


def head_parameters(model: nn.Module) -> set[str]:
    """Names of the last ``Linear``/``Conv2d``'s parameters (the TinyOL-style trainable head)."""
    from torch import nn

    last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    mine = {id(p) for p in last.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in mine}


def model_builder(name: str, where: str = "task.model") -> Builder:
    """The builder ``name`` stands for (a built-in, an installed entry point, or
    ``package.module:build``); a located error if it does not resolve or cannot be called."""
    builder = MODELS.get(name, where)
    if not callable(builder):
        raise FedsimError(
            where,
            f"'{clip(name)}' is a {type(builder).__name__}, not a model builder",
            "point it at a function (num_features, num_outputs, seed) -> torch.nn.Module",
        )
    return builder


def build_model(name: str, num_features: int, num_classes: int, seed: int) -> nn.Module:
    """A fresh model ``name`` for this task; a located error if the builder returns another
    thing than an ``nn.Module``."""
    from torch import nn

    model = model_builder(name)(num_features, num_classes, seed)
    if not isinstance(model, nn.Module):
        raise FedsimError(
            "task.model",
            f"model '{clip(name)}' built a {type(model).__name__}, not a torch.nn.Module",
            "return the model from the builder (num_features, num_outputs, seed) -> nn.Module",
        )
    return model


def get_arrays(model: nn.Module) -> list[NDArray[np.float32]]:
    """The model's parameters and buffers, in ``state_dict`` order, as float32 copies."""
    return [t.detach().cpu().numpy().astype(np.float32) for t in model.state_dict().values()]


def set_arrays(model: nn.Module, arrays: Sequence[NDArray[np.floating]]) -> None:
    import torch

    keys = list(model.state_dict())
    if len(keys) != len(arrays):
        raise ValueError(f"model has {len(keys)} tensors, got {len(arrays)} arrays")
    state = {
        k: torch.from_numpy(np.asarray(a, dtype=np.float32))
        for k, a in zip(keys, arrays, strict=True)
    }
    model.load_state_dict(state, strict=True)
