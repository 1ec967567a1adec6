"""The ``fedsim`` command as a user meets it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedsim.core.errors import EXIT_CODE_HELP, ExitCode
from tests.conftest import ROOT, run_cli, tiny_scenario

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
            "algorithm.kind: unknown algorithm 'fedavgx' (did you mean 'fedavg'?)",
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


def fedsim_here(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str]]:
    """``fedsim ARGS`` in this process (no start-up cost): the exit code and stderr's lines."""
    code, _, err = run_cli(capsys, *args)
    return code, err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "{scenario}", "--out", "{file}"],
            r"--out .*taken: is a file, not a folder; give a folder",
        ),
        (["sweep", "{scenario}", "--out", "{file}"], r"--out .*taken: is a file, not a folder"),
        (
            ["run", "{scenario}", "--out", "{file}/run"],
            r"--out .*taken/run: its folder .*taken is a file; give a path in a folder",
        ),
        (
            ["sweep", "{scenario}", "--out", "{file}/a/s"],
            r"--out .*taken/a/s: cannot make its folder .*taken/a \(Not a directory\)",
        ),
        (["report", "a", "b", "--out", "{missing}/c.html"], r"--out .*missing/c\.html: its folder"),
        (["data", "preview", "digits", "-o", "{missing}/p.png"], r"--output .*/p\.png: its folder"),
        (["data", "preview", "digits", "-o", "{tmp}"], r"--output .*: is a folder, not a file"),
        (
            ["run", "{scenario}", "--out", "/proc/fedsim-run"],
            r"--out /proc/fedsim-run: cannot write in /proc \(.*\); give a path in a folder you",
        ),
    ],
    ids=[
        "run-file",
        "sweep-file",
        "run-no-parent",
        "sweep-no-parent",
        "report-no-parent",
        "preview-no-parent",
        "preview-folder",
        "run-unwritable",
    ],
)
def test_a_bad_out_path_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
    write_scenario: Write,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    names = {"scenario": write_scenario(tiny_scenario()), "file": taken, "tmp": tmp_path}
    names["missing"] = tmp_path / "missing"

    code, lines = fedsim_here(capsys, *(a.format(**names) for a in args))

    assert code == ExitCode.BAD_INPUT
    assert len(lines) == 1, lines
    assert re.fullmatch(r"error: " + expected + ".*", lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenario.yaml", "taken"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: t\nname: u\n", r"name: duplicate key 'name' \(first at line 1\)"),
        (
            "name: t\ndescription: " + "{a: " * 20_000 + "}" * 20_000,
            r"YAML nested more than 64 levels deep",
        ),
        (tiny_scenario(seed=2**40), r"seed: must be from 0 to 4,294,967,295"),
        (
            tiny_scenario(fleet={"groups": [{"profile": "rpi4", "count": 10**10}]}),
            r"fleet\.groups\[0\]\.count: must be at most 1,000,000",
        ),
    ],
    ids=["duplicate", "deep", "seed", "count"],
)
def test_bad_scenarios_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], write_scenario: Write, content: dict | str, expected: str
) -> None:
    path = write_scenario(content)

    for command in ("validate", "run"):
        code, lines = fedsim_here(capsys, command, path)

        assert code == ExitCode.BAD_INPUT
        assert len(lines) == 1, lines
        assert re.match(rf"error: {re.escape(str(path))}:\d+: (.*: )?{expected}", lines[0]), lines[
            0
        ]


def test_an_alias_bomb_does_not_hang_validate(write_scenario: Write) -> None:
    levels = ["a: &a [l, l, l, l, l, l, l, l, l, l]"] + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    path = write_scenario("name: t\ndescription: *i\n".join(["\n".join(levels) + "\n", ""]))

    proc = fedsim("validate", path)  # hung: an error message formatted the 10⁹ strings

    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: {path}:5: e: this value expands (aliases included) to over 100,000 values; "
        "a scenario holds a few hundred values; remove the aliases (*name) that repeat collections"
    )


def test_run_out_makes_its_missing_parent_folders(
    capsys: pytest.CaptureFixture[str], write_scenario: Write, tmp_path: Path
) -> None:
    """`make demo` runs `fedsim run ... --out results/quickstart` in a fresh clone, which has no
    results/: the run folder is made with its parents, as the default results/<name> is."""
    scenario = write_scenario(tiny_scenario(rounds=1, execution={"engine": "inline"}))
    out = tmp_path / "results" / "deeper" / "quick"

    code, lines = fedsim_here(capsys, "run", str(scenario), "--out", str(out))

    assert code == 0, lines
    assert (out / "summary.json").is_file()
