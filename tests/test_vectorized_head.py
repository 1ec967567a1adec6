"""TinyOL's batched kernel (``fedsim.core.algorithms.batched_head``) against the sequential learner
it batches: per device, the same trained layer, statistics and loss to float32 rounding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import nn

import clients.vectorized
from clients.vectorized import vectorizable
from fedsim.core.algorithms.attached import BridgedHeadLearner
from fedsim.core.algorithms.batched_head import BatchedOnlineHead
from fedsim.core.algorithms.feature_norm import NormalizedLinear, with_feature_norm
from fedsim.core.algorithms.local import OnlineHeadLearner
from fedsim.core.fleet_spec import AttachedSpec
from fedsim.core.models import get_arrays, set_arrays
from fedsim.core.results import read_model, read_rounds
from fedsim.runner import run
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
Data = list[tuple[NDArray[np.float32], NDArray[Any]]]
SIZES = [5, 9, 1, 2, 9, 3]  # unequal: shorter streams stop while the others go on


def _model(normalize: bool, outputs: int, buffers: bool = False, seed: int = 0) -> nn.Module:
    """A small frozen body (with BatchNorm's buffers if asked) and a linear head."""
    torch.manual_seed(seed)
    first = nn.Linear(12, 16)
    norm = nn.BatchNorm1d(16)
    assert norm.running_mean is not None
    assert norm.running_var is not None
    norm.running_mean.normal_()  # statistics of some earlier training, not the fresh ones
    norm.running_var.uniform_(0.5, 2.0)
    body = [first, norm] if buffers else [first]
    model = nn.Sequential(*body, nn.ReLU(), nn.Linear(16, outputs))
    return with_feature_norm(model) if normalize else model


def _data(sizes: list[int], mse: bool, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(n, 12)).astype(np.float32),
            rng.normal(size=(n, 3)).astype(np.float32) if mse else rng.integers(0, 5, n),
        )
        for n in sizes
    ]


def _resume(model: nn.Module, count: float) -> None:
    """Statistics as a federation hands them on: ``count`` samples seen, not the fresh ones."""
    head = list(model.children())[-1]
    assert isinstance(head, NormalizedLinear)
    with torch.no_grad():
        head.norm_mean.normal_()
        head.norm_var.uniform_(0.5, 2.0)
        head.norm_count.fill_(count)


def _sequential(
    learner: OnlineHeadLearner, build: Callable[[], nn.Module], start: Any, data: Data, seeds: Any
) -> list[tuple[list[NDArray[np.float32]], float]]:
    """What ``clients.work.train_device`` sends, device by device: ``get_arrays`` after train."""
    out = []
    for (x, y), seed in zip(data, seeds, strict=True):
        model = build()
        set_arrays(model, start)
        loss = learner.train(model, x, y, seed)
        out.append((get_arrays(model), loss))
    return out


def _assert_same(got: Any, want: Any, start: list[NDArray[np.float32]]) -> None:
    for (arrays, loss), (expected, expected_loss) in zip(got, want, strict=True):
        assert len(arrays) == len(expected)
        for a, e in zip(arrays, expected, strict=True):
            np.testing.assert_allclose(a, e, rtol=0, atol=1e-6)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        assert not np.array_equal(arrays[-1], start[-1])  # the head trained


@pytest.mark.parametrize("passes", [1, 3])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("loss", ["softmax", "mse"])
def test_kernel_equals_the_sequential_learner(passes: int, normalize: bool, loss: str) -> None:
    mse = loss == "mse"
    outputs = 3 if mse else 5

    def build() -> nn.Module:
        return _model(normalize, outputs)

    start = get_arrays(build())
    data, seeds = _data(SIZES, mse), [101 + d for d in range(len(SIZES))]
    learner = OnlineHeadLearner(lr=0.05, passes=passes)

    other = _model(normalize, outputs, seed=1)  # the kernel starts from the arrays it is given
    together = BatchedOnlineHead(learner).train_many(other, start, data, seeds)

    _assert_same(together, _sequential(learner, build, start, data, seeds), start)


@pytest.mark.parametrize("count", [0.0, 1.0, 37.0])
def test_statistics_resume_from_the_received_layer(count: float) -> None:
    """Below two samples the received variance is a placeholder; from two on, Welford goes on."""

    def build() -> nn.Module:
        model = _model(True, 5)
        torch.manual_seed(1)
        _resume(model, count)
        return model

    start = get_arrays(build())
    data, seeds = _data([1, 4, 2, 1], mse=False, seed=3), [7, 8, 9, 10]
    learner = OnlineHeadLearner(lr=0.1, passes=2)

    together = BatchedOnlineHead(learner).train_many(build(), start, data, seeds)

    want = _sequential(learner, build, start, data, seeds)
    _assert_same(together, want, start)
    names = list(build().state_dict())
    counts = [arrays[names.index("2.norm_count")][0] for arrays, _ in together]
    assert counts == [count + 2 * len(y) for _, y in data]


def test_buffers_of_the_body_are_sent_as_received() -> None:
    """``arrays`` are the model's ``state_dict`` (buffers too), as ``train_device`` sends them."""

    def build() -> nn.Module:
        return _model(True, 5, buffers=True)

    start = get_arrays(build())
    data, seeds = _data([4, 6, 2], mse=False), [1, 2, 3]
    learner = OnlineHeadLearner(lr=0.05, passes=1)

    together = BatchedOnlineHead(learner).train_many(build(), start, data, seeds)

    _assert_same(together, _sequential(learner, build, start, data, seeds), start)
    names = list(build().state_dict())
    for arrays, _ in together:
        for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
            assert np.array_equal(arrays[names.index(name)], start[names.index(name)])


@pytest.mark.parametrize(
    ("sizes", "labels", "match"),
    [([3, 0, 2], 2, "no samples"), ([3, 4], 9, "outside the head's 5 classes")],
)
def test_what_fails_one_device_fails_the_batch(sizes: list[int], labels: int, match: str) -> None:
    """The caller then trains the devices one by one, and only the failing one fails."""
    data = _data(sizes, mse=False)
    data[-1] = (data[-1][0], np.full(len(data[-1][1]), labels))
    kernel = BatchedOnlineHead(OnlineHeadLearner(lr=0.05, passes=1))
    model = _model(False, 5)
    with pytest.raises(ValueError, match=match):
        kernel.train_many(model, get_arrays(model), data, list(range(len(sizes))))


def test_only_a_linear_head_and_the_plain_learner_vectorise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(clients.vectorized.KERNELS, OnlineHeadLearner, BatchedOnlineHead)
    plain = OnlineHeadLearner(lr=0.1, passes=1)
    bridged = BridgedHeadLearner(0.1, 1, attached=AttachedSpec(port="socket://127.0.0.1:1"))
    kernel = vectorizable(plain)
    conv = nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (4, 1, 1)), nn.Conv2d(4, 2, 1))

    assert isinstance(kernel, BatchedOnlineHead)
    assert kernel.supports(_model(True, 5))
    assert not kernel.supports(conv)
    assert vectorizable(bridged) is None  # an attached device steps on its own hardware


def _blobs(execution: dict[str, Any]) -> dict[str, Any]:
    """24 equal-sized devices (cohorts vectorise), faults on one group, normalised head."""
    return tiny_scenario(
        task={"dataset": "blobs-784", "model": "mlp"},
        fleet={
            "groups": [
                {"profile": "rpi4", "count": 14},
                {"profile": "esp32-s3", "count": 10, "faults": {"crash_prob": 0.2}},
            ],
            "partition": {"kind": "dirichlet", "alpha": 0.5},
            "samples_per_device": 20,
        },
        algorithm={"kind": "tinyol", "lr": 0.05, "passes": 2, "extractor": "random"},
        execution={"engine": "inline", **execution},
        clients_per_round=20,
    )


def test_vectorised_tinyol_matches_per_device_mode(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(clients.vectorized.KERNELS, OnlineHeadLearner, BatchedOnlineHead)
    batched: list[int] = []
    train_many = BatchedOnlineHead.train_many

    def spy(self: BatchedOnlineHead, model: nn.Module, arrays: Any, data: Any, seeds: Any) -> Any:
        result = train_many(self, model, arrays, data, seeds)
        batched.append(len(data))  # counted once it returned: a fallback would not count
        return result

    monkeypatch.setattr(BatchedOnlineHead, "train_many", spy)

    per_device = run(write_scenario(_blobs({"mode": "per-device"}), "pd.yaml"), tmp_path / "pd")
    cohort = run(
        write_scenario(_blobs({"mode": "cohort", "vectorize": True}), "vec.yaml"), tmp_path / "vec"
    )

    assert sum(batched) >= 24  # the kernel trained most of the 3 rounds' devices
    a, b = read_model(per_device.out), read_model(cohort.out)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-5)
    ra, rb = read_rounds(per_device.out), read_rounds(cohort.out)
    assert [r["participants"] for r in ra] == [r["participants"] for r in rb]
    assert sum(r["failures"] for r in rb) > 0  # the faults were exercised
    for x, y in zip(ra, rb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
