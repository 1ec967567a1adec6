"""TinyOL's online head: one SGD step per sample checked against hand-computed numpy and torch
autograd, running normalisation, adding classes, and learning from a stream with nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.online_head import OnlineHead, RunningNorm
from fedsim.core.algorithms.local import OnlineHeadLearner, stream_order
from fedsim.core.models import build_model
from fedsim.core.results import read_model, read_rounds
from fedsim.core.seeds import derive_seed
from fedsim.runner import run
from tests.conftest import tiny_scenario


def test_one_softmax_step_matches_a_hand_computed_update() -> None:
    head = OnlineHead.zeros(features=3, outputs=2, lr=0.5)
    head.weight[:] = [[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]
    head.bias[:] = [0.05, -0.05]
    f = np.array([1.0, 2.0, -1.0], np.float32)

    loss = head.step(f, 1)

    z = np.array([0.1 - 0.4 - 0.3 + 0.05, 0.0 + 0.8 + 0.1 - 0.05])  # [-0.55, 0.85]
    p = np.exp(z) / np.exp(z).sum()
    g = p - np.array([0.0, 1.0])
    assert loss == pytest.approx(-np.log(p[1]), rel=1e-6)
    expected_w = np.array([[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]) - 0.5 * np.outer(g, f)
    assert np.allclose(head.weight, expected_w, atol=1e-6)
    assert np.allclose(head.bias, np.array([0.05, -0.05]) - 0.5 * g, atol=1e-6)


def test_the_step_is_torch_sgd_on_cross_entropy_with_batch_size_1() -> None:
    rng = np.random.default_rng(0)
    head = OnlineHead.zeros(features=5, outputs=4, lr=0.1)
    head.weight[:] = rng.normal(size=(4, 5))
    layer = torch.nn.Linear(5, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight.copy()))
        layer.bias.copy_(torch.from_numpy(head.bias.copy()))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)

    for _ in range(20):
        f = rng.normal(size=5).astype(np.float32)
        label = int(rng.integers(4))
        head.step(f, label)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            layer(torch.from_numpy(f)[None]), torch.tensor([label])
        )
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    assert np.allclose(head.weight, layer.weight.detach().numpy(), atol=1e-5)
    assert np.allclose(head.bias, layer.bias.detach().numpy(), atol=1e-5)


def test_one_mse_step_matches_a_hand_computed_update() -> None:
    head = OnlineHead.zeros(features=2, outputs=1, lr=0.1, loss="mse")
    head.weight[:] = [[0.5, -1.0]]

    loss = head.step(np.array([2.0, 1.0], np.float32), np.array([1.0], np.float32))

    # z = 0.5*2 - 1 = 0; error = -1; loss = 0.5; W -= 0.1 * (-1) * [2, 1]
    assert loss == pytest.approx(0.5)
    assert np.allclose(head.weight, [[0.7, -0.9]])
    assert np.allclose(head.bias, [0.1])


def test_running_normalisation_equals_the_batch_statistics() -> None:
    xs = np.random.default_rng(1).normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    norm = RunningNorm(4)

    for x in xs:
        norm.update(x)

    assert np.allclose(norm.mean, xs.mean(axis=0), atol=1e-4)
    assert np.allclose(norm.var, xs.var(axis=0), rtol=1e-3)
    assert np.allclose(
        norm.apply(xs[0]), (xs[0] - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5), atol=1e-3
    )


def test_adding_a_class_appends_a_row_and_keeps_what_was_learned() -> None:
    head = OnlineHead.zeros(features=3, outputs=2, lr=0.5)
    head.step(np.array([1.0, 0.0, 0.0], np.float32), 0)
    before = head.weight.copy()

    new = head.add_class()
    head.step(np.array([0.0, 0.0, 1.0], np.float32), new)

    assert new == 2
    assert head.weight.shape == (3, 3)
    assert np.array_equal(head.weight[:2, 0], before[:2, 0])  # feature 0 untouched by the step
    assert head.predict(np.array([0.0, 0.0, 1.0], np.float32)).argmax() == 2
    with pytest.raises(ValueError, match="label 3 outside the head's 3 classes"):
        head.step(np.zeros(3, np.float32), 3)


def test_a_stream_is_learned_one_sample_at_a_time_and_nothing_is_stored() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 3, size=(4, 16)).astype(np.float32) + 10.0  # offset: needs the norm
    head = OnlineHead.zeros(features=16, outputs=4, lr=0.05, normalize=True)

    for _ in range(600):
        label = int(rng.integers(4))
        head.step(centres[label] + rng.normal(0, 1, 16).astype(np.float32), label)
    test = [(int(c), centres[c] + rng.normal(0, 1, 16).astype(np.float32)) for c in range(4)] * 25
    accuracy = np.mean([head.predict(x).argmax() == c for c, x in test])

    assert accuracy > 0.95
    assert head.seen == 600
    assert head.state_floats == 4 * 17 + 2 * 16  # the layer and two running vectors, no samples


# -- federated TinyOL: the same head on simulated devices ---------------------------------------


def test_a_simulated_tinyol_device_runs_the_online_head_on_frozen_features() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 6)).astype(np.float32), rng.integers(0, 3, 9)
    model = build_model("mlp", 6, 3, 0)
    body = [p.detach().clone() for p in list(model.parameters())[:2]]
    features = torch.relu(torch.from_numpy(x) @ body[0].T + body[1]).numpy()
    reference = OnlineHead(
        model[3].weight.detach().numpy().copy(), model[3].bias.detach().numpy().copy(), 0.1
    )

    OnlineHeadLearner(lr=0.1, passes=2).train(model, x, y, seed=8)

    for i in stream_order(9, 18, 8).numpy():
        reference.step(features[i], int(y[i]))
    np.testing.assert_allclose(model[3].weight.detach().numpy(), reference.weight, atol=1e-6)
    np.testing.assert_allclose(model[3].bias.detach().numpy(), reference.bias, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(list(model.parameters())[:2], body, strict=True))


def test_a_tinyol_run_trains_and_sends_only_heads(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    scenario = tiny_scenario(algorithm={"kind": "tinyol", "lr": 0.05}, rounds=4)
    out = run(write_scenario(scenario), tmp_path / "ol").out
    rounds = read_rounds(out)
    assert all(r["head_only"] == r["participants"] == 5 for r in rounds)
    # mlp on digits: the 32 → 10 layer and its running mean, variance and count, float32
    head_bytes = 4 * (32 * 10 + 10 + 2 * 32 + 1)
    assert all(r["bytes_up"] == 5 * head_bytes for r in rounds)
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    final = read_model(out)
    init = build_model("mlp", 64, 10, derive_seed(7, "init")).state_dict()
    assert torch.equal(torch.from_numpy(final["1.weight"]), init["1.weight"])  # body: frozen
    assert not torch.equal(torch.from_numpy(final["3.weight"]), init["3.weight"])
