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
is wrong and how to recover (``REPAIR``); the shapes are checked against the scenario's model by
the server when it restores (``server.outputs.restore``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsim.core.errors import FedsimError

__all__ = [
    "CHECKPOINT_DIR",
    "COMMIT",
    "REPAIR",
    "Checkpoint",
    "first_problem",
    "load_checkpoint",
    "restore_store",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoint"
COMMIT = "commit.json"
LEGACY_COMMIT = "state.json"  # format 1 (no digests), before the commit record
FORMAT: Literal[2] = 2
MAX_COMMIT_BYTES = 1 << 20  # a commit record lists 3 files: anything this large is not one
SHA256 = r"^[0-9a-f]{64}$"
REPAIR = (
    "restore the checkpoint folder from a copy, or delete it to start the run over from round 1"
)
_ROUNDS = "rounds.jsonl"  # fedsim.core.results.ROUNDS; MANIFEST likewise (results imports scenario)
_MANIFEST = "manifest.json"

M = TypeVar("M", bound=BaseModel)


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
        name = _names(self.round)[kind]
        return str(self.folder / name) if self.folder is not None else name


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    sha256: str = Field(pattern=SHA256)
    size_bytes: int = Field(ge=0)


class _Commit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    format: Literal[2]
    round: int = Field(ge=1)
    scenario_sha256: str = Field(pattern=SHA256)
    files: dict[str, _File]


class _Server(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    clock_s: float = Field(ge=0, allow_inf_nan=False)  # the simulated clock at the round's end
    values: dict[str, Any]


def _names(round_: int) -> dict[str, str]:
    return {
        "global": f"global-{round_}.npz",
        "server": f"server-{round_}.json",
        "store": f"device-state-{round_}.sqlite",
    }


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames themselves survive a power cut
    finally:
        os.close(fd)


def _digest(path: Path) -> _File:
    with path.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return _File(sha256=sha, size_bytes=path.stat().st_size)


def _commit_file(tmp: Path, path: Path) -> _File:
    """fsync ``tmp``, rename it to ``path``; its digest."""
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    record = _digest(tmp)
    os.replace(tmp, path)
    return record


def _write(path: Path, write: Callable[[IO[bytes]], object]) -> _File:
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
    names = _names(checkpoint.round)
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
    commit = _Commit(
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
    rounds_done = _rounds_done(run)
    commit = _read_commit(folder, rounds_done)
    if commit is None:
        return None
    for name, expected in commit.files.items():
        _verify_file(folder / name, expected)
    _check_progress(folder / COMMIT, commit.round, rounds_done)
    _check_scenario(folder / COMMIT, commit.scenario_sha256, run / _MANIFEST)
    names = _names(commit.round)
    server = _read_server(folder / names["server"])
    store = folder / names["store"] if names["store"] in commit.files else None
    if store is not None:
        _check_store(store)
    return Checkpoint(
        round=commit.round,
        clock=server.clock_s,
        scenario_sha256=commit.scenario_sha256,
        arrays=_read_arrays(folder / names["global"]),
        server=server.values,
        store=store,
        folder=folder,
    )


def _rounds_done(run: Path) -> int:
    """Whole lines in ``rounds.jsonl`` (a kill may leave the last one half-written)."""
    path = run / _ROUNDS
    if not path.exists():
        return 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise FedsimError(str(path), f"is not UTF-8 (byte {exc.start})", REPAIR) from None
    done = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break
        done += 1
    return done


def _read_commit(folder: Path, rounds_done: int) -> _Commit | None:
    path = folder / COMMIT
    if not path.exists():
        if (folder / LEGACY_COMMIT).exists():
            raise FedsimError(
                str(folder),
                f"this checkpoint has format 1 (an older fedsim, no digests to verify it by); "
                f"this fedsim reads format {FORMAT}",
                "delete the checkpoint folder to start the run over from round 1",
            )
        if rounds_done >= 2:  # round 1's commit came before round 2 began
            raise FedsimError(
                str(path),
                f"is missing, though rounds.jsonl records {rounds_done} rounds",
                REPAIR,
            )
        return None  # killed in round 1, before its commit
    if path.stat().st_size > MAX_COMMIT_BYTES:
        raise FedsimError(str(path), "is too large to be a commit record", REPAIR)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FedsimError(str(path), f"is not UTF-8 (byte {exc.start})", REPAIR) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise FedsimError(str(path), f"is not valid JSON ({where})", REPAIR) from None
    commit = _validated(_Commit, data, path)
    allowed = _names(commit.round)
    required = {allowed["global"], allowed["server"]}
    unknown = sorted(set(commit.files) - set(allowed.values()))
    if unknown:  # only these names: a record cannot point outside its folder
        shown = ", ".join(repr(n[:80]) for n in unknown[:3])
        raise FedsimError(str(path), f"files: unknown for round {commit.round}: {shown}", REPAIR)
    missing = sorted(required - set(commit.files))
    if missing:
        raise FedsimError(str(path), f"files: lists no {', '.join(missing)}", REPAIR)
    return commit


def _validated(model: type[M], data: Any, path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FedsimError(str(path), first_problem(exc), REPAIR) from None


def first_problem(exc: ValidationError, prefix: str = "") -> str:
    """``key.path: message`` for the first problem pydantic found; never the value itself."""
    first = exc.errors()[0]
    key = prefix + ".".join(str(p)[:80] for p in first["loc"]) or "(top level)"
    what = str(first["msg"]).split(" or instance of ")[0]  # not our private class names
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {what}{more}"


def _verify_file(path: Path, expected: _File) -> None:
    if not path.is_file():
        raise FedsimError(str(path), f"is missing (the {COMMIT} of its round lists it)", REPAIR)
    size = path.stat().st_size
    if size != expected.size_bytes:
        raise FedsimError(
            str(path),
            f"is {size} bytes, its commit record says {expected.size_bytes}: truncated or changed",
            REPAIR,
        )
    if _digest(path).sha256 != expected.sha256:
        raise FedsimError(
            str(path), "its SHA-256 differs from its commit record's: the file was changed", REPAIR
        )


def _check_progress(path: Path, round_: int, rounds_done: int) -> None:
    """The checkpoint of round r goes with r rounds in ``rounds.jsonl``, or r + 1 when the run was
    killed between writing a round's rows and committing its checkpoint."""
    if rounds_done > round_ + 1:
        raise FedsimError(
            str(path),
            f"is at round {round_}, but rounds.jsonl records {rounds_done} rounds: "
            "the checkpoint was rewound (an older copy?)",
            REPAIR,
        )
    if rounds_done < round_:
        raise FedsimError(
            str(path),
            f"is at round {round_}, but rounds.jsonl records only {rounds_done}: "
            "the checkpoint is not this run's, or rounds.jsonl lost lines",
            REPAIR,
        )


def _check_scenario(path: Path, scenario_sha256: str, manifest: Path) -> None:
    try:
        started = json.loads(manifest.read_text(encoding="utf-8")).get("scenario_sha256")
    except (OSError, ValueError, AttributeError):
        return  # the server checks against the scenario itself when it restores
    if isinstance(started, str) and started != scenario_sha256:
        raise FedsimError(
            str(path),
            f"was written by a run of another scenario (SHA-256 {scenario_sha256[:12]}…; "
            f"this run's manifest.json says {started[:12]}…)",
            REPAIR,
        )


def _read_server(path: Path) -> _Server:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FedsimError(str(path), "is not valid JSON", REPAIR) from None
    return _validated(_Server, data, path)


def _read_arrays(path: Path) -> list[NDArray[Any]]:
    """arr_0 … arr_{n-1}, every one finite; no pickled objects are loaded."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            count = len(saved.files)
            if sorted(saved.files) != sorted(f"arr_{i}" for i in range(count)):
                raise FedsimError(str(path), "holds arrays not named arr_0 … arr_N", REPAIR)
            arrays = [saved[f"arr_{i}"] for i in range(count)]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        what = type(exc).__name__
        raise FedsimError(str(path), f"is not a readable .npz archive ({what})", REPAIR) from None
    for i, a in enumerate(arrays):
        if not np.issubdtype(a.dtype, np.number):
            raise FedsimError(str(path), f"arr_{i}: holds {a.dtype}, not numbers", REPAIR)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            bad = int(a.size - np.isfinite(a).sum())
            raise FedsimError(
                str(path),
                f"arr_{i}: {bad} of {a.size} values are NaN or infinite "
                "(the run had diverged, or the file was changed)",
                REPAIR,
            )
    return arrays


def _check_store(path: Path) -> None:
    """A readable SQLite database with the device-state table (its rows are the devices')."""
    for suffix in ("-journal", "-wal", "-shm"):  # SQLite would apply them to the verified file
        stray = Path(f"{path}{suffix}")
        if stray.exists():
            raise FedsimError(
                str(stray), "is a SQLite journal no checkpoint writes", f"delete it; {REPAIR}"
            )
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            ok = db.execute("PRAGMA quick_check").fetchone()
            db.execute("SELECT count(*) FROM device_state").fetchone()
        db.close()
    except sqlite3.DatabaseError as exc:
        what = str(exc)[:120]
        raise FedsimError(str(path), f"is not a device-state database ({what})", REPAIR) from None
    if ok is None or ok[0] != "ok":
        raise FedsimError(str(path), "fails SQLite's integrity check", REPAIR)


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
