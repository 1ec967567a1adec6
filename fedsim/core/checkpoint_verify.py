"""Verifying a checkpoint before a run trusts it (``fedsim run --resume``): the commit record's
form, each file's presence, size and SHA-256, the round against the run's ``rounds.jsonl``, the
scenario against its manifest, finite arrays and a readable device-state snapshot.

Every failure is one ``FedsimError``: the file, what is wrong, and ``REPAIR``. Nothing here prints
what a damaged file holds (a key path and pydantic's message, a byte offset, a JSON position).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.lib.npyio import NpzFile
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsim.core.errors import FedsimError

__all__ = [
    "COMMIT",
    "REPAIR",
    "CommitRecord",
    "FileEntry",
    "ServerFile",
    "check_progress",
    "check_scenario",
    "check_store",
    "digest",
    "file_names",
    "first_problem",
    "read_arrays",
    "read_commit",
    "read_server",
    "rounds_done",
    "verify_file",
]

COMMIT = "commit.json"
LEGACY_COMMIT = "state.json"  # format 1 (no digests), before the commit record
FORMAT: Literal[2] = 2
MAX_COMMIT_BYTES = 1 << 20  # a commit record lists 3 files: anything this large is not one
SHA256 = r"^[0-9a-f]{64}$"
REPAIR = (
    "restore the checkpoint folder from a copy, or delete it to start the run over from round 1"
)

M = TypeVar("M", bound=BaseModel)
# what numpy and zipfile raise on a damaged archive (a declared shape too large: MemoryError)
UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    NotImplementedError,
    MemoryError,
    zipfile.BadZipFile,
    zlib.error,
)


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    sha256: str = Field(pattern=SHA256)
    size_bytes: int = Field(ge=0)


class CommitRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    format: Literal[2]
    round: int = Field(ge=1)
    scenario_sha256: str = Field(pattern=SHA256)
    files: dict[str, FileEntry]


class ServerFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    clock_s: float = Field(ge=0, allow_inf_nan=False)  # the simulated clock at the round's end
    values: dict[str, Any]


def file_names(round_: int) -> dict[str, str]:
    """The only names a checkpoint of round ``round_`` may hold, besides its commit record."""
    return {
        "global": f"global-{round_}.npz",
        "server": f"server-{round_}.json",
        "store": f"device-state-{round_}.sqlite",
    }


def digest(path: Path) -> FileEntry:
    """The file's SHA-256 and size, as a commit record lists them."""
    with path.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return FileEntry(sha256=sha, size_bytes=path.stat().st_size)


def rounds_done(path: Path) -> int:
    """Whole lines in the run's ``rounds.jsonl`` (a kill may leave the last one half-written)."""
    if not path.exists():
        return 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        fix = "restore it from a copy, or start a new run"
        raise FedsimError(str(path), f"is not UTF-8 (byte {exc.start})", fix) from None
    done = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break
        done += 1
    return done


def read_commit(folder: Path, done: int) -> CommitRecord | None:
    """The commit record in ``folder``; None if there is none because the run was killed before
    its first commit (``done``: whole rounds in ``rounds.jsonl``)."""
    path = folder / COMMIT
    if not path.exists():
        if (folder / LEGACY_COMMIT).exists():
            raise FedsimError(
                str(folder),
                f"this checkpoint has format 1 (an older fedsim, no digests to verify it by); "
                f"this fedsim reads format {FORMAT}",
                "delete the checkpoint folder to start the run over from round 1",
            )
        if done >= 2:  # round 1's commit came before round 2 began
            raise FedsimError(
                str(path),
                f"is missing, though rounds.jsonl records {done} rounds",
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
    commit = _validated(CommitRecord, data, path)
    allowed = file_names(commit.round)
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
    key = prefix + (".".join(str(p)[:80] for p in first["loc"]) or "(top level)")
    what = str(first["msg"]).split(" or instance of ")[0]  # not our private class names
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {what}{more}"


def verify_file(path: Path, expected: FileEntry) -> None:
    if not path.is_file():
        raise FedsimError(str(path), f"is missing (the {COMMIT} of its round lists it)", REPAIR)
    size = path.stat().st_size
    if size != expected.size_bytes:
        raise FedsimError(
            str(path),
            f"is {size} bytes, its commit record says {expected.size_bytes}: truncated or changed",
            REPAIR,
        )
    if digest(path).sha256 != expected.sha256:
        raise FedsimError(
            str(path), "its SHA-256 differs from its commit record's: the file was changed", REPAIR
        )


def check_progress(path: Path, round_: int, done: int) -> None:
    """The checkpoint of round r goes with r rounds in ``rounds.jsonl``, or r + 1 when the run was
    killed between writing a round's rows and committing its checkpoint."""
    if done > round_ + 1:
        raise FedsimError(
            str(path),
            f"is at round {round_}, but rounds.jsonl records {done} rounds: "
            "the checkpoint was rewound (an older copy?)",
            REPAIR,
        )
    if done < round_:
        raise FedsimError(
            str(path),
            f"is at round {round_}, but rounds.jsonl records only {done}: "
            "the checkpoint is not this run's, or rounds.jsonl lost lines",
            REPAIR,
        )


def check_scenario(path: Path, scenario_sha256: str, manifest: Path) -> None:
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


def read_server(path: Path) -> ServerFile:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FedsimError(str(path), "is not valid JSON", REPAIR) from None
    return _validated(ServerFile, data, path)


def read_arrays(path: Path) -> list[NDArray[Any]]:
    """arr_0 … arr_{n-1}, every one finite; no pickled objects are loaded."""
    try:
        saved = np.load(path, allow_pickle=False)
        if not isinstance(saved, NpzFile):
            raise FedsimError(str(path), "is a single array, not an .npz archive", REPAIR)
        with saved:
            count = len(saved.files)
            if sorted(saved.files) != sorted(f"arr_{i}" for i in range(count)):
                raise FedsimError(str(path), "holds arrays not named arr_0 … arr_N", REPAIR)
            arrays = [saved[f"arr_{i}"] for i in range(count)]
    except UNREADABLE as exc:
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


def check_store(path: Path) -> None:
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
