"""Checkpoint integrity: a tampered, truncated, incomplete, rewound or foreign checkpoint is refused
by ``fedsim run --resume`` with one located line (exit 2), never accepted and never a traceback.

One tiny run is made per module; each case copies its folder, damages the checkpoint one way and
resumes. Where a file's digest would give the damage away, the case re-computes it in the commit
record, so the check that must catch it (finiteness, shapes, types) is the one that does."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedsim.core.checkpoint import (
    CHECKPOINT_DIR,
    COMMIT,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fedsim.core.errors import FedsimError
from fedsim.core.results import MANIFEST, ROUNDS, SUMMARY
from fedsim.core.state import STATE_FILE, DeviceStateStore
from fedsim.runner import run
from tests.conftest import tiny_scenario
from tests.test_cli import fedsim

ROUND = 3  # the tiny run's rounds: its checkpoint is at round 3
Tamper = Callable[[Path], None]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose checkpoint is committed but that has no summary: resumable."""
    folder = tmp_path_factory.mktemp("checkpoint")
    scenario = folder / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(tiny_scenario(rounds=ROUND)), encoding="utf-8")
    out = run(scenario, folder / "run").out
    (out / SUMMARY).unlink()
    return out


@pytest.fixture
def copy(stopped_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(stopped_run, tmp_path / "run"))


def _commit(out: Path) -> dict[str, object]:
    return dict(json.loads((out / CHECKPOINT_DIR / COMMIT).read_text()))


def _write_commit(out: Path, commit: object) -> None:
    (out / CHECKPOINT_DIR / COMMIT).write_text(json.dumps(commit))


def _redigest(out: Path, name: str) -> None:
    """Vouch for ``name`` as it is now, as a careful tamperer would."""
    commit = _commit(out)
    data = (out / CHECKPOINT_DIR / name).read_bytes()
    files = commit["files"]
    assert isinstance(files, dict)
    files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    _write_commit(out, commit)


def _replace_arrays(out: Path, change: Callable[[list[np.ndarray]], list[np.ndarray]]) -> None:
    path = out / CHECKPOINT_DIR / f"global-{ROUND}.npz"
    with np.load(path) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    buffer = io.BytesIO()
    np.savez(buffer, *change(arrays))
    path.write_bytes(buffer.getvalue())
    _redigest(out, path.name)


def _flip_a_byte(out: Path) -> None:
    path = out / CHECKPOINT_DIR / f"global-{ROUND}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(out: Path) -> None:
    path = out / CHECKPOINT_DIR / f"global-{ROUND}.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewind(out: Path) -> None:
    """The checkpoint of round 1 beside the records of round 3 (a restored old copy)."""
    folder, commit = out / CHECKPOINT_DIR, _commit(out)
    files = commit["files"]
    assert isinstance(files, dict)
    for kind in ("global", "server"):
        old, new = f"{kind}-{ROUND}", f"{kind}-1"
        suffix = ".npz" if kind == "global" else ".json"
        (folder / f"{old}{suffix}").rename(folder / f"{new}{suffix}")
        files[f"{new}{suffix}"] = files.pop(f"{old}{suffix}")
    _write_commit(out, {**commit, "round": 1, "files": files})


def _nan(arrays: list[np.ndarray]) -> list[np.ndarray]:
    arrays[0] = arrays[0].copy()
    arrays[0].flat[0] = np.nan
    return arrays


def _wrong_types(out: Path) -> None:
    path = out / CHECKPOINT_DIR / f"server-{ROUND}.json"
    saved = json.loads(path.read_text())
    saved["values"]["usage"]["selected"] = "lots"
    path.write_text(json.dumps(saved))
    _redigest(out, path.name)


def _not_npz(out: Path) -> None:
    (out / CHECKPOINT_DIR / f"global-{ROUND}.npz").write_bytes(b"PK\x03\x04 not a zip")
    _redigest(out, f"global-{ROUND}.npz")


def _one_npy(out: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones(3, np.float32))
    (out / CHECKPOINT_DIR / f"global-{ROUND}.npz").write_bytes(buffer.getvalue())
    _redigest(out, f"global-{ROUND}.npz")


def _outside(out: Path) -> None:
    commit = _commit(out)
    files = commit["files"]
    assert isinstance(files, dict)
    files["../manifest.json"] = files[f"server-{ROUND}.json"]
    _write_commit(out, commit)


npz, server, record = f"global-{ROUND}.npz", f"server-{ROUND}.json", COMMIT
CASES: dict[str, tuple[Tamper, str, str]] = {  # how it is damaged; the file named; the problem
    "edited": (_flip_a_byte, npz, "its SHA-256 differs from its commit record's"),
    "truncated": (_truncate, npz, r"is \d+ bytes, its commit record says \d+: truncated"),
    "file missing": (lambda o: (o / CHECKPOINT_DIR / server).unlink(), server, "is missing"),
    "record missing": (
        lambda o: (o / CHECKPOINT_DIR / COMMIT).unlink(),
        record,
        "is missing, though rounds.jsonl records 3 rounds",
    ),
    "record not JSON": (
        lambda o: (o / CHECKPOINT_DIR / COMMIT).write_text('{"round": 3,'),
        record,
        r"is not valid JSON \(line 1 column 13\)",
    ),
    "record not UTF-8": (
        lambda o: (o / CHECKPOINT_DIR / COMMIT).write_bytes(b'{"round": "\xff\xfe"}'),
        record,
        r"is not UTF-8 \(byte 11\)",
    ),
    "record wrong type": (
        lambda o: _write_commit(o, {**_commit(o), "round": "3"}),
        record,
        "round: Input should be a valid integer",
    ),
    "record not an object": (
        lambda o: _write_commit(o, [1, 2]),
        record,
        r"\(top level\): Input should be a valid dictionary;",
    ),
    "record points outside": (_outside, record, "files: unknown for round 3: '../manifest.json'"),
    "rewound round": (
        _rewind,
        record,
        "is at round 1, but rounds.jsonl records 3 rounds: the checkpoint was rewound",
    ),
    "other scenario": (
        lambda o: _write_commit(o, {**_commit(o), "scenario_sha256": "0" * 64}),
        record,
        "was written by a run of another scenario",
    ),
    "NaN array": (
        lambda o: _replace_arrays(o, _nan),
        npz,
        r"arr_0: 1 of \d+ values are NaN or infinite",
    ),
    "not an npz": (_not_npz, npz, r"is not a readable \.npz archive"),
    "one .npy": (_one_npy, npz, r"is a single array, not an \.npz archive"),
    "pickled objects": (
        lambda o: _replace_arrays(o, lambda a: [np.array([{"x": 1}], dtype=object), *a[1:]]),
        npz,
        r"is not a readable \.npz archive \(ValueError\)",
    ),
    "wrong shape": (
        lambda o: _replace_arrays(o, lambda a: [a[0][:, :-1], *a[1:]]),
        npz,
        r"arr_0 is float32 \[\d+, \d+\], the scenario's model has float32 \[\d+, \d+\] there",
    ),
    "wrong dtype": (
        lambda o: _replace_arrays(o, lambda a: [a[0].astype(np.float64), *a[1:]]),
        npz,
        r"arr_0 is float64 .*, the scenario's model has float32",
    ),
    "array missing": (
        lambda o: _replace_arrays(o, lambda a: a[:-1]),
        npz,
        r"holds \d+ arrays, the scenario's model has \d+",
    ),
    "running values": (_wrong_types, server, "values.usage.selected: Input should be a valid int"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_checkpoint_is_refused_with_a_located_line(copy: Path, case: str) -> None:
    tamper, name, problem = CASES[case]
    tamper(copy)
    with pytest.raises(FedsimError, match=problem) as caught:
        run(None, copy, resume=True)
    error = caught.value
    assert error.where.startswith(str(copy / CHECKPOINT_DIR / name))
    assert "restore the checkpoint folder from a copy, or delete it" in error.fix
    assert "\n" not in error.line()


@pytest.mark.parametrize(
    "case", ["record missing", "rewound round", "NaN array", "wrong shape", "running values"]
)
def test_a_refused_checkpoint_leaves_the_run_folder_as_it_was(copy: Path, case: str) -> None:
    CASES[case][0](copy)
    before = {p: p.read_bytes() for p in (copy / ROUNDS, copy / MANIFEST)}
    with pytest.raises(FedsimError):
        run(None, copy, resume=True)
    assert {p: p.read_bytes() for p in before} == before


def test_the_cli_prints_one_line_and_exits_2(copy: Path) -> None:
    _truncate(copy)
    proc = fedsim("run", "--resume", copy)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert f"global-{ROUND}.npz: is " in lines[0]
    assert "truncated or changed" in lines[0]


def test_deleting_the_checkpoint_starts_the_run_over(copy: Path, stopped_run: Path) -> None:
    _flip_a_byte(copy)
    shutil.rmtree(copy / CHECKPOINT_DIR)  # what the error says to do
    run(None, copy, resume=True)
    summary = json.loads((copy / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert (copy / ROUNDS).read_text() == (stopped_run / ROUNDS).read_text()


def test_a_damaged_device_state_snapshot_is_refused(tmp_path: Path) -> None:
    live = tmp_path / STATE_FILE
    with DeviceStateStore(live) as store:
        store.put(0, {"w": np.ones(2)})
    arrays = [np.ones(2, np.float32)]
    save_checkpoint(tmp_path, Checkpoint(1, 1.0, "ab" * 32, arrays), live)
    (tmp_path / ROUNDS).write_text('{"round": 1}\n')
    snapshot = tmp_path / CHECKPOINT_DIR / "device-state-1.sqlite"
    assert load_checkpoint(tmp_path) is not None
    assert sorted(p.name for p in snapshot.parent.iterdir()) == [
        COMMIT,
        "device-state-1.sqlite",
        "global-1.npz",
        "server-1.json",
    ]  # reading it left no journal beside it

    with sqlite3.connect(snapshot) as db:  # a valid database, but not the device-state store
        db.execute("DROP TABLE device_state")
    db.close()
    _redigest(tmp_path, snapshot.name)
    with pytest.raises(FedsimError, match="is not a device-state database"):
        load_checkpoint(tmp_path)

    snapshot.write_bytes(b"SQLite format 3\x00" + bytes(100))
    _redigest(tmp_path, snapshot.name)
    with pytest.raises(FedsimError, match="is not a device-state database"):
        load_checkpoint(tmp_path)

    Path(f"{snapshot}-journal").write_bytes(b"a hot journal would be rolled back into it")
    with pytest.raises(FedsimError, match=r"sqlite-journal: is a SQLite journal"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_of_an_older_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / "state.json").write_text('{"format": 1, "round": 2}')
    with pytest.raises(FedsimError, match="this checkpoint has format 1"):
        load_checkpoint(tmp_path)


def test_a_run_killed_before_its_first_commit_starts_over(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / "global-1.npz.tmp").write_bytes(b"half")
    (tmp_path / ROUNDS).write_text('{"round": 1}\n')
    assert load_checkpoint(tmp_path) is None


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5])
def test_a_save_cut_short_at_any_rename_leaves_a_whole_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """Renames 1-3 put round 2's files in place and 4 commits them; 5: cut short while dropping
    round 1's files. Wherever a kill strikes, the folder loads: round 1 until the commit, then 2."""
    live = tmp_path / STATE_FILE
    with DeviceStateStore(live) as store:
        store.put(0, {"w": np.ones(2)})
    (tmp_path / ROUNDS).write_text('{"round": 1}\n')
    save_checkpoint(tmp_path, Checkpoint(1, 1.0, "ab" * 32, [np.full(2, 1, np.float32)]), live)
    (tmp_path / ROUNDS).write_text('{"round": 1}\n{"round": 2}\n')  # rows first, then the commit
    calls = iter(range(1, 100))
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src: str | Path, dst: str | Path) -> None:
        if next(calls) == crash_at:
            raise KeyboardInterrupt  # the process dies here
        real_replace(src, dst)

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if crash_at == 5 and path.name.startswith(("global-1", "server-1")):
            raise KeyboardInterrupt
        real_unlink(path, missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with contextlib.suppress(KeyboardInterrupt):
        save_checkpoint(tmp_path, Checkpoint(2, 2.0, "ab" * 32, [np.full(2, 2, np.float32)]), live)
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round == (2 if crash_at == 5 else 1)
    np.testing.assert_array_equal(loaded.arrays[0], np.full(2, loaded.round, np.float32))


@pytest.mark.parametrize("case", ["wrong shape", "NaN array", "running values"])
def test_under_ray_a_damaged_checkpoint_is_refused_before_the_engine_starts(
    copy: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flwr.simulation

    def no_engine(**_: object) -> None:  # Ray would only log the ServerApp's exception
        raise AssertionError("the engine started")

    monkeypatch.setattr(flwr.simulation, "run_simulation", no_engine)
    tamper, name, problem = CASES[case]
    tamper(copy)
    with pytest.raises(FedsimError, match=problem) as caught:
        run(None, copy, resume=True, engine="ray")
    assert caught.value.exit_code == 2
    assert caught.value.where.startswith(str(copy / CHECKPOINT_DIR / name))
