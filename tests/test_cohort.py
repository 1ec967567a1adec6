"""Cohort mode: same global model as per-device mode, failures isolated, any number of workers."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clients.work
from clients.vectorized import train_vectorized
from fedsim.core.algorithms import ALGORITHMS as TABLE
from fedsim.core.algorithms.local import LocalSgd
from fedsim.core.data import load_task_data
from fedsim.core.models import build_model, get_arrays
from fedsim.core.results import read_model, read_rounds
from fedsim.core.scenario import Scenario, choose_engine
from fedsim.core.seeds import derive_seed
from fedsim.core.state import DeviceStateStore
from fedsim.core.task_model import task_model
from fedsim.runner import run
from server.dispatch import worker_orders as _orders
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
ALGORITHMS = {
    "fedavg": {"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16},
    "fedprox": {"kind": "fedprox", "lr": 0.1, "local_epochs": 2, "batch_size": 8, "mu": 0.5},
    "tinyreptile": {"kind": "tinyreptile", "lr": 0.1, "steps": 6, "batch_size": 4},
    "tinyol": {"kind": "tinyol", "lr": 0.05, "passes": 2},
    "fedins": {
        "kind": "fedins",
        "lr": 0.05,
        "batch_size": 8,
        "backbone": {"dataset": "mnist-5k", "steps": 5, "dim": 16, "depth": 1},
        "entries": 4,
        "top_n": 2,
        "weighting": "samples",
    },
    "tinymetafed": {
        "kind": "tinymetafed",
        "lr": 0.1,
        "steps": 4,
        "support_steps": 2,
        "batch_size": 3,
        "top_p": 0.3,
        "schedule": "cosine",
    },
}


# the algorithms whose devices cohort mode trains batched (``clients.vectorized.KERNELS``)
VECTORISED = {"fedavg", "fedins", "fedprox", "tinyreptile", "tinymetafed"}

# Algorithms with a frozen part that the vectorised path can run (plain SGD, no key loss): the
# frozen tensors must stay exactly as received in every mode (issue 21: the vectorised path once
# fine-tuned and averaged a "frozen" backbone).
_SSF = {k: v for k, v in ALGORITHMS["fedins"].items() if k not in ("entries", "top_n")}
FROZEN_PARTS = {
    "federated-ssf": {**_SSF, "entries": 1, "top_n": 1, "key_weight": 0.0},
    "head-only-fedavg": {
        **_SSF,
        "entries": 2,
        "top_n": 1,
        "key_weight": 0.0,
        "train": "head",
        "weighting": "uniform",
    },
}


def test_every_aggregator_has_a_mode_equality_case() -> None:
    # prototype averaging needs its own data and encoder: tests/test_reconnaissance.py
    assert set(ALGORITHMS) | {"prototypes"} == set(TABLE.builtins())


def _blobs(
    execution: dict[str, Any], algorithm: str = "fedavg", **overrides: Any
) -> dict[str, Any]:
    """Equal-sized devices (so cohorts vectorise), a partial last batch, faults on one group."""
    spec = ALGORITHMS.get(algorithm) or FROZEN_PARTS[algorithm]
    model = "ssf-vit" if spec["kind"] == "fedins" else "mlp"
    return tiny_scenario(
        task={"dataset": "blobs-784", "model": model},
        fleet={
            "groups": [
                {"profile": "rpi4", "count": 14},
                {"profile": "esp32-s3", "count": 10, "faults": {"crash_prob": 0.2}},
            ],
            "partition": {"kind": "dirichlet", "alpha": 0.5},
            "samples_per_device": 20,
        },
        algorithm=spec,
        execution={"engine": "inline", **execution},
        **{"clients_per_round": 20, **overrides},
    )


def _run(write: Write, tmp_path: Path, label: str, scenario: dict[str, Any]) -> Path:
    return run(write(scenario, f"{label}.yaml"), tmp_path / label).out


def _model(out: Path) -> dict[str, np.ndarray]:
    return read_model(out)


def _devices(out: Path) -> str:
    return (out / "devices.csv").read_text()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_cohort_mode_is_bit_identical_to_per_device_mode(
    algorithm: str, write_scenario: Write, tmp_path: Path
) -> None:
    per_device = _run(write_scenario, tmp_path, "pd", _blobs({"mode": "per-device"}, algorithm))
    cohort = _run(
        write_scenario,
        tmp_path,
        "co",
        _blobs({"mode": "cohort", "vectorize": False, "actors": 3}, algorithm),
    )

    a, b = _model(per_device), _model(cohort)
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert read_rounds(per_device) == read_rounds(cohort)
    assert _devices(per_device) == _devices(cohort)
    assert sum(r["failures"] for r in read_rounds(cohort)) > 0  # the faults were exercised


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_vectorised_cohorts_match_per_device_mode_to_float_rounding(
    algorithm: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = []
    train = train_vectorized

    def spy(*args: Any) -> Any:
        result = train(*args)
        batched.append(len(args[3]))  # counted once it returned: a fallback would not count
        return result

    monkeypatch.setattr(clients.work, "train_vectorized", spy)
    per_device = _run(write_scenario, tmp_path, "pd", _blobs({"mode": "per-device"}, algorithm))
    cohort = _run(
        write_scenario, tmp_path, "vec", _blobs({"mode": "cohort", "vectorize": True}, algorithm)
    )

    if algorithm in VECTORISED:  # the batched kernels really ran (else this compares loops)
        assert batched

    a, b = _model(per_device), _model(cohort)
    for k in a:  # documented tolerance: float32 rounding of batched vs single matrix products
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-5)
    ra, rb = read_rounds(per_device), read_rounds(cohort)
    assert [r["participants"] for r in ra] == [r["participants"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)


@pytest.mark.parametrize("algorithm", sorted(FROZEN_PARTS))
def test_frozen_parts_stay_frozen_in_every_mode(
    algorithm: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectorised = []
    train = clients.work.train_vectorized

    def spy(*args: Any) -> Any:
        result = train(*args)
        vectorised.append(len(args[3]))  # counted once it returned
        return result

    monkeypatch.setattr(clients.work, "train_vectorized", spy)
    runs = {
        mode: _run(write_scenario, tmp_path, mode, _blobs(execution, algorithm, rounds=2))
        for mode, execution in {
            "per-device": {"mode": "per-device"},
            "sequential": {"mode": "cohort", "vectorize": False, "actors": 2},
            "vectorised": {"mode": "cohort", "vectorize": True, "actors": 1},
        }.items()
    }

    assert vectorised
    assert min(vectorised) >= clients.work.MIN_GROUP
    loaded = Scenario.model_validate(_blobs({}, algorithm))
    spec = loaded.algorithm
    models = {mode: _model(out) for mode, out in runs.items()}
    reference = models["per-device"]
    frozen = [k for k in reference if spec.frozen(k)]
    assert frozen
    assert len(frozen) < len(reference)
    data = load_task_data(loaded.task.dataset, loaded.seed)
    init = task_model(loaded, data.num_features, data.num_outputs, derive_seed(loaded.seed, "init"))
    for k, array in init.state_dict().items():
        if k in frozen:  # as the run started: no mode trained them
            assert np.array_equal(reference[k], array.numpy()), k
    for mode, model in models.items():
        for k in reference:
            if k in frozen:  # as received: bit for bit
                assert np.array_equal(model[k], reference[k]), (mode, k)
            else:
                np.testing.assert_allclose(model[k], reference[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize("actors", [1, 2, 5, 64])
def test_the_number_of_workers_never_changes_the_model(
    actors: int, write_scenario: Write, tmp_path: Path
) -> None:
    execution = {"mode": "cohort", "vectorize": False}
    reference = _run(write_scenario, tmp_path, "ref", _blobs({**execution, "actors": 3}))
    other = _run(write_scenario, tmp_path, "other", _blobs({**execution, "actors": actors}))

    a, b = _model(reference), _model(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert _devices(reference) == _devices(other)


@pytest.mark.parametrize("vectorize", [False, True])
def test_working_in_small_windows_never_changes_the_model(
    vectorize: bool, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = {"mode": "cohort", "vectorize": vectorize, "actors": 1}
    reference = _run(write_scenario, tmp_path, "ref", _blobs(execution))
    monkeypatch.setattr(clients.work, "WINDOW", 3)
    windowed = _run(write_scenario, tmp_path, "windowed", _blobs(execution))

    a, b = _model(reference), _model(windowed)
    if vectorize:  # windows of 3 fall under MIN_GROUP: trained one by one, float rounding differs
        assert all(np.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    else:
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["participants"] for r in read_rounds(reference)] == [
        r["participants"] for r in read_rounds(windowed)
    ]


def _assert_as_the_loop(
    learner: LocalSgd,
    build: Callable[[], Any],
    data: list[tuple[np.ndarray, np.ndarray]],
    seeds: list[int],
) -> tuple[Any, Any]:
    """Train ``data`` vectorised and each device alone (``learner.train`` on a fresh ``build()``):
    the same parameters (atol 1e-6) and loss (rel 1e-5); (what each device sent, the start)."""
    start = get_arrays(build())
    together = train_vectorized(build(), start, learner, data, seeds)
    for (x, y), seed, (arrays, loss) in zip(data, seeds, together, strict=True):
        alone = build()
        alone_loss = learner.train(alone, x, y, seed)
        for got, want in zip(arrays, get_arrays(alone), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert loss == pytest.approx(alone_loss, rel=1e-5)
    return [arrays for arrays, _ in together], start


def test_vectorised_training_equals_the_sequential_loop() -> None:
    """Same shuffles, batches (a partial last one), FedProx term and SGD steps as LocalSgd."""
    rng = np.random.default_rng(0)
    learner = LocalSgd(lr=0.2, epochs=3, batch_size=4, mu=0.3)
    data = [
        (rng.normal(size=(10, 12)).astype(np.float32), rng.integers(0, 3, 10).astype(np.int64))
        for _ in range(9)
    ]
    seeds = [int(s) for s in rng.integers(0, 2**31, 9)]

    sent, start = _assert_as_the_loop(learner, lambda: build_model("mlp", 12, 3, 1), data, seeds)

    assert all(not np.array_equal(arrays[0], start[0]) for arrays in sent)  # it trained


def test_vectorised_training_leaves_frozen_parameters_alone() -> None:
    rng = np.random.default_rng(1)
    learner = LocalSgd(lr=0.5, epochs=2, batch_size=4, mu=0.2)
    data = [
        (rng.normal(size=(8, 12)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int64))
        for _ in range(4)
    ]
    seeds = [11, 12, 13, 14]

    def frozen_body() -> Any:
        model = build_model("mlp", 12, 3, 1)
        first = next(model.parameters())
        first.requires_grad_(False)
        return model

    sent, start = _assert_as_the_loop(learner, frozen_body, data, seeds)

    for arrays in sent:
        assert np.array_equal(arrays[0], start[0])  # frozen: as received
        assert not np.array_equal(arrays[-1], start[-1])  # the rest trained


def test_vectorised_training_equals_the_loop_on_unequal_sample_counts() -> None:
    """One vectorised group of devices with 3 to 11 samples: short last batches are masked, and
    a device whose round has fewer batches sits the extra steps out."""
    rng = np.random.default_rng(2)
    learner = LocalSgd(lr=0.2, epochs=2, batch_size=4, mu=0.3)
    data = [
        (rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64))
        for n in (11, 3, 8, 5, 4, 9)
    ]
    seeds = [21, 22, 23, 24, 25, 26]

    _assert_as_the_loop(learner, lambda: build_model("mlp", 12, 3, 1), data, seeds)


@pytest.mark.parametrize("vectorize", [False, True])
def test_a_failing_device_fails_alone_and_its_cohort_goes_on(
    vectorize: bool, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devices.fleet import Fleet

    real = Fleet.local_data

    def sensor_fault(self: Fleet, device_id: int) -> tuple[np.ndarray, np.ndarray]:
        if device_id == 3:
            raise OSError("sensor read failed")
        return real(self, device_id)

    monkeypatch.setattr(Fleet, "local_data", sensor_fault)
    scenario = _blobs({"mode": "cohort", "vectorize": vectorize, "actors": 1}, rounds=2)
    scenario["fleet"]["groups"][1]["faults"]["crash_prob"] = 0.0
    scenario["clients_per_round"] = None

    out = _run(write_scenario, tmp_path, "out", scenario)

    with (out / "devices.csv").open() as f:
        rows = list(csv.DictReader(f))
    failed = [r for r in rows if r["status"] != "ok"]
    assert {r["device_id"] for r in failed} == {"3"}
    assert all("OSError: sensor read failed" in r["error"] for r in failed)
    assert all(r["participants"] == 23 and r["failures"] == 1 for r in read_rounds(out))


def test_a_failing_vectorised_group_is_retried_device_by_device(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault inside a batched step is pinned on the device that causes it."""
    real_train = LocalSgd.train

    def nan_on_device_5(self: LocalSgd, model, x, y, seed, state):  # type: ignore[no-untyped-def]
        if np.array_equal(x, victim):
            raise FloatingPointError("loss is NaN")
        return real_train(self, model, x, y, seed, state)

    def batched_fails(*args: Any, **kwargs: Any) -> None:
        raise FloatingPointError("loss is NaN somewhere in the batch")

    from devices.fleet import load_fleet

    scenario = _blobs({"mode": "cohort", "actors": 1}, rounds=1, clients_per_round=None)
    scenario["fleet"]["groups"][1]["faults"]["crash_prob"] = 0.0
    path = write_scenario(scenario)
    victim = load_fleet(path)[1].local_data(5)[0]
    monkeypatch.setattr(LocalSgd, "train", nan_on_device_5)
    monkeypatch.setattr(clients.work, "train_vectorized", batched_fails)

    out = run(path, tmp_path / "out").out

    with (out / "devices.csv").open() as f:
        rows = list(csv.DictReader(f))
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["device_id"], r["error"]) for r in failed] == [
        ("5", "FloatingPointError: loss is NaN")
    ]
    assert len(rows) == 24


def test_a_failing_worker_takes_down_only_its_own_devices(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = clients.work.run_cohort

    def worker_dies_on_device_0(scenario, fleet, out, order, *rest):  # type: ignore[no-untyped-def]
        if 0 in order.device_ids:
            raise MemoryError("worker out of memory")
        return real(scenario, fleet, out, order, *rest)

    monkeypatch.setattr("clients.app.run_cohort", worker_dies_on_device_0)
    scenario = _blobs({"mode": "cohort", "actors": 2}, rounds=1, clients_per_round=None)
    scenario["fleet"]["groups"][1]["faults"]["crash_prob"] = 0.0

    out = _run(write_scenario, tmp_path, "out", scenario)

    with (out / "devices.csv").open() as f:
        rows = list(csv.DictReader(f))
    failed = {int(r["device_id"]) for r in rows if r["status"] == "failed"}
    ok = {int(r["device_id"]) for r in rows if r["status"] == "ok"}
    assert 0 in failed
    assert ok
    assert failed | ok == set(range(24))
    assert not failed & ok
    assert all("MemoryError: worker out of memory" in r["error"] for r in rows if r["error"])
    assert read_rounds(out)[0]["accuracy"] is not None


@dataclass(frozen=True)
class _CountingSgd(LocalSgd):
    """A stateful learner: counts its rounds and remembers the rounds' losses."""

    stateful: ClassVar[bool] = True

    def train(self, model, x, y, seed, state=None):  # type: ignore[no-untyped-def]
        assert state is not None
        loss = super().train(model, x, y, seed)
        state["rounds"] = np.asarray(int(state.get("rounds", 0)) + 1)
        state["losses"] = np.append(state.get("losses", np.zeros(0)), loss)
        return loss


@pytest.mark.parametrize("mode", ["per-device", "cohort"])
def test_device_state_survives_rounds_in_the_run_store(
    mode: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients.work, "_learner", lambda s: _CountingSgd(0.1, 1, 16))
    out = _run(write_scenario, tmp_path, "out", _blobs({"mode": mode, "actors": 2}, rounds=4))

    with (out / "devices.csv").open() as f:
        rows = list(csv.DictReader(f))
    with DeviceStateStore(out / clients.work.STATE_FILE) as store:
        for device in range(24):
            mine = [r for r in rows if int(r["device_id"]) == device and r["status"] == "ok"]
            state = store.get(device)
            if not mine:
                assert state is None or int(state["rounds"]) == 0
                continue
            assert state is not None
            assert int(state["rounds"]) == len(mine)
            np.testing.assert_allclose(state["losses"], [float(r["train_loss"]) for r in mine])


def test_stateless_learners_write_no_state_file(write_scenario: Write, tmp_path: Path) -> None:
    out = _run(write_scenario, tmp_path, "out", _blobs({"mode": "cohort"}, rounds=1))

    assert not (out / clients.work.STATE_FILE).exists()


@given(
    cohort=st.integers(1, 5000),
    workers=st.integers(1, 70),
)
@settings(max_examples=200, deadline=None)
def test_worker_shares_are_whole_contiguous_blocks_covering_the_round(
    cohort: int, workers: int
) -> None:
    selected = list(range(0, 3 * cohort, 3))

    orders = _orders(4, selected, workers)

    assert [d for o in orders for d in o.device_ids] == selected
    assert len(orders) <= workers
    for order in orders:
        assert order.first_position % order.block_size == 0
        assert selected[order.first_position] == order.device_ids[0]
        assert order.round == 4


@pytest.mark.parametrize(
    ("engine", "per_round", "rounds", "cpus", "expected"),
    [
        ("auto", 10, 5, 2, "inline"),  # too small to pay back Ray's start-up
        ("auto", 1000, 50, 2, "ray"),
        ("auto", 1000, 20, 1, "inline"),  # one core: nothing to run in parallel
        ("ray", 10, 5, 2, "ray"),  # an explicit choice is kept
        ("inline", 1000, 20, 2, "inline"),
    ],
)
def test_auto_engine_uses_ray_only_where_it_pays(
    engine: str,
    per_round: int,
    rounds: int,
    cpus: int,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    scenario = Scenario.model_validate(
        _blobs({"engine": engine}, rounds=rounds, clients_per_round=None)
        | {"fleet": {"groups": [{"profile": "rpi4", "count": per_round}]}}
    )

    assert choose_engine(scenario) == expected


@pytest.mark.parametrize("fault", ["shape", "size"])
def test_a_malformed_update_fails_its_device_and_the_run_goes_on(
    fault: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import clients.app

    real = clients.app.train_one

    def sloppy(*args: Any, **kwargs: Any) -> clients.work.DeviceUpdate:
        update = real(*args, **kwargs)
        if args[3] != 2 or update.wire is None:  # device 2 sends something else
            return update
        wire = dict(update.wire)
        first = wire["0"]
        # same byte count, wrong shape; or one row missing
        wire["0"] = first.reshape(first.shape[::-1]) if fault == "shape" else first[:-1]
        return dataclasses.replace(update, wire=wire)

    monkeypatch.setattr(clients.app, "train_one", sloppy)
    scenario = tiny_scenario(execution={"engine": "inline", "mode": "per-device"})
    out = run(write_scenario(scenario), tmp_path / fault).out
    with (out / "devices.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["device_id"] == "2"]
    assert rows
    assert all(r["status"] == "failed" for r in rows)
    message = (
        "has shape (64, 32), expected (32, 64)" if fault == "shape" else "where the round planned"
    )
    assert all(message in r["error"] for r in rows)
    assert len(read_rounds(out)) == 3  # the run went on
