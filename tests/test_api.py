"""fedsim's Python API (fedsim/api.py): ``fedsim.run`` on each form of scenario, the ``Run`` it
returns, and the errors a user meets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fedsim
from fedsim.api import INPUT_FILE, Run
from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.results import MANIFEST
from fedsim.core.scenario_load import load_scenario
from fedsim.pytest_plugin import FedsimRun, assert_same_run
from tests.conftest import ROOT

TEXT = """\
name: api
seed: 3
task: {dataset: digits, model: mlp}
fleet:
  groups: [{profile: rpi4, count: 2}, {profile: pico, count: 2}]
  partition: {kind: dirichlet, alpha: 1.0}
algorithm: {kind: fedavg, lr: 0.1, local_epochs: 1, batch_size: 16}
rounds: 2
execution: {engine: inline}
"""


@pytest.fixture(scope="module")
def by_text(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return fedsim.run(TEXT, out=tmp_path_factory.mktemp("text"))


def test_a_path_a_mapping_and_a_scenario_run_as_the_text_does(
    by_text: Run, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(TEXT, encoding="utf-8")
    capfd.readouterr()

    runs = {
        "path": fedsim.run(path, out=tmp_path / "path"),
        "mapping": fedsim.run(yaml.safe_load(TEXT), out=tmp_path / "mapping"),
        "scenario": fedsim.run(load_scenario(path), out=tmp_path / "scenario"),
    }

    assert capfd.readouterr() == ("", "")  # a library stays quiet unless asked (progress=True)
    for name, run in runs.items():
        assert isinstance(run, FedsimRun), name  # the pytest plugin's runs are the same objects
        assert_same_run(by_text, run)  # rounds, devices.csv and model.npz, exactly
        assert run.summary["final_accuracy"] == by_text.summary["final_accuracy"], name
        assert (run.out / INPUT_FILE).exists() == (name != "path"), name
    manifest = json.loads((by_text.out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["scenario_path"] == str((by_text.out / INPUT_FILE).resolve())
    assert (by_text.out / INPUT_FILE).read_text(encoding="utf-8") == TEXT  # as written


def test_the_run_holds_its_records_and_a_model_that_scores_its_final_accuracy(
    by_text: Run,
) -> None:
    run = by_text

    model = run.torch_model()

    assert [r["round"] for r in run.rounds] == [1, 2]
    assert run.accuracy == [r["accuracy"] for r in run.rounds]
    assert run.final_accuracy == run.accuracy[-1]
    assert len(run.devices) == 2 * 4
    assert run.device_rows(3)[0]["device_id"] == "3"
    assert (run.scenario.name, run.scenario.rounds) == ("api", 2)
    data = load_task_data("digits", 3)
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.x_test)).argmax(dim=1).numpy()
    assert float(np.mean(predicted == data.y_test)) == pytest.approx(run.final_accuracy, abs=1e-6)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), run.model[name])
    assert repr(run) == (
        f"Run({str(run.out)!r}, rounds=2, final_accuracy={run.final_accuracy:.4f}, "
        "status='completed')"
    )
    assert "<td>completed</td>" in run._repr_html_()


def test_load_reads_the_same_run_back(by_text: Run) -> None:
    again = Run.load(by_text.out)

    assert_same_run(by_text, again)
    assert again.summary == by_text.summary
    assert again.scenario.digest() == by_text.scenario.digest()


def test_progress_goes_to_stderr_when_asked(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    fedsim.run(TEXT, out=tmp_path / "out", progress=True, rounds=1)

    stdout, stderr = capfd.readouterr()
    assert stdout == ""
    assert "api: round 1/1, acc 0." in stderr  # not a terminal: plain lines (fedsim.progress)


def test_text_extends_a_file_relative_to_the_current_directory_with_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "base.yaml").write_text(TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    run = fedsim.run("extends: base.yaml\nname: child\n", rounds=1, algorithm__lr=0.05)

    assert run.out == Path("results/child")  # output.dir (results) under the current directory
    scenario = run.scenario
    assert (scenario.name, scenario.rounds, scenario.algorithm.model_dump()["lr"]) == (
        "child",
        1,
        0.05,
    )
    written = yaml.safe_load((run.out / INPUT_FILE).read_text(encoding="utf-8"))
    assert written["extends"] == str(tmp_path.resolve() / "base.yaml")  # the run folder can move


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (TEXT.replace("rounds: 2", "rounds: fast"), r"^<scenario text>:8: rounds: expected an int"),
        (
            {**yaml.safe_load(TEXT), "fleet": {"groups": [{"profile": "pico2", "count": 2}]}},
            r"^<scenario mapping>: fleet\.groups\[0\]\.profile: unknown profile 'pico2'.*"
            r"did you mean 'pico'",
        ),
        (  # extends merged: the lines of the text the run reads are not the user's
            "extends: scenarios/quickstart.yaml\nrounds: fast\n",
            r"^<scenario text>: rounds: expected an int",
        ),
        ("scenarios/quikstart.yaml", r"^scenarios/quikstart\.yaml: no such file"),
        ("quickstart", r"^<scenario text>: expected a scenario, a mapping of keys \(or the path"),
        (3, r"^scenario: expected a path, YAML text, a mapping or a Scenario, got int"),
        ({"name": "x", "seed": Path("a")}, r"<scenario mapping>: seed: expected an integer"),
        ({"name": "x", "seed": object()}, r"<scenario mapping>: a value is a object"),
    ],
)
def test_a_bad_scenario_raises_a_located_error_and_writes_nothing(
    scenario: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)

    with pytest.raises(FedsimError, match=message):
        fedsim.run(scenario, out=tmp_path / "out")  # type: ignore[arg-type]

    assert not (tmp_path / "out").exists()


def test_a_change_through_a_value_and_a_folder_without_a_run_are_located(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match=r"^changes: rounds__x: 'rounds' is not a mapping"):
        fedsim.run(TEXT, out=tmp_path / "out", rounds__x=1)
    with pytest.raises(FedsimError, match=r"holds no finished run \(no summary\.json\)"):
        Run.load(tmp_path)
    (tmp_path / "summary.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(FedsimError, match=r"summary\.json: is damaged: not a JSON object"):
        Run.load(tmp_path)


def test_import_fedsim_stays_light_and_exports_the_api_on_first_use() -> None:
    code = (
        "import sys, fedsim\n"
        "heavy = [m for m in ('torch', 'flwr', 'pydantic', 'fedsim.api') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from fedsim import Run, run\n"
        "import fedsim.api\n"
        "assert (run, Run) == (fedsim.api.run, fedsim.api.Run)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    with pytest.raises(AttributeError, match="has no attribute 'runn'"):
        fedsim.runn  # noqa: B018
