"""Round checkpoints, so a killed run continues where it stopped (``fedsim run --resume``).

After every round the server writes, in ``<out>/checkpoint/``: the global arrays
(``global-<round>.npz``), a consistent copy of the device-state store (``device-state-<round>
.sqlite``, through SQLite's backup API, when the run keeps device state) and ``state.json`` with the
round, the simulated clock and the server's running values. ``state.json`` is replaced last and
atomically: it is the commit, so a kill at any instant leaves the previous round's checkpoint
whole. Every random draw in a run is derived from (seed, round, device) (``fedsim.core.seeds``),
so these values are all the state there is: a resumed run ends with the metrics of an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CHECKPOINT_DIR", "Checkpoint", "load_checkpoint", "restore_store", "save_checkpoint"]

CHECKPOINT_DIR = "checkpoint"
STATE = "state.json"
FORMAT = 1


@dataclass
class Checkpoint:
    round: int
    clock: float
    scenario_sha256: str
    arrays: list[NDArray[Any]]
    server: dict[str, Any] = field(default_factory=dict)  # the loop's running values (JSON)
    store: Path | None = None  # the device-state snapshot, if the run keeps any


def _replace_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(out: str | Path, checkpoint: Checkpoint, live_store: Path | None) -> None:
    """Write round ``checkpoint.round``'s checkpoint and drop the previous one's files."""
    folder = Path(out) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = folder / f"global-{checkpoint.round}.npz"
    with arrays.with_suffix(".tmp").open("wb") as f:
        np.savez(f, *checkpoint.arrays)
    os.replace(arrays.with_suffix(".tmp"), arrays)
    store = None
    if live_store is not None and live_store.exists():
        store = folder / f"device-state-{checkpoint.round}.sqlite"
        store.unlink(missing_ok=True)
        with sqlite3.connect(live_store) as source, sqlite3.connect(store) as copy:
            source.backup(copy)  # consistent even with the WAL journal
        source.close()
        copy.close()
    _replace_json(
        folder / STATE,
        {
            "format": FORMAT,
            "round": checkpoint.round,
            "clock": checkpoint.clock,
            "scenario_sha256": checkpoint.scenario_sha256,
            "arrays": arrays.name,
            "store": store.name if store else None,
            "server": checkpoint.server,
        },
    )
    keep = {STATE, arrays.name, store.name if store else ""}
    for old in folder.iterdir():
        if old.name not in keep:
            old.unlink()


def load_checkpoint(out: str | Path) -> Checkpoint | None:
    """The last committed checkpoint in ``out``, or None if the run never finished a round."""
    folder = Path(out) / CHECKPOINT_DIR
    if not (folder / STATE).exists():
        return None
    state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    with np.load(folder / state["arrays"]) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return Checkpoint(
        round=int(state["round"]),
        clock=float(state["clock"]),
        scenario_sha256=str(state["scenario_sha256"]),
        arrays=arrays,
        server=dict(state["server"]),
        store=folder / state["store"] if state["store"] else None,
    )


def restore_store(checkpoint: Checkpoint | None, live_store: Path) -> None:
    """Put the device-state store back as it was at the checkpoint (absent if it had none): what
    devices wrote in the round that was cut short is dropped."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live_store}{suffix}").unlink(missing_ok=True)
    if checkpoint is not None and checkpoint.store is not None:
        with sqlite3.connect(checkpoint.store) as source, sqlite3.connect(live_store) as copy:
            source.backup(copy)
        source.close()
        copy.close()
