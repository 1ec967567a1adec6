"""Edge topologies: one tier is the star, two and three tiers against numpy, failures, costs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import clients.work
from clients.app import make_client_app
from clients.work import train_device
from devices.fleet import load_fleet
from fedsim.core.algorithms.prototype_sums import report_bytes
from fedsim.core.cohort import CohortOrder
from fedsim.core.errors import FedsimError
from fedsim.core.hierarchy import WEIGHT_BYTES, uplink
from fedsim.core.models import get_arrays
from fedsim.core.records import CONFIG, NODE_GATEWAY, RunBinding
from fedsim.core.reduce import WeightedMean
from fedsim.core.scenario_load import merged_data
from fedsim.core.seeds import derive_seed
from fedsim.core.task_model import task_model
from fedsim.deploy import gateway_config_for
from fedsim.inline import FIRST_NODE_ID, InlineGrid, run_inline
from fedsim.pytest_plugin import FedsimRun, assert_same_run, small_scenario
from ontology.fleet_registry import FleetRegistry, query_path
from ontology.history import PARTICIPATION
from server.app import make_server_app
from tests.conftest import SCENARIOS
from tests.test_cli import fedsim
from tests.test_cohort import ALGORITHMS, _blobs
from tests.test_reconnaissance import _scenario as _recon

Run = Callable[..., FedsimRun]
Arrays = list[NDArray[np.float32]]


def _fleet_scenario(**top: Any) -> dict[str, Any]:
    """Nine devices that all train every layer: six behind gateways, three on the server."""
    return small_scenario(
        name="tiers",
        seed=3,
        fleet={
            "groups": [
                {"profile": "esp32-s3", "count": 6},
                {"profile": "rpi4", "count": 3},
            ],
            "partition": {"kind": "dirichlet", "alpha": 1.0},
        },
        **{"rounds": 2, **top},
    )


TWO_TIER: dict[str, Any] = {
    "gateways": [
        {"name": "floor-1", "profile": "rpi4", "link": "ethernet", "devices": {"ids": [0, 2, 4]}},
        {"name": "floor-2", "profile": "rpi4", "link": "wifi", "devices": {"ids": [1, 3, 5]}},
    ]
}
THREE_TIER: dict[str, Any] = {
    "gateways": [
        {"name": "edge", "profile": "rpi4", "link": "lte"},
        {"name": "floor-1", "parent": "edge", "link": "ethernet", "devices": {"count": 3}},
        {"name": "floor-2", "parent": "edge", "link": "wifi", "devices": {"count": 3}},
    ]
}


@pytest.mark.parametrize("mode", ["cohort", "per-device"])
@pytest.mark.parametrize("deadline", [None, 1.5])
def test_a_one_tier_topology_is_exactly_the_star(
    fedsim_run: Run, mode: str, deadline: float | None
) -> None:
    fleet = {
        "groups": [  # crashes, dropouts and (with the deadline) stragglers, all on the clock
            {"profile": "esp32-s3", "count": 6, "faults": {"crash_prob": 0.3}},
            {
                "profile": "nano33-ble-sense",
                "count": 3,
                "availability": {"kind": "markov", "mean_on_s": 3.0, "mean_off_s": 1.0},
            },
        ],
        "partition": {"kind": "dirichlet", "alpha": 1.0},
    }
    changes = {**FAKE, "fleet": fleet, "rounds": 5, "deadline_s": deadline}
    star = fedsim_run(_fleet_scenario(), mode=mode, changes=changes)
    one_tier = fedsim_run(_fleet_scenario(topology={"gateways": []}), mode=mode, changes=changes)
    assert_same_run(star, one_tier)  # rounds.jsonl, devices.csv and the model, exactly
    assert "topology" not in one_tier.summary
    events = [sum(r[k] for r in star.rounds) for k in ("failures", "dropouts")]
    assert all(events), events  # what could tell the two clocks apart happened


# -- the oracle: hierarchical FedAvg written out in numpy ----------------------------------------
def _as_received(arrays: Arrays, dtype: str) -> Arrays:
    return [a.astype(dtype).astype(np.float32) for a in arrays]


Model = tuple[list[NDArray[Any]], float]  # a model (or a partial's means) and its weight


def _mean(models: list[Model]) -> Model:
    """Σ wᵢ·xᵢ / Σ wᵢ per tensor, in float64, and Σ wᵢ."""
    total = sum(w for _, w in models)
    tensors = len(models[0][0])
    sums = [
        np.sum([a[t].astype(np.float64) * w for a, w in models], axis=0) for t in range(tensors)
    ]
    return [s / total for s in sums], total


def _oracle(path: Path, gateways: list[list[int]], direct: list[int], k: int, edge: bool) -> Arrays:
    """The global model after round 1, from the devices' own training and numpy sums: each
    gateway averages its devices for ``k`` local rounds (its devices start the next one from its
    average, rounded to the payload format), its last average goes up rounded to the payload
    format, an optional edge averages the gateways and rounds again, and the server averages
    what arrives with its direct devices' models."""
    scenario, fleet = load_fleet(path)
    data = fleet.data
    model = task_model(
        scenario, data.num_features, data.num_outputs, derive_seed(scenario.seed, "init")
    )
    dtype = scenario.fleet.payload_dtype
    received = _as_received(get_arrays(model), dtype)

    def train(d: int, arrays: Arrays, step: int) -> Model:
        update = train_device(scenario, fleet, d, 1, arrays, {}, step=step)
        return list(update.arrays), float(update.num_examples)

    def up(means: list[NDArray[Any]]) -> list[NDArray[Any]]:
        return [m.astype(dtype).astype(np.float64) for m in means]

    arrivals: list[Model] = []
    for ids in gateways:
        arrays = received
        for step in range(1, k + 1):
            means, weight = _mean([train(d, arrays, step) for d in ids])
            arrays = _as_received([m.astype(np.float32) for m in means], dtype)
        arrivals.append((up(means), weight))
    if edge:
        means, weight = _mean(arrivals)
        arrivals = [(up(means), weight)]
    means, _ = _mean(arrivals + [train(d, received, 1) for d in direct])
    return [m.astype(np.float32) for m in means]


@pytest.mark.parametrize(
    ("topology", "k", "dtype", "edge"),
    [
        (TWO_TIER, 1, "float16", False),
        (TWO_TIER, 3, "float32", False),
        (THREE_TIER, 2, "float16", True),
    ],
    ids=["two-tier-float16", "two-tier-3-local-rounds", "three-tier"],
)
@pytest.mark.parametrize("mode", ["cohort", "per-device"])
def test_hierarchical_aggregation_matches_numpy(
    fedsim_run: Run,
    fedsim_scenario: Callable[..., Path],
    topology: dict[str, Any],
    k: int,
    dtype: str,
    edge: bool,
    mode: str,
) -> None:
    changes = {"rounds": 1, "fleet.payload_dtype": dtype, "execution.mode": mode}
    scenario = _fleet_scenario(topology={**topology, "local_rounds": k})
    tiered = fedsim_run(scenario, changes=changes)
    gateways = [[0, 2, 4], [1, 3, 5]] if topology is TWO_TIER else [[0, 1, 2], [3, 4, 5]]
    expected = _oracle(fedsim_scenario(scenario, changes), gateways, [6, 7, 8], k, edge)
    got = list(tiered.model.values())
    for name, a, b in zip(tiered.model, got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7, err_msg=name)
    star = fedsim_run(_fleet_scenario(), changes=changes)  # the oracle tells them apart
    gap = max(float(np.abs(a - s).max()) for a, s in zip(got, star.model.values(), strict=True))
    assert gap > 1e-5  # a hundred times the tolerance above


def test_uplink_sends_weighted_means_in_the_payload_format() -> None:
    agg = WeightedMean()
    a = [np.array([1.0, 2.0], np.float32), np.array([[0.5]], np.float32)]
    b = [np.array([3.0, 6.0], np.float32), np.array([[0.1]], np.float32)]
    partial = agg.accumulate(agg.accumulate(agg.zero(), (a, 1)), (b, 3))
    sent, nbytes = uplink(partial, "float16")
    assert nbytes == 3 * 2 + WEIGHT_BYTES * 3  # 3 float16 values, a weight per tensor and in all
    out = agg.finalize(a, sent)
    np.testing.assert_array_equal(out[0], np.array([2.5, 5.0], np.float32))
    assert out[1][0, 0] == np.float32(np.float16(0.2))  # rounded once, on the uplink
    untrained = agg.accumulate(agg.zero(), (a, 2, (True, False)))
    assert uplink(untrained, "float32")[1] == 2 * 4 + WEIGHT_BYTES * 2  # only what trained goes up


# -- time, bytes and energy per tier -------------------------------------------------------------
FAKE = {"fleet.cost_model": "fake"}  # 0.1 s per message + 1 µs per byte, 1 µs per MAC


def test_per_tier_bytes_and_time_add_up(fedsim_run: Run) -> None:
    run = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=FAKE)
    first = run.rounds[0]
    device, gateway = first["tiers"]
    assert (device["tier"], gateway["tier"]) == ("device", "gateway")
    rows = [r for r in run.devices if r["round"] == "1"]
    assert device["bytes_down"] == sum(int(r["bytes_down"]) for r in rows) == first["bytes_down"]
    assert device["bytes_up"] == sum(int(r["bytes_up"]) for r in rows)
    model_bytes = sum(a.nbytes for a in run.model.values())
    assert gateway["bytes_down"] == 2 * model_bytes  # the model, once per gateway
    assert gateway["bytes_up"] == 2 * (model_bytes + WEIGHT_BYTES * (len(run.model) + 1))
    behind = [r for r in rows if int(r["device_id"]) < 6]
    assert gateway["star_bytes"] == sum(int(r["bytes_down"]) + int(r["bytes_up"]) for r in behind)
    # the slowest branch: model down the uplink, the devices' round, the partial up
    assert device["s"] + gateway["s"] == pytest.approx(first["round_s"], rel=1e-9)
    uplink_s = 2 * 0.1 + (model_bytes + gateway["bytes_up"] // 2) * 1e-6
    assert gateway["s"] == pytest.approx(uplink_s, rel=1e-6)
    assert first["gateway_energy_mj"] > 0
    t = run.summary["topology"]
    assert t["backhaul_bytes"] == sum(
        r["tiers"][1]["bytes_down"] + r["tiers"][1]["bytes_up"] for r in run.rounds
    )
    assert t["backhaul_vs_star"] == pytest.approx(
        t["backhaul_bytes"] / t["backhaul_bytes_star"], rel=1e-3
    )
    assert [g["name"] for g in t["gateways"]] == ["floor-1", "floor-2"]


def test_local_rounds_multiply_device_work_not_backhaul(fedsim_run: Run) -> None:
    once = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=FAKE)
    thrice = fedsim_run(_fleet_scenario(topology={**TWO_TIER, "local_rounds": 3}), changes=FAKE)
    a, b = once.rounds[0]["tiers"], thrice.rounds[0]["tiers"]
    assert b[0]["bytes_down"] - a[0]["bytes_down"] == 2 * sum(
        int(r["bytes_down"]) for r in once.devices if r["round"] == "1" and int(r["device_id"]) < 6
    )
    assert (b[1]["bytes_down"], b[1]["bytes_up"]) == (a[1]["bytes_down"], a[1]["bytes_up"])
    assert once.summary["device_rounds"]["trained"] == 2 * 9  # two global rounds
    assert thrice.summary["device_rounds"]["trained"] == 2 * (6 * 3 + 3)  # direct devices: once
    behind = [r for r in thrice.devices if r["round"] == "1" and int(r["device_id"]) < 6]
    first = {r["device_id"]: r for r in once.devices if r["round"] == "1"}
    for row in behind:  # three local rounds' examples, three times the busy time
        assert int(row["num_examples"]) == 3 * int(first[row["device_id"]]["num_examples"])
        assert float(row["busy_s"]) == pytest.approx(3 * float(first[row["device_id"]]["busy_s"]))


# -- gateway failures ----------------------------------------------------------------------------
def _outage(start: float, end: float) -> dict[str, Any]:
    gateways = [dict(g) for g in TWO_TIER["gateways"]]
    gateways[1]["availability"] = {"kind": "outages", "spells": [{"start_s": start, "end_s": end}]}
    return {"gateways": gateways}


def _status(run: FedsimRun, round_: int) -> dict[int, str]:
    return {int(r["device_id"]): r["status"] for r in run.devices if int(r["round"]) == round_}


def test_a_gateway_down_at_the_start_takes_its_devices_with_it(fedsim_run: Run) -> None:
    run = fedsim_run(_fleet_scenario(topology=_outage(0.0, 1e6)), changes=FAKE)
    for round_ in (1, 2):
        status = _status(run, round_)
        assert [status[d] for d in (1, 3, 5)] == ["gateway-down"] * 3
        assert [status[d] for d in (0, 2, 4, 6, 7, 8)] == ["ok"] * 6
    first = run.rounds[0]
    assert (first["gateways_down"], first["gateway_cut"], first["participants"]) == (1, 3, 6)
    assert first["failures"] == 0  # cut off, not failed
    assert run.summary["topology"]["gateway_cut"] == 6


def test_a_partial_survives_an_outage_that_ends_before_the_deadline(fedsim_run: Run) -> None:
    one = {**FAKE, "rounds": 1}
    calm = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=one)
    ready = calm.rounds[0]["round_s"]  # floor-2's partial is ready just before this
    late = fedsim_run(
        _fleet_scenario(topology=_outage(ready / 2, ready + 5.0), deadline_s=ready + 10.0),
        changes=one,
    )
    first = late.rounds[0]
    assert (first["gateways_late"], first["gateways_lost"], first["participants"]) == (1, 0, 9)
    up = calm.rounds[0]["tiers"][1]["bytes_up"] // 2 * 1e-6 + 0.1
    assert first["round_s"] == pytest.approx(ready + 5.0 + up, rel=1e-6)  # back, then up
    assert first["tiers"][1]["s"] == pytest.approx(first["round_s"] - first["tiers"][0]["s"])
    assert all(s == "ok" for s in _status(late, 1).values())
    for name, value in calm.model.items():  # nothing was lost, only late
        np.testing.assert_array_equal(late.model[name], value)


def test_a_partial_that_misses_the_deadline_is_lost_with_its_devices_work(
    fedsim_run: Run, fedsim_scenario: Callable[..., Path]
) -> None:
    calm = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=FAKE)
    ready = calm.rounds[0]["round_s"]
    scenario = _fleet_scenario(topology=_outage(ready / 2, 1e6), deadline_s=ready + 10.0)
    lost = fedsim_run(scenario, changes={**FAKE, "rounds": 1})
    first = lost.rounds[0]
    assert (first["gateways_lost"], first["gateway_cut"], first["participants"]) == (1, 3, 6)
    assert first["round_s"] == pytest.approx(ready + 10.0)  # the server waited for the deadline
    status = _status(lost, 1)
    assert [status[d] for d in (1, 3, 5)] == ["gateway-lost"] * 3
    rows = {int(r["device_id"]): r for r in lost.devices}
    assert all(int(rows[d]["bytes_up"]) > 0 and float(rows[d]["energy_mj"]) > 0 for d in (1, 3, 5))
    assert lost.rounds[0]["tiers"][1]["bytes_up"] == calm.rounds[0]["tiers"][1]["bytes_up"] // 2
    path = fedsim_scenario(scenario, {**FAKE, "rounds": 1})
    expected = _oracle(path, [[0, 2, 4]], [6, 7, 8], 1, False)  # floor-2's partial never came
    for a, b in zip(lost.model.values(), expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)


def test_markov_gateways_are_reproducible_and_the_same_in_both_modes(fedsim_run: Run) -> None:
    gateways = [
        {**g, "availability": {"kind": "markov", "mean_on_s": 3.0, "mean_off_s": 2.0}}
        for g in THREE_TIER["gateways"]
    ]
    scenario = _fleet_scenario(
        topology={"gateways": gateways, "local_rounds": 2}, deadline_s=6.0, rounds=6
    )
    cohort = fedsim_run(scenario, changes=FAKE)
    again = fedsim_run(scenario, changes=FAKE)
    per_device = fedsim_run(scenario, mode="per-device", changes=FAKE)
    workers = fedsim_run(
        scenario, changes={**FAKE, "execution.actors": 3, "execution.vectorize": False}
    )
    assert_same_run(cohort, again)
    assert_same_run(cohort, per_device)
    assert_same_run(cohort, workers)
    events = {
        k: sum(r[k] for r in cohort.rounds)
        for k in ("gateways_down", "gateways_late", "gateways_lost")
    }
    assert sum(events.values()) > 0, events  # the outages were exercised


# -- bad topologies: one located line each ------------------------------------------------------
def _gw(name: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "profile": "rpi4", **spec}


@pytest.mark.parametrize(
    ("topology", "expected"),
    [
        (
            {"gateways": [_gw("a", devices={"count": 3}), _gw("a", devices={"count": 3})]},
            r"topology\.gateways\[1\]\.name: 'a' names two gateways",
        ),
        (
            {
                "gateways": [
                    _gw("a", parent="edje", devices={"count": 3}),
                    _gw("edge", devices={"count": 3}),
                ]
            },
            r"topology\.gateways\[0\]\.parent: unknown gateway 'edje'.*did you mean 'edge'",
        ),
        (
            {
                "gateways": [
                    _gw("a", parent="b", devices={"count": 2}),
                    _gw("b", parent="c"),
                    _gw("c", parent="b"),
                ]
            },
            r"topology\.gateways\[1\]\.parent: gateways b → c → b report in a cycle",
        ),
        ({"gateways": [_gw("lonely")]}, r"gateways\[0\]\.devices: gateway 'lonely' has no devices"),
        (
            {
                "gateways": [
                    _gw("e", devices={"count": 2}),
                    _gw("f", parent="e", devices={"count": 2}),
                ]
            },
            r"gateways\[0\]\.devices: gateway 'e' has devices and gateways \(f\) below it",
        ),
        (
            {"gateways": [_gw("a", devices={"count": 2, "ids": [1]})]},
            r"gateways\[0\]\.devices: give exactly one of count, groups, ids, names or query "
            r"\(got count, ids\)",
        ),
        (
            {"gateways": [_gw("a", devices={"count": 10})]},
            r"gateways\[0\]\.devices\.count: 10 devices asked for, 9 are behind no gateway yet",
        ),
        (
            {"gateways": [_gw("a", devices={"groups": [0]}), _gw("b", devices={"ids": [5, 6]})]},
            r"gateways\[1\]\.devices: device 5 is already behind gateway 'a'",
        ),
        (
            {"gateways": [_gw("a", devices={"groups": [2]})]},
            r"gateways\[0\]\.devices\.groups: no fleet group 2 \(the fleet has 2\)",
        ),
        (
            {"gateways": [_gw("a", devices={"ids": [9]})]},
            r"gateways\[0\]\.devices\.ids: no device 9 \(the fleet has 9\)",
        ),
        (
            {"gateways": [_gw("a", devices={"names": ["room-1"]})]},
            r"gateways\[0\]\.devices\.names: no fleet device is named 'room-1'",
        ),
        (
            {"gateways": [_gw("a", profile="rpi5", devices={"count": 2})]},
            r"gateways\[0\]\.profile: unknown .*'rpi5'.*did you mean 'rpi4'",
        ),
        (
            {"gateways": [_gw("a", link="lora", devices={"count": 2})]},
            r"gateways\[0\]\.link: unknown link of 'rpi4' 'lora'; known: ble, ethernet, lte, wifi",
        ),
        (
            {"gateways": [_gw("a", link="lte", devices={"count": 2})], "local_rounds": 0},
            r"topology\.local_rounds: must be at least 1, got 0",
        ),
    ],
)
def test_a_bad_topology_is_one_located_line(
    write_scenario: Callable[..., Path], topology: dict[str, Any], expected: str
) -> None:
    path = write_scenario(_fleet_scenario(topology=topology), "s.yaml")
    with pytest.raises(FedsimError) as info:
        load_fleet(path)
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(str(path))
    assert re.search(expected, lines[0]), lines[0]


def test_prototype_averaging_refuses_local_rounds(write_scenario: Callable[..., Path]) -> None:
    base = Path(__file__).parent.parent / "scenarios" / "reconnaissance"
    scenario = sorted(base.glob("*.yaml"))[0]
    data = merged_data(scenario)
    data["topology"] = {"gateways": [_gw("a", devices={"count": 1})], "local_rounds": 2}
    path = write_scenario(data, "s.yaml")
    with pytest.raises(FedsimError, match=r"topology\.local_rounds: prototype averaging"):
        load_fleet(path)


# -- the Flower mapping: a gateway is a node whose ClientApp fans out to its devices -------------
def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[int], int]]:
    """(node, gateways in its order, direct devices in it) of every cohort order sent."""
    sent: list[tuple[int, list[int], int]] = []
    push = InlineGrid.push_messages

    def spy(self: InlineGrid, messages: Any) -> Any:
        messages = list(messages)
        for m in messages:
            order = CohortOrder.from_config(m.content[CONFIG]) if CONFIG in m.content else None
            if order is not None:
                gateways = [g for g, _ in order.gateways]
                sent.append((m.metadata.dst_node_id, gateways, len(order.device_ids)))
        return push(self, messages)

    monkeypatch.setattr(InlineGrid, "push_messages", spy)
    return sent


def test_a_gateway_node_gets_its_gateways_work(
    fedsim_scenario: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(fedsim_scenario(_fleet_scenario(topology=TWO_TIER)))
    sent = _spy(monkeypatch)
    plain = RunBinding(path, str(tmp_path / "plain"))
    run_inline(make_server_app(plain), make_client_app(plain), 3)
    assert {node for node, gateways, _ in sent if 1 in gateways} == {FIRST_NODE_ID + 1}  # in turn
    sent.clear()
    played = RunBinding(path, str(tmp_path / "played"))
    # node 2 is the floor-2 Pi: flower-supernode --node-config "partition-id=2 gateway='floor-2'"
    run_inline(make_server_app(played), make_client_app(played), 3, {2: {NODE_GATEWAY: "floor-2"}})
    floor_2 = {node for node, gateways, _ in sent if 1 in gateways}
    assert floor_2 == {FIRST_NODE_ID + 2}
    assert {node for node, gateways, _ in sent if 0 in gateways} == {FIRST_NODE_ID}
    assert all(direct == 0 for node, _, direct in sent if node == FIRST_NODE_ID + 2)  # only its own
    assert_same_run(FedsimRun.read(tmp_path / "plain"), FedsimRun.read(tmp_path / "played"))


def test_a_node_playing_an_unknown_gateway_is_refused(
    fedsim_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    path = str(fedsim_scenario(_fleet_scenario(topology=TWO_TIER)))
    binding = RunBinding(path, str(tmp_path / "out"))
    with pytest.raises(FedsimError, match=r"node 1001 plays gateway 'floor-9'.*gateway='…'"):
        run_inline(
            make_server_app(binding), make_client_app(binding), 2, {1: {NODE_GATEWAY: "floor-9"}}
        )


# -- the building scenario, end to end -----------------------------------------------------------
def test_building_gateways_runs_end_to_end_and_reports_its_tiers(fedsim_run: Run) -> None:
    run = fedsim_run(SCENARIOS / "building-gateways.yaml", rounds=5)
    topology = run.summary["topology"]
    assert [(g["name"], g["devices"], g["link"]) for g in topology["gateways"]] == [
        ("floor-1", 8, "ethernet"),
        ("floor-2", 8, "ethernet"),
        ("floor-3", 8, "lte"),
    ]
    assert topology["backhaul_vs_star"] < 0.1  # 3 partials instead of 24 devices' traffic × 2
    assert (run.final_accuracy or 0.0) > 0.9
    assert all([t["tier"] for t in r["tiers"]] == ["device", "gateway"] for r in run.rounds)
    report = (run.out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Tiers</h2>" in report
    assert 'alt="Bytes and time per tier' in report
    assert "<td>floor-3<td>rpi4<td>8<td>lte" in report
    assert f"<td>{topology['tiers']['gateway']['bytes_up']:,}<td>" in report
    # the run's gateways in its participation graph: who was behind floor-2 in this run
    data = [SCENARIOS / "fleets" / "building.ttl", run.out / PARTICIPATION]
    with FleetRegistry.open(data) as registry:
        rows = registry.query(
            query_path("devices-behind-gateway"), {"gatewayName": f"{run.out.name}-gw-floor-2"}
        )
    assert [str(r["name"]) for r in rows] == [f"room-2-{i}" for i in range(1, 9)]


def test_an_outage_over_before_the_partial_is_ready_delays_nothing(fedsim_run: Run) -> None:
    one = {**FAKE, "rounds": 1}
    calm = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=one)
    ready = calm.rounds[0]["round_s"]
    brief = fedsim_run(_fleet_scenario(topology=_outage(ready / 4, ready / 2)), changes=one)
    assert brief.rounds[0]["gateways_late"] == 0
    assert brief.rounds[0]["round_s"] == calm.rounds[0]["round_s"]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_through_gateways_is_the_same_in_both_modes(
    fedsim_run: Run, algorithm: str
) -> None:
    topology = {
        "local_rounds": 2,
        "gateways": [
            _gw("pis", link="ethernet", devices={"groups": [0]}),
            _gw("esps", link="wifi", devices={"ids": [14, 15, 16, 17, 18, 19]}),
        ],
    }
    per_device = fedsim_run(_blobs({"mode": "per-device"}, algorithm, topology=topology))
    cohort = fedsim_run(
        _blobs({"mode": "cohort", "vectorize": False, "actors": 3}, algorithm, topology=topology)
    )
    assert_same_run(per_device, cohort)
    assert sum(r["failures"] for r in cohort.rounds) > 0  # the faults were exercised


def test_prototype_reports_go_up_through_a_gateway_unchanged(fedsim_run: Run) -> None:
    gateway = {"gateways": [_gw("floor", link="wifi", devices={"ids": [0, 2]})]}
    star = fedsim_run(_recon())
    per_device = fedsim_run(_recon(topology=gateway), mode="per-device")
    cohort = fedsim_run(_recon(topology=gateway), mode="cohort")
    assert_same_run(per_device, cohort)
    for name, value in star.model.items():  # sums and counts merge exactly, in any grouping
        np.testing.assert_allclose(cohort.model[name], value, rtol=1e-12, atol=1e-9)
    first = cohort.rounds[0]["tiers"]
    assert first[1]["bytes_up"] == 2 * report_bytes(4, 64)  # two reports, forwarded as sent


def test_a_gateway_supernode_gets_the_gateway_node_config(
    fedsim_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    path = fedsim_scenario(_fleet_scenario(topology=THREE_TIER))
    assert gateway_config_for(path, "floor-2") == (2, {"partition-id": 2, "gateway": "floor-2"})
    with pytest.raises(FedsimError, match=r"--gateway: unknown gateway with devices 'edge'"):
        gateway_config_for(path, "edge")  # an edge server runs no devices: the server plays it
    per_device = fedsim_scenario(
        _fleet_scenario(topology=THREE_TIER), {"execution.mode": "per-device"}
    )
    with pytest.raises(FedsimError, match=r"needs execution\.mode: cohort"):
        gateway_config_for(per_device, "floor-1")
    both = fedsim(
        "deploy", "supernode", tmp_path, "--scenario", path, "--device", "1", "--gateway", "floor-1"
    )
    assert both.returncode != 0
    assert "--device/--gateway: give exactly one of them" in both.stderr


def test_an_upload_cut_by_a_second_outage_is_lost(fedsim_run: Run) -> None:
    one = {**FAKE, "rounds": 1}
    calm = fedsim_run(_fleet_scenario(topology=TWO_TIER), changes=one)
    ready = calm.rounds[0]["round_s"]
    topology = _outage(ready / 4, ready / 2)
    spells = topology["gateways"][1]["availability"]["spells"]
    spells.append({"start_s": ready * 0.75, "end_s": 1e6})  # back, then down again for good
    run = fedsim_run(_fleet_scenario(topology=topology, deadline_s=ready + 10.0), changes=one)
    assert (run.rounds[0]["gateways_lost"], run.rounds[0]["gateway_cut"]) == (1, 3)


def test_devices_and_gateways_account_for_the_whole_round(fedsim_run: Run) -> None:
    """Fake energy: 1 mW busy, 0.001 mW idle; a device waiting for the model is idle, and a
    gateway no selected device needs still idles."""
    run = fedsim_run(
        _fleet_scenario(topology=THREE_TIER, clients_per_round=2), changes={**FAKE, "rounds": 4}
    )
    for r in run.rounds:
        for row in (d for d in run.devices if int(d["round"]) == r["round"]):
            busy, energy = float(row["busy_s"]), float(row["energy_mj"])
            idle = (energy - busy) / 0.001
            assert busy + idle == pytest.approx(r["round_s"], abs=1e-4), row  # 9 digits ÷ 0.001
        assert r["gateway_energy_mj"] >= 3 * 0.001 * r["round_s"] * (1 - 1e-9)


def test_a_gateway_runs_its_devices_in_windows_that_never_change_the_model(
    fedsim_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = {"local_rounds": 2, "gateways": [_gw("pis", devices={"groups": [0]})]}
    scenario = _blobs({"mode": "cohort", "vectorize": False}, "fedavg", topology=topology)
    whole = fedsim_run(scenario)
    monkeypatch.setattr(clients.work, "WINDOW", 3)  # 14 devices behind it: 5 windows a round
    windows = fedsim_run(scenario)
    assert_same_run(whole, windows)


def test_a_gateway_takes_its_profile_and_uplink_from_the_registry(
    fedsim_scenario: Callable[..., Path],
) -> None:
    scenario = merged_data(SCENARIOS / "building-gateways.yaml")
    gateways = scenario["topology"]["gateways"]
    gateways[1]["link"] = "wifi"  # what the scenario says wins
    gateways[2]["devices"] = {"ids": list(range(16, 23))}  # room 3-8 moves to the annex
    gateways.append({"name": "annex", "devices": {"ids": [23]}})
    _, fleet = load_fleet(fedsim_scenario(scenario))
    assert fleet.topology is not None
    got = [(g.name, g.profile.name, g.link_type.kind) for g in fleet.topology.gateways]
    assert got == [
        ("floor-1", "rpi4", "ethernet"),  # building.ttl: uplinkKind "ethernet"
        ("floor-2", "rpi4", "wifi"),
        ("floor-3", "rpi4", "lte"),
        ("annex", "rpi4", "wifi"),  # not in the registry: rpi4, its preferred link
    ]
