"""A run's results folder: manifest.json, rounds.jsonl, devices.csv, model.npz, summary.json.

Rows are appended and flushed as each round ends, so a crash loses at most the round in flight.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsim.core.records import DeviceRecord, RoundRecord
from fedsim.core.scenario import Scenario

__all__ = [
    "DEVICES",
    "MANIFEST",
    "MODEL",
    "ROUNDS",
    "SUMMARY",
    "RunWriter",
    "read_model",
    "read_rounds",
    "versions",
]

MANIFEST = "manifest.json"
ROUNDS = "rounds.jsonl"
DEVICES = "devices.csv"
SUMMARY = "summary.json"
MODEL = "model.npz"  # the final global model, arrays named as in the torch state_dict


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("fedsim", "flwr", "torch", "numpy", "pydantic", "ray", "flwr-datasets"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file


class RunWriter:
    """Writes one run's artefacts into ``out``."""

    def __init__(self, out: str | Path, resume_after: int | None = None) -> None:
        """A new run's files; or (``resume_after``) the run's files kept up to that round."""
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, Any]] = []
        devices: list[dict[str, str]] = []
        if resume_after is not None:  # a killed run may have left a line half-written: dropped
            kept = [r for r in _whole_lines(self.out / ROUNDS) if r["round"] <= resume_after]
            with (self.out / DEVICES).open(newline="", encoding="utf-8") as f:
                devices = [
                    r
                    for r in csv.DictReader(f)
                    if None not in r.values() and int(r["round"]) <= resume_after
                ]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        (self.out / ROUNDS).write_text(text, encoding="utf-8")
        with (self.out / DEVICES).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, DeviceRecord.columns())
            writer.writeheader()
            writer.writerows(devices)

    def resumed(self, after_round: int) -> None:
        """Note in the manifest that the run was resumed (when, after which round)."""
        manifest = json.loads((self.out / MANIFEST).read_text(encoding="utf-8"))
        at = datetime.now(UTC).isoformat(timespec="seconds")
        manifest.setdefault("resumed", []).append({"after_round": after_round, "at": at})
        _write_json(self.out / MANIFEST, manifest)

    def manifest(self, scenario: Scenario, scenario_path: str, command: str) -> None:
        _write_json(
            self.out / MANIFEST,
            {
                "scenario": scenario.name,
                "scenario_path": scenario_path,
                "scenario_sha256": scenario.digest(),
                "seed": scenario.seed,
                "command": command,
                "argv": sys.argv,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": versions(),
                "platform": platform.platform(),
            },
        )

    def round(self, record: RoundRecord, devices: Iterable[DeviceRecord]) -> None:
        with (self.out / DEVICES).open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, DeviceRecord.columns())
            writer.writerows(d.row() for d in devices)
        with (self.out / ROUNDS).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_json(), sort_keys=True) + "\n")

    def model(self, arrays: Mapping[str, NDArray[Any]]) -> None:
        tmp = self.out / (MODEL + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        tmp.replace(self.out / MODEL)

    def summary(self, payload: dict[str, Any]) -> None:
        _write_json(self.out / SUMMARY, payload)


def _whole_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_rounds(out: str | Path) -> list[dict[str, Any]]:
    lines = (Path(out) / ROUNDS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_model(out: str | Path) -> dict[str, NDArray[Any]]:
    with np.load(Path(out) / MODEL, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
