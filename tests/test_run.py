"""End-to-end runs on the inline engine: artefacts, determinism, device failures as data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedsim.core.algorithms.local import LocalSgd
from fedsim.core.errors import FedsimError, RunStoppedError
from fedsim.core.results import read_rounds
from fedsim.runner import run
from tests.conftest import ROOT, tiny_scenario

Write = Callable[..., Path]


def _devices(out: Path) -> list[dict[str, str]]:
    with (out / "devices.csv").open() as f:
        return list(csv.DictReader(f))


def test_run_writes_every_artefact(write_scenario: Write, tmp_path: Path) -> None:
    result = run(write_scenario(tiny_scenario()), tmp_path / "out")

    out = result.out
    for name in (
        "manifest.json",
        "rounds.jsonl",
        "devices.csv",
        "summary.json",
        "plots/accuracy.png",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7
    assert len(manifest["scenario_sha256"]) == 64
    assert {"flwr", "torch", "numpy", "python"} <= set(manifest["versions"])
    rounds = read_rounds(out)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["participants"] == 5 and r["failures"] == 0 for r in rounds)
    assert len(_devices(out)) == 3 * 5
    assert result.summary["final_accuracy"] == rounds[-1]["accuracy"]


def test_training_improves_the_global_model(write_scenario: Write, tmp_path: Path) -> None:
    result = run(write_scenario(tiny_scenario(rounds=8)), tmp_path / "out")

    rounds = read_rounds(result.out)
    assert rounds[-1]["accuracy"] > 0.8 > rounds[0]["accuracy"]
    assert rounds[-1]["loss"] < rounds[0]["loss"]


def test_same_scenario_twice_gives_identical_metrics(write_scenario: Write, tmp_path: Path) -> None:
    path = write_scenario(tiny_scenario(clients_per_round=3))

    a = run(path, tmp_path / "a").out
    b = run(path, tmp_path / "b").out

    assert (a / "rounds.jsonl").read_bytes() == (b / "rounds.jsonl").read_bytes()
    assert (a / "devices.csv").read_bytes() == (b / "devices.csv").read_bytes()


def test_a_different_seed_gives_different_metrics(write_scenario: Write, tmp_path: Path) -> None:
    a = run(write_scenario(tiny_scenario(), "a.yaml"), tmp_path / "a").out
    b = run(write_scenario(tiny_scenario(seed=8), "b.yaml"), tmp_path / "b").out

    assert read_rounds(a) != read_rounds(b)


def test_fedprox_runs_and_differs_from_fedavg(write_scenario: Write, tmp_path: Path) -> None:
    prox = {"kind": "fedprox", "lr": 0.1, "local_epochs": 1, "batch_size": 16, "mu": 1.0}
    a = run(write_scenario(tiny_scenario(), "a.yaml"), tmp_path / "a").out
    b = run(write_scenario(tiny_scenario(algorithm=prox), "b.yaml"), tmp_path / "b").out

    assert read_rounds(a)[-1]["accuracy"] != read_rounds(b)[-1]["accuracy"]
    assert json.loads((b / "summary.json").read_text())["algorithm"] == "fedprox"


def test_injected_crashes_are_counted_and_the_run_goes_on(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = {
        "groups": [
            {"profile": "rpi4", "count": 3},
            {"profile": "pico", "count": 2, "faults": {"crash_prob": 1.0}},
        ]
    }

    result = run(write_scenario(tiny_scenario(fleet=fleet)), tmp_path / "out")

    rounds = read_rounds(result.out)
    assert all(r["failures"] == 2 and r["participants"] == 3 for r in rounds)
    failed = [d for d in _devices(result.out) if d["status"] == "failed"]
    assert {d["profile"] for d in failed} == {"pico"}
    assert all("InjectedCrashError: injected crash of device" in d["error"] for d in failed)
    assert result.summary["failures"] == 6


def test_a_client_that_raises_is_a_failure_not_a_crash(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = LocalSgd.train

    def flaky(self: LocalSgd, model, x, y, seed, state):  # type: ignore[no-untyped-def]
        if len(x) == len(flaky.victim_x):  # the device whose data matches
            raise MemoryError("out of SRAM")
        return real_train(self, model, x, y, seed, state)

    from devices.fleet import load_fleet

    path = write_scenario(tiny_scenario())
    flaky.victim_x = load_fleet(path)[1].local_data(1)[0]  # type: ignore[attr-defined]
    monkeypatch.setattr(LocalSgd, "train", flaky)

    result = run(path, tmp_path / "out")

    rounds = read_rounds(result.out)
    assert all(r["failures"] >= 1 for r in rounds)
    errors = [d["error"] for d in _devices(result.out) if d["status"] == "failed"]
    assert errors
    assert all("MemoryError: out of SRAM" in e for e in errors)
    assert rounds[-1]["accuracy"] is not None


def test_all_devices_failing_is_a_failed_run_that_keeps_its_rounds(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = {"groups": [{"profile": "pico", "count": 3, "faults": {"crash_prob": 1.0}}]}

    with pytest.raises(RunStoppedError, match=r"no device update succeeded.*injected crash"):
        run(write_scenario(tiny_scenario(fleet=fleet)), tmp_path / "out")

    rounds = read_rounds(tmp_path / "out")
    assert len({r["accuracy"] for r in rounds}) == 1  # untrained model, evaluated each round
    assert sum(r["failures"] for r in rounds) == 9


def test_existing_results_are_not_overwritten(write_scenario: Write, tmp_path: Path) -> None:
    path = write_scenario(tiny_scenario(rounds=1))
    run(path, tmp_path / "out")

    with pytest.raises(FedsimError, match=r"out: already holds a run; pass --overwrite"):
        run(path, tmp_path / "out")
    assert run(path, tmp_path / "out", overwrite=True).out == tmp_path / "out"


def test_default_output_folder_is_never_reused(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_scenario(tiny_scenario(rounds=1, output={"dir": "res"}))

    first, second = run(path).out, run(path).out

    assert (first.name, second.name) == ("tiny", "tiny-2")


def test_evaluation_every_n_rounds(write_scenario: Write, tmp_path: Path) -> None:
    result = run(write_scenario(tiny_scenario(rounds=5, evaluation={"every": 2})), tmp_path / "o")

    evaluated = [r["round"] for r in read_rounds(result.out) if r["accuracy"] is not None]
    assert evaluated == [2, 4, 5]


def test_bytes_are_counted_from_the_payload(write_scenario: Write, tmp_path: Path) -> None:
    result = run(write_scenario(tiny_scenario(rounds=1)), tmp_path / "out")

    # mlp 64-32-10 in float32: the tensors' numbers (message framing is the link model's)
    tensor_bytes = (64 * 32 + 32 + 32 * 10 + 10) * 4
    rows = _devices(result.out)
    assert {int(d["bytes_down"]) for d in rows} == {int(d["bytes_up"]) for d in rows}
    assert {int(d["bytes_down"]) for d in rows} == {tensor_bytes}
    assert read_rounds(result.out)[0]["bytes_up"] == tensor_bytes * len(rows)


def test_a_run_that_stops_keeps_its_rounds_and_says_why(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.loop

    real_evaluate, calls = server.loop.evaluate, []

    def failing_evaluate(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation blew up")
        return real_evaluate(*args)

    monkeypatch.setattr(server.loop, "evaluate", failing_evaluate)

    with pytest.raises(RuntimeError, match="evaluation blew up"):
        run(write_scenario(tiny_scenario()), tmp_path / "out")

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["rounds_completed"] == 1
    assert summary["error"] == "RuntimeError: evaluation blew up"
    assert len(read_rounds(tmp_path / "out")) == 1


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_runs_a_short_round(
    path: Path, write_scenario: Write, tmp_path: Path
) -> None:
    from devices.fleet import load_fleet

    scenario, _ = load_fleet(path)
    size = min(scenario.fleet.size, 40)
    pace = (  # an asynchronous run has no rounds to cut: a short run is a few devices at once
        f"clients_per_round: {size}\n"
        if scenario.asynchrony is None
        else f"asynchrony: {{concurrency: {size}, buffer_size: 1}}\n"
    )
    short = write_scenario(f"extends: {path}\nrounds: 1\n{pace}execution: {{engine: inline}}\n")

    result = run(short, tmp_path / "out")

    assert result.summary["status"] == "completed"
    assert read_rounds(result.out)[0]["participants"] > 0
