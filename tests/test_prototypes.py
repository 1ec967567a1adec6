"""Prototype averaging (design §6.5): exact against central prototypes, order-independent,
idempotent per mission, and refusing bad reports with nothing merged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.algorithms.prototype_sums import (
    ClassSums,
    PrototypeError,
    PrototypeMerge,
    PrototypePartial,
    PrototypeState,
    class_sums,
    reference_blend,
    report_bytes,
)

C, D = 12, 8


def _missions(seed: int, clients: int = 5, missions: int = 3) -> list[ClassSums]:
    """Reports of ``clients`` × ``missions``, classes overlapping between clients and missions."""
    rng = np.random.default_rng(seed)
    reports = []
    for m in range(missions):
        for c in range(clients):
            labels = rng.choice(C, size=rng.integers(3, 30))
            reports.append(class_sums(f"{c}:{m}", rng.standard_normal((len(labels), D)), labels))
    return reports


def _merge_all(reports: list[ClassSums], merge: PrototypeMerge) -> PrototypeState:
    partial = merge.zero()
    for r in reports:
        partial = merge.accumulate(partial, r)
    return merge.finalize(PrototypeState.empty(C, D), partial)


def test_merged_prototypes_equal_the_central_ones() -> None:
    rng = np.random.default_rng(0)
    state = PrototypeState.empty(C, D)
    merge = PrototypeMerge(C, D)
    pooled_x, pooled_y = [], []
    for mission in range(4):  # server knows classes from earlier missions: the reference's trap
        partial = merge.zero()
        for client in range(5):
            labels = rng.choice(C, size=20)
            x = rng.standard_normal((20, D)) + labels[:, None]
            partial = merge.accumulate(partial, class_sums(f"{client}:{mission}", x, labels))
            pooled_x.append(x)
            pooled_y.append(labels)
        state = merge.finalize(state, partial)
    x, y = np.concatenate(pooled_x), np.concatenate(pooled_y)
    central = np.stack([x[y == c].mean(axis=0) for c in state.seen])
    np.testing.assert_allclose(state.prototypes(), central, rtol=1e-12, atol=1e-12)
    assert state.counts.sum() == len(y)


def test_the_reference_blend_under_weights_new_samples_of_a_known_class() -> None:
    old = np.full(D, 1.0)  # the server's prototype of 90 samples
    new = np.full((10, D), 3.0)  # 10 new samples of that class
    exact = (90 * old + new.sum(axis=0)) / 100  # 1.2
    blended = reference_blend(old, 90, new.sum(axis=0), 10)
    assert exact[0] == pytest.approx(1.2)
    assert blended[0] == pytest.approx(1.0 + 0.2 * 10 / 100)  # new data weighs 10²/100, not 10
    known = class_sums("0:0", np.tile(old, (90, 1)), np.zeros(90, np.int64))
    state = _merge_all(
        [known, class_sums("1:0", new, np.zeros(10, np.int64))], PrototypeMerge(C, D)
    )
    np.testing.assert_allclose(state.prototypes()[0], exact)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_merge_order_and_grouping_never_change_the_result(seed: int, rnd: object) -> None:
    reports = _missions(seed)
    merge = PrototypeMerge(C, D)
    expected = _merge_all(reports, merge)
    shuffled = list(reports)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    cut = len(shuffled) // 3
    left, right = (
        _merge_all_partial(shuffled[:cut], merge),
        _merge_all_partial(shuffled[cut:], merge),
    )
    got = merge.finalize(PrototypeState.empty(C, D), merge.merge(right, left))
    assert np.array_equal(got.sums, expected.sums)  # bit for bit
    assert np.array_equal(got.counts, expected.counts)
    assert got.merged == expected.merged


def _merge_all_partial(reports: list[ClassSums], merge: PrototypeMerge) -> PrototypePartial:
    partial = merge.zero()
    for r in reports:
        partial = merge.accumulate(partial, r)
    return partial


def test_a_replayed_report_is_not_counted_twice() -> None:
    merge = PrototypeMerge(C, D)
    reports = _missions(1, clients=2, missions=1)
    once = _merge_all(reports, merge)
    twice = _merge_all([*reports, reports[0]], merge)  # the same message delivered again
    assert np.array_equal(once.sums, twice.sums)
    # ...and in a later round, after it was merged
    again = merge.finalize(once, merge.accumulate(merge.zero(), reports[1]))
    assert np.array_equal(again.sums, once.sums)
    assert np.array_equal(again.counts, once.counts)


def test_two_different_reports_under_one_mission_id_are_refused() -> None:
    merge = PrototypeMerge(C, D)
    a = class_sums("4:1", np.ones((2, D)), np.array([1, 2]))
    b = replace(a, counts=np.array([1, 3]))
    with pytest.raises(PrototypeError, match="mission 4:1: two different reports"):
        merge.accumulate(merge.accumulate(merge.zero(), a), b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sums": np.ones((2, D + 1))}, r"expected sums \[2, 8\].*must be the encoder's, 8"),
        ({"counts": np.array([3, -1])}, "counts must be ≥ 1, got -1"),
        ({"counts": np.array([0, 2])}, "counts must be ≥ 1, got 0"),
        ({"sums": np.full((2, D), np.nan)}, "sums contain NaN or infinity"),
        ({"classes": np.array([3, 3])}, "a class appears twice"),
        ({"classes": np.array([3, C])}, "class index outside 0..11"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_merged(
    change: dict[str, object], message: str
) -> None:
    merge = PrototypeMerge(C, D)
    good = class_sums("0:0", np.ones((4, D)), np.array([3, 5, 5, 3]))
    partial = merge.accumulate(merge.zero(), good)
    bad = replace(class_sums("1:0", np.ones((2, D)), np.array([3, 7])), **change)  # type: ignore[arg-type]
    with pytest.raises(PrototypeError, match=f"mission 1:0: {message}"):
        merge.accumulate(partial, bad)
    state = merge.finalize(PrototypeState.empty(C, D), partial)  # the good one only
    assert state.counts.tolist() == [0, 0, 0, 2, 0, 2] + [0] * 6


def test_packed_partials_round_trip_and_are_checked() -> None:
    merge = PrototypeMerge(C, D)
    partial = _merge_all_partial(_missions(2), merge)
    back = merge.unpack(merge.pack(partial))
    assert set(back.reports) == set(partial.reports)
    assert all(back.reports[m].same_as(partial.reports[m]) for m in partial.reports)
    packed = merge.pack(partial)
    packed["0:0/sums"] = packed["0:0/sums"][:, :-1]
    with pytest.raises(PrototypeError, match="mission 0:0: expected sums"):
        merge.unpack(packed)


def test_nearest_prototype_classifies_among_seen_classes_only() -> None:
    state = PrototypeState.empty(C, 2)
    merge = PrototypeMerge(C, 2)
    report = class_sums("0:0", np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([4, 9]))
    state = merge.finalize(state, merge.accumulate(merge.zero(), report))
    assert state.classify(np.array([[1.0, 1.0], [9.0, 8.0]])).tolist() == [4, 9]
    with pytest.raises(PrototypeError, match="nothing to classify"):
        PrototypeState.empty(C, 2).classify(np.zeros((1, 2)))


def test_a_report_costs_d_plus_two_numbers_per_class() -> None:
    assert report_bytes(classes=5, dim=64) == 5 * (4 + 64 * 4 + 4)


def test_the_reference_round_merge_is_exact_for_new_classes_and_blends_known_ones() -> None:
    """``reference_finalize``: a class new to the server merges exactly even from several clients
    in one round; a class it knew gets the one-class ``reference_blend``, not the pooled mean."""
    from fedsim.core.algorithms.prototype_sums import reference_finalize

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, D)), rng.standard_normal((6, D))
    first = PrototypePartial({"0:1": class_sums("0:1", a, np.zeros(4, np.int64))})
    state = reference_finalize(PrototypeState.empty(C, D), first)
    second = PrototypePartial({"1:1": class_sums("1:1", b, np.zeros(6, np.int64))})
    new_twice = PrototypePartial({**first.reports, **second.reports})
    merged = reference_finalize(PrototypeState.empty(C, D), new_twice)
    np.testing.assert_allclose(merged.prototypes()[0], np.concatenate([a, b]).mean(0))
    later = PrototypePartial({"0:2": class_sums("0:2", b, np.zeros(6, np.int64))})
    blended = reference_finalize(state, later)
    np.testing.assert_allclose(blended.prototypes()[0], reference_blend(a.mean(0), 4, b.sum(0), 6))
    assert not np.allclose(blended.prototypes()[0], np.concatenate([a, b]).mean(0))
    assert blended.counts[0] == 10
