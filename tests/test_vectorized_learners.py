"""Each batched kernel (``clients.vectorized.KERNELS``) trains every device as its learner's own
``train`` would, to float32 rounding: unequal sample counts, short last batches, devices that sit
steps out, frozen parameters, TinyReptile's stream and TinyMetaFed's two phases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import clients.work
from clients.vectorized import KERNELS, can_vectorize, train_vectorized
from fedsim.core.algorithms import Learner
from fedsim.core.algorithms.local import LocalSgd, OnlineSteps
from fedsim.core.algorithms.ssf import FedInsNet, SsfViT
from fedsim.core.algorithms.tinymetafed import ReconstructThenUpdate
from fedsim.core.models import build_model, get_arrays, head_parameters
from fedsim.core.reduce import Arrays
from fedsim.core.results import read_model, read_rounds
from fedsim.runner import run
from tests.conftest import tiny_scenario

FEATURES, CLASSES = 12, 3
UNEQUAL = (11, 3, 0, 8, 5, 1, 4, 9)  # a device without samples, short last batches
CASES: dict[str, tuple[Learner, tuple[int, ...]]] = {
    "fedavg": (LocalSgd(lr=0.2, epochs=2, batch_size=4), UNEQUAL),
    "fedprox": (LocalSgd(lr=0.2, epochs=3, batch_size=4, mu=0.5), UNEQUAL),
    "tinyreptile": (OnlineSteps(lr=0.1, steps=6, batch_size=3), (2, 5, 20, 7, 18)),
    "tinymetafed": (ReconstructThenUpdate(0.1, 4, 2, 3, True, 2), (2, 5, 20, 7, 18)),
    "tinymetafed-no-local": (ReconstructThenUpdate(0.1, 4, 2, 3, False), (2, 5, 20, 7)),
}


def _data(sizes: tuple[int, ...], regression: bool = False) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(sum(sizes))
    data = []
    for n in sizes:
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        if regression:
            y = rng.normal(size=(n, CLASSES)).astype(np.float32)
        else:
            y = rng.integers(0, CLASSES, n).astype(np.int64)
        data.append((x, y))
    return data


def _model(freeze: Callable[[nn.Module], list[str]] | None = None) -> nn.Module:
    model = build_model("mlp", FEATURES, CLASSES, 1)
    frozen = freeze(model) if freeze else []
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return model


def _assert_equals_the_loop(
    learner: Learner,
    data: list[tuple[Any, Any]],
    freeze: Callable[[nn.Module], list[str]] | None = None,
) -> tuple[Arrays, list[tuple[Arrays, float]]]:
    seeds = [1000 + i for i in range(len(data))]
    start = get_arrays(_model(freeze))

    together = train_vectorized(_model(freeze), start, learner, data, seeds)

    for (x, y), seed, (arrays, loss) in zip(data, seeds, together, strict=True):
        alone = _model(freeze)
        alone_loss = learner.train(alone, x, y, seed, {})
        for got, want in zip(arrays, get_arrays(alone), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert loss == pytest.approx(alone_loss, rel=1e-5, abs=1e-12)
    return start, together


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_kernel_equals_its_learner_device_by_device(case: str) -> None:
    learner, sizes = CASES[case]

    start, together = _assert_equals_the_loop(learner, _data(sizes))

    assert type(learner) in KERNELS
    for (arrays, _), n in zip(together, sizes, strict=True):  # every device with data trained
        moved = any(not np.array_equal(a, s) for a, s in zip(arrays, start, strict=True))
        assert moved == (n > 0)


def test_mean_squared_error_is_masked_too() -> None:
    """Float targets (sine regression): the short batches' padding stays out of the mean."""
    _assert_equals_the_loop(LocalSgd(lr=0.05, epochs=2, batch_size=4, mu=0.1), _data(UNEQUAL, True))


def test_a_device_that_sits_steps_out_does_not_move() -> None:
    """After its one step the 1-sample device sits out four: FedProx's drift gradient, no longer
    zero, must not move it (the device without samples never moves at all)."""
    learner = LocalSgd(lr=0.3, epochs=1, batch_size=2, mu=5.0)

    start, together = _assert_equals_the_loop(learner, _data((1, 9, 0)))

    empty, _ = together[2]
    assert all(np.array_equal(a, s) for a, s in zip(empty, start, strict=True))


def _first_layer(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()][:2]


def _head_bias(model: nn.Module) -> list[str]:
    return sorted(name for name in head_parameters(model) if name.endswith("bias"))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("freeze", [_first_layer, _head_bias])
def test_frozen_parameters_stay_as_received_bit_for_bit(
    case: str, freeze: Callable[[nn.Module], list[str]]
) -> None:
    learner, sizes = CASES[case]
    names = [name for name, _ in _model().named_parameters()]
    frozen = [names.index(n) for n in freeze(_model())]

    start, together = _assert_equals_the_loop(learner, _data(sizes), freeze)

    for arrays, _ in together:
        for i in frozen:
            assert np.array_equal(arrays[i], start[i])


def test_tinymetafed_moves_the_head_only_on_support_and_the_body_only_on_query() -> None:
    learner = ReconstructThenUpdate(0.1, 4, 2, 3, True, 2)
    model = _model()
    head = head_parameters(model)
    names = [name for name, _ in model.named_parameters()]

    start, together = _assert_equals_the_loop(learner, _data((5, 20, 7)))

    for arrays, _ in together:  # both parts trained (no phase was skipped)
        for name, got, was in zip(names, arrays, start, strict=True):
            assert not np.array_equal(got, was), name
    assert head  # the mlp has a head to reconstruct


def _fedins(seed: int = 5) -> nn.Module:
    """FedIns's pool (4 entries, top 2 by key) on a small untrained SSF ViT, backbone frozen."""
    torch.manual_seed(0)
    return FedInsNet(SsfViT(side=8, patch=4, dim=8, depth=1, heads=2), CLASSES, 4, 2, seed)


def test_fedins_key_loss_trains_batched_with_short_batches() -> None:
    """The key term is the model's own batch mean: a step with short batches runs unpadded, one
    batched step per width, so the padding never enters it."""
    learner = LocalSgd(lr=0.05, epochs=2, batch_size=4, key_weight=0.3)
    rng = np.random.default_rng(3)
    sizes = (11, 3, 8, 5, 4, 9, 1, 0)
    data = [
        (rng.uniform(size=(n, 64)).astype(np.float32), rng.integers(0, CLASSES, n)) for n in sizes
    ]
    seeds = [50 + i for i in range(len(sizes))]
    start = get_arrays(_fedins())
    assert can_vectorize(_fedins(), learner)

    together = train_vectorized(_fedins(), start, learner, data, seeds)

    names = [name for name, _ in _fedins().named_parameters()]
    for (x, y), seed, (arrays, loss) in zip(data, seeds, together, strict=True):
        alone = _fedins()
        alone_loss = learner.train(alone, x, y, seed, {})
        for name, got, want, was in zip(names, arrays, get_arrays(alone), start, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
            if name.startswith("backbone."):  # frozen
                assert np.array_equal(got, was)
        assert loss == pytest.approx(alone_loss, rel=1e-5, abs=1e-12)


# end to end: cohort mode, vectorised, against per-device mode, on unequal (Dirichlet) splits
SCENARIOS = {
    "fedprox": {"kind": "fedprox", "lr": 0.1, "local_epochs": 2, "batch_size": 8, "mu": 0.5},
    "tinyreptile": {"kind": "tinyreptile", "lr": 0.1, "steps": 6, "batch_size": 4},
    "tinymetafed": {
        "kind": "tinymetafed",
        "lr": 0.1,
        "steps": 4,
        "support_steps": 2,
        "support_passes": 2,
        "batch_size": 3,
        "top_p": 0.3,
    },
}


@pytest.mark.parametrize("algorithm", sorted(SCENARIOS))
def test_vectorised_cohorts_match_per_device_mode_on_unequal_counts(
    algorithm: str,
    write_scenario: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batched: list[list[int]] = []
    train = train_vectorized

    def spy(*args: Any) -> Any:
        result = train(*args)
        batched.append([len(y) for _, y in args[3]])  # counted once it returned
        return result

    monkeypatch.setattr(clients.work, "train_vectorized", spy)

    def scenario(execution: dict[str, Any]) -> dict[str, Any]:
        return tiny_scenario(
            fleet={
                "groups": [{"profile": "rpi4", "count": 12}],
                "partition": {"kind": "dirichlet", "alpha": 0.5},
            },
            algorithm=SCENARIOS[algorithm],
            rounds=2,
            execution={"engine": "inline", **execution},
        )

    modes: dict[str, dict[str, Any]] = {
        "per-device": {"mode": "per-device"},
        "vectorised": {"mode": "cohort", "vectorize": True, "actors": 1},
    }
    outs = {
        mode: run(write_scenario(scenario(execution), f"{mode}.yaml"), tmp_path / mode).out
        for mode, execution in modes.items()
    }

    assert batched
    assert all(len(set(sizes)) > 1 for sizes in batched)  # unequal counts, one batched group
    a, b = read_model(outs["per-device"]), read_model(outs["vectorised"])
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-5)
    for x, y in zip(read_rounds(outs["per-device"]), read_rounds(outs["vectorised"]), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)


def test_head_only_devices_train_batched_too(
    write_scenario: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Nano cannot hold the 784-32-10 MLP's training (memory_policy: head-only): its devices
    train their head as one batched group, with the body frozen as in per-device mode."""
    trainable: list[int] = []

    def spy(model: nn.Module, *args: Any) -> Any:
        result = train_vectorized(model, *args)
        trainable.append(sum(p.requires_grad for p in model.parameters()))  # once it returned
        return result

    monkeypatch.setattr(clients.work, "train_vectorized", spy)

    def scenario(execution: dict[str, Any]) -> dict[str, Any]:
        return tiny_scenario(
            task={"dataset": "blobs-784", "model": "mlp"},
            fleet={
                "groups": [
                    {"profile": "rpi4", "count": 8},
                    {"profile": "nano33-ble-sense", "count": 8},
                ],
                "samples_per_device": 24,
                "memory_policy": "head-only",
            },
            algorithm={**SCENARIOS["fedprox"], "batch_size": 32},
            rounds=2,
            execution={"engine": "inline", **execution},
        )

    pd = run(write_scenario(scenario({"mode": "per-device"}), "pd.yaml"), tmp_path / "pd").out
    vectorised = scenario({"mode": "cohort", "vectorize": True, "actors": 1})
    vec = run(write_scenario(vectorised, "vec.yaml"), tmp_path / "vec").out

    assert sorted(set(trainable)) == [2, 4]  # the head's weight and bias; the whole MLP
    assert sum(r["head_only"] for r in read_rounds(vec)) > 0
    a, b = read_model(pd), read_model(vec)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-5)
