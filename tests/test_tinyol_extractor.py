"""Federated TinyOL as the paper sets it up (issue 23): the head learns on a *pre-trained*, frozen
extractor (trained on other keywords than the devices learn, cached), and standardises its
features on the fly with running statistics that travel with the head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edge.online_head import OnlineHead, RunningNorm
from fedsim.core.algorithms.feature_norm import NormalizedLinear, with_feature_norm
from fedsim.core.algorithms.local import OnlineHeadLearner, stream_order
from fedsim.core.algorithms.pretrain import pretrain_encoder
from fedsim.core.algorithms.prototypes import EncoderSpec
from fedsim.core.algorithms.tinyol import TinyOL, pretrain_config
from fedsim.core.errors import FedsimError
from fedsim.core.models import build_model
from fedsim.core.results import read_model, read_rounds
from fedsim.core.scenario_load import load_scenario
from fedsim.runner import run
from tests.conftest import tiny_scenario

EXTRACTOR = {
    "dataset": "kws",
    "episodes": 20,
}  # a few episodes: the test needs the cache, not skill


def _kws(mode: str, **algorithm: Any) -> dict[str, Any]:
    scenario = tiny_scenario(
        task={"dataset": "kws-unseen", "model": "mlp-100"},
        algorithm={"kind": "tinyol", "lr": 0.05, "extractor": EXTRACTOR, **algorithm},
        rounds=2,
    )
    scenario["fleet"]["partition"] = {"kind": "iid"}
    scenario["execution"]["mode"] = mode
    return scenario


@pytest.mark.parametrize("mode", ["per-device", "cohort"])
def test_a_federated_tinyol_run_learns_on_the_cached_pretrained_extractor_and_keeps_it_frozen(
    mode: str, write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = run(write_scenario(_kws(mode)), tmp_path / mode).out

    final = read_model(out)
    pretrained = pretrain_encoder(pretrain_config(EncoderSpec(dataset="kws", episodes=20), seed=7))
    for name in ("1.weight", "1.bias"):  # the mlp-100 body: unchanged from the cached encoder
        np.testing.assert_array_equal(final[name], pretrained[name], err_msg=name)
    init = build_model("mlp-100", 1960, 6, 0).state_dict()
    assert not np.array_equal(final["1.weight"], init["1.weight"].numpy())
    assert final["3.weight"].shape == (6, 100)  # the head, trained
    assert all(r["head_only"] == r["participants"] for r in read_rounds(out))


def test_an_extractor_that_does_not_match_the_task_is_refused_with_the_fix(
    write_scenario: Callable[..., Path],
) -> None:
    scenario = tiny_scenario(algorithm={"kind": "tinyol", "extractor": EXTRACTOR})

    with pytest.raises(FedsimError, match=r"set task\.dataset: kws-unseen"):
        load_scenario(write_scenario(scenario))


def test_auto_pretrains_for_an_unseen_dataset_and_keeps_random_features_otherwise() -> None:
    assert TinyOL(kind="tinyol").encoder("har-unseen") == EncoderSpec(dataset="har", n_way=3)
    assert TinyOL(kind="tinyol").encoder("digits") is None
    assert TinyOL(kind="tinyol", extractor="random").encoder("kws-unseen") is None


# -- running feature normalisation -------------------------------------------------------------


def _normalised_mlp() -> torch.nn.Sequential:
    model = with_feature_norm(build_model("mlp", 6, 3, 0))
    assert isinstance(model, torch.nn.Sequential)
    return model


def test_a_normalising_device_equals_the_reference_head_with_running_norm() -> None:
    rng = np.random.default_rng(4)
    x, y = (rng.standard_normal((9, 6)) * 3 + 5).astype(np.float32), rng.integers(0, 3, 9)
    model = _normalised_mlp()
    head, body = model[3], model[1]
    assert isinstance(head, NormalizedLinear)
    assert isinstance(body, torch.nn.Linear)
    features = torch.relu(torch.from_numpy(x) @ body.weight.T + body.bias).detach().numpy()
    reference = OnlineHead(
        head.weight.detach().numpy().copy(),
        head.bias.detach().numpy().copy(),
        0.1,
        norm=RunningNorm(32),
    )

    OnlineHeadLearner(lr=0.1, passes=2).train(model, x, y, seed=8)

    for i in stream_order(9, 18, 8).numpy():
        reference.step(features[i], int(y[i]))
    assert reference.norm is not None
    np.testing.assert_allclose(head.weight.detach().numpy(), reference.weight, atol=1e-5)
    np.testing.assert_allclose(head.norm_mean.detach().numpy(), reference.norm.mean, atol=1e-5)
    np.testing.assert_allclose(head.norm_var.detach().numpy(), reference.norm.var, atol=1e-4)
    assert float(head.norm_count) == 18
    # the server scores what the device learned: the layer applies the same statistics
    with torch.no_grad():
        scores = torch.softmax(model(torch.from_numpy(x[:1])), 1)[0].numpy()
    np.testing.assert_allclose(scores, reference.predict(features[0]), atol=1e-5)


def test_normalisation_changes_what_a_device_learns_and_resumes_the_statistics() -> None:
    rng = np.random.default_rng(5)
    x, y = (rng.standard_normal((12, 6)) * 3 + 5).astype(np.float32), rng.integers(0, 3, 12)
    plain, normed = build_model("mlp", 6, 3, 0), _normalised_mlp()
    assert isinstance(plain, torch.nn.Sequential)

    plain_head, head = plain[3], normed[3]
    assert isinstance(plain_head, torch.nn.Linear)
    assert isinstance(head, NormalizedLinear)

    OnlineHeadLearner(lr=0.1, passes=1).train(plain, x, y, seed=1)
    OnlineHeadLearner(lr=0.1, passes=1).train(normed, x, y, seed=1)
    after_one = head.norm_mean.detach().clone()
    OnlineHeadLearner(lr=0.1, passes=1).train(normed, x, y, seed=2)

    assert not np.allclose(plain_head.weight.detach().numpy(), head.weight.detach().numpy())
    assert float(head.norm_count) == 24  # the second round went on from 12 samples
    torch.testing.assert_close(head.norm_mean, after_one)  # the same samples: same mean


def test_normalize_is_on_by_default_and_its_statistics_travel_with_the_head(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    on = run(write_scenario(_kws("cohort"), "on.yaml"), tmp_path / "on").out
    off = run(write_scenario(_kws("cohort", normalize=False), "off.yaml"), tmp_path / "off").out

    final_on, final_off = read_model(on), read_model(off)
    assert TinyOL(kind="tinyol").normalize
    assert "3.norm_mean" in final_on
    assert "3.norm_mean" not in final_off
    assert float(final_on["3.norm_count"][0]) > 0  # averaged statistics reached the server
    assert not np.allclose(final_on["3.weight"], final_off["3.weight"])
    up_on, up_off = read_rounds(on)[0]["bytes_up"], read_rounds(off)[0]["bytes_up"]
    assert up_on - up_off == 5 * 4 * (2 * 100 + 1)  # per device: mean, variance, count
