"""What a model costs a device, counted from the actual torch model (not guessed).

``footprint`` runs one forward pass at the batch size with a hook on every leaf module and counts:

- **weights**: bytes of the parameters and buffers (e.g. BatchNorm running statistics);
- **gradients**: bytes of the parameters that train (all of them, or only the head);
- **optimizer state**: ``state_per_param`` copies of each trainable parameter (SGD 0, SGD with
  momentum 1, Adam 2);
- **activations kept for backward**: from the first layer that trains onwards, each trainable
  layer's input (its weight gradient needs it) and each parameter-free layer's output (its
  backward needs it; reshapes such as ``Flatten`` keep nothing). Upstream of the first trainable
  layer nothing is kept: head-only training (TinyOL) keeps only the head's input;
- **MACs** per sample: each ``Linear`` and ``Conv2d`` counts its multiply-accumulates; backward
  costs 2× forward for a layer whose weights train (input and weight gradients), 1× for a frozen
  layer after the first trainable one (input gradient only), 0 before it.

Inference needs the weights and buffers plus the largest input + output pair of one layer at
batch size 1 (a runtime like TFLite Micro reuses the rest of its arena).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedsim.core.models import head_parameters

__all__ = ["Footprint", "footprint", "head_parameters"]

BYTES = 4  # float32
_NO_STORAGE = (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)


@dataclass(frozen=True)
class Footprint:
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # kept for backward at the batch size
    train_bytes: int  # all of the above: what training needs at once
    inference_bytes: int  # batch 1
    forward_macs: int  # per sample
    train_macs: int  # per sample: forward + backward


@dataclass(frozen=True)
class _Layer:
    module: nn.Module
    in_bytes: int  # per sample
    out_bytes: int  # per sample
    macs: int  # per sample


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates for the whole batch behind ``output``."""
    if isinstance(module, nn.Linear):
        return module.in_features * output.numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return (module.in_channels // module.groups) * kh * kw * output.numel()
    return 0


def _trace(model: nn.Module, sample_shape: tuple[int, ...], batch: int) -> list[_Layer]:
    layers: list[_Layer] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        size = args[0].numel() * BYTES // batch, output.numel() * BYTES // batch
        layers.append(_Layer(module, *size, _macs(module, output) // batch))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    try:
        model.eval()  # no BatchNorm statistics change while counting
        with torch.no_grad():
            model(torch.zeros(batch, *sample_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return layers


def footprint(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    batch_size: int,
    trainable: set[str] | None = None,
    state_per_param: int = 0,
) -> Footprint:
    """Count ``model``'s costs for samples of ``sample_shape``; ``trainable`` names the
    parameters that train (None: all of them)."""
    trains = {id(p) for n, p in model.named_parameters() if trainable is None or n in trainable}
    layers = _trace(model, sample_shape, batch_size)
    owns = [any(id(p) in trains for p in x.module.parameters(recurse=False)) for x in layers]
    first = owns.index(True) if True in owns else len(layers)
    kept = backward = 0
    for layer, own in zip(layers[first:], owns[first:], strict=True):
        if own:
            kept += layer.in_bytes
            backward += 2 * layer.macs
        else:
            backward += layer.macs
            if not isinstance(layer.module, _NO_STORAGE) and not list(layer.module.parameters()):
                kept += layer.out_bytes
    weights = sum(t.numel() for t in [*model.parameters(), *model.buffers()]) * BYTES
    gradients = sum(p.numel() for p in model.parameters() if id(p) in trains) * BYTES
    optimizer = gradients * state_per_param
    activations = kept * batch_size
    forward = sum(layer.macs for layer in layers)
    return Footprint(
        weight_bytes=weights,
        gradient_bytes=gradients,
        optimizer_bytes=optimizer,
        activation_bytes=activations,
        train_bytes=weights + gradients + optimizer + activations,
        inference_bytes=weights
        + max(
            (x.in_bytes + x.out_bytes for x in layers if not isinstance(x.module, _NO_STORAGE)),
            default=0,
        ),
        forward_macs=forward,
        train_macs=forward + backward,
    )
