"""A run's numbers can be trusted, or the run fails loudly (issue 21): a diverged device fails, a
non-finite global model stops the run, a run in which no update succeeds is a failed run, and an
algorithm with a missing part is refused before anything runs."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import server.loop
from fedsim.cli import summarize
from fedsim.core.algorithms import ALGORITHMS, Algorithm
from fedsim.core.algorithms.fedavg import FedAvg, SgdEpochs
from fedsim.core.errors import ExitCode, FedsimError, RunStoppedError
from fedsim.core.results import read_rounds
from fedsim.parts import check_parts, missing_parts
from fedsim.runner import resume_target, run, stopped_error
from tests.conftest import tiny_scenario
from tests.test_cli import fedsim

Write = Callable[..., Path]
DIVERGING = {"kind": "fedavg", "lr": 1e30, "local_epochs": 1, "batch_size": 4}
EXECUTIONS = {
    "per-device": {"mode": "per-device"},
    "sequential": {"mode": "cohort", "vectorize": False, "actors": 2},
    "vectorised": {"mode": "cohort", "vectorize": True, "actors": 1},
}


def _equal_devices(execution: dict[str, Any], algorithm: dict[str, Any]) -> dict[str, Any]:
    """Ten equal-sized devices, all selected: a cohort of them vectorises."""
    return tiny_scenario(
        task={"dataset": "blobs-784", "model": "mlp"},
        fleet={
            "groups": [{"profile": "rpi4", "count": 10}],
            "partition": {"kind": "iid"},
            "samples_per_device": 12,
        },
        algorithm=algorithm,
        execution={"engine": "inline", **execution},
        clients_per_round=10,
        rounds=2,
    )


def _devices(out: Path) -> list[dict[str, str]]:
    with (out / "devices.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mode", sorted(EXECUTIONS))
def test_diverged_devices_fail_and_a_run_without_updates_stops(
    mode: str, write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(_equal_devices(EXECUTIONS[mode], DIVERGING))

    with pytest.raises(RunStoppedError, match="no device update succeeded") as caught:
        run(path, tmp_path / "out")

    assert caught.value.status == "no-updates"
    assert caught.value.exit_code == ExitCode.UNTRUSTED_RESULT
    assert "non-finite" in caught.value.what
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "no-updates"
    assert summary["rounds_completed"] == 2
    devices = _devices(tmp_path / "out")
    assert devices
    assert {d["status"] for d in devices} == {"failed"}
    assert all("non-finite" in d["error"] for d in devices)
    assert all(r["train_loss"] is None for r in read_rounds(tmp_path / "out"))


def test_the_cli_exits_3_with_one_line_for_a_run_without_updates(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(_equal_devices(EXECUTIONS["vectorised"], DIVERGING))

    proc = fedsim("run", path, "--out", tmp_path / "out")

    assert proc.returncode == ExitCode.UNTRUSTED_RESULT, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "no device update succeeded" in errors[0]


def test_a_non_finite_global_model_stops_the_run(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = FedAvg.server_step
    calls = []

    def poisoned(self: FedAvg, arrays: Any, averaged: Any, *rest: Any) -> Any:
        out = real_step(self, arrays, averaged, *rest)
        calls.append(1)
        if len(calls) == 2:  # round 2's aggregate overflows
            out[0] = np.full_like(out[0], np.inf)
        return out

    monkeypatch.setattr(FedAvg, "server_step", poisoned)
    algorithm = {**DIVERGING, "lr": 0.1}
    path = write_scenario(_equal_devices(EXECUTIONS["per-device"], algorithm) | {"rounds": 4})

    with pytest.raises(RunStoppedError, match=r"round 2: the global model is not finite") as caught:
        run(path, tmp_path / "out")

    assert caught.value.status == "diverged"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["rounds_completed"] == 1
    assert "lower algorithm.lr" in summary["error"]
    assert not (tmp_path / "out" / "model.npz").exists()


@pytest.mark.parametrize("kind", ALGORITHMS.builtins())
def test_every_built_in_algorithm_is_complete(kind: str) -> None:
    assert missing_parts(kind) == []


@pytest.mark.parametrize("method", ["learner", "samples_processed"])
def test_an_algorithm_missing_a_part_is_refused_before_it_runs(
    method: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(SgdEpochs, method)  # FedAvg falls back to the protocol's bare method
    assert getattr(FedAvg, method) is getattr(Algorithm, method)
    path = write_scenario(tiny_scenario())

    with pytest.raises(FedsimError, match="is incomplete") as caught:
        check_parts("fedavg")
    assert f"does not define {method}" in str(caught.value)
    located = rf"algorithm\.kind: algorithm 'fedavg' \(FedAvg\) is incomplete: .*{method}"
    with pytest.raises(FedsimError, match=located):  # fedsim validate
        summarize(path)
    with pytest.raises(FedsimError, match=located):
        run(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any output


def test_an_update_finite_in_float32_but_not_in_its_float16_payload_fails_its_device(
    write_scenario: Write,
) -> None:
    import clients.update
    import clients.work
    from devices.fleet import load_fleet
    from fedsim.core.models import get_arrays

    scenario = _equal_devices(EXECUTIONS["per-device"], {**DIVERGING, "lr": 0.1})
    scenario["fleet"]["payload_dtype"] = "float16"
    loaded, _ = load_fleet(write_scenario(scenario))
    model = clients.work._model(loaded)
    start = get_arrays(model)
    trained = [a + 1e5 for a in start]  # finite, over float16's 65504
    sent = clients.update.sent_tensors(loaded, model, head_only=False)

    with pytest.raises(clients.update.NonFiniteUpdateError, match="as sent in float16"):
        clients.update.device_update(loaded, model, trained, start, sent, 12, 0.5)
    changed = [a + 1.0 for a in start]
    update = clients.update.device_update(loaded, model, changed, start, sent, 12, 0.5)
    assert all(np.isfinite(a).all() for a in update.arrays)


def test_a_model_that_scores_inf_stops_the_run(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.loop, "evaluate", lambda *_: (0.1, float("inf")))
    path = write_scenario(_equal_devices(EXECUTIONS["per-device"], {**DIVERGING, "lr": 0.1}))

    with pytest.raises(RunStoppedError, match=r"round 1: the global model's test loss is inf"):
        run(path, tmp_path / "out")

    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("status", ["diverged", "no-updates", "refused", "failed"])
def test_a_stopped_summary_gives_back_the_line_it_stopped_with(status: str, tmp_path: Path) -> None:
    original = RunStoppedError(status, "round 2", "what went wrong", "how to fix it")
    summary = {"scenario": "x", **server.loop.stop_record(original), "rounds_completed": 1}

    again = stopped_error(json.loads(json.dumps(summary)), tmp_path)

    assert again.line() == original.line()
    assert again.exit_code == original.exit_code
    crash = server.loop.stop_record(KeyError("boom"))
    assert stopped_error(crash, tmp_path).exit_code == ExitCode.RUN_FAILED
    assert stopped_error(crash, tmp_path).where == str(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is damaged: no readable 'scenario_path' \\(JSONDecodeError\\)"),
        ('{"seed": 1}', "is damaged: no readable 'scenario_path' \\(KeyError\\)"),
        ('{"scenario_path": 3}', "is damaged: 'scenario_path' is no string"),
    ],
)
def test_resuming_a_folder_with_a_damaged_manifest_is_a_located_error(
    content: str, problem: str, tmp_path: Path
) -> None:
    (tmp_path / "manifest.json").write_text(content, encoding="utf-8")

    with pytest.raises(
        FedsimError, match=re.escape(str(tmp_path / "manifest.json")) + ": " + problem
    ):
        resume_target(tmp_path)


def test_an_output_dir_that_cannot_be_made_fails_before_the_run(
    write_scenario: Write, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    path = write_scenario(tiny_scenario(output={"dir": str(blocker / "results")}))

    with pytest.raises(FedsimError, match=r"output\.dir .*: cannot make the run folder"):
        run(path)


def test_the_server_refuses_a_non_finite_update_whatever_the_device_claims(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clients.update

    monkeypatch.setattr(clients.update, "check_finite", lambda *_: None)  # a device that lies
    path = write_scenario(_equal_devices(EXECUTIONS["per-device"], DIVERGING))

    with pytest.raises(RunStoppedError, match="no device update succeeded"):
        run(path, tmp_path / "out")

    devices = _devices(tmp_path / "out")
    assert {d["status"] for d in devices} == {"failed"}
    assert all(d["error"].endswith(": refused") for d in devices)
    assert all("non-finite" in d["error"] for d in devices)
