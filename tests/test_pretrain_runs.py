"""The official Omniglot 20-way 1-shot runs as the pre-trained encoder's yardstick: the scoring
itself, the character sets an encoder may train on beside its own, and `fedsim pretrain`'s
report."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from fedsim.cli.pretrain import _report
from fedsim.core.algorithms import pretrain
from fedsim.core.algorithms.pretrain import PretrainConfig, runs_errors
from fedsim.core.datasets.omniglot import OneShotRun, load_runs
from tests.golden import fresh_pretraining


def _identity_embedding(runs: list[OneShotRun], shift: int = 0) -> dict[bytes, NDArray[np.float32]]:
    """Every image of the runs → the one-hot of its class (run, answer): a perfect embedding;
    with ``shift`` a test image lands on the class ``shift`` after its own in the same run."""
    table = {}
    for r, run in enumerate(runs):
        for images, classes in ((run.training, np.arange(20)), (run.test, run.answers + shift)):
            for image, c in zip(images, classes % 20, strict=True):
                table[image.tobytes()] = np.eye(20 * len(runs), dtype=np.float32)[20 * r + c]
    return table


def test_a_perfect_embedding_makes_no_error_and_a_constant_one_scores_chance() -> None:
    runs = load_runs()
    table = _identity_embedding(runs)
    assert len(runs) == 20
    assert all(sorted(run.answers.tolist()) == list(range(20)) for run in runs)

    perfect = runs_errors(lambda x: np.stack([table[i[0].tobytes()] for i in x]), runs)
    constant = runs_errors(lambda x: np.ones((len(x), 8), np.float32), runs)
    pixels = runs_errors(lambda x: x.reshape(len(x), -1), runs)

    assert perfect == [0.0] * 20
    assert constant == [0.95] * 20  # a tie goes to the first class: right once in 20
    assert 0.3 < float(np.mean(pixels)) < 0.9  # raw pixels: better than chance, far from good


def test_a_wrong_class_for_every_test_image_is_always_an_error() -> None:
    runs = load_runs()[:3]
    shifted = _identity_embedding(runs, shift=1)  # each test image on its neighbour class

    errors = runs_errors(lambda x: np.stack([shifted[i[0].tobytes()] for i in x]), runs)

    assert errors == [1.0] * 3


@dataclass(frozen=True)
class _Set:
    images: NDArray[np.float32]
    alphabets: NDArray[np.int64]


def _fake_set(first: float, characters: int, alphabets: int) -> _Set:
    """``characters`` classes × 20 hands whose images are their id (+ ``first``), everywhere."""
    ids = first + np.arange(characters, dtype=np.float32)
    images = np.broadcast_to(ids[:, None, None, None], (characters, 20, 28, 28)).copy()
    return _Set(images, np.arange(characters, dtype=np.int64) % alphabets)


def test_a_mix_trains_on_every_character_of_the_other_set_but_never_on_the_scored_alphabets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sets = {"omniglot": _fake_set(0, 50, 10), "kanjivg": _fake_set(1000, 30, 5)}
    monkeypatch.setattr(pretrain, "characters", lambda name, seed: sets[name])
    config = PretrainConfig("omniglot+kanjivg", episodes=1, rotations=False)
    source = pretrain._Characters(config)
    rng = np.random.default_rng(0)

    seen: set[int] = set()
    for _ in range(200):
        xs, _, xq, _ = source.episode(True, 5, 1, 1, rng)
        ids = {int(v) for v in np.concatenate([xs, xq])[:, 0, 0, 0]}
        assert all(i < 1000 for i in ids) or all(i >= 1000 for i in ids)  # one set an episode
        seen |= ids

    assert seen & set(source.background.tolist()) == set(source.background.tolist())
    assert not seen & set(source.evaluation.tolist())  # the scored alphabets stay unseen
    assert seen >= set(range(1000, 1030))  # every character of the other set, both its "halves"


def test_only_distinct_character_sets_mix() -> None:
    assert pretrain.character_sets("kanjivg+omniglot") == ("kanjivg", "omniglot")
    assert pretrain.character_sets("omniglot") == ("omniglot",)
    assert pretrain.character_sets("har") is None  # pooled: an MLP encoder
    for wrong in ("har+omniglot", "omniglot+omniglot", "kanjivg+", "digits"):
        assert pretrain.character_sets(wrong) is None
        with pytest.raises(ValueError, match="or several joined by '\\+'"):
            pretrain._source(PretrainConfig(wrong))


def test_lr_decay_ends_at_its_fraction_along_a_cosine_and_1_keeps_the_old_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rates: list[float] = []
    step = torch.optim.Adam.step

    def record(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    monkeypatch.setattr(pretrain, "cached_arrays", lambda name, key, build: build())
    pretrain.pretrain_encoder(
        PretrainConfig(
            "omniglot", episodes=5, n_way=2, k_shot=1, q_queries=1, lr=1e-2, lr_decay=0.1
        )
    )
    decayed, rates[:] = list(rates), []
    pretrain.pretrain_encoder(
        PretrainConfig("omniglot", episodes=3, n_way=2, k_shot=1, q_queries=1, lr=1e-2, lr_decay=1)
    )

    assert decayed == pytest.approx(
        [
            1e-2,
            1e-3 + 9e-3 * (1 + np.cos(np.pi / 4)) / 2,
            5.5e-3,
            1e-3 + 9e-3 * (1 + np.cos(3 * np.pi / 4)) / 2,
            1e-3,
        ]
    )
    assert rates == [1e-2] * 3


def test_fedsim_pretrain_reports_the_official_runs_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--dataset", "omniglot", "--episodes", "2", "--way", "3", "--shot", "1", "--query", "1"]
    tiny += ["--eval-episodes", "5"]
    with fresh_pretraining():  # the decoded images cached, no encoder
        report = json.loads(_fedsim(monkeypatch, capsys, *tiny, "--format", "json"))

    runs = report["official_runs"]
    assert 0.0 <= runs["error"] <= 1.0
    assert runs["ci95"] > 0.0
    assert len(runs["per_run"]) == 20
    assert runs["error"] == pytest.approx(float(np.mean(runs["per_run"])))
    last = report["evaluations"][-1]
    assert (last["metric"], last["mean"], last["ci95"]) == ("error", runs["error"], runs["ci95"])

    _report(report, report["evaluations"], "table")
    text = capsys.readouterr().out
    assert f"official Omniglot 20-way 1-shot runs (20 runs): error {runs['error']:.3f} ± " in text


def _fedsim(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``fedsim pretrain ARGS`` in this process (no start-up cost); its stdout."""
    from fedsim.cli import main

    monkeypatch.setattr(sys, "argv", ["fedsim", "pretrain", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert not code, captured.err
    return captured.out


def test_a_constant_rate_keeps_the_cache_key_it_had_before_lr_decay_existed() -> None:
    old_default = PretrainConfig("kanjivg", "conv4", 2000, 5, 5, 5, 1e-3, True, 0, lr_decay=1.0)

    assert old_default.key() == "1bce648601ad0383"  # its checkpoints stay valid: same training
    assert PretrainConfig("kanjivg", "conv4", 2000, 5, 5, 5, 1e-3, True, 0, 0.5).key() != (
        old_default.key()
    )


def test_fedsim_pretrain_defaults_are_the_configs() -> None:
    import inspect

    from fedsim.cli.pretrain import pretrain as command

    options = inspect.signature(command).parameters
    assert options["dataset"].default.default == PretrainConfig().dataset
    help_text = {name: str(options[name].default.help) for name in options}
    best, pooled = PretrainConfig(), pretrain.POOLED_DEFAULT
    for name, field in (("episodes", "episodes"), ("way", "n_way"), ("shot", "k_shot")):
        on_characters, otherwise = getattr(best, field), getattr(pooled, field)
        assert f"[default: {on_characters} on characters, else {otherwise}]" in help_text[name]
    assert (
        f"[default: {best.lr_decay} on characters, else {pooled.lr_decay:g}"
        in (help_text["lr_decay"])
    )
    assert f"[default: {best.q_queries}]" in help_text["query"]
    assert best.q_queries == pooled.q_queries
