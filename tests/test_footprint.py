"""Memory and MAC counts of small models against hand calculations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from devices.footprint import footprint, head_parameters
from fedsim.core.models import build_model

MLP_PARAMS = 784 * 100 + 100 + 100 * 10 + 10  # 79,510


def test_full_training_of_the_784_100_10_mlp_by_hand() -> None:
    model = build_model("mlp-100", 784, 10, 0)  # Flatten, Linear, ReLU, Linear

    f = footprint(model, (784,), batch_size=16)

    assert f.weight_bytes == MLP_PARAMS * 4
    assert f.gradient_bytes == MLP_PARAMS * 4
    assert f.optimizer_bytes == 0  # plain SGD
    # kept per sample: Linear1's input (784), ReLU's output (100), Linear2's input (100)
    assert f.activation_bytes == 16 * (784 + 100 + 100) * 4
    assert f.train_bytes == f.weight_bytes + f.gradient_bytes + f.activation_bytes
    assert f.forward_macs == 784 * 100 + 100 * 10
    assert f.train_macs == 3 * f.forward_macs  # backward: input and weight gradients
    assert f.inference_bytes == MLP_PARAMS * 4 + (784 + 100) * 4  # Linear1's input + output


def test_head_only_training_keeps_only_the_heads_input_and_gradient() -> None:
    model = build_model("mlp-100", 784, 10, 0)
    head = head_parameters(model)

    f = footprint(model, (784,), batch_size=16, trainable=head)

    assert head == {"3.weight", "3.bias"}
    assert f.gradient_bytes == (100 * 10 + 10) * 4
    assert f.activation_bytes == 16 * 100 * 4
    assert f.train_macs == 784 * 100 + 100 * 10 + 2 * 100 * 10


def test_adam_state_doubles_the_trainable_parameters() -> None:
    model = build_model("mlp", 64, 10, 0)
    params = 64 * 32 + 32 + 32 * 10 + 10

    f = footprint(model, (64,), batch_size=1, state_per_param=2)

    assert f.optimizer_bytes == 2 * params * 4


def test_a_conv_net_counts_kernels_outputs_and_batchnorm_buffers() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8×8 → 4×8×8
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),  # → 4×4×4
        nn.Flatten(),
        nn.Linear(64, 3),
    )

    f = footprint(model, (1, 8, 8), batch_size=2)

    conv_params, bn_params, bn_buffers, fc_params = 4 * 9 + 4, 8, 4 + 4 + 1, 64 * 3 + 3
    assert f.weight_bytes == (conv_params + bn_params + bn_buffers + fc_params) * 4
    assert f.forward_macs == 1 * 9 * 4 * 8 * 8 + 64 * 3
    # kept per sample: conv input 64, BN input 256, ReLU output 256, pool output 64, FC input 64
    assert f.activation_bytes == 2 * (64 + 256 + 256 + 64 + 64) * 4


def test_the_count_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.train()
    before = [t.clone() for t in model.state_dict().values()]

    footprint(model, (3,), batch_size=4)

    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_activations_grow_with_the_batch_and_nothing_else_does(batch: int) -> None:
    model = build_model("mlp", 64, 10, 0)

    one, many = footprint(model, (64,), 1), footprint(model, (64,), batch)

    assert many.activation_bytes == batch * one.activation_bytes
    assert many.weight_bytes == one.weight_bytes
    assert many.train_macs == one.train_macs  # per sample


def test_devices_profiles_lists_the_catalog_and_what_fits() -> None:
    from tests.test_cli import fedsim

    plain = fedsim("devices", "profiles")
    fit = fedsim("devices", "profiles", "--model", "mlp-100", "--dataset", "blobs-784")

    assert plain.returncode == fit.returncode == 0
    for name in ("nano33-ble-sense", "pico", "esp32-s3", "stm32f746-disco", "rpi4", "rpi-zero2w"):
        assert name in plain.stdout
    rows = {line.split()[0]: line.split()[-3:] for line in fit.stdout.splitlines()[1:] if line}
    assert rows["rpi4"] == ["fits", "fits", "fits"]
    assert rows["nano33-ble-sense"][0] == "no"  # 683 KB to train on 256 KB of SRAM
    assert rows["esp32-s3"][:2] == ["no", "fits"]  # the head alone fits in 512 KB
