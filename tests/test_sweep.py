"""`fedsim sweep`: a grid of settings × seeds, validated before the first run, compared with mean
± Student-t 95% CI, failures reported, completed runs skipped when it runs again."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

import fedsim.sweep as sweep_module
from fedsim.core.errors import FedsimError
from fedsim.sweep import parse_sets, plan_sweep, run_sweep
from tests.conftest import SCENARIOS, tiny_scenario
from tests.test_cli import fedsim
from tests.test_report import render

Write = Callable[..., Path]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    base = tmp_path_factory.mktemp("sweep")
    scenario = base / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(tiny_scenario(rounds=2)), encoding="utf-8")
    out = base / "out"
    proc = fedsim("sweep", scenario, "--set", "algorithm.lr=0.05,0.3", "--seeds", "2", "--out", out)
    return out, proc


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "sweep.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_sweep_runs_every_variant_and_seed_and_reports_mean_and_ci(
    swept: tuple[Path, Any],
) -> None:
    out, proc = swept
    assert proc.returncode == 0, proc.stderr
    assert "4 runs (0 failed)" in proc.stdout
    rows = _rows(out)
    assert [(r["variant"], r["completed"]) for r in rows] == [
        ("algorithm.lr=0.05", "2"),
        ("algorithm.lr=0.3", "2"),
    ]
    for v, row in enumerate(rows):
        finals = [
            json.loads((out / "runs" / f"v{v}" / f"seed-{s}" / "summary.json").read_text())[
                "final_accuracy"
            ]
            for s in (7, 8)  # the scenario's seed, then +1
        ]
        half = stats.t.ppf(0.975, 1) * np.std(finals, ddof=1) / np.sqrt(2)
        assert float(row["final_accuracy"]) == pytest.approx(np.mean(finals))
        assert float(row["final_accuracy_ci95"]) == pytest.approx(half)
    planned = yaml.safe_load((out / "scenarios" / "v1-seed8.yaml").read_text())
    assert (planned["seed"], planned["algorithm"]["lr"]) == (8, 0.3)


def test_the_sweep_page_renders(swept: tuple[Path, Any]) -> None:
    out, _ = swept
    text = (out / "sweep.html").read_text()
    assert "algorithm.lr=0.3<td>2/2<td>" in text
    assert not list(out.glob("*.png"))
    dom, console = render(out / "sweep.html")
    assert 'data-images="ok"' in dom
    assert console == []


def test_running_a_sweep_again_skips_what_completed(
    swept: tuple[Path, Any], tmp_path: Path
) -> None:
    out, _ = swept
    runs = plan_sweep(Path(out.parent / "tiny.yaml"), ["algorithm.lr=0.05,0.3"], 2, out)
    (runs[3].out / "summary.json").unlink()  # as if the sweep was killed in its last run
    seen: list[str] = []
    run_sweep(runs, out, "inline", lambda i, r, state: seen.append(state))
    assert seen == ["done earlier"] * 3 + ["running"]
    assert _rows(out)[1]["completed"] == "2"


def test_a_failed_run_is_a_row_not_the_end(
    write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = plan_sweep(write_scenario(tiny_scenario(rounds=1)), ["rounds=1"], 2, tmp_path)
    real = sweep_module.run

    def flaky(scenario: Path, *args: Any, **kwargs: Any) -> Any:
        if "seed8" in scenario.name:
            raise RuntimeError("worker lost")
        return real(scenario, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "run", flaky)
    page = run_sweep(runs, tmp_path, "inline")
    assert _rows(tmp_path)[0]["completed"] == "1"
    assert "seed 8: RuntimeError: worker lost" in page.read_text()


def test_bad_sets_fail_before_any_run(write_scenario: Write, tmp_path: Path) -> None:
    path = write_scenario(tiny_scenario())
    proc = fedsim("sweep", path, "--set", "algorithm.lrr=0.1", "--out", tmp_path / "s")
    assert proc.returncode == 2
    assert "--set algorithm.lrr=0.1" in proc.stderr
    assert "lrr" in proc.stderr
    assert not (tmp_path / "s" / "runs").exists()
    with pytest.raises(FedsimError, match="'rounds' is not KEY=V1,V2"):
        parse_sets(["rounds"])
    assert parse_sets(["a.b=1,0.5,true,x"]) == [("a.b", [1, 0.5, True, "x"])]


def test_a_scenario_that_extends_another_is_swept_merged(tmp_path: Path) -> None:
    runs = plan_sweep(SCENARIOS / "quickstart-fedprox.yaml", ["algorithm.mu=0.1,1.0"], 1, tmp_path)
    planned = yaml.safe_load(runs[1].scenario.read_text())
    assert "extends" not in planned
    assert planned["algorithm"]["kind"] == "fedprox"
    assert planned["algorithm"]["mu"] == 1.0
    assert planned["fleet"]["groups"][0]["profile"] == "rpi4"  # from the base
