"""output.trackers: TensorBoard event files and an MLflow file store, read back and compared with
rounds.jsonl; a missing extra is a located error; a failing tracker never costs the run."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fedsim.runner
import fedsim.trackers
from fedsim.apps import output_callbacks
from fedsim.core.errors import FedsimError, RunStoppedError
from fedsim.core.records import DeviceRecord, RoundRecord
from fedsim.runner import run
from server.callbacks import RoundCallback, RunState
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


def _scenario(tmp_path: Path, rounds: int = 2, **output: Any) -> dict[str, Any]:
    scenario = tiny_scenario(rounds=rounds)
    scenario["fleet"]["groups"] = [{"profile": "rpi4", "count": 4}]
    scenario["output"] = {"dir": str(tmp_path / "results"), **output}
    return scenario


@pytest.fixture(autouse=True)
def _file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # set by the tracker itself


def _rounds(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


def _events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-untyped]  # no stubs
        EventAccumulator,
    )

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def _tensorboard(folder: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in _events(folder).Scalars(tag)]


def _tensorboard_tags(folder: Path) -> dict[str, Any]:
    return dict(_events(folder).Tags())


def _mlflow(out: Path) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    where = json.loads((out / "trackers.json").read_text())["mlflow"]
    return MlflowClient(where["tracking_uri"]), where["run_id"]


def test_both_trackers_log_the_rounds_the_scenario_and_the_artifacts(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(_scenario(tmp_path, trackers=["tensorboard", "mlflow"]))

    out = run(path, tmp_path / "run").out

    rounds = _rounds(out)
    accuracy = [pytest.approx((r["round"], r["accuracy"]), rel=1e-6) for r in rounds]
    assert _tensorboard(out / "tensorboard", "accuracy") == accuracy
    sim_ms = [round(r["sim_time_s"] * 1000) for r in rounds]
    energy = _tensorboard(out / "tensorboard" / "sim_time", "sim_time_ms/energy_mj")
    assert energy == [
        pytest.approx((ms, r["energy_mj"]), rel=1e-6) for ms, r in zip(sim_ms, rounds, strict=True)
    ]
    tags = _tensorboard_tags(out / "tensorboard")
    assert "scenario/text_summary" in tags["tensors"]  # the scenario, as text
    assert {"plots/accuracy", "plots/fleet"} <= set(tags["images"])
    assert "gateway_cut" not in tags["scalars"]  # a star has no gateways
    total = _tensorboard(out / "tensorboard", "total_energy_mj")[-1][1]
    assert total == pytest.approx(sum(r["energy_mj"] for r in rounds), rel=1e-6)

    client, run_id = _mlflow(out)
    for key in ("accuracy", "loss", "stragglers", "sim_time_s"):
        history = client.get_metric_history(run_id, key)
        assert [(m.step, m.value) for m in history] == [(r["round"], r[key]) for r in rounds]
    logged = client.get_run(run_id)
    manifest = json.loads((out / "manifest.json").read_text())
    assert logged.data.params["scenario_sha256"] == manifest["scenario_sha256"]
    assert logged.data.params["fleet.groups.0.profile"] == "rpi4"
    assert logged.data.params["rounds"] == "2"
    assert logged.info.run_name == "run"
    assert logged.info.status == "FINISHED"
    assert client.get_experiment(logged.info.experiment_id).name == "tiny"
    assert logged.info.artifact_uri.startswith((tmp_path / "results" / "mlruns").as_uri())
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "summary.json", "plots"} <= artifacts
    assert client.list_artifacts(run_id, "plots")


def test_a_missing_extra_is_a_located_error_naming_the_install(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fedsim.trackers._import

    def without_mlflow(module: str) -> Any:
        if module.startswith("mlflow"):
            raise ImportError("No module named 'mlflow'")
        return real(module)

    monkeypatch.setattr(fedsim.trackers, "_import", without_mlflow)
    path = write_scenario(_scenario(tmp_path, trackers=["mlflow"]))
    from fedsim.core.scenario_load import load_scenario

    with pytest.raises(
        FedsimError,
        match=r"output.trackers: mlflow is not installed .*pip install 'fedsim\[trackers\]'",
    ):
        fedsim.trackers.check_trackers(load_scenario(path))
    with pytest.raises(FedsimError, match=r"output.trackers: .*fedsim\[trackers\]"):
        run(path, tmp_path / "run")
    assert not (tmp_path / "run" / "rounds.jsonl").exists()  # refused before any round ran
    assert not (tmp_path / "results" / "mlruns").exists()
    from fedsim.cli.run import check

    with pytest.raises(FedsimError, match=r"output.trackers: .*fedsim\[trackers\]"):
        check(path)  # fedsim validate says so too


def test_a_tracker_failing_mid_run_is_dropped_with_a_warning_and_the_run_completes(
    write_scenario: Write,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fedsim.trackers._Mlflow, "log", broken)
    path = write_scenario(_scenario(tmp_path, trackers=["mlflow", "tensorboard"]))

    with caplog.at_level(logging.WARNING, logger="fedsim.trackers"):
        result = run(path, tmp_path / "run")

    assert result.summary["status"] == "completed"
    assert "mlflow failed to log (OSError: disk full)" in caplog.text
    assert len(_tensorboard(result.out / "tensorboard", "accuracy")) == 2


class _StopAt(RoundCallback):
    def __init__(self, round_: int) -> None:
        self.round = round_

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        if record.round == self.round:
            raise RuntimeError("stopped for the test")


def test_a_resumed_run_appends_to_the_same_tracker_runs(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_scenario(_scenario(tmp_path, rounds=3, trackers=["tensorboard", "mlflow"]))
    monkeypatch.setattr(
        fedsim.runner, "output_callbacks", lambda: [*output_callbacks(), _StopAt(2)]
    )
    with pytest.raises((RunStoppedError, RuntimeError)):
        run(path, tmp_path / "run")
    monkeypatch.setattr(fedsim.runner, "output_callbacks", output_callbacks)

    out = run(None, tmp_path / "run", resume=True).out

    rounds = _rounds(out)
    steps = [step for step, _ in _tensorboard(out / "tensorboard", "accuracy")]
    assert steps == [1, 2, 3] == [r["round"] for r in rounds]
    sim = _tensorboard(out / "tensorboard" / "sim_time", "sim_time_ms/accuracy")
    assert [ms for ms, _ in sim] == [round(r["sim_time_s"] * 1000) for r in rounds]
    client, run_id = _mlflow(out)
    history = client.get_metric_history(run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(r["round"], r["accuracy"]) for r in rounds]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
