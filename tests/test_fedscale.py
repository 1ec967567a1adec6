"""FedScale's behaviour and capacity traces (devices/fedscale.py): the format FedScale pickles,
FedScale's online rule, safe loading, located errors, a scenario that uses them, and scale."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devices.clock import FleetCosts
from devices.fedscale import (
    BehaviourTrace,
    FedScaleAvailability,
    client_index,
    load_trace_file,
    on_grid,
    read_behaviour,
    read_capacity,
)
from devices.fleet import load_fleet
from fedsim.core.errors import FedsimError
from fedsim.core.models import build_model
from fedsim.core.results import read_rounds
from fedsim.pytest_plugin import FedsimRun, small_scenario
from fedsim.runner import run
from tests.conftest import tiny_scenario

Write = Callable[..., Path]

# FedScale's README (benchmark/dataset/data/device_info) layout; client "1" is the example of
# FedScale's own test of ClientMetadata.is_active (fedscale/tests/cloud/internal)
BEHAVIOUR: dict[Any, Any] = {
    1: {"active": [1, 3, 6, 9], "inactive": [1, 4, 7, 10], "finish_time": 10},
    # unsorted and overlapping: [0, 3] ∪ [2, 4] = [0, 4]; [5, 10] runs into the next period's [0, 4]
    2: {"active": [0, 5, 2], "inactive": [3, 10, 4], "finish_time": 10, "duration": 10},
    3: {"active": [], "inactive": [], "finish_time": 5, "model": "never online"},
}
CAPACITY: dict[Any, Any] = {
    1: {"computation": 20.0, "communication": 1000.0},
    2: {"computation": 40.0, "communication": 4000.0},
    3: {"computation": 80.0, "communication": 250.0},
}


def _pickle(path: Path, data: object) -> Path:
    path.write_bytes(pickle.dumps(data))  # as FedScale writes them: pickle.dump of a dict
    return path


def _ask(trace: BehaviourTrace, client: int, t: float) -> tuple[bool, float, float]:
    on, until, back = trace.online(np.array([client]), np.array([t]))
    return bool(on[0]), float(until[0]), float(back[0])


@pytest.mark.parametrize(
    ("client", "t", "expected"),
    [
        # FedScale's test: is_active(2, 6, 8, 9, 10, 15) = F, T, F, T, F, F
        (1, 2.0, (False, math.nan, 3.0)),
        (1, 6.0, (True, 7.0, 6.0)),
        (1, 8.0, (False, math.nan, 9.0)),
        (1, 7.0, (True, 7.0, 7.0)),  # closed spells, as FedScale's active <= t <= inactive
        (1, 9.0, (True, 10.0, 9.0)),
        (1, 10.0, (False, math.nan, 13.0)),  # 10 % 10 = 0: before the first spell
        (1, 15.0, (False, math.nan, 16.0)),
        (2, 1.0, (True, 4.0, 1.0)),  # [0, 3] and [2, 4] joined
        (2, 4.5, (False, math.nan, 5.0)),
        (2, 6.0, (True, 14.0, 6.0)),  # [5, 10] then the next period's [0, 4]
        (2, 22.0, (True, 24.0, 22.0)),
        (3, 1.0, (False, math.nan, math.inf)),
    ],
)
def test_online_follows_fedscale_s_rule_worked_by_hand(
    tmp_path: Path, client: int, t: float, expected: tuple[bool, float, float]
) -> None:
    trace = read_behaviour(_pickle(tmp_path / "client_behave_trace", BEHAVIOUR))

    got = _ask(trace, trace.clients.index(client), t)

    assert got[0] == expected[0]
    np.testing.assert_equal(got[1:], expected[1:])


def test_a_json_conversion_reads_as_the_pickle(tmp_path: Path) -> None:
    data = {**BEHAVIOUR, 10: {"active": [7], "inactive": [8], "finish_time": 9}}
    pickled = read_behaviour(_pickle(tmp_path / "trace.pkl", data))
    (tmp_path / "trace.json").write_text(json.dumps(data))  # keys become "1", "2", "3", "10"

    converted = read_behaviour(tmp_path / "trace.json")

    assert pickled.clients == (1, 2, 3, 10)  # numeric order, in both
    for name in ("period", "offsets", "starts", "ends"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(pickled, name))


def test_devices_map_to_clients_in_id_order_or_by_a_seeded_permutation() -> None:
    local = np.arange(25)

    in_order = client_index(local, 10, "in-order", 1, "x")
    seeded = client_index(local, 10, "seeded", 1, "x")

    assert in_order.tolist() == [i % 10 for i in range(25)]
    assert sorted(seeded[:10].tolist()) == list(range(10))  # each client once before repeats
    assert seeded[10:20].tolist() == seeded[:10].tolist()
    assert seeded.tolist() != in_order.tolist()
    assert seeded.tolist() == client_index(local, 10, "seeded", 1, "x").tolist()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _pickle(tmp_path / "client_behave_trace", {1: _Exploit(marker)})

    with pytest.raises(FedsimError, match=r"asks to call posix\.system.*refused unread"):
        load_trace_file(path)
    assert not marker.exists()


def test_numpy_float32_capacities_load(tmp_path: Path) -> None:
    data = {k: {f: np.float32(v) for f, v in e.items()} for k, e in CAPACITY.items()}

    capacity = read_capacity(_pickle(tmp_path / "client_device_capacity", data))

    assert capacity.computation_ms.tolist() == [20.0, 40.0, 80.0]
    assert capacity.compute_factor().tolist() == [0.5, 1.0, 2.0]  # over the median, 40 ms
    assert capacity.throughput_bps().tolist() == [1024e3, 4096e3, 256e3]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"inactive": [1], "finish_time": 5}, r"client 7: no 'active'"),
        ({"active": 3, "inactive": [1], "finish_time": 5}, r"client 7: active: expected a list"),
        (
            {"active": [0, 2], "inactive": [1], "finish_time": 5},
            r"client 7: inactive: 2 active times but 1 inactive times",
        ),
        (
            {"active": [0, 2, "x"], "inactive": [1, 3, 4], "finish_time": 5},
            r"client 7: active\[2\]: 'x' is not a finite number",
        ),
        (
            {"active": [0, 2], "inactive": [1, -3], "finish_time": 5},
            r"client 7: inactive\[1\]: -3 is not a finite number ≥ 0",
        ),
        ({"active": [0], "inactive": [1], "finish_time": 0}, r"client 7: finish_time: is 0"),
        ([1, 2], r"client 7: expected a dict with active"),
        (
            {"active": [[1, 2]], "inactive": [3], "finish_time": 5},
            r"client 7: active\[0\]: \[1, 2\] is not a finite number",
        ),
        (
            {"active": [0], "inactive": [1], "finish_time": True},
            r"client 7: finish_time: True is not a finite number",
        ),
    ],
)
def test_bad_behaviour_entries_name_file_client_and_field(
    tmp_path: Path, entry: object, match: str
) -> None:
    good = {"active": [0], "inactive": [1], "finish_time": 5}
    path = _pickle(tmp_path / "trace", {1: good, 7: entry, 9: good})

    with pytest.raises(FedsimError, match=r"trace: " + match):
        read_behaviour(path)


@pytest.mark.parametrize("data", [b"", b"\x80\x04garbage", pickle.dumps([1, 2])])
def test_a_file_that_is_no_trace_is_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "trace").write_bytes(data)

    with pytest.raises(
        FedsimError, match=r"trace: (cannot read it as a pickle|expected a non-empty dict)"
    ):
        read_behaviour(tmp_path / "trace")


def test_a_zero_bandwidth_is_located(tmp_path: Path) -> None:
    path = _pickle(tmp_path / "cap", {**CAPACITY, 2: {"computation": 5, "communication": 0}})

    with pytest.raises(FedsimError, match=r"cap: client 2: communication: is 0"):
        read_capacity(path)


def _trace_scenario(tmp_path: Path, **group: Any) -> dict[str, Any]:
    _pickle(tmp_path / "client_behave_trace", BEHAVIOUR)
    _pickle(tmp_path / "client_device_capacity", CAPACITY)
    groups = [
        {
            "profile": "rpi4",
            "count": 6,
            "availability": {"kind": "fedscale", "file": "client_behave_trace", "start_s": 6.0},
            "capacity": {"kind": "fedscale", "file": "client_device_capacity"},
            **group,
        }
    ]
    return tiny_scenario(
        fleet={"groups": groups},
        rounds=2,
        algorithm={"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16},
    )


def test_a_scenario_with_fedscale_traces_validates_and_runs(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(_trace_scenario(tmp_path))

    scenario, fleet = load_fleet(path)
    result = run(path, tmp_path / "out")

    # at trace time 6 clients 1 and 2 are online (devices 0, 1, 3, 4), client 3 never (2, 5)
    assert fleet.availability[0].online(np.arange(6), 0.0)[0].tolist() == [1, 1, 0, 1, 1, 0]
    rounds = read_rounds(result.out)
    assert rounds[0]["offline"] == 2
    assert all(r["selected"] <= 4 for r in rounds)
    # compute time scales with the client's ms per sample; the link is the client's bandwidth
    costs = FleetCosts(scenario, fleet, build_model("mlp", 64, 10, 0))
    compute = [costs.nominal(d).compute_s / fleet[d].num_examples for d in range(3)]
    assert compute[0] / compute[1] == pytest.approx(0.5, rel=5e-3)  # on the 0.5 % grid
    assert compute[2] / compute[1] == pytest.approx(2.0, rel=5e-3)
    link = fleet[4].link_type
    assert link is not None
    assert link.throughput_bps == pytest.approx(4000 * 1024, rel=2.5e-3)
    assert fleet[4].profile is fleet[1].profile  # one derived profile per value, shared


def test_capacities_share_few_grid_values_within_a_quarter_percent() -> None:
    values = np.random.default_rng(0).lognormal(8.0, 1.5, 136_000)  # all distinct, kbit/s

    steps, grid = on_grid(values)

    assert np.abs(grid / values - 1).max() <= 0.0025 + 1e-12
    assert len(np.unique(steps)) < 2_500  # derived links made, not 136,000


def test_the_async_server_starts_a_device_when_its_client_comes_online(
    fedsim_run: Callable[..., FedsimRun], tmp_path: Path
) -> None:
    """Device 1's client is online in [5, 1000] of each 2,000 s: with a slot free it starts at
    5 exactly (the async server's ``next_online``)."""
    trace = _pickle(
        tmp_path / "behave", {0: {"active": [5.0], "inactive": [1000.0], "finish_time": 2000}}
    )
    spec = {"strategy": "fedasync", "buffer_size": 2, "concurrency": 2, "server_lr": 1.0}
    scenario = small_scenario(rounds=160, asynchrony=spec)
    scenario["fleet"]["groups"] = [
        {"profile": "rpi4", "count": 1},
        {"profile": "rpi4", "count": 1, "availability": {"kind": "fedscale", "file": str(trace)}},
    ]

    run = fedsim_run(scenario)

    first = next(r for r in run.devices if r["device_id"] == "1")
    arrived = run.rounds[int(first["round"]) - 1]["sim_time_s"]
    assert arrived == pytest.approx(5.0 + float(first["busy_s"]), abs=1e-6)


def test_a_missing_trace_file_is_located_at_its_key(write_scenario: Write, tmp_path: Path) -> None:
    data = _trace_scenario(tmp_path, capacity={"kind": "fedscale", "file": "nope"})

    with pytest.raises(FedsimError, match=r"fleet.groups\[0\].capacity.file: no trace file"):
        load_fleet(write_scenario(data))


def _synthetic(clients: int, spells: int, seed: int = 0) -> dict[int, dict[str, Any]]:
    """A week-long trace: each client alternates ``spells`` on/off spells of random length."""
    rng = np.random.default_rng(seed)
    week = 7 * 24 * 3600.0
    times = np.sort(rng.uniform(0, week, size=(clients, 2 * spells)), axis=1).round(1)
    return {
        c: {
            "active": times[c, 0::2].tolist(),
            "inactive": times[c, 1::2].tolist(),
            "finish_time": week,
            "duration": week,
        }
        for c in range(clients)
    }


def test_a_100k_client_trace_loads_in_seconds_and_a_million_devices_cost_no_memory_each(
    tmp_path: Path,
) -> None:
    path = _pickle(tmp_path / "client_behave_trace", _synthetic(100_000, 10))
    devices = 1_000_000
    ids = np.arange(0, devices, 97, dtype=np.int64)  # ~10,000 devices asked at once

    began = time.perf_counter()
    trace = read_behaviour(path)
    loaded_s = time.perf_counter() - began
    tracemalloc.start()
    availability = FedScaleAvailability(trace, 0, "seeded", 3)
    began = time.perf_counter()
    on, until = availability.online(ids, 3600.0)
    back = availability.next_online(ids, 3600.0)
    asked_s = time.perf_counter() - began
    del until, back  # what stays is what the fleet holds: the permutation, once per trace
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    on, until = availability.online(ids, 3600.0)
    back = availability.next_online(ids, 3600.0)

    assert loaded_s < 5.0  # ~1.2 s here: 0.5 s unpickling, 0.7 s checking and merging
    assert asked_s < 0.5  # ~10 ms here
    assert trace.nbytes / devices < 64  # the trace's arrays (~20 B per device here), held once
    assert held / devices < 2  # per device: nothing but the seeded permutation of clients
    assert 0.05 < on.mean() < 0.95
    assert np.all(until[on] > 3600.0)
    assert np.all(back[~on] > 3600.0)
    assert np.all(back[on] == 3600.0)


def test_the_vectorised_search_agrees_with_a_loop_over_intervals(tmp_path: Path) -> None:
    data = _synthetic(200, 6, seed=5)
    trace = read_behaviour(_pickle(tmp_path / "t", data))
    rng = np.random.default_rng(1)
    clients = rng.integers(0, 200, 2000)
    times = rng.uniform(0, 3 * 7 * 24 * 3600.0, 2000)

    on, _, back = trace.online(clients, times)

    for c, t, o, b in zip(clients.tolist(), times.tolist(), on, back, strict=True):
        e = data[trace.clients[c]]
        norm = t % e["finish_time"]
        spells = list(zip(e["active"], e["inactive"], strict=True))
        assert o == any(a <= norm <= i for a, i in spells if a < i)
        if not o:
            later = [a for a, i in spells if a > norm and a < i]
            nxt = min(later) if later else e["finish_time"] + min(a for a, i in spells if a < i)
            assert b == pytest.approx(t - norm + nxt)


def test_a_base_scenarios_trace_files_are_anchored_to_its_folder(tmp_path: Path) -> None:
    """A base scenario (extends) or the run folder's scenario copy names its trace files relative
    to its own folder: both the behaviour trace and the capacity file are made absolute."""
    from fedsim.core.scenario_load import anchor_paths

    data = {
        "fleet": {
            "groups": [
                {
                    "profile": "rpi4",
                    "availability": {"kind": "fedscale", "file": "traces/behave.json"},
                    "capacity": {"kind": "fedscale", "file": "traces/capacity.json"},
                }
            ]
        }
    }
    anchor_paths(data, tmp_path)
    group = data["fleet"]["groups"][0]
    assert group["availability"]["file"] == str(tmp_path / "traces" / "behave.json")
    assert group["capacity"]["file"] == str(tmp_path / "traces" / "capacity.json")
