"""The ``fedsim`` command as a user meets it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedsim.core.errors import EXIT_CODE_HELP, ExitCode
from tests.conftest import ROOT, tiny_scenario

Write = Callable[..., Path]


def fedsim(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_every_exit_code_has_a_help_line() -> None:
    assert set(EXIT_CODE_HELP) == set(ExitCode)
    assert all(EXIT_CODE_HELP[c].strip() for c in ExitCode)


def test_validate_prints_a_summary_and_a_line_per_group() -> None:
    proc = fedsim("validate", "scenarios/quickstart.yaml")

    assert proc.returncode == 0, proc.stderr
    first, *groups = proc.stdout.splitlines()
    assert first.startswith(
        "scenarios/quickstart.yaml: ok: quickstart: fedavg on digits/mlp, 10 devices "
        "(4 rpi4, 4 nano33-ble-sense, 2 esp32-s3), 8 per round x 15 rounds"
    )
    assert [g.split()[0] for g in groups] == ["rpi4", "nano33-ble-sense", "esp32-s3"]
    assert all("trains all layers; a round takes ~" in g for g in groups)


def test_output_is_printed_as_written_never_as_emoji(tmp_path: Path) -> None:
    scenario = tmp_path / "lab:x:.yaml"  # rich would print ":x:" as an emoji
    scenario.write_text((ROOT / "scenarios" / "quickstart.yaml").read_text(), encoding="utf-8")
    proc = fedsim("validate", scenario)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{scenario}: ok")


def test_validate_says_which_groups_train_the_head_or_get_cut() -> None:
    proc = fedsim("validate", "scenarios/heterogeneous-fleet.yaml")

    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert (
        "trains the head only (all layers need 305 KB of SRAM, it has 256 KB)"
        in (lines["nano33-ble-sense"])
    )
    assert lines["nano33-ble-sense"].endswith("past the deadline: cut")
    assert "trains all layers" in lines["rpi4"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\nfleet: [\n", ":3: invalid YAML: "),
        (
            tiny_scenario(algorithm={"kind": "fedavgx"}),
            "algorithm: unknown kind 'fedavgx' (did you mean 'fedavg'?)",
        ),
        (
            tiny_scenario(fleet={"groups": [{"profile": "rpi5", "count": 1}]}),
            "fleet.groups[0].profile: unknown profile 'rpi5'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(
    write_scenario: Write, content: dict | str, expected: str
) -> None:
    path = write_scenario(content)

    for command in ("validate", "run"):
        proc = fedsim(command, path)

        assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: {path}")
        assert expected in lines[0]


def test_missing_scenario_file(tmp_path: Path) -> None:
    proc = fedsim("run", tmp_path / "absent.yaml")

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {tmp_path / 'absent.yaml'}: no such file; "
        "check the path (scenarios live in scenarios/)"
    )


def test_unknown_engine_option(write_scenario: Write) -> None:
    proc = fedsim("run", write_scenario(tiny_scenario()), "--engine", "spark")

    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --engine: unknown engine 'spark'; use auto, ray or inline"


def test_run_inline_from_the_command_line(write_scenario: Write, tmp_path: Path) -> None:
    out = tmp_path / "out"

    proc = fedsim("run", write_scenario(tiny_scenario()), "--out", out)

    assert proc.returncode == 0, proc.stderr
    assert f"→ {out}" in proc.stdout
    assert "3/3" in proc.stderr  # the progress bar
    assert (out / "plots" / "accuracy.png").stat().st_size > 10_000
