"""Users' algorithms, by the two routes a scenario can name them (an installed entry point, a
dotted path), validated and run as the built-ins are; and ``fedsim algorithms``."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedsim.cli import app, summarize
from fedsim.core.algorithms import ALGORITHMS
from fedsim.core.errors import FedsimError
from fedsim.core.scenario_load import load_scenario
from fedsim.core.state import STATE_FILE, DeviceStateStore
from fedsim.runner import run
from tests.conftest import ROOT, tiny_scenario

Write = Callable[..., Path]
PLUGINS = "tests.data.algorithm_plugins"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """Pretend a package installed entry point ``name = value`` in group fedsim.algorithms."""
    extra: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        found = real(**params)
        if params.get("group") == "fedsim.algorithms":
            return [*found, *extra]
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    def add(name: str, value: str) -> None:
        extra.append(importlib.metadata.EntryPoint(name, value, "fedsim.algorithms"))
        ALGORITHMS._loaded.pop(name, None)

    return add


def _model(out: Path) -> list[np.ndarray]:
    with np.load(out / "model.npz") as saved:
        return [saved[k] for k in saved.files]


def test_a_dotted_path_and_an_entry_point_run_the_same_algorithm(
    write_scenario: Write, tmp_path: Path, installed: Callable[[str, str], None]
) -> None:
    installed("halfstep", f"{PLUGINS}:HalfStep")
    algorithm = {"lr": 0.1, "local_epochs": 1, "batch_size": 16, "share": 0.5}
    by_path = write_scenario(
        tiny_scenario(algorithm={"kind": f"{PLUGINS}:HalfStep", **algorithm}), "a.yaml"
    )
    by_name = write_scenario(tiny_scenario(algorithm={"kind": "halfstep", **algorithm}), "b.yaml")

    run(by_path, tmp_path / "a", engine="inline")
    run(by_name, tmp_path / "b", engine="inline")
    run(write_scenario(tiny_scenario(), "c.yaml"), tmp_path / "c", engine="inline")

    a, b, fedavg = _model(tmp_path / "a"), _model(tmp_path / "b"), _model(tmp_path / "c")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, fedavg, strict=True))  # its own step


def test_a_users_keys_are_validated_like_built_in_ones(write_scenario: Write) -> None:
    path = write_scenario(tiny_scenario(algorithm={"kind": f"{PLUGINS}:HalfStep", "share": 2}))
    with pytest.raises(FedsimError, match=r"algorithm\.share: must be at most 1"):
        load_scenario(path)
    path = write_scenario(tiny_scenario(algorithm={"kind": f"{PLUGINS}:HalfStep", "shar": 1}))
    with pytest.raises(FedsimError, match=r"algorithm\.shar: unknown key 'shar' \(did you mean"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (f"{PLUGINS}:NoLearner", r"is incomplete: it does not define learner"),
        (f"{PLUGINS}:NotAnAlgorithm", r"is not an algorithm: not a subclass of"),
        (f"{PLUGINS}:Missing", r"module 'tests\.data\.algorithm_plugins' has no 'Missing'"),
        (f"{PLUGINS}:BadChecks", r"BadChecks's problems\(\) raised RuntimeError: boom"),
        (f"{PLUGINS}:OddChecks", r"OddChecks's problems\(\) gave 'not a triple'"),
        (f"{PLUGINS}:MissionsOnly", r"does not define mission_bytes \(it has missions\(\)\)"),
        ("no_such_package.algo:X", r"cannot import module 'no_such_package\.algo'"),
    ],
)
def test_a_broken_plugin_is_one_located_line(
    kind: str, expected: str, write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(tiny_scenario(algorithm={"kind": kind}), "s.yaml")
    with pytest.raises(FedsimError, match=r"algorithm\.kind: .*" + expected) as caught:
        summarize(path)
    assert caught.value.where.startswith(str(path))  # file:line of the kind
    with pytest.raises(FedsimError, match=expected):
        run(path, tmp_path / "out", engine="inline")
    assert not (tmp_path / "out").exists()


def test_fedsim_algorithms_lists_them_and_fails_on_an_incomplete_plugin(
    installed: Callable[[str, str], None],
) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["algorithms", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["kind"]: row for row in json.loads(listed.output)}
    assert set(ALGORITHMS.builtins()) <= set(rows)
    assert all(rows[k]["complete"] == "yes" for k in ALGORITHMS.builtins())

    installed("halfdone", f"{PLUGINS}:NoLearner")
    broken = runner.invoke(app, ["algorithms", "--format", "json"])
    assert broken.exit_code == 2
    rows = {row["kind"]: row for row in json.loads(broken.output)}
    assert rows["halfdone"]["complete"] == "no: lacks learner"


def test_the_docs_minimal_example_runs_as_written(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = (ROOT / "docs" / "algorithms.md").read_text()
    code = re.search(r"```python\n(# my_algorithms\.py\n.*?)```", docs, re.S)
    keys = re.search(r"```yaml\n(algorithm:\n.*?)```", docs, re.S)
    assert code is not None
    assert keys is not None
    (tmp_path / "my_algorithms.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    algorithm = yaml.safe_load(keys.group(1))["algorithm"]
    assert algorithm["kind"] == "my_algorithms:DampedFedAvg"
    path = write_scenario(tiny_scenario(algorithm=algorithm), "s.yaml")

    assert "ok: " in summarize(path)
    run(path, tmp_path / "out", engine="inline")
    scenario = load_scenario(path)
    assert scenario.algorithm.server_lr(1, 3) == 0.3
    assert (tmp_path / "out" / "model.npz").exists()


def test_the_fedsim_command_finds_a_module_in_the_folder_it_runs_from(tmp_path: Path) -> None:
    """The console script (not ``python -m``, which puts the folder on the path by itself)."""
    docs = (ROOT / "docs" / "algorithms.md").read_text()
    code = re.search(r"```python\n(# my_algorithms\.py\n.*?)```", docs, re.S)
    assert code is not None
    (tmp_path / "my_algorithms.py").write_text(code.group(1))
    scenario = tiny_scenario(algorithm={"kind": "my_algorithms:DampedFedAvg", "share": 0.3})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    command = Path(sys.executable).parent / "fedsim"

    proc = subprocess.run(
        [str(command), "validate", "s.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert "s.yaml: ok: " in proc.stdout


def test_a_failing_stateful_device_keeps_its_state_in_both_modes(
    write_scenario: Write, tmp_path: Path
) -> None:
    stores = []
    for mode in ("per-device", "cohort"):
        scenario = tiny_scenario(
            algorithm={"kind": f"{PLUGINS}:CountThenFail"},
            execution={"mode": mode, "vectorize": False, "actors": 2},
        )
        out = tmp_path / mode
        with contextlib.suppress(FedsimError):  # if every device failed: a no-updates run
            run(write_scenario(scenario, f"{mode}.yaml"), out, engine="inline")
        with DeviceStateStore(out / STATE_FILE) as store:
            stores.append({d: int(s["rounds"]) for d, s in store.get_many(range(100)).items()})
    assert stores[0]
    assert stores[0] == stores[1]


class _StopAfter:
    """An observer that interrupts the run once round ``k`` is recorded (and checkpointed)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def start(self, total_rounds: int) -> None:
        pass

    def round(self, record: Any) -> None:
        if record.round == self.k:
            raise KeyboardInterrupt

    def end(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["per-device", "cohort"])
def test_an_algorithms_server_state_survives_a_resume(
    mode: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = tiny_scenario(
        algorithm={"kind": f"{PLUGINS}:ServerMomentum", "momentum": 0.9},
        execution={"mode": mode, "vectorize": False, "actors": 2},
        rounds=4,
    )
    path = write_scenario(scenario, "s.yaml")
    run(path, tmp_path / "whole", engine="inline")
    with pytest.raises(KeyboardInterrupt):
        run(path, tmp_path / "cut", engine="inline", observer=_StopAfter(2))
    run(None, tmp_path / "cut", engine="inline", resume=True)

    whole, resumed = _model(tmp_path / "whole"), _model(tmp_path / "cut")
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed, strict=True))


def test_server_state_a_checkpoint_cannot_keep_exactly_is_refused(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(tiny_scenario(algorithm={"kind": f"{PLUGINS}:Float64State"}))
    with pytest.raises(FedsimError, match=r"keeps state 'steps' as float64: a checkpoint keeps"):
        run(path, tmp_path / "out", engine="inline")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "refused"
