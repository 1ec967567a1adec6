"""FedIns building blocks (design §6.6): SSF identity, per-instance pool gathering, frozen
backbone, pool averaging, and malformed pool tensors refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.core.algorithms.backbone import pretrain_backbone
from fedsim.core.algorithms.fedins import FedIns
from fedsim.core.algorithms.ssf import FedInsNet, SsfViT, identity_ssf
from fedsim.core.models import get_arrays
from fedsim.core.payload import Upload
from fedsim.core.reduce import WeightedMean, reduce_all


def _vit() -> SsfViT:
    torch.manual_seed(0)
    return SsfViT(depth=2, dim=32, heads=4, hidden=64)


def test_ssf_with_unit_scale_and_zero_shift_is_the_frozen_backbone_exactly() -> None:
    vit = _vit()
    x = torch.randn(5, 784)
    gamma, beta = identity_ssf(vit.ssf_width, rows=5)
    assert torch.equal(vit.features(x, gamma, beta), vit.features(x))
    shared = identity_ssf(vit.ssf_width)  # one row for the whole batch
    assert torch.equal(vit.features(x, *shared), vit.features(x))


def test_ssf_slots_cover_every_layer_the_paper_names() -> None:
    vit = _vit()
    # patch embedding + per block (norm1, qkv, proj, norm2, fc1, fc2) + final norm
    assert vit.ssf_width == 32 + 2 * (32 + 96 + 32 + 32 + 64 + 32) + 32
    gamma, beta = identity_ssf(vit.ssf_width)
    beta[0, -1] = 1.0  # the final norm's last feature, shifted: the last slot, the last op
    x = torch.randn(2, 784)
    moved = vit.features(x, gamma, beta) - vit.features(x)
    expected = torch.zeros(2, 32)
    expected[:, -1] = 1.0
    torch.testing.assert_close(moved, expected)


def test_per_instance_gathering_equals_one_instance_at_a_time() -> None:
    net = FedInsNet(_vit(), classes=7, entries=6, top_n=3, seed=1)
    x = torch.randn(9, 784)
    batched = net(x)
    index, _ = net.select(x)
    assert len({tuple(row) for row in index.tolist()}) > 1  # instances pick different entries
    for i in range(len(x)):
        idx = index[i]
        gamma = net.gammas[idx].mean(0, keepdim=True)
        beta = net.betas[idx].mean(0, keepdim=True)
        f = net.backbone.features(x[i : i + 1], gamma, beta)
        logits = f @ net.head_w[idx].mean(0).T + net.head_b[idx].mean(0)
        torch.testing.assert_close(batched[i : i + 1], logits, rtol=1e-5, atol=1e-6)


def test_only_the_pool_trains() -> None:
    net = FedInsNet(_vit(), classes=4, entries=5, top_n=2)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(6, 784)), torch.arange(6) % 4)
    torch.autograd.backward(0.9 * loss + 0.1 * net.last_key_loss)
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in (net.gammas, net.betas, net.keys, net.head_w))
    assert net.keys.grad is not None
    assert net.keys.grad.abs().sum() > 0  # the key-matching term pulls the selected keys


def test_pool_averaging_matches_numpy() -> None:
    clients = [FedInsNet(_vit(), classes=3, entries=4, top_n=2, seed=s) for s in range(3)]
    arrays = [get_arrays(c) for c in clients]
    weights = [10, 30, 60]
    agg = WeightedMean()
    merged = agg.finalize(arrays[0], reduce_all(agg, list(zip(arrays, weights, strict=True))))
    for i, tensor in enumerate(merged):
        expected = np.average(np.stack([a[i] for a in arrays]), axis=0, weights=weights)
        np.testing.assert_allclose(tensor, expected, rtol=1e-5, atol=1e-7)
    uniform = FedIns(kind="fedins", weighting="uniform").aggregator()  # the reference code's mean
    merged = uniform.finalize(
        arrays[0], reduce_all(uniform, list(zip(arrays, weights, strict=True)))
    )
    for i, tensor in enumerate(merged):
        expected = np.mean(np.stack([a[i] for a in arrays]), axis=0)
        np.testing.assert_allclose(tensor, expected, rtol=1e-5, atol=1e-7)


def test_a_pool_tensor_of_the_wrong_shape_is_refused() -> None:
    net = FedInsNet(_vit(), classes=3, entries=4, top_n=2)
    base = get_arrays(net)
    wire = Upload("float32").encode(base, base, (True,) * len(base))
    index = list(net.state_dict()).index("gammas")  # the pool's γ: [entries, width]
    wire[str(index)] = wire[str(index)][:-1]  # a client with one entry too few
    with pytest.raises(ValueError, match=rf"update tensor {index} has shape \(3, "):
        Upload("float32").decode(wire, base, (True,) * len(base))


def test_the_backbone_is_pretrained_in_the_project_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsim.core.algorithms.backbone import BackboneConfig, backbone_accuracy, load_backbone

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    config = BackboneConfig("mnist-5k", steps=60, batch_size=64, depth=2)
    steps: list[int] = []
    pretrain_backbone(config, lambda step, loss: steps.append(step))
    assert steps == list(range(1, 61))
    again: list[int] = []
    pretrain_backbone(config, lambda step, loss: again.append(step))
    assert again == []  # cached by its config
    assert backbone_accuracy(config) > 0.5  # 60 steps already far above chance (0.1)
    vit = load_backbone(config)
    assert not vit.training
    assert not any(p.requires_grad for p in vit.parameters())


def test_a_fedins_run_trains_and_sends_only_the_pool(
    tmp_path: Path, write_scenario: Callable[..., Path]
) -> None:
    from fedsim.core.algorithms.backbone import BackboneConfig
    from fedsim.core.results import read_model, read_rounds
    from fedsim.runner import run
    from tests.conftest import tiny_scenario

    backbone = {"dataset": "mnist-5k", "steps": 5, "dim": 16, "depth": 1}
    algorithm = {"kind": "fedins", "backbone": backbone, "entries": 3, "top_n": 2}
    scenario = tiny_scenario(
        task={"dataset": "mnist-5k", "model": "ssf-vit"},
        fleet={"groups": [{"profile": "rpi4", "count": 3}], "partition": {"kind": "iid"}},
        algorithm=algorithm,
        rounds=2,
    )
    out = run(write_scenario(scenario), tmp_path / "fi").out
    final = read_model(out)
    pool = [k for k in final if not k.startswith("backbone.")]
    assert pool == ["gammas", "betas", "keys", "head_w", "head_b"]
    pool_bytes = 4 * sum(final[k].size for k in pool)
    assert [r["bytes_up"] for r in read_rounds(out)] == [3 * pool_bytes] * 2
    assert [r["bytes_down"] for r in read_rounds(out)] == [3 * pool_bytes] * 2
    trained = pretrain_backbone(BackboneConfig("mnist-5k", 5, dim=16, depth=1, seed=7))
    for name, value in trained.items():  # the backbone never moved
        np.testing.assert_array_equal(final[f"backbone.{name}"], value)


def test_fedins_needs_the_vit_and_a_pool_as_big_as_top_n(
    write_scenario: Callable[..., Path],
) -> None:
    from fedsim.core.errors import FedsimError
    from fedsim.core.scenario_load import load_scenario
    from tests.conftest import tiny_scenario

    wrong_model = tiny_scenario(
        task={"dataset": "mnist-5k", "model": "mlp"}, algorithm={"kind": "fedins"}
    )
    with pytest.raises(FedsimError, match=r"set task\.model: ssf-vit"):
        load_scenario(write_scenario(wrong_model, "a.yaml"))
    too_few = tiny_scenario(
        task={"dataset": "mnist-5k", "model": "ssf-vit"},
        algorithm={"kind": "fedins", "entries": 2, "top_n": 3},
    )
    with pytest.raises(FedsimError, match=r"top_n \(3\) cannot exceed entries \(2\)"):
        load_scenario(write_scenario(too_few, "b.yaml"))
