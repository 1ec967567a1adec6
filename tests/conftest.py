"""Shared fixtures: repository paths and small scenario files written into tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsim.pytest_plugin import small_scenario

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
pytest_plugins = ["pytester"]  # the plugin's own tests (tests/test_pytest_plugin.py)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``fedsim ARGS`` in this process, as the console entry point runs it (no start-up cost;
    stdout is captured, so not a terminal): the exit code, stdout and stderr."""
    from fedsim.cli import main

    saved = sys.argv
    sys.argv = ["fedsim", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_scenario(**overrides: Any) -> dict[str, Any]:
    """A small valid scenario (5 devices, 3 rounds) as a dict; ``overrides`` replace top keys."""
    return small_scenario(**{"name": "tiny", "seed": 7, **overrides})


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Write a scenario dict (or raw YAML text) to ``tmp_path/<name>.yaml`` and return the path."""

    def write(content: dict[str, Any] | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals (socat): a serial line between a host end and a device end."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    ptys: list[str] = []
    while len(ptys) < 2:
        line = proc.stderr.readline()
        if not line:
            pytest.fail("socat exited before it made the pty pair")
        match = re.search(r"PTY is (\S+)", line)
        if match:
            ptys.append(match.group(1))
    yield ptys[0], ptys[1]
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def agent_port(pty_pair: tuple[str, str]) -> Iterator[str]:
    """The host end of a pty whose device end is served by the Python agent (a thread)."""
    import serial

    from edge.agent import Device, serve

    host, device_end = pty_pair
    link = serial.serial_for_url(device_end, timeout=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(link, Device(), stop), daemon=True)
    thread.start()
    yield host
    stop.set()
    thread.join(5)
    link.close()
