"""Aggregation oracle: the associative reduce equals numpy's weighted average, in any grouping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.algorithms import ALGORITHMS, algorithm_class
from fedsim.core.reduce import WeightedMean, reduce_all


def _updates(seed: int, n: int) -> list[tuple[list[np.ndarray], int]]:
    rng = np.random.default_rng(seed)
    return [
        (
            [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)],
            int(rng.integers(1, 50)),
        )
        for _ in range(n)
    ]


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12))
@settings(max_examples=50, deadline=None)
def test_weighted_mean_equals_np_average(seed: int, n: int) -> None:
    updates = _updates(seed, n)
    agg = WeightedMean()

    result = agg.finalize([], reduce_all(agg, updates))

    weights = [w for _, w in updates]
    for i, got in enumerate(result):
        expected = np.average(np.stack([a[i] for a, _ in updates]), axis=0, weights=weights)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        assert got.dtype == np.float32


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 12), cut=st.integers(1, 11))
@settings(max_examples=50, deadline=None)
def test_merge_of_partials_equals_one_pass(seed: int, n: int, cut: int) -> None:
    """Cohort workers reduce shares of the round and the server merges them: same model."""
    updates = _updates(seed, n)
    cut = min(cut, n - 1)
    agg = WeightedMean()

    merged = agg.merge(reduce_all(agg, updates[:cut]), reduce_all(agg, updates[cut:]))
    single = reduce_all(agg, updates)

    assert merged.weight == single.weight
    for a, b in zip(agg.finalize([], merged), agg.finalize([], single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_zero_is_the_identity_of_merge() -> None:
    agg = WeightedMean()
    partial = reduce_all(agg, _updates(0, 3))

    assert agg.merge(agg.zero(), partial) is partial
    assert agg.merge(partial, agg.zero()) is partial


def test_no_update_keeps_the_global_model() -> None:
    agg = WeightedMean()
    global_state = [np.ones(3, dtype=np.float32)]

    assert agg.finalize(global_state, agg.zero()) is global_state


def test_mismatched_updates_are_rejected() -> None:
    agg = WeightedMean()
    partial = reduce_all(agg, _updates(0, 1))

    with pytest.raises(ValueError, match="cannot merge 2 tensors with 1"):
        agg.accumulate(partial, ([np.zeros(4, dtype=np.float32)], 3))
    with pytest.raises(ValueError, match="negative example count"):
        agg.accumulate(partial, (_updates(1, 1)[0][0], -1))


MEANS = [k for k in ALGORITHMS.builtins() if k != "prototypes"]  # prototypes: sums, below


def _aggregator(kind: str) -> Any:
    """The kind's reduce with its default keys (FedIns: by samples, as the oracle weighs)."""
    keys = {"weighting": "samples"} if kind == "fedins" else {}
    return algorithm_class(kind).model_validate({"kind": kind, **keys}).aggregator()


@pytest.mark.parametrize("kind", MEANS)
def test_every_algorithm_aggregates_like_the_oracle(kind: str) -> None:
    agg = _aggregator(kind)
    updates = _updates(3, 5)

    result = agg.finalize([], reduce_all(agg, updates))

    expected = np.average(
        np.stack([a[0] for a, _ in updates]), axis=0, weights=[w for _, w in updates]
    )
    np.testing.assert_allclose(result[0], expected, rtol=1e-6)


def test_prototype_averaging_adds_class_sums_like_the_oracle() -> None:
    from fedsim.core.algorithms.prototype_sums import class_sums

    agg = _aggregator("prototypes")
    rng = np.random.default_rng(3)
    reports = []
    expected_sums, expected_counts = np.zeros((6, 4)), np.zeros(6)
    for i in range(5):
        labels = rng.integers(0, 6, 9)
        x = rng.standard_normal((9, 4))
        reports.append(class_sums(f"{i}:1", x, labels))
        np.add.at(expected_sums, labels, x)
        np.add.at(expected_counts, labels, 1)
    start = [np.ones(3, np.float32), np.zeros((6, 4), np.float32), np.zeros(6, np.float32)]
    partial = agg.zero()
    for r in reports:
        partial = agg.accumulate(partial, r)
    result = agg.finalize(start, partial)
    assert result[0] is start[0]  # the encoder's arrays pass through untouched
    np.testing.assert_allclose(result[1], expected_sums, rtol=1e-6)
    np.testing.assert_array_equal(result[2], expected_counts)


def test_a_zero_dimensional_tensor_stays_an_array_through_pack() -> None:
    """BatchNorm's num_batches_tracked is a 0-d tensor: times a weight it became a numpy scalar,
    which Flower's Array refused when the cohort engine packed the partial (every round of a
    BatchNorm model failed). Packed values must be arrays."""
    from flwr.app import Array

    mean = WeightedMean()
    partial = mean.zero()
    for n in (3, 5):
        partial = mean.accumulate(partial, ([np.ones(2), np.asarray(7.0)], n))
    packed = mean.pack(partial)
    assert all(isinstance(v, np.ndarray) for v in packed.values())
    for value in packed.values():
        Array(value)  # what the cohort engine sends
    final = mean.finalize([np.zeros(2), np.asarray(0.0)], mean.unpack(packed))
    assert isinstance(final[1], np.ndarray)
    assert final[1].shape == ()
    assert float(final[1]) == 7.0
