"""Round checkpoints, so a killed run continues where it stopped (``fedsim run --resume``).

After round r the server keeps, in ``<out>/checkpoint/``:

    global-r.npz           the global arrays, arr_0 … arr_{n-1}
    server-r.json          the simulated clock and the loop's running values
    device-state-r.sqlite  a consistent copy of the device-state store (SQLite's backup API), when
                           the run keeps device state
    commit.json            format, round, scenario SHA-256, and each file's SHA-256 and size

Each file is written under a temporary name, fsynced and renamed; ``commit.json`` comes last, the
same way: it is the commit, so a kill (or a power cut) at any instant leaves the previous round's
checkpoint whole. Every random draw in a run is derived from (seed, round, device)
(``fedsim.core.seeds``), so these files are all the state there is: a resumed run ends with the
metrics of an uninterrupted one.

``load_checkpoint`` trusts nothing it reads: every listed file must be there with its size and
digest, the round must agree with the run's ``rounds.jsonl``, the scenario with the run's
manifest, and the arrays must be finite. Each failure is one ``FedsimError`` naming the file, what
is wrong and how to recover (``REPAIR``; the checks are in ``checkpoint_verify``); the shapes are
checked against the scenario's model by the server when it restores (``server.outputs.restore``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from numpy.typing import NDArray

from fedsim.core.checkpoint_verify import (
    COMMIT,
    FORMAT,
    REPAIR,
    CommitRecord,
    FileEntry,
    check_progress,
    check_scenario,
    check_store,
    digest,
    file_names,
    read_arrays,
    read_commit,
    read_server,
    rounds_done,
    verify_file,
)
from fedsim.core.results import MANIFEST, ROUNDS

__all__ = [
    "CHECKPOINT_DIR",
    "COMMIT",
    "REPAIR",
    "Checkpoint",
    "load_checkpoint",
    "restore_store",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Checkpoint:
    round: int
    clock: float
    scenario_sha256: str
    arrays: list[NDArray[Any]]
    server: dict[str, Any] = field(default_factory=dict)  # the loop's running values (JSON)
    store: Path | None = None  # the device-state snapshot, if the run keeps any
    folder: Path | None = None  # where it was loaded from, for located errors

    def path(self, kind: Literal["global", "server"]) -> str:
        """The file a problem with this checkpoint's arrays or running values is in."""
        name = file_names(self.round)[kind]
        return str(self.folder / name) if self.folder is not None else name


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames themselves survive a power cut
    finally:
        os.close(fd)


def _commit_file(tmp: Path, path: Path) -> FileEntry:
    """fsync ``tmp``, rename it to ``path``; its digest."""
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    record = digest(tmp)
    os.replace(tmp, path)
    return record


def _write(path: Path, write: Callable[[IO[bytes]], object]) -> FileEntry:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
    return _commit_file(tmp, path)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode()


def save_checkpoint(out: str | Path, checkpoint: Checkpoint, live_store: Path | None) -> None:
    """Write round ``checkpoint.round``'s checkpoint and drop the previous one's files."""
    folder = Path(out) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names = file_names(checkpoint.round)
    server = _json_bytes({"clock_s": checkpoint.clock, "values": checkpoint.server})
    files = {
        names["global"]: _write(
            folder / names["global"], lambda f: np.savez(f, *checkpoint.arrays)
        ),
        names["server"]: _write(folder / names["server"], lambda f: f.write(server)),
    }
    if live_store is not None and live_store.exists():
        store = folder / names["store"]
        tmp = store.with_name(store.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(live_store) as source, sqlite3.connect(tmp) as copy:
            source.backup(copy)  # consistent even with the WAL journal
        # one self-contained file: no -wal or -shm beside it, now or when it is read
        copy.execute("PRAGMA journal_mode=DELETE")
        source.close()
        copy.close()
        files[store.name] = _commit_file(tmp, store)
    _fsync_dir(folder)  # the files are on disk before the record that vouches for them
    commit = CommitRecord(
        format=FORMAT,
        round=checkpoint.round,
        scenario_sha256=checkpoint.scenario_sha256,
        files=files,
    )
    _write(folder / COMMIT, lambda f: f.write(_json_bytes(commit.model_dump())))
    _fsync_dir(folder)
    for old in folder.iterdir():
        if old.name not in {COMMIT, *files}:
            old.unlink()


def load_checkpoint(out: str | Path) -> Checkpoint | None:
    """The last committed checkpoint in ``out``, verified; None if the run never committed one.

    A ``FedsimError`` names the file and the problem when the checkpoint is not whole, not the
    one that goes with the run's records, or holds non-finite arrays.
    """
    run = Path(out)
    folder = run / CHECKPOINT_DIR
    if not folder.is_dir():
        return None  # never checkpointed (or deleted, to start over)
    done = rounds_done(run / ROUNDS)
    commit = read_commit(folder, done)
    if commit is None:
        return None
    for name, expected in commit.files.items():
        verify_file(folder / name, expected)
    check_progress(folder / COMMIT, commit.round, done)
    check_scenario(folder / COMMIT, commit.scenario_sha256, run / MANIFEST)
    names = file_names(commit.round)
    server = read_server(folder / names["server"])
    store = folder / names["store"] if names["store"] in commit.files else None
    if store is not None:
        check_store(store)
    return Checkpoint(
        round=commit.round,
        clock=server.clock_s,
        scenario_sha256=commit.scenario_sha256,
        arrays=read_arrays(folder / names["global"]),
        server=server.values,
        store=store,
        folder=folder,
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
