"""Heterogeneous fleets end to end: memory skips, head-only training, deadlines, availability,
payload formats, the simulated clock and energy in rounds.jsonl and devices.csv."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devices.footprint import footprint
from fedsim.core.errors import FedsimError
from fedsim.core.models import build_model
from fedsim.core.results import read_model, read_rounds
from fedsim.core.seeds import derive_seed
from fedsim.runner import run
from ontology.registry import default_registry
from tests.conftest import tiny_scenario

Write = Callable[..., Path]


def _fleet(*groups: dict[str, Any], **fleet: Any) -> dict[str, Any]:
    return {"groups": list(groups), "samples_per_device": 24, **fleet}


def _scenario(fleet: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """784-32-10 MLP trained with batches of 32: ~300 KB, more than a Nano's 256 KB of SRAM."""
    return tiny_scenario(
        task={"dataset": "blobs-784", "model": "mlp"},
        fleet=fleet,
        algorithm={"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 32},
        **overrides,
    )


def _devices(out: Path) -> list[dict[str, str]]:
    with (out / "devices.csv").open() as f:
        return list(csv.DictReader(f))


def _go(write: Write, tmp_path: Path, scenario: dict[str, Any], label: str = "run") -> Path:
    return run(write(scenario, f"{label}.yaml"), tmp_path / label).out


def test_the_oracle_model_fits_a_pi_but_not_a_nano() -> None:
    registry = default_registry()
    model = build_model("mlp", 784, 10, 0)

    need = footprint(model, (784,), 32).train_bytes

    assert registry.profile("nano33-ble-sense").sram_bytes < need
    assert registry.profile("rpi4").sram_bytes > need


def test_a_model_too_big_for_the_nano_is_skipped_there(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet({"profile": "rpi4", "count": 3}, {"profile": "nano33-ble-sense", "count": 3})

    out = _go(write_scenario, tmp_path, _scenario(fleet))

    rows = _devices(out)
    nano = [r for r in rows if r["profile"] == "nano33-ble-sense"]
    pi = [r for r in rows if r["profile"] == "rpi4"]
    idle_mw = default_registry().profile("nano33-ble-sense").idle_mw
    rounds = {r["round"]: r for r in read_rounds(out)}
    assert {r["status"] for r in nano} == {"memory-skip"}
    assert all(r["bytes_down"] == r["bytes_up"] == "0" for r in nano)
    assert all(float(r["busy_s"]) == 0.0 for r in nano)
    for r in nano:  # idle energy only, for the whole round
        assert float(r["energy_mj"]) == pytest.approx(idle_mw * rounds[int(r["round"])]["round_s"])
    assert {r["status"] for r in pi} == {"ok"}
    assert {r["scope"] for r in pi} == {"full"}
    assert all(r["memory_skips"] == 3 and r["participants"] == 3 for r in rounds.values())


def test_head_only_trains_the_last_layer_where_the_model_does_not_fit(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet({"profile": "nano33-ble-sense", "count": 4}, memory_policy="head-only")
    scenario = _scenario(fleet)

    out = _go(write_scenario, tmp_path, scenario)

    rows = _devices(out)
    assert {(r["status"], r["scope"]) for r in rows} == {("ok", "head")}
    assert {r["bytes_up"] for r in rows} == {str((32 * 10 + 10) * 4)}  # the head only
    assert {r["bytes_down"] for r in rows} == {str((784 * 32 + 32 + 32 * 10 + 10) * 4)}
    initial = build_model("mlp", 784, 10, derive_seed(scenario["seed"], "init")).state_dict()
    final = read_model(out)
    assert np.array_equal(final["1.weight"], initial["1.weight"].numpy())  # body frozen
    assert np.array_equal(final["1.bias"], initial["1.bias"].numpy())
    assert not np.array_equal(final["3.weight"], initial["3.weight"].numpy())  # head learned


@pytest.mark.parametrize("payload", ["float32", "float16"])
def test_head_only_and_payload_formats_are_the_same_in_both_modes(
    payload: str, write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet(
        {"profile": "rpi4", "count": 5},
        {"profile": "nano33-ble-sense", "count": 5},
        {"profile": "esp32-s3", "count": 2, "faults": {"crash_prob": 0.3}},
        memory_policy="head-only",
        payload_dtype=payload,
    )
    common = {"clients_per_round": 9}
    per_device = _go(
        write_scenario,
        tmp_path,
        _scenario(fleet, execution={"engine": "inline", "mode": "per-device"}, **common),
        "pd",
    )
    cohort = _go(
        write_scenario,
        tmp_path,
        _scenario(
            fleet,
            execution={"engine": "inline", "mode": "cohort", "actors": 2, "vectorize": False},
            **common,
        ),
        "co",
    )

    a, b = read_model(per_device), read_model(cohort)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert read_rounds(per_device) == read_rounds(cohort)
    assert (per_device / "devices.csv").read_text() == (cohort / "devices.csv").read_text()
    assert sum(r["head_only"] for r in read_rounds(cohort)) > 0


def test_float16_halves_the_bytes_and_changes_the_model_only_by_rounding(
    write_scenario: Write, tmp_path: Path
) -> None:
    groups = ({"profile": "rpi4", "count": 4},)
    full = _go(write_scenario, tmp_path, _scenario(_fleet(*groups)), "f32")
    half = _go(write_scenario, tmp_path, _scenario(_fleet(*groups, payload_dtype="float16")), "f16")

    for r32, r16 in zip(read_rounds(full), read_rounds(half), strict=True):
        assert r16["bytes_down"] * 2 == r32["bytes_down"]
        assert r16["bytes_up"] * 2 == r32["bytes_up"]
        assert r16["round_s"] < r32["round_s"]  # less airtime
    a, b = read_model(full), read_model(half)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    assert all(np.allclose(a[k], b[k], atol=1e-2) for k in a)


def test_a_deadline_cuts_stragglers_and_fixes_the_round_length(
    write_scenario: Write, tmp_path: Path
) -> None:
    # over BLE the Nano needs ~14 s for the model and its head; the Pi over WiFi ~1.6 s
    fleet = _fleet(
        {"profile": "rpi4", "count": 3},
        {"profile": "nano33-ble-sense", "count": 2},
        memory_policy="head-only",
    )

    out = _go(write_scenario, tmp_path, _scenario(fleet, deadline_s=5.0))

    rows = _devices(out)
    assert {r["status"] for r in rows if r["profile"] == "nano33-ble-sense"} == {"straggler"}
    assert all(float(r["busy_s"]) == pytest.approx(5.0) for r in rows if r["status"] == "straggler")
    assert all(r["bytes_up"] == "0" for r in rows if r["status"] == "straggler")
    rounds = read_rounds(out)
    assert [r["stragglers"] for r in rounds] == [2, 2, 2]
    assert [r["round_s"] for r in rounds] == [5.0, 5.0, 5.0]
    assert [r["sim_time_s"] for r in rounds] == [5.0, 10.0, 15.0]
    assert all(r["participants"] == 3 for r in rounds)


def test_without_a_deadline_the_slowest_device_sets_the_round_length(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet(
        {"profile": "rpi4", "count": 2},
        {"profile": "nano33-ble-sense", "count": 2},
        memory_policy="head-only",
    )

    out = _go(write_scenario, tmp_path, _scenario(fleet))

    rows = _devices(out)
    for round_ in read_rounds(out):
        mine = [r for r in rows if int(r["round"]) == round_["round"]]
        assert round_["round_s"] == pytest.approx(max(float(r["busy_s"]) for r in mine))
        assert round_["energy_mj"] == pytest.approx(sum(float(r["energy_mj"]) for r in mine))
    nano = max(float(r["busy_s"]) for r in rows if r["profile"] == "nano33-ble-sense")
    pi = max(float(r["busy_s"]) for r in rows if r["profile"] == "rpi4")
    assert nano > 5 * pi  # BLE with 244-byte messages vs WiFi


def test_markov_availability_gives_offline_devices_and_dropouts_reproducibly(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet(
        {
            "profile": "nano33-ble-sense",
            "count": 30,
            "availability": {"kind": "markov", "mean_on_s": 60.0, "mean_off_s": 30.0},
        },
        memory_policy="head-only",
    )
    scenario = _scenario(fleet, rounds=4, clients_per_round=10)

    first = read_rounds(_go(write_scenario, tmp_path, scenario, "a"))
    second = read_rounds(_go(write_scenario, tmp_path, scenario, "b"))

    assert first == second
    assert sum(r["offline"] for r in first) > 0
    assert sum(r["dropouts"] for r in first) > 0
    assert all(r["participants"] + r["dropouts"] == r["selected"] for r in first)


def test_a_trace_says_who_is_online(write_scenario: Write, tmp_path: Path) -> None:
    (tmp_path / "online.csv").write_text("device,start,end\n1,0,1000000\n3,0,1000000\n")
    fleet = _fleet(
        {"profile": "rpi4", "count": 4, "availability": {"kind": "trace", "file": "online.csv"}}
    )

    out = _go(write_scenario, tmp_path, _scenario(fleet))

    assert {int(r["device_id"]) for r in _devices(out)} == {1, 3}
    assert all(r["offline"] == 2 and r["selected"] == 2 for r in read_rounds(out))


def test_bad_trace_rows_name_the_trace_file_and_line(write_scenario: Write, tmp_path: Path) -> None:
    (tmp_path / "online.csv").write_text("device,start,end\n1,0,10\n7,0,10\n")
    fleet = _fleet(
        {"profile": "rpi4", "count": 4, "availability": {"kind": "trace", "file": "online.csv"}}
    )

    with pytest.raises(FedsimError, match=r"online.csv:3: device 7 is not in this group"):
        run(write_scenario(_scenario(fleet)), tmp_path / "out")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"memory_policy": "head_only"},
            r"fleet.memory_policy: 'head_only' is not allowed \(did you mean 'head-only'\?\)",
        ),
        ({"payload_dtype": "float8"}, r"fleet.payload_dtype: 'float8' is not allowed"),
        (
            {"cost_model": "datasheets"},
            r"fleet.cost_model: unknown cost model 'datasheets'.*\(did you mean 'datasheet'\?\)",
        ),
    ],
)
def test_unknown_policies_are_located_and_suggest_the_closest(
    change: dict[str, str], match: str, write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(_scenario(_fleet({"profile": "rpi4", "count": 2}, **change)))

    with pytest.raises(FedsimError, match=rf"{path.name}:\d+: {match}"):
        run(path, tmp_path / "out")


def test_unknown_link_is_located_and_lists_the_profile_links(
    write_scenario: Write, tmp_path: Path
) -> None:
    path = write_scenario(
        _scenario(_fleet({"profile": "nano33-ble-sense", "count": 2, "link": "blee"}))
    )

    with pytest.raises(
        FedsimError,
        match=rf"{path.name}:\d+: fleet.groups\[0\].link: unknown link of 'nano33-ble-sense' "
        r"'blee'; known: ble \(did you mean 'ble'\?\)",
    ):
        run(path, tmp_path / "out")


def test_unknown_availability_kind_suggests_the_closest(
    write_scenario: Write, tmp_path: Path
) -> None:
    group = {"profile": "rpi4", "count": 2, "availability": {"kind": "markow"}}
    path = write_scenario(_scenario(_fleet(group)))

    with pytest.raises(FedsimError, match=r"unknown kind 'markow' \(did you mean 'markov'\?\)"):
        run(path, tmp_path / "out")


def test_the_fake_cost_model_gives_hand_checkable_times(
    write_scenario: Write, tmp_path: Path
) -> None:
    fleet = _fleet({"profile": "rpi4", "count": 1}, cost_model="fake", samples_per_device=10)

    out = _go(write_scenario, tmp_path, _scenario(fleet, rounds=1))

    model = build_model("mlp", 784, 10, 0)
    macs = footprint(model, (784,), 32).train_macs * 10  # 10 samples, 1 epoch
    payload = (784 * 32 + 32 + 32 * 10 + 10) * 4
    transfer = 0.1 + payload * 1e-6
    (row,) = _devices(out)
    assert float(row["busy_s"]) == pytest.approx(2 * transfer + macs * 1e-6, rel=1e-6)
    assert float(row["energy_mj"]) == pytest.approx(float(row["busy_s"]), rel=1e-6)


def test_summary_carries_time_and_energy(write_scenario: Write, tmp_path: Path) -> None:
    fleet = _fleet({"profile": "rpi4", "count": 2}, {"profile": "pico", "count": 2})

    result = run(write_scenario(_scenario(fleet, deadline_s=120.0)), tmp_path / "out")

    rounds = read_rounds(result.out)
    assert result.summary["sim_time_s"] == rounds[-1]["sim_time_s"] > 0
    assert result.summary["energy_j"] == pytest.approx(sum(r["energy_mj"] for r in rounds) / 1000)
    assert result.summary["memory_skips"] == 2 * 3  # the Picos, every round


def test_a_base_scenario_s_trace_path_is_relative_to_the_base(
    write_scenario: Write, tmp_path: Path
) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "online.csv").write_text("device,start,end\n0,0,1000000\n")
    group = {"profile": "rpi4", "count": 2, "availability": {"kind": "trace", "file": "online.csv"}}
    write_scenario(_scenario(_fleet(group)), "base/base.yaml")
    child = write_scenario("extends: base/base.yaml\nrounds: 1\n", "child.yaml")

    out = run(child, tmp_path / "out").out

    assert {int(r["device_id"]) for r in _devices(out)} == {0}
