"""The MLPerf Tiny reference models: their figures, their inputs, and that DS-CNN learns keywords.

Reference figures, counted by hand from the Keras models in github.com/mlcommons/tiny
(``benchmark/training/...``, commit 1afd2c9) and checked against the layer configs stored in the
trained ``vww_96.h5`` and ``pretrainedResnet.h5`` (16/32/64 filters):

- forward MACs: MLPerf Tiny's published counts;
- parameters: Keras ``model.summary()`` totals, trainable + BatchNorm moving mean and variance
  (non-trainable): DS-CNN 23,756 + 1,152; MobileNetV1-0.25 216,322 + 5,472; ResNet-8
  78,186 + 480; the autoencoder 267,928 + 2,064.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from devices.footprint import footprint
from fedsim.core.datasets import kws
from fedsim.core.errors import FedsimError
from fedsim.core.mlperf_models import MLPERF_MODELS, build_mlperf
from fedsim.core.models import MODELS, build_model, task_loss

REFERENCE = {  # name: (forward MACs, Keras total parameters)
    "mlperf-kws": (2_656_768, 24_908),
    "mlperf-vww": (7_489_664, 221_794),
    "mlperf-ic": (12_501_632, 78_666),
    "mlperf-ad": (264_192, 269_992),
}


def keras_params(model: nn.Module) -> int:
    """What Keras counts: the weights plus BatchNorm's moving means and variances (torch's
    ``num_batches_tracked`` has no Keras counterpart)."""
    stats = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    return sum(t.numel() for t in [*model.parameters(), *stats])


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_macs_and_parameters_are_the_references(name: str) -> None:
    spec = MLPERF_MODELS[name]
    model = build_mlperf(name)

    counted = footprint(model, spec.input_shape, 1)

    assert counted.forward_macs == spec.reference_macs == REFERENCE[name][0]
    assert keras_params(model) == spec.reference_params == REFERENCE[name][1]
    assert model(torch.zeros(2, *spec.input_shape)).shape == (2, spec.num_outputs)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_each_is_a_registered_model(name: str) -> None:
    spec = MLPERF_MODELS[name]

    model = build_model(name, spec.num_features, spec.num_outputs, 0)

    assert name in MODELS.builtins()
    assert keras_params(model) == spec.reference_params


def test_stride_two_pads_bottom_right_as_keras() -> None:
    """An input at (0, 0) meets the 3×3 stride-2 output (0, 0) through kernel tap (0, 0) under
    Keras's padding (none above or left), through tap (1, 1) under torch's symmetric padding."""
    model = build_mlperf("mlperf-ic")
    stem = next(m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2)
    conv = stem[1]
    assert isinstance(conv, nn.Conv2d)
    x = torch.zeros(1, conv.in_channels, 32, 32)
    x[0, :, 0, 0] = 1.0
    with torch.no_grad():
        out = stem(x)[0, :, 0, 0] - conv.bias
    assert out.shape == (conv.out_channels,)
    assert torch.allclose(out, conv.weight[:, :, 0, 0].sum(dim=1))


@pytest.mark.parametrize(("name", "shape"), [(n, s.input_shape) for n, s in MLPERF_MODELS.items()])
def test_a_wrong_input_size_is_refused_naming_the_shape(name: str, shape: tuple[int, ...]) -> None:
    size = int(np.prod(shape))
    expected = "×".join(map(str, shape))
    with pytest.raises(ValueError, match=f"{name} takes inputs of shape {expected} "):
        build_model(name, size + 1, 2, 0)


def test_the_autoencoder_refuses_outputs_other_than_its_inputs() -> None:
    with pytest.raises(ValueError, match="autoencoder: it outputs its 640 inputs, got 2"):
        build_model("mlperf-ad", 640, 2, 0)


def test_an_unknown_reference_lists_the_known_ones() -> None:
    with pytest.raises(FedsimError, match=r"unknown MLPerf Tiny model 'mlperf-kw'.*mlperf-kws"):
        build_mlperf("mlperf-kw")


@pytest.mark.skipif(
    not all(shutil.which(p) for p in kws.PROGRAMS), reason="needs espeak-ng, flite and sox"
)
def test_ds_cnn_learns_keywords_from_kws_mfcc() -> None:
    from fedsim.core.data import load_task_data

    data = load_task_data("kws-mfcc", 0)
    model = build_model("mlperf-kws", data.num_features, data.num_classes, 0)
    x, y = torch.from_numpy(data.x_train[:32]), torch.from_numpy(data.y_train[:32])
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []

    for _ in range(30):
        loss = task_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))

    assert data.sample_shape == (49, 10)
    assert losses[-1] < 0.5 * losses[0]
