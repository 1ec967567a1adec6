"""Resume after a crash: a run killed with SIGKILL continues from its last checkpoint
(`fedsim run --resume`) and ends with the metrics, device records, model and device state of an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedsim.core.checkpoint import Checkpoint, load_checkpoint, restore_store, save_checkpoint
from fedsim.core.results import DEVICES, ROUNDS, RunWriter
from fedsim.core.state import STATE_FILE, DeviceStateStore
from fedsim.pytest_plugin import FedsimRun, assert_same_run
from fedsim.runner import run
from tests.conftest import ROOT, tiny_scenario
from tests.test_cli import fedsim

Write = Callable[..., Path]
DRIVER = ROOT / "tests" / "data" / "resume_driver.py"  # the CLI with a stateful learner
ROUNDS_TOTAL = 8
DIGEST = "ab" * 32  # a scenario's SHA-256


def _driver(*args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes everything it started
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill_after(proc: subprocess.Popen[str], rounds: Path, k: int) -> int:
    deadline = time.monotonic() + 240
    while _lines(rounds) < k:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never got to round k"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return _lines(rounds)


def _states(out: Path) -> dict[int, dict[str, list[float]]]:
    with DeviceStateStore(out / STATE_FILE) as store:
        return {
            d: {k: np.asarray(v).tolist() for k, v in (store.get(d) or {}).items()}
            for d in range(5)
        }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cohort", "per-device"])
def test_a_run_killed_at_round_k_resumes_to_the_uninterrupted_metrics(
    mode: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = tiny_scenario(rounds=ROUNDS_TOTAL)
    scenario["execution"]["mode"] = mode
    path = write_scenario(scenario)
    whole = _driver("run", path, "--out", tmp_path / "whole")
    assert whole.wait(300) == 0, whole.communicate()[1][-3000:]

    killed = tmp_path / "killed"
    at = _kill_after(_driver("run", path, "--out", killed), killed / ROUNDS, 3)
    assert 3 <= at < ROUNDS_TOTAL
    assert not (killed / "summary.json").exists()
    resumed = _driver("run", "--resume", killed)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]

    a, b = FedsimRun.read(tmp_path / "whole"), FedsimRun.read(killed)
    assert_same_run(a, b)  # rounds.jsonl, devices.csv and the model, exactly
    ignore = {"wall_s", "engine"}
    assert {k: v for k, v in a.summary.items() if k not in ignore} == {
        k: v for k, v in b.summary.items() if k not in ignore
    }
    assert _states(tmp_path / "whole") == _states(killed)
    assert _states(killed)[0]["rounds"] == sum(1 for r in b.device_rows(0) if r["status"] == "ok")
    manifest = json.loads((killed / "manifest.json").read_text())
    assert len(manifest["resumed"]) == 1
    assert manifest["resumed"][0]["after_round"] in (at - 1, at)


def test_a_checkpoint_round_trips_and_keeps_only_the_last(tmp_path: Path) -> None:
    live = tmp_path / STATE_FILE
    with DeviceStateStore(live) as store:
        store.put(3, {"w": np.arange(4.0)})
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]
    for round_ in (1, 2):
        saved = Checkpoint(round_, 1.5 * round_, DIGEST, arrays, {"usage": {"x": round_}})
        save_checkpoint(tmp_path, saved, live)
        (tmp_path / ROUNDS).write_text(f'{{"round": {round_}}}\n' * round_)
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert (loaded.round, loaded.clock, loaded.server) == (2, 3.0, {"usage": {"x": 2}})
    for got, want in zip(loaded.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    names = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert names == ["commit.json", "device-state-2.sqlite", "global-2.npz", "server-2.json"]
    with DeviceStateStore(live) as store:  # the round after the checkpoint changes the store...
        store.put(3, {"w": np.zeros(4)})
        store.put(4, {"w": np.ones(1)})
    restore_store(loaded, live)  # ...and resuming puts it back
    with DeviceStateStore(live) as store:
        np.testing.assert_array_equal(store.get(3)["w"], np.arange(4.0))  # type: ignore[index]
        assert store.get(4) is None


def test_no_checkpoint_means_resume_from_round_one(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    (tmp_path / STATE_FILE).write_bytes(b"half a round of state")
    restore_store(None, tmp_path / STATE_FILE)
    assert not (tmp_path / STATE_FILE).exists()


def test_half_written_lines_of_a_killed_run_are_dropped(tmp_path: Path) -> None:
    (tmp_path / ROUNDS).write_text('{"round": 1}\n{"round": 2}\n{"round": 3, "accur')
    header = "round,device_id,profile"
    (tmp_path / DEVICES).write_text(f"{header}\n1,0,rpi4\n2,0,rpi4\n3,0,rpi4\n1")
    RunWriter(tmp_path, resume_after=2)
    assert (tmp_path / ROUNDS).read_text() == '{"round": 1}\n{"round": 2}\n'
    rows = (tmp_path / DEVICES).read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "0"], ["2", "0"]]


def test_resume_refuses_a_complete_run_and_a_changed_scenario(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(tiny_scenario(rounds=2))
    out = run(path, tmp_path / "done").out
    proc = fedsim("run", "--resume", out)
    assert proc.returncode == 2
    assert "this run is complete: nothing to resume" in proc.stderr

    (out / "summary.json").unlink()  # as if it had stopped after round 2's checkpoint
    path.write_text(path.read_text().replace("lr: 0.1", "lr: 0.2"))
    proc = fedsim("run", "--resume", out)
    assert proc.returncode == 2
    assert "the scenario changed since this run started" in proc.stderr


def test_run_wants_a_scenario_or_resume_not_both(write_scenario: Write, tmp_path: Path) -> None:
    proc = fedsim("run", write_scenario(tiny_scenario()), "--resume", tmp_path)
    assert proc.returncode == 2
    assert "give a scenario, or --resume RUN_DIR (not both)" in proc.stderr
    proc = fedsim("run", "--resume", tmp_path / "nothing")
    assert proc.returncode == 2
    assert "holds no run to resume" in proc.stderr
