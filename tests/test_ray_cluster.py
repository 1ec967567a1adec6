"""A run on an existing Ray cluster (`execution.ray_address` or $FEDSIM_RAY_ADDRESS): a head and
one worker node started on loopback by the test, one actor per cluster CPU, the same results as
inline; a bad address is a located error."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from fedsim.core.errors import FedsimError
from fedsim.pytest_plugin import FedsimRun, assert_same_run
from fedsim.runner import run
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(marker: str) -> None:
    """Kill this cluster's processes (and their children) only: `ray stop` would kill every Ray
    on the machine."""
    victims: set[psutil.Process] = set()
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            victims.add(proc)
            victims.update(proc.children(recursive=True))
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(victims), timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-node Ray cluster on this machine: a head and a worker, one CPU each."""
    # Ray's sockets want a short path (AF_UNIX: at most 107 bytes, session name included):
    # pytest's tmp_path under a test worker (.../pytest-N/popen-gw1/...) is too long
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false"]
    head += [f"--temp-dir={temp}", "--ray-client-server-port", str(_free_port())]
    try:
        for command in (head + common, [RAY, "start", f"--address={address}", *common]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        yield address
    finally:
        _stop(str(temp))
        _stop(f":{port}")
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_run_on_a_two_node_cluster_uses_both_and_matches_inline(
    cluster: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = tiny_scenario(rounds=2)
    scenario["execution"] = {"engine": "auto", "ray_address": cluster}
    on_cluster = run(write_scenario(scenario, "cluster.yaml"), tmp_path / "cluster")
    assert on_cluster.summary["engine"] == "ray"
    assert on_cluster.summary["ray_cluster"] == {"address": cluster, "actors": 2}

    inline = tiny_scenario(rounds=2)
    local = run(write_scenario(inline, "inline.yaml"), tmp_path / "inline")
    assert_same_run(FedsimRun.read(on_cluster.out), FedsimRun.read(local.out))


@pytest.mark.slow
def test_the_environment_names_the_cluster(
    cluster: str, write_scenario: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSIM_RAY_ADDRESS", cluster)
    scenario = tiny_scenario(rounds=1)
    scenario["execution"] = {"engine": "auto", "mode": "per-device"}
    result = run(write_scenario(scenario), tmp_path / "env")
    assert result.summary["ray_cluster"]["address"] == cluster


def test_an_address_with_no_cluster_is_a_located_error(
    write_scenario: Write, tmp_path: Path
) -> None:
    scenario = tiny_scenario(rounds=1)
    scenario["execution"] = {"engine": "ray", "ray_address": f"127.0.0.1:{_free_port()}"}
    with pytest.raises(FedsimError, match=r"execution\.ray_address: cannot connect"):
        run(write_scenario(scenario), tmp_path / "nowhere")
