"""DeviceStateStore: exact round trips, persistence, pickling, and several writing processes."""

from __future__ import annotations

import multiprocessing
import pickle
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fedsim.core.state import DeviceState, DeviceStateStore


def _assert_same(got: DeviceState | None, want: DeviceState) -> None:
    """Bitwise equality (NaN and -0.0 included), same keys, dtypes (byte order too) and shapes."""
    assert got is not None
    assert got.keys() == want.keys()
    for key, array in want.items():
        assert got[key].dtype == array.dtype, key
        assert got[key].shape == array.shape, key
        assert got[key].tobytes() == array.tobytes(), key


def _state(i: int) -> DeviceState:
    """A small state whose values encode the device id, so a mix-up shows."""
    return {"pos": np.array(i, dtype=np.int64), "w": np.arange(4, dtype=np.float32) + i}


@pytest.fixture
def store(tmp_path: Path) -> DeviceStateStore:
    return DeviceStateStore(tmp_path / "state.sqlite")


def test_round_trip_preserves_values_dtypes_and_shapes(store: DeviceStateStore) -> None:
    # Prepare
    state: DeviceState = {
        "scalar_f64": np.array(np.pi),
        "scalar_i64": np.array(-(2**62), dtype=np.int64),
        "params": np.linspace(-1, 1, 12).reshape(3, 4),
        "image": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "mask": np.array([True, False, True]),
        "rng": np.array([1, 2**64 - 1, 3, 4], dtype=np.uint64),
        "cplx": np.array([1 + 2j, -0.5j], dtype=np.complex64),
        "big_endian": np.arange(5, dtype=">i4"),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "nan": np.array([np.nan, -0.0, np.inf]),
    }

    # Execute
    store.put(3, state)
    got = store.get(3)

    # Assert
    _assert_same(got, state)


def test_keys_that_trip_np_savez_or_npz_names_round_trip(store: DeviceStateStore) -> None:
    # np.savez(f, **state) raises on 'file' and silently drops 'allow_pickle'; npz["x.npy"] could
    # be the member of key "x"; other keys look like paths or are not ASCII.
    state = {
        "file": np.array(1),
        "allow_pickle": np.array(2),
        "x": np.array(3),
        "x.npy": np.array(4),
        "a/b": np.array(5),
        "../c": np.array(6),
        "θ μ": np.array(7),
    }

    store.put(1, state)

    _assert_same(store.get(1), state)


def test_returned_arrays_are_independent_writable_copies(store: DeviceStateStore) -> None:
    state = {"w": np.zeros(3)}
    store.put(1, state)
    state["w"][0] = 9.0  # changing the caller's array after put changes nothing stored

    first = store.get(1)
    assert first is not None
    assert first["w"].flags.writeable
    first["w"][1] = 7.0

    assert np.array_equal(store.get(1)["w"], np.zeros(3))  # type: ignore[index]


def test_missing_ids_are_none_and_omitted(store: DeviceStateStore) -> None:
    store.put(1, _state(1))

    assert store.get(2) is None
    assert list(store.get_many([2, 1, 5])) == [1]
    assert store.get_many([]) == {}
    store.put_many({})  # nothing to write: no transaction, no error
    assert 2 not in store
    assert 1 in store


def test_contains_is_false_for_non_ids(store: DeviceStateStore) -> None:
    store.put(1, _state(1))

    assert np.int64(1) in store
    assert "1" not in store
    assert 1.0 not in store
    assert None not in store


def test_ids_must_be_integers(store: DeviceStateStore) -> None:
    with pytest.raises(TypeError, match=r"^device id 1\.5 is float; use an int$"):
        store.put(1.5, _state(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^device id '1' is str; use an int$"):
        store.get_many([1, "1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^device id True is bool; use an int$"):
        store.get(True)


def test_overwrite_replaces_the_whole_state(store: DeviceStateStore) -> None:
    store.put(4, {"a": np.ones(2), "b": np.ones(1)})

    store.put(4, {"c": np.array(5)})

    _assert_same(store.get(4), {"c": np.array(5)})
    assert len(store) == 1


def test_delete_forgets_only_that_device(store: DeviceStateStore) -> None:
    store.put_many({1: _state(1), 2: _state(2)})

    store.delete(1)
    store.delete(99)  # absent: no error

    assert store.device_ids() == [2]


def test_put_many_get_many_of_a_thousand_devices(store: DeviceStateStore) -> None:
    # Prepare: ids out of order and spread over more than one 500-id chunk
    ids = np.random.default_rng(0).permutation(np.arange(-500, 1500, 2)).tolist()

    # Execute
    store.put_many({i: _state(i) for i in ids})
    got = store.get_many(ids + ids[:10])  # repeated ids come back once

    # Assert
    assert list(got) == ids
    for i in ids:
        _assert_same(got[i], _state(i))
    assert store.device_ids() == sorted(ids)
    assert len(store) == 1000


def test_put_many_stores_nothing_if_one_state_is_bad(store: DeviceStateStore) -> None:
    with pytest.raises(TypeError, match="device 2"):
        store.put_many({1: _state(1), 2: {"w": [1, 2]}, 3: _state(3)})  # type: ignore[dict-item]

    assert len(store) == 0


def test_state_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "state.sqlite"  # parent dirs are created
    with DeviceStateStore(path) as first:
        first.put_many({i: _state(i) for i in range(10)})

    with DeviceStateStore(path) as second:
        assert second.device_ids() == list(range(10))
        _assert_same(second.get(7), _state(7))


def test_a_closed_store_reopens_on_use(store: DeviceStateStore) -> None:
    store.put(1, _state(1))
    store.close()
    store.close()  # idempotent

    _assert_same(store.get(1), _state(1))


def test_pickle_carries_the_path_not_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a relative path, and a copy unpickled in another working directory (a Ray actor)
    monkeypatch.chdir(tmp_path)
    store = DeviceStateStore("run/state.sqlite")
    store.put_many({i: _state(i) for i in range(1000)})
    data = pickle.dumps(store)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    # Execute
    copy = pickle.loads(data)
    copy.put(5000, _state(5000))

    # Assert
    assert len(data) < 500  # 1,000 states would be ~500 kB
    assert copy.path == tmp_path / "run" / "state.sqlite"
    _assert_same(copy.get(999), _state(999))
    _assert_same(store.get(5000), _state(5000))


def _write_range(store: DeviceStateStore, start: int, stop: int) -> None:
    """Worker: single puts for the first half, put_many batches for the rest."""
    middle = (start + stop) // 2
    for i in range(start, middle):
        store.put(i, _state(i))
    for lo in range(middle, stop, 50):
        store.put_many({i: _state(i) for i in range(lo, min(lo + 50, stop))})
    store.close()


def test_processes_writing_disjoint_devices_lose_nothing(store: DeviceStateStore) -> None:
    # Prepare: the parent has an open connection too, and reads while the children write
    store.put(-1, _state(-1))
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_write_range, args=(store, k * 300, (k + 1) * 300)) for k in range(4)
    ]

    # Execute
    for worker in workers:
        worker.start()
    while any(w.is_alive() for w in workers):
        store.get_many(range(0, 1200, 7))
    for worker in workers:
        worker.join()

    # Assert
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert store.device_ids() == list(range(-1, 1200))
    got = store.get_many(range(-1, 1200))
    for i in range(-1, 1200):
        _assert_same(got[i], _state(i))


def test_threads_sharing_one_store_lose_nothing(store: DeviceStateStore) -> None:
    threads = [
        threading.Thread(target=_write_range, args=(store, k * 100, (k + 1) * 100))
        for k in range(4)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.device_ids() == list(range(400))
    _assert_same(store.get(399), _state(399))


def _write_in_fork(store: DeviceStateStore, device_id: int) -> None:
    """Worker: fails (exit code 1) if it writes through the parent's connection."""
    inherited = store._conn
    store.put(device_id, _state(device_id))
    if inherited is None or store._conn is inherited:
        raise SystemExit(1)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_opens_its_own_connection(store: DeviceStateStore) -> None:
    store.put(1, _state(1))  # the parent's connection is open when the child is forked
    child = multiprocessing.get_context("fork").Process(target=_write_in_fork, args=(store, 2))

    child.start()
    child.join()

    assert child.exitcode == 0
    assert store.device_ids() == [1, 2]
    _assert_same(store.get(2), _state(2))


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (np.array([1, "a"], dtype=object), "ndarray of dtype object"),
        ([1.0, 2.0], "list"),
        (np.float64(1.0), "float64"),
        (np.array(["a", "b"]), "ndarray of dtype <U1"),
    ],
)
def test_non_numeric_values_name_device_key_type_and_fix(
    store: DeviceStateStore, value: Any, found: str
) -> None:
    with pytest.raises(TypeError, match=rf"^device 7: state\['w'\] is {found}; .*np\.asarray"):
        store.put(7, {"pos": np.array(1), "w": value})
    assert 7 not in store


@pytest.mark.parametrize("key", [5, b"w", "", "a\0b", "\ud800"])
def test_keys_must_be_non_empty_str(store: DeviceStateStore, key: Any) -> None:
    expected = rf"^device 7: state key {re.escape(repr(key))} .*non-empty str"
    with pytest.raises(TypeError, match=expected):
        store.put(7, {key: np.array(1)})


def test_state_must_be_a_mapping(store: DeviceStateStore) -> None:
    with pytest.raises(TypeError, match="device 7: state is ndarray"):
        store.put(7, np.zeros(3))  # type: ignore[arg-type]


def test_a_hundred_thousand_small_states(store: DeviceStateStore) -> None:
    n = 100_000
    store.put_many({i: _state(i) for i in range(n)})

    got = store.get_many(range(n))

    assert list(got) == list(range(n))
    positions = np.array([got[i]["pos"] for i in range(n)])
    weights = np.stack([got[i]["w"] for i in range(n)])
    assert positions.dtype == np.int64
    assert np.array_equal(positions, np.arange(n))
    assert weights.dtype == np.float32
    assert np.array_equal(weights, np.arange(4, dtype=np.float32) + np.arange(n)[:, None])


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceStateStore]:
    """One store for every hypothesis example (function-scoped fixtures and @given don't mix)."""
    with DeviceStateStore(tmp_path_factory.mktemp("prop") / "state.sqlite") as store:
        yield store


NUMERIC_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
)
ARRAYS = hnp.arrays(
    NUMERIC_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
)
# Valid names: no NUL, no lone surrogates (both rejected, see test_keys_must_be_non_empty_str)
KEYS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\0"), min_size=1, max_size=20
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    device_id=st.integers(-(2**63), 2**63 - 1),
    state=st.dictionaries(KEYS, ARRAYS, max_size=4),
)
def test_any_numeric_state_round_trips_exactly(
    shared_store: DeviceStateStore, device_id: int, state: dict[str, NDArray[Any]]
) -> None:
    shared_store.put(device_id, state)

    got = shared_store.get(device_id)

    _assert_same(got, state)
