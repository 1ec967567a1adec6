"""The dataset layer: every registered dataset, the partitions, the streams, the `data` CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from fedsim.core.data import DATASETS, load_task_data
from fedsim.core.data_info import describe
from fedsim.core.datasets import images, omniglot
from fedsim.core.errors import FedsimError
from fedsim.core.partition import partition_indices
from fedsim.core.scenario import (
    DirichletPartition,
    IidPartition,
    NaturalPartition,
    ShardPartition,
)
from fedsim.core.streams import Drift, class_incremental_missions, online_stream
from tests.conftest import tiny_scenario
from tests.test_cli import fedsim

# Loading each takes seconds once cached; the first time, kws synthesizes (~40 s) and kanjivg
# renders (~40 s per seed) into the user cache.
QUICK = DATASETS.names()


def test_every_registered_dataset_is_checked() -> None:
    assert {"kanjivg", "kws", "har", "presence", "omniglot", "fashion-mnist"} <= set(QUICK)


@pytest.mark.parametrize("name", QUICK)
def test_every_dataset_loads_and_its_info_is_consistent(name: str) -> None:
    data = load_task_data(name, 0)
    facts = describe(name, 0)
    source = DATASETS.get(name)

    assert data.x_test.dtype == np.float32
    assert np.isfinite(data.x_test).all()
    assert len(data.x_test) == len(data.y_test) > 0
    assert facts.test_samples == f"{len(data.y_test):,}"
    assert facts.licence
    assert facts.source
    if data.generated:
        assert data.generate is not None
        x, y = data.generate(123, 5, None)
        assert x.shape == (5, *data.sample_shape)
        assert len(y) == 5
    else:
        assert len(data.x_train) == len(data.y_train) > 0
        assert data.x_train.shape[1:] == data.x_test.shape[1:]
        assert facts.train_samples == f"{len(data.y_train):,}"
    if source.task == "classification":
        assert data.y_test.dtype == np.int64
        assert data.y_test.min() >= 0
        assert data.y_test.max() < data.num_classes
        assert not data.class_names or len(data.class_names) == data.num_classes
    if data.groups_train is not None:
        assert len(data.groups_train) == len(data.y_train)
        assert source.natural_groups is not None


@pytest.mark.parametrize("name", QUICK)
def test_loading_is_deterministic_per_seed(name: str) -> None:
    first = DATASETS.get(name).load(3)
    second = DATASETS.get(name).load(3)

    assert np.array_equal(first.x_test, second.x_test)
    assert np.array_equal(first.y_train, second.y_train)
    if first.generate is not None and second.generate is not None:
        assert np.array_equal(first.generate(9, 4, None)[0], second.generate(9, 4, None)[0])
        assert not np.array_equal(first.generate(9, 4, None)[0], first.generate(10, 4, None)[0])


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@pytest.mark.parametrize(
    ("name", "train_limit", "margin"),
    [
        ("digits", None, 0.8),
        ("mnist-5k", None, 0.7),
        ("fashion-mnist", 3000, 0.6),
        ("kws", None, 0.4),
    ],
)
def test_a_linear_model_learns_each_image_and_audio_dataset(
    name: str, train_limit: int | None, margin: float
) -> None:
    data = load_task_data(name, 0)
    x, y = _flat(data.x_train)[:train_limit], data.y_train[:train_limit]

    with warnings.catch_warnings():  # lbfgs may stop at max_iter; the score is what we check
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=300).fit(x, y)

    assert model.score(_flat(data.x_test), data.y_test) > 1 / data.num_classes + margin


def test_nearest_neighbour_recognises_real_omniglot_characters_from_unseen_drawers() -> None:
    data = load_task_data("omniglot", 0)

    knn = KNeighborsClassifier(n_neighbors=1).fit(_flat(data.x_train), data.y_train)

    assert knn.score(_flat(data.x_test), data.y_test) > 0.2  # chance: 1/242
    assert set(np.unique(data.groups_test)).isdisjoint(np.unique(data.groups_train))


def test_the_twenty_official_one_shot_runs_load_and_nearest_neighbour_beats_chance() -> None:
    runs = omniglot.load_runs()

    assert len(runs) == 20
    correct = 0
    for run in runs:
        assert run.training.shape == run.test.shape == (20, 28, 28)
        assert sorted(run.answers) == list(range(20))  # each class once
        distances = ((run.test[:, None] - run.training[None]) ** 2).sum(axis=(2, 3))
        correct += int((distances.argmin(axis=1) == run.answers).sum())
    assert correct / 400 > 0.15  # chance: 0.05; pixel 1-NN is weak, but far above chance


def test_sine_tasks_differ_and_a_local_fit_beats_predicting_zero() -> None:
    data = load_task_data("sine", 0)
    assert data.generate is not None
    x1, y1 = data.generate(1, 50, None)
    _, y2 = data.generate(2, 50, None)

    assert not np.allclose(y1, y2)
    order = np.argsort(x1[:, 0])
    smooth = np.interp(x1[:, 0], x1[order, 0], y1[order, 0])
    assert np.mean((smooth - y1[:, 0]) ** 2) < np.mean(y1[:, 0] ** 2)


def test_omniglot_directory_errors_are_located(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match="no Omniglot images found"):
        omniglot.load_characters(tmp_path)
    with pytest.raises(FedsimError, match="no one-shot runs found"):
        omniglot.load_runs(tmp_path)


def test_a_truncated_idx_file_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + b"\x00" * 8 + b"\x01" * 5)

    with pytest.raises(FedsimError, match="truncated"):
        images.read_idx(path)


# --- partitions ---------------------------------------------------------------------------


def _parts(spec: object, n: int, dataset: str = "digits") -> tuple[np.ndarray, ...]:
    return partition_indices(dataset, 0, spec, n)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        IidPartition(),
        DirichletPartition(kind="dirichlet", alpha=0.5),
        ShardPartition(kind="shards", shards_per_device=2),
    ],
    ids=["iid", "dirichlet", "shards"],
)
def test_partitions_cover_the_pool_without_overlap(spec: object) -> None:
    parts = _parts(spec, 20)
    everything = np.concatenate(parts)

    assert len(parts) == 20
    assert len(everything) == len(np.unique(everything))  # no sample on two devices
    assert all(len(p) > 0 for p in parts)
    if isinstance(spec, IidPartition):
        assert len(everything) == len(load_task_data("digits", 0).y_train)


def _mean_label_entropy(parts: tuple[np.ndarray, ...]) -> float:
    labels = load_task_data("digits", 0).y_train
    entropies = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=10) / len(p)
        entropies.append(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
    return float(np.mean(entropies))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    entropy = {
        alpha: _mean_label_entropy(_parts(DirichletPartition(kind="dirichlet", alpha=alpha), 10))
        for alpha in (100.0, 1.0, 0.1)
    }

    assert entropy[100.0] > entropy[1.0] > entropy[0.1]


def test_shards_give_each_device_few_labels() -> None:
    labels = load_task_data("digits", 0).y_train
    parts = _parts(ShardPartition(kind="shards", shards_per_device=2), 20)

    assert max(len(np.unique(labels[p])) for p in parts) <= 4  # 2 shards, each ≤ 2 labels


def test_natural_partition_gives_each_device_one_drawer() -> None:
    data = load_task_data("omniglot", 0)
    assert data.groups_train is not None
    parts = _parts(NaturalPartition(kind="natural"), 5, "omniglot")

    drawers = [np.unique(data.groups_train[p]) for p in parts]
    assert all(len(d) == 1 for d in drawers)
    assert len({int(d[0]) for d in drawers}) == 5
    assert all(len(p) == 242 for p in parts)  # every character, once


def test_natural_partition_errors_are_located() -> None:
    with pytest.raises(FedsimError, match="'digits' has no natural groups"):
        _parts(NaturalPartition(kind="natural"), 5)
    with pytest.raises(FedsimError, match="17 devices but 'omniglot' has only 16 drawers"):
        _parts(NaturalPartition(kind="natural"), 17, "omniglot")


# --- streams ------------------------------------------------------------------------------


def test_missions_bring_new_classes_without_replacement() -> None:
    labels = load_task_data("omniglot", 0).y_train

    missions = class_incremental_missions(
        labels, classes_per_mission=5, samples_per_class=3, seed=1
    )

    seen: set[int] = set()
    used = np.concatenate(missions)
    assert len(used) == len(np.unique(used))
    for mission in missions:
        classes = set(labels[mission].tolist())
        assert len(classes) == 5
        assert not classes & seen
        assert all((labels[mission] == c).sum() == 3 for c in classes)
        seen |= classes
    assert len(missions) == 242 // 5


def test_an_online_stream_yields_each_sample_once_per_pass_in_a_seeded_order() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.int64) % 3

    first = [(s.tolist(), label) for s, label in online_stream(x, y, seed=4, passes=2)]
    again = [(s.tolist(), label) for s, label in online_stream(x, y, seed=4, passes=2)]

    assert first == again
    assert sorted(map(str, first[:10])) == sorted(map(str, first[10:]))
    assert first[:10] != first[10:]


def test_drift_swaps_labels_or_shifts_features_after_its_start() -> None:
    x = np.zeros((100, 3), dtype=np.float32) + np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100, dtype=np.int64) % 2
    truth = {tuple(s): int(label) for s, label in zip(x.tolist(), y, strict=True)}

    swapped = list(online_stream(x, y, seed=0, drift=Drift("label-swap", at=0.5)))
    shifted = list(online_stream(x, y, seed=0, drift=Drift("feature-shift", at=0.5)))

    assert all(truth[tuple(s.tolist())] == label for s, label in swapped[:50])
    assert all(truth[tuple(s.tolist())] != label for s, label in swapped[50:])
    assert all(tuple(s.tolist()) in truth for s, _ in shifted[:50])
    assert not any(tuple(s.tolist()) in truth for s, _ in shifted[50:])


# --- the CLI ------------------------------------------------------------------------------


def test_data_cli_lists_describes_and_previews(tmp_path: Path) -> None:
    listed = fedsim("data", "list")
    info = fedsim("data", "info", "omniglot")
    preview = fedsim("data", "preview", "digits", "-o", tmp_path / "grid.png")

    assert listed.returncode == info.returncode == preview.returncode == 0
    assert all(name in listed.stdout for name in QUICK)
    assert "242" in info.stdout
    assert "drawer" in info.stdout
    assert "MIT" in info.stdout
    assert (tmp_path / "grid.png").stat().st_size > 10_000


def test_an_unknown_dataset_in_the_cli_is_one_line() -> None:
    proc = fedsim("data", "info", "omniglott")

    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: dataset: unknown dataset 'omniglott'")
    assert "did you mean 'omniglot'" in proc.stderr


def test_missing_fashion_mnist_names_the_apt_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "FASHION_DIR", tmp_path)

    with pytest.raises(FedsimError, match=r"apt-get install dataset-fashion-mnist"):
        images.load_fashion_mnist(0)


def test_cached_arrays_build_once_and_rebuild_a_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsim.core.data import cached_arrays

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    builds = []

    def build() -> dict[str, np.ndarray]:
        builds.append(1)
        return {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}

    first = cached_arrays("demo", "k1", build)
    second = cached_arrays("demo", "k1", build)
    (tmp_path / "demo-k1.npz").write_bytes(b"not a zip")
    third = cached_arrays("demo", "k1", build)

    assert len(builds) == 2  # once, then again only for the damaged file
    assert np.array_equal(first["x"], second["x"])
    assert np.array_equal(first["x"], third["x"])
    assert [p.name for p in tmp_path.iterdir()] == ["demo-k1.npz"]  # no temporary left over


def test_real_omniglot_supports_the_same_episode_views_as_the_renders() -> None:
    from fedsim.core.datasets.episodes import episode, split_alphabets

    chars = omniglot.load_characters()
    background, evaluation = split_alphabets(chars, seed=0, evaluation_fraction=0.25)
    sx, sy, qx, qy = episode(chars, evaluation, 5, 1, 5, np.random.default_rng(0))

    assert set(chars.alphabets[background]).isdisjoint(chars.alphabets[evaluation])
    assert sx.shape == (5, 1, 28, 28)
    assert qx.shape == (25, 1, 28, 28)
    assert sorted(set(sy.tolist())) == sorted(set(qy.tolist())) == list(range(5))


def test_samples_per_device_on_a_pooled_dataset_is_a_located_error(write_scenario) -> None:  # type: ignore[no-untyped-def]
    scenario = tiny_scenario()
    scenario["fleet"]["samples_per_device"] = 32

    proc = fedsim("validate", write_scenario(scenario))

    assert proc.returncode == 2
    assert "fleet.samples_per_device: 'digits' is a pooled dataset" in proc.stderr
    assert "remove samples_per_device" in proc.stderr
