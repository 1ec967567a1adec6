"""The traps a new user hit (issue 26, item 7), each pinned: validate's warnings, the run folder's
copy of its scenario, the report's final metrics and comparison page, bands and ticks of the
plots, the device timeline, and Ctrl-C."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsim import plots
from fedsim.cli.run import check
from fedsim.core.errors import ExitCode
from fedsim.core.scenario_load import load_scenario
from fedsim.plots import clip_band
from fedsim.report import LOST, RunView, compare_report, labels
from fedsim.runner import run
from fedsim.sweep import SweepRun, Variant, curve_bands
from fedsim.timeline import timeline
from server.outputs import write_scenario_copy
from tests.conftest import ROOT, SCENARIOS, tiny_scenario
from tests.test_cli import fedsim

Write = Callable[..., Path]


def _skipping_fleet(write_scenario: Write) -> Path:
    """The heterogeneous fleet with ``memory_policy: skip``: 16 of 40 devices cannot train."""
    shipped = SCENARIOS / "heterogeneous-fleet.yaml"
    return write_scenario(f"extends: {shipped}\nfleet:\n  memory_policy: skip\n")


def test_validate_warns_of_groups_that_never_train(write_scenario: Write) -> None:
    _, warnings = check(_skipping_fleet(write_scenario))

    assert [w.split(": ")[1] for w in warnings] == [
        "fleet.groups[0] (nano33-ble-sense)",
        "fleet.groups[1] (pico)",
    ]
    assert all("8 of 40 devices will never train" in w for w in warnings)
    assert "training footprint (305 KB)" in warnings[0]


def test_validate_warns_of_groups_the_deadline_always_cuts() -> None:
    _, warnings = check(SCENARIOS / "heterogeneous-fleet.yaml")  # head-only: they train

    cut = [w for w in warnings if "always cut" in w]
    assert cut
    assert "fleet.groups[0] (nano33-ble-sense): 8 of 40 devices are always cut" in cut[0]
    assert "past the deadline (12 s)" in cut[0]


def test_validate_prints_warnings_on_stderr_and_strict_fails_on_them(
    write_scenario: Write,
) -> None:
    path = _skipping_fleet(write_scenario)

    lenient, strict = fedsim("validate", path), fedsim("validate", "--strict", path)
    clean = fedsim("validate", "--strict", SCENARIOS / "quickstart.yaml")

    assert lenient.returncode == 0
    assert lenient.stdout.startswith(f"{path}: ok")
    warned = lenient.stderr.splitlines()
    assert warned
    assert all(line.startswith("warning: ") for line in warned)
    assert "will never train" in lenient.stderr
    assert strict.returncode == ExitCode.BAD_INPUT
    assert strict.stderr == lenient.stderr
    assert clean.returncode == 0, clean.stderr
    assert clean.stderr == ""


# --- the run folder, its report, the comparison page, the plots --------------------------------


def _availability_scenario(**changes: Any) -> dict[str, Any]:
    """5 devices: 3 rpi4 that go offline now and then, 2 pico that the 2 s deadline always cuts."""
    return tiny_scenario(
        rounds=4,
        deadline_s=2.0,
        fleet={
            "groups": [
                {
                    "profile": "rpi4",
                    "count": 3,
                    "availability": {"kind": "markov", "mean_on_s": 3, "mean_off_s": 2},
                },
                {"profile": "pico", "count": 2},
            ],
            "partition": {"kind": "dirichlet", "alpha": 1.0},
        },
        **changes,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs of the same fleet: seed 7 and lr 0.1, seed 8 and lr 0.3."""
    base = tmp_path_factory.mktemp("traps")
    outs = []
    for name, changes in (("a", {}), ("b", {"seed": 8, "algorithm": {**LR, "lr": 0.3}})):
        path = base / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_availability_scenario(**changes)), encoding="utf-8")
        outs.append(run(path, base / name).out)
    return outs[0], outs[1]


LR = {"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16}


def test_the_run_folder_keeps_the_resolved_scenario_and_it_runs_again(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    copy = runs[0] / "scenario.yaml"
    manifest = json.loads((runs[0] / "manifest.json").read_text())

    again = run(copy, tmp_path / "again").out

    text = copy.read_text(encoding="utf-8")
    assert text.startswith(f"# The scenario of this run, resolved from {manifest['scenario_path']}")
    assert f"# SHA-256 {manifest['scenario_sha256']}" in text
    assert "deadline_s: 2.0" in text
    assert "memory_policy: skip" in text  # a default, written out
    assert load_scenario(copy).digest() == manifest["scenario_sha256"]
    rerun = json.loads((again / "manifest.json").read_text())
    assert rerun["scenario_sha256"] == manifest["scenario_sha256"]
    assert (again / "rounds.jsonl").read_text() == (runs[0] / "rounds.jsonl").read_text()


def test_the_copy_makes_relative_paths_absolute_and_says_so(tmp_path: Path) -> None:
    shipped = SCENARIOS / "kws-registry.yaml"  # registry.data: [fleets/campus.ttl]
    scenario = load_scenario(shipped)

    copy = write_scenario_copy(str(tmp_path), scenario, str(shipped))

    moved = load_scenario(copy)  # from another folder: the paths must not be relative
    assert moved.registry is not None
    assert [Path(p) for p in moved.registry.data] == [SCENARIOS / "fleets" / "campus.ttl"]
    stated = re.search(r"this copy's SHA-256 is (\w+)", copy.read_text(encoding="utf-8"))
    assert stated
    assert stated[1] == moved.digest() != scenario.digest()


def test_the_report_shows_the_scenario_and_what_the_run_lost(runs: tuple[Path, Path]) -> None:
    text = (runs[0] / "report.html").read_text(encoding="utf-8")
    rounds = [json.loads(line) for line in (runs[0] / "rounds.jsonl").read_text().splitlines()]

    section = re.search(r"<details><summary>The scenario as it ran.*?<pre>(.*?)</pre>", text, re.S)
    assert section
    assert html.unescape(section[1]) == (runs[0] / "scenario.yaml").read_text(encoding="utf-8")
    for key, label in LOST:
        total = sum(r[key] for r in rounds)
        assert f"<tr><td>{label} (device rounds)<td>{total}</tr>" in text
    assert sum(r["stragglers"] for r in rounds) == 8  # the 2 picos, every round
    assert sum(r["offline"] for r in rounds) > 0


def test_the_comparison_names_runs_shows_what_differs_and_leaves_wall_time_uncoloured(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    page = compare_report(list(runs), tmp_path / "compare.html")

    text = page.read_text(encoding="utf-8")
    assert "<th>metric<th>tiny · fedavg · seed 7<th>tiny · fedavg · seed 8</tr>" in text
    settings = text.split("<h2>Settings that differ</h2>")[1].split("<h2>")[0]
    keys = re.findall(r"<td><code>([^<]+)</code>", settings)
    assert sorted(keys) == ["algorithm.lr", "seed"]
    wall = re.search(r"<tr><td>wall time \(s\)(.*?)</tr>", text)
    assert wall
    assert "better" not in wall[1]
    assert "worse" not in wall[1]
    assert "stragglers (cut by the deadline) (device rounds)<td>8<td>8" in text
    same = labels([RunView.read(runs[0]), RunView.read(runs[0])])
    assert same == [f"tiny · fedavg · seed 7 ({runs[0].name})"] * 2  # the folder tells apart


def test_sweep_bands_stay_within_what_accuracy_can_be(tmp_path: Path) -> None:
    sweep_runs = []
    for seed, curve in enumerate(([0.9, 1.0, 1.0], [0.6, 0.98, 1.0], [0.95, 0.99, 1.0])):
        out = tmp_path / f"seed-{seed}"
        out.mkdir()
        lines = [json.dumps({"round": i + 1, "accuracy": a}) for i, a in enumerate(curve)]
        (out / "rounds.jsonl").write_text("\n".join(lines) + "\n")
        sweep_runs.append(
            SweepRun(Variant("v", {}), seed, tmp_path / "s.yaml", out, summary={"ok": 1})
        )

    (_, mean, low, high), *_ = curve_bands(sweep_runs).values()

    assert mean[1] < 1.0
    assert (high <= 1.0).all()
    assert high[1] == 1.0  # the unclipped band reaches past 1 here
    assert (low >= 0.0).all()
    low, high = clip_band(np.array([-0.5]), np.array([3.0]), "energy_j")  # ≥ 0, no top
    assert (low.tolist(), high.tolist()) == ([0.0], [3.0])


def test_plots_tick_whole_rounds_and_show_the_training_loss(
    runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    figures: list[Any] = []
    save = plots._save

    def keep(fig: Any, *args: Any, **kwargs: Any) -> Path:
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", keep)

    plots.plot_accuracy(runs[0], "t")
    plots.plot_fleet(runs[0], "t")

    by_round = [figures[0].axes[0], figures[0].axes[1], figures[1].axes[0]]
    for ax in by_round:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks
        assert all(float(t).is_integer() for t in ticks), ticks
    loss = figures[0].axes[1]
    labels_ = [line.get_label() for line in loss.get_lines()]
    assert labels_ == ["test (global model)", "training"]
    rounds = [json.loads(line) for line in (runs[0] / "rounds.jsonl").read_text().splitlines()]
    assert list(loss.get_lines()[1].get_ydata()) == [r["train_loss"] for r in rounds]


def test_the_timeline_shows_each_devices_states(runs: tuple[Path, Path]) -> None:
    line = timeline(runs[0])

    assert line.devices == [0, 1, 2, 3, 4]
    assert line.end_s == pytest.approx(8.0)  # 4 rounds cut at the 2 s deadline
    for pico in (3, 4):  # always cut: straggling every round, the deadline long
        assert set(line.spans[pico]) == {"straggler"}
        assert [round(s) for s, _ in line.spans[pico]["straggler"]] == [0, 2, 4, 6]
    rpis = [line.spans.get(d, {}) for d in (0, 1, 2)]
    assert any("offline" in s for s in rpis)
    assert any("busy" in s for s in rpis)
    assert (runs[0] / "plots" / "timeline.png").exists()
    assert "Each device over simulated time" in (runs[0] / "report.html").read_text()
    assert timeline(runs[0], limit=2).devices == [0, 4]  # sampled evenly, ends included


def test_ctrl_c_records_interrupted_and_prints_how_to_resume(tmp_path: Path) -> None:
    scenario = tmp_path / "slow.yaml"
    scenario.write_text(yaml.safe_dump(tiny_scenario(rounds=400)), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    command = [sys.executable, "-m", "fedsim.cli", "run", str(scenario), "--out", str(out)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        rounds = out / "rounds.jsonl"
        while not (rounds.exists() and rounds.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline, "no round in 120 s"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()

    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == ExitCode.INTERRUPTED
    assert summary["status"] == "interrupted"
    assert summary["rounds_completed"] >= 1
    assert summary["fix"] == f"continue it: fedsim run --resume {out}"
    assert "KeyboardInterrupt" not in summary["error"]
    assert f"interrupted: {out}: interrupted (Ctrl-C) after " in stderr
    assert stderr.rstrip().endswith(f"fedsim run --resume {out}")
