"""fedsim in a pipe: whole names in tables, --format on every listing (JSON parses, CSV has a
header), progress on stderr only (plain lines when stderr is no terminal), and NO_COLOR."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import typer.main
from rich.console import Console

from fedsim.cli import app
from fedsim.core.records import RoundRecord
from fedsim.progress import ProgressObserver, training_bar
from tests.conftest import ROOT, run_cli, tiny_scenario

Write = Callable[..., Path]
FLEET = ROOT / "tests" / "data" / "fleet.ttl"
ELLIPSIS = "…"
# SGR parameters that set a colour (foreground, background, 256/true colour); bold (1) is no colour
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
# commands that list nothing: they write a file, start a process or a server, or run work
NOT_LISTINGS = {
    "validate",  # one line saying what a scenario will run
    "run",  # progress on stderr; one line of outcome (the numbers are in the run folder)
    "report",  # writes report.html
    "schema",  # writes the JSON Schema
    "new scenario",  # writes a scenario
    "new algorithm",  # writes a plugin package
    "data preview",  # writes a PNG
    "devices attach",  # writes Turtle
    "devices emulate",  # runs an emulator
    "registry catalog-models",  # writes models.ttl
    "registry export-td",  # JSON-LD already
    "registry import-td",  # Turtle already
    "registry serve",  # a server
    "deploy superlink",
    "deploy supernode",
    "deploy register",
}


def _commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def test_every_listing_takes_format() -> None:
    commands = _commands()

    lacking = [
        name
        for name, command in commands.items()
        if name not in NOT_LISTINGS and not any("--format" in p.opts for p in command.params)
    ]

    assert lacking == []
    assert set(commands) >= NOT_LISTINGS  # no stale exemption


def _fedsim(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user's shell runs it: stdout and stderr are pipes, 80 columns by default."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    environ |= {"FLWR_TELEMETRY_ENABLED": "0", **env}
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=300,
        check=False,
    )


def test_a_table_in_a_pipe_keeps_whole_names_and_no_trailing_blanks() -> None:
    proc = _fedsim("devices", "profiles")

    assert proc.returncode == 0, proc.stderr
    nano = [line for line in proc.stdout.splitlines() if "nano" in line]
    assert nano
    assert nano[0].split()[0] == "nano33-ble-sense"
    assert "1× Cortex-M4F" in nano[0]  # a row is one line, never wrapped
    assert ELLIPSIS not in proc.stdout
    assert all(line == line.rstrip() for line in proc.stdout.splitlines())


_here = run_cli  # ``fedsim ARGS`` in this process, stdout captured (not a terminal)


LISTINGS = [
    ["algorithms"],
    ["data", "list"],
    ["data", "info", "digits"],
    ["devices", "profiles"],
    ["devices", "predict", "--model", "mlperf-kws", "--profile", "nucleo-l4r5zi"],
    ["devices", "scan"],
    ["registry", "query", "profile-names"],
    ["registry", "match", "--model", "mlp.kws", "--data", str(FLEET)],
    ["registry", "fits", "--device", "pico"],
    ["registry", "inventory", "--data", str(FLEET)],
    ["registry", "validate"],
]


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_every_listing_prints_json_that_parses_and_csv_with_a_header(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _here(capsys, *args, "--format", "json")
    assert code == 0, err
    assert isinstance(json.loads(out), list | dict)

    code, out, err = _here(capsys, *args, "--format", "csv")
    assert code == 0, err
    header = next(csv.reader(io.StringIO(out)))
    assert header
    assert all(re.fullmatch(r"[\w ./()-]+", column) for column in header), header


def test_registry_validate_lists_violations_as_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text(
        "@prefix fedsim: <https://w3id.org/fedsim/vocab#> .\n"
        "@prefix dev: <https://w3id.org/fedsim/catalog/device/> .\n"
        "@prefix device: <https://w3id.org/fedsim/device/> .\n"
        'device:d1 a fedsim:Device ; fedsim:deviceName "d1" ; fedsim:hasProfile dev:nosuch .\n'
    )

    code, out, err = _here(capsys, "registry", "validate", bad, "--format", "json")

    assert code == 2
    violations = json.loads(out)
    assert violations
    assert violations[0]["focus"] == "device:d1"
    assert "violations" in err


def test_a_sweep_lists_its_variants_on_stdout_and_its_runs_on_stderr(
    capsys: pytest.CaptureFixture[str], write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(tiny_scenario(rounds=1))

    code, out, err = _here(
        capsys, "sweep", path, "--set", "algorithm.lr=0.1", "--out", tmp_path / "s",
        "--format", "json",
    )  # fmt: skip

    assert code == 0, err
    rows = json.loads(out)
    assert [row["variant"] for row in rows] == ["algorithm.lr=0.1"]
    assert 0 <= rows[0]["final_accuracy"] <= 1
    assert rows[0]["seeds"] == 1
    assert "[1/1]" in err
    assert "1 runs (0 failed)" in err


def test_a_run_in_a_pipe_prints_its_outcome_on_stdout_and_plain_progress_on_stderr(
    write_scenario: Write, tmp_path: Path
) -> None:
    scenario = tiny_scenario(rounds=2)
    scenario["fleet"]["groups"] = [{"profile": "rpi4", "count": 4}]
    path = write_scenario(scenario)

    proc = _fedsim("run", path, "--out", tmp_path / "run")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("scenario: final accuracy ")  # the label is the file name
    assert len(proc.stdout.splitlines()) == 1
    assert "round 1/2, acc " in proc.stderr
    assert "scenario: round 2/2, acc " in proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout
    assert "━" not in proc.stderr  # no bar is drawn


def test_pretraining_in_a_pipe_logs_a_line_every_tenth() -> None:
    buffer = io.StringIO()
    console = _console(buffer, terminal=False)

    with training_bar("pretrain", "episodes", 200, console) as progress:
        for step in range(1, 201):
            progress(step, 1.0 / step)

    lines = buffer.getvalue().splitlines()
    assert lines[0] == "pretrain: episodes 1/200, loss 1.000"
    assert lines[-1] == "pretrain: episodes 200/200, loss 0.005"
    assert len(lines) == 11  # the first step, then every 20


def _console(buffer: io.StringIO, terminal: bool) -> Console:
    return Console(file=buffer, force_terminal=terminal, color_system="truecolor", width=100)


def _record(round_: int) -> RoundRecord:
    return RoundRecord(round_, 4, 4, 0, 0.5, 1.0, 1.0, 10, 10, sim_time_s=float(round_))


@pytest.mark.parametrize("no_color", [False, True])
def test_no_color_leaves_no_colour_in_a_terminal(
    no_color: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # stderr is a terminal for rich
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)

    observer = ProgressObserver("tiny")  # fedsim's own stderr console
    observer.start(2)
    for round_ in (1, 2):
        observer.round(_record(round_))
    observer.end()

    err = capsys.readouterr().err
    assert "━" in err  # the bar was drawn
    assert bool(COLOUR.search(err)) is not no_color


def test_fedsim_help_honours_no_color() -> None:
    coloured = _fedsim("--help", FORCE_COLOR="1")
    plain = _fedsim("--help", FORCE_COLOR="1", NO_COLOR="1")

    assert COLOUR.search(coloured.stdout)
    assert not COLOUR.search(plain.stdout)


def test_the_runs_own_log_lines_go_to_stderr_in_a_pipe() -> None:
    """Work inside a run that has no bar of its own (a pre-training: "pre-training the extractor:
    100/2000 episodes") logs through ``fedsim.server``; the CLI shows it on stderr, never stdout,
    so that it is seen in a pipe or a CI log. Before, the log line went nowhere."""
    code = (
        "import logging, sys\n"
        "from fedsim import cli\n"
        "sys.argv = ['fedsim', '--version']\n"
        "log = logging.getLogger('fedsim.server')\n"
        "log.info('pre-training the extractor: 100/2000 episodes')\n"
        "with cli._log_to_stderr():\n"
        "    log.info('pre-training the extractor: 200/2000 episodes')\n"
        "log.info('pre-training the extractor: 300/2000 episodes')  # a library again: quiet\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["fedsim: pre-training the extractor: 200/2000 episodes"]
