"""Shared fixtures: repository paths and small scenario files written into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


def tiny_scenario(**overrides: Any) -> dict[str, Any]:
    """A small valid scenario (5 devices, 3 rounds) as a dict; ``overrides`` replace top keys."""
    base: dict[str, Any] = {
        "name": "tiny",
        "seed": 7,
        "task": {"dataset": "digits", "model": "mlp"},
        "fleet": {
            "groups": [{"profile": "rpi4", "count": 3}, {"profile": "pico", "count": 2}],
            "partition": {"kind": "dirichlet", "alpha": 1.0},
        },
        "algorithm": {"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16},
        "rounds": 3,
        "execution": {"engine": "inline"},
    }
    base.update(overrides)
    return base


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Write a scenario dict (or raw YAML text) to ``tmp_path/<name>.yaml`` and return the path."""

    def write(content: dict[str, Any] | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write
