"""A model as it is deployed for inference on a microcontroller: MACs per layer kind, flash and
tensor arena at a precision.

An MCU runtime (TensorFlow Lite Micro, microTVM, X-CUBE-AI) runs a graph whose BatchNorm layers are
folded into the preceding convolution and whose activations (ReLU) are fused into it, with the
weights in flash and the activations in one arena in SRAM. What this module counts, from the torch
model fedsim trains (``torch.fx``, so residual connections are seen as they are):

- **MACs by layer kind**: ``conv`` (a ``Conv2d`` with one group and a kernel larger than 1×1),
  ``pointwise`` (1×1: a plain matrix product, no im2col), ``depthwise`` (``groups ==
  in_channels``) and ``dense`` (``Linear``), because optimised kernel libraries run them at very
  different cycles per MAC;
- **flash**: each conv/dense layer's weights at the precision, plus per output channel a bias
  (int32 at int8, as TFLite stores it, else the precision's width) and, at int8, a float32 scale
  (per-channel quantisation); BatchNorm costs nothing (folded);
- **arena**: the peak, over the graph's execution order, of the activation tensors alive at once: a
  tensor lives from the layer that writes it to the last layer that reads it; fused or in-place
  layers (BatchNorm, ReLU, Dropout) and reshapes (Flatten, Unflatten, view) write no new tensor. A
  greedy arena planner reaches this peak on chains and comes close on residual graphs; runtime
  scratch buffers (im2col) and the interpreter's own state are not counted.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from fedsim.core.errors import FedsimError

__all__ = [
    "LAYER_KINDS",
    "PRECISION_BYTES",
    "Deployment",
    "LayerKind",
    "Precision",
    "deployment",
    "layer_kind",
]

Precision = Literal["int8", "float16", "float32"]
LayerKind = Literal["conv", "pointwise", "depthwise", "dense"]
LAYER_KINDS: tuple[str, ...] = ("conv", "pointwise", "depthwise", "dense")
PRECISION_BYTES: dict[str, int] = {"int8": 1, "float16": 2, "float32": 4}
_BIAS_BYTES = {"int8": 4, "float16": 2, "float32": 4}  # TFLite int8 biases are int32
_SCALE_BYTES = {"int8": 4, "float16": 0, "float32": 0}  # per-channel float32 scale

# layers that write no new tensor in a deployed graph: fused into the producer, or a reshape
_ALIAS_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad2d,  # Keras "same" padding, done inside the convolution by the runtime
)
_ALIAS_FUNCTIONS = {torch.relu, torch.flatten, nn.functional.relu, torch.reshape}
_ALIAS_METHODS = {"relu", "relu_", "view", "reshape", "flatten", "squeeze", "unsqueeze"}


@dataclass(frozen=True)
class Deployment:
    """One sample's inference at ``precision``."""

    precision: str
    macs: dict[str, int]  # by layer kind
    layers: int  # conv and dense layers
    flash_bytes: int
    arena_bytes: int

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


def layer_kind(module: nn.Module) -> LayerKind | None:
    if isinstance(module, nn.Linear):
        return "dense"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise"
        return "pointwise" if tuple(module.kernel_size) == (1, 1) else "conv"
    return None


def _macs(module: nn.Module, out: torch.Size) -> int:
    numel = 1
    for n in out[1:]:  # per sample
        numel *= n
    if isinstance(module, nn.Linear):
        return module.in_features * numel
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return (module.in_channels // module.groups) * kh * kw * numel
    return 0


def _flash(module: nn.Module, precision: str) -> int:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return 0
    channels = weight.shape[0]
    per_channel = _BIAS_BYTES[precision] + _SCALE_BYTES[precision]
    return weight.numel() * PRECISION_BYTES[precision] + channels * per_channel


def _aliases(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _ALIAS_MODULES)
    if node.op == "call_function":
        return node.target in _ALIAS_FUNCTIONS or node.target is operator.getitem
    if node.op == "call_method":
        return node.target in _ALIAS_METHODS
    return False


# layers and functions that multiply-accumulate but that this count does not model: refused, so
# that no model is silently counted as free
_UNCOUNTED_MODULES = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.MultiheadAttention,
    nn.RNNBase,
    nn.Bilinear,
)
_UNCOUNTED_FUNCTIONS = {
    torch.matmul,
    torch.bmm,
    torch.mm,
    torch.einsum,
    operator.matmul,
    nn.functional.linear,
    nn.functional.conv1d,
    nn.functional.conv2d,
}
_UNCOUNTED_METHODS = {"matmul", "bmm", "mm"}


def _refuse_uncounted(node: fx.Node, modules: dict[str, nn.Module]) -> None:
    what = None
    if node.op == "call_module" and isinstance(modules[str(node.target)], _UNCOUNTED_MODULES):
        what = type(modules[str(node.target)]).__name__
    elif node.op == "call_function" and node.target in _UNCOUNTED_FUNCTIONS:
        what = getattr(node.target, "__name__", str(node.target))
    elif node.op == "call_method" and node.target in _UNCOUNTED_METHODS:
        what = str(node.target)
    if what is not None:
        raise FedsimError(
            "--model",
            f"layer '{node.name}' ({what}) multiply-accumulates in a way the deployment count "
            "does not model (it counts Conv2d and Linear layers)",
            "use a model built from Conv2d and Linear layers",
        )


def _numel(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return 0
    numel = 1
    for n in meta.shape[1:]:  # per sample
        numel *= n
    return numel


def deployment(
    model: nn.Module, input_shape: tuple[int, ...], precision: str = "int8"
) -> Deployment:
    """Count ``model``'s deployed inference costs for one sample of ``input_shape`` (without the
    batch axis); ``model`` takes a batch of flattened or shaped inputs as it does in training."""
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_BYTES)}")
    try:
        graph = fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx refuses data-dependent Python (len, if on a tensor)
        raise FedsimError(
            "--model",
            f"{type(model).__name__} cannot be traced into a graph ({exc})",
            "deployment costs are counted for models torch.fx can trace (the zoo's conv and MLP "
            "models, the MLPerf Tiny models)",
        ) from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    storage: dict[fx.Node, fx.Node] = {}  # node -> the node whose tensor it reads or is
    macs: dict[str, int] = dict.fromkeys(LAYER_KINDS, 0)
    layers = flash = 0
    for node in nodes:
        first = next((a for a in node.all_input_nodes), None)
        storage[node] = storage[first] if first is not None and _aliases(node, modules) else node
        _refuse_uncounted(node, modules)
        if node.op == "call_module":
            module = modules[str(node.target)]
            kind = layer_kind(module)
            if kind is not None:
                meta = node.meta["tensor_meta"]
                macs[kind] += _macs(module, meta.shape)
                layers += 1
                flash += _flash(module, precision)
    last_use: dict[fx.Node, int] = {}
    for index, node in enumerate(nodes):
        for source in node.all_input_nodes:
            last_use[storage[source]] = index
        if node.op == "output":
            for source in node.all_input_nodes:
                last_use[storage[source]] = len(nodes)
    owners = {s for s in storage.values() if s.op not in ("output", "get_attr")}  # weights: flash
    born = {owner: nodes.index(owner) for owner in owners}
    width = PRECISION_BYTES[precision]
    peak = 0
    for index in range(len(nodes)):
        live = sum(
            _numel(owner) * width
            for owner in owners
            if born[owner] <= index <= last_use.get(owner, born[owner])
        )
        peak = max(peak, live)
    return Deployment(precision, macs, layers, flash, peak)
