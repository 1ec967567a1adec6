"""The shared pieces of the reproductions (benchmarks/repro.py): resumable, fair, honest tables."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.repro import Measured, Reproduction, Store, row_of, tune


def test_a_stopped_reproduction_resumes_without_rerunning(tmp_path: Path) -> None:
    calls: list[int] = []

    def run() -> Measured:
        calls.append(1)
        return Measured(0.5, {"bytes": 10.0})

    parts = {"method": "fedavg", "lr": 0.1, "seed": 0}
    Store(tmp_path / "runs.jsonl").get(parts, run)
    again = Store(tmp_path / "runs.jsonl").get(parts, run)  # a new process reads the file
    assert calls == [1]
    assert again == Measured(0.5, {"bytes": 10.0}, {})
    Store(tmp_path / "runs.jsonl", fresh=True).get(parts, run)
    assert calls == [1, 1]


def test_tuning_never_picks_a_diverged_rate() -> None:
    scores = {0.01: 0.4, 0.1: 0.6, 1.0: math.nan}
    assert tune([0.01, 0.1, 1.0], scores.__getitem__) == 0.1
    assert tune([0.01, 0.1, 1.0], {0.01: 2.0, 0.1: 1.0, 1.0: math.inf}.__getitem__, False) == 0.1
    assert tune([0.1, 0.01], lambda lr: math.nan) == 0.01


def test_rows_give_student_t_intervals_and_the_table_names_claim_and_verdict(
    tmp_path: Path,
) -> None:
    row = row_of("m", 0.1, [Measured(0.5, {"b": 1.0}), Measured(0.7, {"b": 3.0})])
    assert row.mean == 0.6
    assert row.budget == {"b": 2.0}
    assert math.isclose(row.ci95, 12.706204736 * 0.1, rel_tol=1e-6)  # t(0.975, 1) · sem
    repro = Reproduction("x", "Paper", "it works", "tiny", "acc", "python -m benchmarks.x")
    repro.rows.append(row)
    repro.verdict = "not reproduced (0.6 < 0.9)"
    text = repro.write(tmp_path).read_text(encoding="utf-8")
    assert "it works" in text
    assert "0.600 ± 1.271" in text
    assert "not reproduced" in text


def test_a_run_is_keyed_by_everything_that_determines_it(tmp_path: Path) -> None:
    from benchmarks.repro import digest

    store = Store(tmp_path / "runs.jsonl")
    a = {"method": "m", "scenario": digest({"rounds": 10, "algorithm": {"lr": 0.1}})}
    b = {"method": "m", "scenario": digest({"rounds": 20, "algorithm": {"lr": 0.1}})}
    store.get(a, lambda: Measured(0.5))
    assert store.has(a)
    assert not store.has(b)  # another setting under the same label is not reused
    assert digest({"x": 1, "y": 2}) == digest({"y": 2, "x": 1})


def test_a_rate_tuned_to_the_grids_edge_is_flagged() -> None:
    from benchmarks.repro import edge_note

    assert edge_note([0.01, 0.1, 1.0], 1.0) == "lr at the grid's top edge"
    assert edge_note([0.01, 0.1, 1.0], 0.01) == "lr at the grid's bottom edge"
    assert edge_note([0.01, 0.1, 1.0], 0.1) == ""
    assert edge_note([0.1], 0.1) == ""  # a single rate is no grid
