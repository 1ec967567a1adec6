"""Federated reconnaissance in the engine: missions, exact merged prototypes, both execution modes,
bad reports refused alone (design §6.5)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fedsim.core.algorithms.prototypes as prototypes
from devices.fleet import load_fleet
from fedsim.core.algorithms.prototype_sums import report_bytes
from fedsim.core.errors import FedsimError
from fedsim.core.models import build_model, encoder_of, set_arrays
from fedsim.core.results import read_model, read_rounds
from fedsim.core.scenario_load import load_scenario
from fedsim.runner import run
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
ENCODER = {"dataset": "omniglot", "episodes": 3, "n_way": 3, "k_shot": 2, "q_queries": 2}


def _scenario(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "name": "recon",
        "seed": 0,
        "task": {"dataset": "omniglot-unseen", "model": "conv4-proto"},
        "fleet": {"groups": [{"profile": "rpi-zero2w", "count": 3}]},
        "algorithm": {
            "kind": "prototypes",
            "encoder": ENCODER,
            "classes_per_mission": 4,
            "samples_per_class": 5,
        },
        "rounds": 3,
    }
    return tiny_scenario(**{**settings, **overrides})


def test_missions_merge_into_the_central_prototypes(write_scenario: Write, tmp_path: Path) -> None:
    path = write_scenario(_scenario())
    out = run(path, tmp_path / "r").out
    rounds = read_rounds(out)
    assert [r["bytes_up"] for r in rounds] == [3 * report_bytes(4, 64)] * 3
    assert all(r["train_loss"] == 0.0 for r in rounds)  # no gradient step
    assert rounds[0]["base_accuracy"] == rounds[0]["accuracy"]
    model = read_model(out)
    sums, counts = list(model.values())[-2:]
    assert counts.sum() == 3 * 3 * 4 * 5  # devices × rounds × classes × samples
    # the same samples embedded centrally, summed per class
    _, fleet = load_fleet(path)
    net = build_model("conv4-proto", 784, fleet.data.num_classes, 0)
    set_arrays(net, list(model.values()))
    encoder = encoder_of(net).eval()
    central = np.zeros_like(sums, dtype=np.float64)
    for d in range(3):
        for r in (1, 2, 3):
            x, y = fleet.round_data(d, r)
            with torch.no_grad():
                e = encoder(torch.from_numpy(x)).numpy().astype(np.float64)
            np.add.at(central, y, e)
    np.testing.assert_allclose(sums, central, rtol=1e-5, atol=1e-4)
    classes = [set(fleet.mission_classes(d, r).tolist()) for d in range(3) for r in (1, 2, 3)]
    assert sum(map(len, classes)) == len(set().union(*classes))  # no class learned twice


def test_per_device_and_cohort_modes_give_the_same_prototypes(
    write_scenario: Write, tmp_path: Path
) -> None:
    a = run(
        write_scenario(_scenario(execution={"engine": "inline", "mode": "per-device"}), "a.yaml"),
        tmp_path / "a",
    ).out
    b = run(
        write_scenario(_scenario(execution={"engine": "inline", "actors": 2}), "b.yaml"),
        tmp_path / "b",
    ).out
    assert read_rounds(a) == read_rounds(b)
    ma, mb = read_model(a), read_model(b)
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert (a / "devices.csv").read_text() == (b / "devices.csv").read_text()


@pytest.mark.parametrize("mode", ["per-device", "cohort"])
def test_a_report_with_nan_is_refused_and_nothing_of_it_merged(
    mode: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = prototypes.class_sums

    def poisoned(mission: str, embeddings: np.ndarray, labels: np.ndarray) -> Any:
        report = original(mission, embeddings, labels)
        if 0 in labels:  # whoever reports class 0 sends garbage
            report.sums[0, 0] = np.nan
        return report

    monkeypatch.setattr(prototypes, "class_sums", poisoned)
    scenario = _scenario(execution={"engine": "inline", "mode": mode}, rounds=6)
    path = write_scenario(scenario)
    out = run(path, tmp_path / mode).out
    with (out / "devices.csv").open() as f:
        failed = [row for row in csv.DictReader(f) if row["status"] == "failed"]
    assert len(failed) == 1
    assert "sums contain NaN or infinity" in failed[0]["error"]
    counts = list(read_model(out).values())[-1]
    _, fleet = load_fleet(path)
    lost = fleet.mission_classes(int(failed[0]["device_id"]), int(failed[0]["round"]))
    assert 0 in lost
    assert counts[lost].sum() == 0  # the whole report refused, not just class 0
    delivered = sum(len(fleet.mission_classes(d, r)) * 5 for d in range(3) for r in range(1, 7))
    assert counts.sum() == delivered - len(lost) * 5  # every other report merged


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"task": {"dataset": "kanjivg-unseen", "model": "conv4-proto"}},
            "set task.dataset: omniglot-unseen",
        ),
        ({"task": {"dataset": "omniglot-unseen", "model": "conv4"}}, "set task.model: conv4-proto"),
    ],
)
def test_a_mismatched_encoder_dataset_or_model_is_refused(
    change: dict[str, Any], message: str, write_scenario: Write
) -> None:
    with pytest.raises(FedsimError, match=message):
        load_scenario(write_scenario(_scenario(**change)))


def test_natural_devices_reconnoitre_from_their_own_samples_and_may_have_nothing_new(
    write_scenario: Write, tmp_path: Path
) -> None:
    scenario = _scenario(
        task={"dataset": "har-unseen", "model": "mlp-proto"},
        fleet={"groups": [{"profile": "esp32-s3", "count": 5}], "partition": {"kind": "natural"}},
        algorithm={
            "kind": "prototypes",
            "encoder": {"dataset": "har", "episodes": 3, "n_way": 2, "k_shot": 2, "q_queries": 2},
            "classes_per_mission": 1,
            "samples_per_class": 4,
        },
        rounds=1,
    )
    path = write_scenario(scenario)
    out = run(path, tmp_path / "har").out
    _, fleet = load_fleet(path)
    for d in range(5):
        rows = fleet.mission_rows(d, 1)
        own = fleet[d].sample_indices
        assert own is not None
        assert set(rows.tolist()) <= set(own.tolist())  # its own subject's windows
    with (out / "devices.csv").open() as f:
        rows_csv = list(csv.DictReader(f))
    assert all(r["status"] == "ok" for r in rows_csv)  # 3 new activities, 5 devices: 2 idle
    assert sorted(int(r["bytes_up"]) for r in rows_csv) == [0, 0] + [report_bytes(1, 100)] * 3


def test_pooled_unseen_classes_are_the_other_half_relabelled() -> None:
    from fedsim.core.data import load_task_data
    from fedsim.core.datasets.fewshot import split_classes

    background, evaluation = split_classes(6, 0)
    assert len(background) == 3
    assert not set(background) & set(evaluation)
    har, unseen = load_task_data("har", 0), load_task_data("har-unseen", 0)
    assert unseen.num_classes == 3
    assert set(np.unique(unseen.y_train)) == {0, 1, 2}
    assert len(unseen.y_train) == np.isin(har.y_train, evaluation).sum()


def _central_sums(path: Path, model: dict[str, np.ndarray], rounds: int) -> np.ndarray:
    """Every device's mission samples of every round embedded centrally, summed per class."""
    _, fleet = load_fleet(path)
    net = build_model("conv4-proto", 784, fleet.data.num_classes, 0)
    set_arrays(net, list(model.values()))
    encoder = encoder_of(net).eval()
    sums = list(model.values())[-2]
    central = np.zeros_like(sums, dtype=np.float64)
    for d in range(len(fleet)):
        for r in range(1, rounds + 1):
            x, y = fleet.round_data(d, r)
            with torch.no_grad():
                e = encoder(torch.from_numpy(x)).numpy().astype(np.float64)
            np.add.at(central, y, e)
    return central


def test_recurring_missions_merge_exactly_and_the_reference_blend_does_not(
    write_scenario: Write, tmp_path: Path
) -> None:
    """The reference environment's missions (classes recur across devices and rounds, samples
    never twice): the sum/count merge gives the central prototypes; the reference blend does not,
    on the classes the server already knew."""
    algorithm = {
        "kind": "prototypes",
        "encoder": ENCODER,
        "classes_per_mission": 20,
        "samples_per_class": 3,
        "classes_recur": True,
    }
    exact_path = write_scenario(_scenario(algorithm=algorithm), "exact.yaml")
    exact = read_model(run(exact_path, tmp_path / "exact").out)
    _, fleet = load_fleet(exact_path)
    drawn = [fleet.mission_classes(d, r) for r in (1, 2, 3) for d in range(3)]
    seen_in = np.bincount(np.concatenate(drawn), minlength=fleet.data.num_classes)
    assert seen_in.max() >= 3  # classes do recur
    rows = [fleet.mission_rows(d, r) for r in (1, 2, 3) for d in range(3)]
    assert len(np.concatenate(rows)) == len(np.unique(np.concatenate(rows)))  # no sample twice
    sums, counts = list(exact.values())[-2:]
    central = _central_sums(exact_path, exact, 3)
    np.testing.assert_allclose(sums, central, rtol=1e-5, atol=1e-4)
    assert counts.sum() == sum(len(r) for r in rows)

    blended_path = write_scenario(
        _scenario(algorithm={**algorithm, "merge": "reference"}), "reference.yaml"
    )
    blended = read_model(run(blended_path, tmp_path / "reference").out)
    b_sums, b_counts = list(blended.values())[-2:]
    np.testing.assert_array_equal(b_counts, counts)  # the same samples reached the server
    seen = counts > 0
    means = central[seen] / counts[seen, None]
    error = np.abs(b_sums[seen] / b_counts[seen, None] - means).max(1)
    recurred = seen_in[seen] > 1
    assert error[recurred].max() > 1e-2  # the blend misses the central prototypes ...
    # ... but not for a class seen on a single mission (nothing to blend it with)
    assert error[~recurred].max() < 1e-4
