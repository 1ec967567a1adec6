"""Flower's Ray simulation engine, end to end, in both execution modes (slow: Ray start-up)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsim.core.results import read_model, read_rounds
from tests.conftest import SCENARIOS
from tests.test_cli import fedsim

pytestmark = pytest.mark.slow


def test_quickstart_on_ray_is_deterministic_and_matches_inline_and_per_device(
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS / "quickstart.yaml"  # cohort mode (engine: inline; Ray asked for)
    per_device = tmp_path / "per-device.yaml"
    per_device.write_text(
        f"extends: {scenario}\nname: per-device\nexecution: {{mode: per-device, engine: ray}}\n"
    )

    first = fedsim("run", scenario, "--out", tmp_path / "ray-1", "--engine", "ray")
    second = fedsim("run", scenario, "--out", tmp_path / "ray-2", "--engine", "ray")
    inline = fedsim("run", scenario, "--out", tmp_path / "inline", "--engine", "inline")
    nodes = fedsim("run", per_device, "--out", tmp_path / "ray-per-device")

    for proc in (first, second, inline, nodes):
        assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = (tmp_path / "ray-1" / "rounds.jsonl").read_bytes()
    assert rounds == (tmp_path / "ray-2" / "rounds.jsonl").read_bytes()
    assert rounds == (tmp_path / "inline" / "rounds.jsonl").read_bytes()
    assert rounds == (tmp_path / "ray-per-device" / "rounds.jsonl").read_bytes()
    devices = (tmp_path / "ray-1" / "devices.csv").read_text()
    assert devices == (tmp_path / "inline" / "devices.csv").read_text()
    records = read_rounds(tmp_path / "ray-1")
    assert len(records) == 15
    assert records[-1]["accuracy"] > 0.8
    assert sum(r["failures"] for r in records) > 0  # the ESP32s' injected crashes, counted
    summary = json.loads((tmp_path / "ray-1" / "summary.json").read_text())
    assert summary["devices_by_profile"] == {"rpi4": 4, "nano33-ble-sense": 4, "esp32-s3": 2}
    assert (tmp_path / "ray-1" / "plots" / "accuracy.png").is_file()
    assert "InjectedCrashError: injected crash of device" in devices
    # per-device mode: each crash is a Flower error reply, its traceback in Flower's log
    assert "InjectedCrashError" in (tmp_path / "ray-per-device" / "flower.log").read_text()


def test_gateways_on_ray_match_inline(tmp_path: Path) -> None:
    """Gateways are orders to Ray actors: the same partials, rounds and devices as inline."""
    scenario = tmp_path / "building.yaml"
    scenario.write_text(
        f"extends: {SCENARIOS / 'building-gateways.yaml'}\nrounds: 3\n"
        "registry: {data: [" + str(SCENARIOS / "fleets" / "building.ttl") + "]}\n"
    )
    ray = fedsim("run", scenario, "--out", tmp_path / "ray", "--engine", "ray")
    inline = fedsim("run", scenario, "--out", tmp_path / "inline", "--engine", "inline")
    for proc in (ray, inline):
        assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("rounds.jsonl", "devices.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes()
    a, b = read_model(tmp_path / "ray"), read_model(tmp_path / "inline")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert read_rounds(tmp_path / "ray")[0]["tiers"][1]["tier"] == "gateway"
