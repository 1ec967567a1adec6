"""report.html and `fedsim report`: self-contained pages that render in headless Chromium with
every image decoded and nothing on the console."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fedsim.report import compare_report, html_page
from fedsim.runner import run
from tests.conftest import tiny_scenario
from tests.test_cli import fedsim

Write = Callable[..., Path]


def render(page: Path) -> tuple[str, list[str]]:
    """The page as headless Chromium leaves it after load, and its console lines."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install --no-install-recommends chromium)")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def _body_mark(dom: str) -> str | None:
    match = re.search(r'<body[^>]*data-images="([^"]*)"', dom)
    return match[1] if match else None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    outs = []
    for name, lr in (("slow-lr", 0.05), ("fast-lr", 0.3)):
        scenario = tiny_scenario(
            name=name, algorithm={"kind": "fedavg", "lr": lr, "local_epochs": 1, "batch_size": 16}
        )
        path = base / f"{name}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
        outs.append(run(path, base / name).out)
    return outs[0], outs[1]


def test_a_run_writes_a_self_contained_report(two_runs: tuple[Path, Path]) -> None:
    page = two_runs[0] / "report.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing outside the file
    assert text.count('src="data:image/png;base64,') == 3  # accuracy, fleet, timeline
    manifest = (two_runs[0] / "manifest.json").read_text()
    sha = re.search(r'"scenario_sha256": "(\w+)"', manifest)
    assert sha
    assert sha[1][:16] in text
    assert "seed 7" in text
    assert "torch" in text  # the versions
    assert "<td>rpi4<td>3<td>9<td>" in text  # the fleet by profile: 3 devices, 9 device rounds


def test_the_report_renders_offline_with_every_image(two_runs: tuple[Path, Path]) -> None:
    dom, console = render(two_runs[0] / "report.html")
    assert _body_mark(dom) == "ok"
    assert console == []


def test_the_render_check_sees_a_broken_image_and_a_console_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    text = html_page(  # the report's page, with an image that cannot decode and a bad script
        "broken", '<img alt=empty src="data:image/png;base64,AAAA"><script>nope()</script>'
    )
    page.write_text(text, encoding="utf-8")
    dom, console = render(page)
    assert _body_mark(dom) == "broken:empty"
    assert any("nope is not defined" in line for line in console)


def test_fedsim_report_compares_runs_side_by_side(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    page = tmp_path / "compare.html"
    proc = fedsim("report", *two_runs, "--out", page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text(encoding="utf-8")
    assert "<th>slow-lr · fedavg · seed 7<th>fast-lr · fedavg · seed 7" in text
    assert re.search(r"final accuracy<td>[\d.]+<td>[\d.]+ <span class=better>\(\+", text)
    assert not list(tmp_path.glob("*.png"))  # the curves live inside the page
    dom, console = render(page)
    assert _body_mark(dom) == "ok"
    assert console == []


def test_fedsim_report_rewrites_one_runs_page(two_runs: tuple[Path, Path]) -> None:
    page = two_runs[1] / "report.html"
    page.unlink()
    assert fedsim("report", two_runs[1]).returncode == 0
    assert page.exists()
    assert compare_report(list(two_runs), two_runs[1] / "c.html").exists()


def test_fedsim_report_on_a_folder_that_is_no_run(tmp_path: Path) -> None:
    proc = fedsim("report", tmp_path)
    assert proc.returncode == 2
    assert f"error: {tmp_path}: is not a run folder (no manifest.json)" in proc.stderr
