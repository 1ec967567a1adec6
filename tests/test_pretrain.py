"""The Conv-4 prototypical encoder: shapes, episodic pre-training cached by config, few-shot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.core.algorithms.pretrain import (
    PretrainConfig,
    few_shot_accuracy,
    load_encoder,
    pretrain_encoder,
    prototype_logits,
)
from fedsim.core.models import build_model, encoder_of

TINY = PretrainConfig("omniglot", episodes=4, n_way=3, k_shot=2, q_queries=2)


def test_conv4_embeds_28x28_characters_in_64_dimensions() -> None:
    model = build_model("conv4", 784, 7, 0)
    assert model(torch.zeros(2, 784)).shape == (2, 7)
    assert encoder_of(model)(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in conv] == [64] * 4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4
    with pytest.raises(ValueError, match="square single-channel"):
        build_model("conv4", 30, 2, 0)


def test_prototype_logits_are_negative_squared_distances_to_class_means() -> None:
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 1.0]])
    logits = prototype_logits(support, labels, query, 2)
    assert torch.allclose(logits, torch.tensor([[-1.0, -(81.0 + 81.0)]]))


def test_pretraining_is_cached_by_config_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    losses: list[float] = []
    first = pretrain_encoder(TINY, lambda step, loss: losses.append(loss))
    assert len(losses) == 4
    assert all(np.isfinite(losses))
    again: list[float] = []
    second = pretrain_encoder(TINY, lambda step, loss: again.append(loss))
    assert again == []  # from the cache: no training
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert len(list(tmp_path.glob("pretrain-*.npz"))) == 1
    other = PretrainConfig("omniglot", episodes=5, n_way=3, k_shot=2, q_queries=2)
    assert other.key() != TINY.key()
    pretrain_encoder(other)
    assert len(list(tmp_path.glob("pretrain-*.npz"))) == 2


def test_the_loaded_encoder_is_frozen_and_scores_unseen_alphabets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    encoder = load_encoder(TINY)
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    trained = PretrainConfig("omniglot", episodes=60, n_way=5, k_shot=2, q_queries=2)
    untrained = PretrainConfig("omniglot", episodes=1, n_way=5, k_shot=2, q_queries=2, lr=1e-12)
    after, half = few_shot_accuracy(trained, n_way=5, k_shot=1, episodes=40, q_queries=2)
    before, _ = few_shot_accuracy(untrained, n_way=5, k_shot=1, episodes=40, q_queries=2)
    assert after > before + 0.08  # 60 episodes already embed unseen alphabets better (5-way)
    assert half > 0.0


def test_pretrain_refuses_a_dataset_it_cannot_pretrain_on() -> None:
    from tests.test_cli import fedsim

    proc = fedsim("pretrain", "--dataset", "digits")
    assert proc.returncode == 2
    assert "--dataset: cannot pre-train on 'digits'; use one of kanjivg, omniglot, kws, har" in (
        proc.stderr
    )
    assert "or character sets joined by '+' (kanjivg+omniglot)" in proc.stderr


def test_pooled_encoders_never_see_the_unseen_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsim.core.algorithms.pretrain import _Pooled
    from fedsim.core.datasets.fewshot import split_classes

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    config = PretrainConfig("har", "mlp-100", episodes=2, n_way=2, k_shot=2, q_queries=2)
    source = _Pooled(config)
    background, _ = split_classes(6, 0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        xs, _, xq, _ = source.episode(True, 2, 2, 2, rng)
        rows = [np.flatnonzero((source.data.x_train == x).all(axis=(1, 2)))[0] for x in (*xs, *xq)]
        assert set(source.data.y_train[rows].tolist()) <= set(background.tolist())
    assert len(pretrain_encoder(config)) == 4  # mlp-100: two linear layers' weights and biases
