"""Asynchronous federations (issue 25): staleness weights, FedBuff and FedAsync against numbers
worked by hand, the engine against an oracle, event order, dropouts mid-training, equality of the
execution modes, and the settings refused."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedsim.core.asynchrony import Arrival, fedasync_update, fedbuff_update, staleness_weight
from fedsim.core.errors import RunStoppedError
from fedsim.core.scenario import Scenario
from fedsim.pytest_plugin import FedsimRun, assert_same_run, small_scenario

Run = Callable[..., FedsimRun]


def _async(**spec: Any) -> dict[str, Any]:
    base = {"strategy": "fedbuff", "buffer_size": 2, "concurrency": 4, "server_lr": 1.0}
    return {**base, **spec}


@pytest.mark.parametrize(
    ("tau", "kind", "a", "b", "expected"),
    [
        (0, "constant", 0.5, 4, 1.0),
        (9, "constant", 0.5, 4, 1.0),
        (0, "polynomial", 0.5, 4, 1.0),
        (3, "polynomial", 0.5, 4, 0.5),  # (1 + 3)^-0.5
        (7, "polynomial", 1.0, 4, 0.125),
        (2, "hinge", 1.0, 2, 1.0),  # up to b: full
        (4, "hinge", 1.0, 2, 1 / 3),  # 1 / (1·(4 − 2) + 1)
        (6, "hinge", 0.5, 2, 1 / 3),  # 1 / (0.5·4 + 1)
    ],
)
def test_staleness_weights(tau: int, kind: Any, a: float, b: int, expected: float) -> None:
    assert staleness_weight(tau, kind, a, b) == pytest.approx(expected)


def test_staleness_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        staleness_weight(-1, "constant")


def test_fedbuff_update_by_hand() -> None:
    """θ = [1, 1]; device 1 started from [1, 1] and sent [2, 0] (weight 1), device 2 started
    from [0, 0] and sent [0, 3] (weight 0.5); K = 2, η = 2:
    change = 1·[1, −1] + 0.5·[0, 3] = [1, 0.5]; θ + 2 · change / 2 = [2, 1.5]."""
    theta = [np.array([1.0, 1.0], np.float32)]
    arrivals = [
        Arrival([np.array([2.0, 0.0], np.float32)], [np.array([1.0, 1.0], np.float32)], 1.0),
        Arrival([np.array([0.0, 3.0], np.float32)], [np.array([0.0, 0.0], np.float32)], 0.5),
    ]
    (out,) = fedbuff_update(theta, arrivals, server_lr=2.0)
    np.testing.assert_array_equal(out, [2.0, 1.5])
    assert out.dtype == np.float32


def test_a_head_only_arrival_leaves_the_body_alone() -> None:
    """A head-only device sends its body back as it got it (a stale version): FedAsync must not
    mix that in, and FedBuff averages each tensor over the arrivals that trained it."""
    body, head = np.array([5.0], np.float32), np.array([1.0], np.float32)
    stale = [np.array([0.0], np.float32), np.array([0.0], np.float32)]
    sent = [np.array([0.0], np.float32), np.array([3.0], np.float32)]  # body as received
    arrival = Arrival(sent, stale, 1.0, (False, True))
    mixed = fedasync_update([body, head], arrival, alpha=0.5)
    np.testing.assert_array_equal(mixed[0], body)
    np.testing.assert_array_equal(mixed[1], [2.0])
    full = Arrival([np.array([1.0], np.float32), np.array([1.0], np.float32)], stale, 1.0)
    buffered = fedbuff_update([body, head], [arrival, full], server_lr=1.0)
    np.testing.assert_array_equal(buffered[0], [6.0])  # body: only the full device, K_t = 1
    np.testing.assert_array_equal(buffered[1], [3.0])  # head: (3 + 1) / 2


def test_fedasync_update_by_hand() -> None:
    """α = 0.5 and s(τ) = 0.5 mix a quarter of the device's model in."""
    theta = [np.array([4.0, 0.0], np.float32)]
    arrival = Arrival([np.array([0.0, 8.0], np.float32)], theta, 0.5)
    (out,) = fedasync_update(theta, arrival, alpha=0.5)
    np.testing.assert_array_equal(out, [3.0, 2.0])


def _one_device(**top: Any) -> dict[str, Any]:
    scenario = small_scenario(rounds=1, **top)
    scenario["fleet"]["groups"] = [{"profile": "rpi4", "count": 1}]
    return scenario


def test_the_engine_applies_fedbuff_as_the_oracle_says(fedsim_run: Run) -> None:
    """One device, K = C = 1, constant weighting: the server moves θ0 + η (θ1 − θ0), where θ1
    is the device's model. At η = 1 that is a round of FedAvg with its one device; and the
    step is linear in η: θ(1) − θ(0.5) = 2 (θ(0.5) − θ(0.25))."""
    synchronous = list(fedsim_run(_one_device()).model.values())

    def at(lr: float) -> list[np.ndarray]:
        spec = _async(buffer_size=1, concurrency=1, server_lr=lr)
        spec["staleness"] = {"kind": "constant"}
        model = fedsim_run(_one_device(asynchrony=spec)).model
        return [a.astype(np.float64) for a in model.values()]

    full, half, quarter = at(1.0), at(0.5), at(0.25)
    for got, expected in zip(full, synchronous, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    for f, h, q in zip(full, half, quarter, strict=True):
        assert np.abs(f - h).max() > 1e-4  # the device did move the model
        np.testing.assert_allclose(f - h, 2 * (h - q), rtol=0, atol=1e-5)


def test_events_staleness_and_versions_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three devices, C = 3, K = 2, polynomial weighting (a = 0.5), η = 1. Rounds last 1, 2 and
    5 s (devices 0, 1, 2); a device's model is the version it started from plus its own fixed
    change δ_d = d + 1. By hand:

    - t = 0: all three start from v0. t = 1: device 0 arrives (buffer 1) and restarts from v0.
    - t = 2: device 0 (restarted) and device 1 arrive together: by id, device 0 first; the
      buffer is full: v1 = v0 + (δ0 + δ0) / 2, staleness [0, 0]. Device 0 restarts from v1.
    - t = 2, then: device 1 (from v0, τ = 1) arrives, restarts from v1. t = 3: device 0 (from
      v1, τ = 0): v2 = v1 + (2^-0.5 δ1 + δ0) / 2.
    """
    from devices.clock import DevicePlan
    from server.asynchrony import AsyncServer

    seconds = {0: 1.0, 1: 2.0, 2: 5.0}

    class Costs:
        def available(self, t: float) -> None:
            return None

        def scope(self, d: int) -> str:
            return "full"

        def sent(self, d: int) -> tuple[bool, ...]:
            return (True,)

        def next_online(self, ids: list[int], t: float) -> float:
            return t if ids else float("inf")

        def plan(self, ids: list[int], t: float, round_: int = 1) -> list[DevicePlan]:
            return [DevicePlan(d, "train", "full", 0, 0, 0.0, seconds[d], 0.0) for d in ids]

    scenario = Scenario.model_validate(
        {**small_scenario(), "fleet": {"groups": [{"profile": "rpi4", "count": 3}]},
         "asynchrony": _async(buffer_size=2, concurrency=3)}
    )  # fmt: skip
    model = type("Model", (), {"state_dict": lambda self: {"w": 0}})()
    ctx = SimpleNamespace(
        scenario=scenario,
        fleet=[0, 1, 2],
        costs=Costs(),
        clock=0.0,
        global_arrays=[np.array([0.0], np.float32)],
        model=model,
    )
    server = AsyncServer(ctx)  # type: ignore[arg-type]

    def train(job: Any) -> None:
        job.arrays = [job.start[0] + np.float32(job.device_id + 1)]
        job.outcome = None

    monkeypatch.setattr(server, "_train", train)
    monkeypatch.setattr("server.asynchrony.check_global", lambda *a: None)
    monkeypatch.setattr(server, "_device_record", lambda round_, job: job)
    monkeypatch.setattr(server, "_record", lambda *a: a[-1])
    taus1, ended1, _ = server.update(1)
    assert taus1 == [0, 0]
    assert [j.device_id for j in ended1] == [0, 0]
    assert ctx.global_arrays[0][0] == pytest.approx(1.0)  # v0 + (1 + 1) / 2
    assert ctx.clock == 2.0
    taus2, ended2, _ = server.update(2)
    assert taus2 == [1, 0]
    assert [j.device_id for j in ended2] == [1, 0]
    assert ctx.clock == 3.0
    assert ctx.global_arrays[0][0] == pytest.approx(1.0 + (2 * 2**-0.5 + 1) / 2, abs=1e-6)


def _fleet(**top: Any) -> dict[str, Any]:
    """Fast Pis (~0.04 s a round) and slow Picos (soft float, USB serial: ~5 s) that are online
    ~2 s at a time, so most of their rounds are cut."""
    scenario = small_scenario(rounds=6, **top)
    scenario["fleet"]["groups"] = [
        {"profile": "rpi4", "count": 3, "faults": {"crash_prob": 0.2}},
        {
            "profile": "pico",
            "count": 3,
            "availability": {"kind": "markov", "mean_on_s": 2.0, "mean_off_s": 1.0},
        },
    ]
    return scenario


def test_fast_devices_arrive_first_and_more_often(fedsim_run: Run) -> None:
    run = fedsim_run(_fleet(asynchrony=_async()))
    first = [r for r in run.devices if r["round"] == "1"]
    assert {r["profile"] for r in first} == {"rpi4"}  # a Pi round trip beats a Pico's
    counts = collections.Counter(r["profile"] for r in run.devices if r["status"] == "ok")
    assert counts["rpi4"] > counts["pico"]
    assert all(r["staleness"] is not None for r in run.rounds)
    assert all(r["participants"] == 2 == len(r["staleness"]) for r in run.rounds)
    times = [r["sim_time_s"] for r in run.rounds]
    assert times == sorted(times)
    assert (run.out / "plots" / "asynchrony.png").exists()  # staleness and participation
    assert "Asynchrony: staleness" in (run.out / "report.html").read_text(encoding="utf-8")


def test_a_synchronous_run_records_no_staleness(fedsim_run: Run) -> None:
    run = fedsim_run(small_scenario(rounds=1))
    assert "staleness" not in (run.out / "rounds.jsonl").read_text(encoding="utf-8")
    assert not (run.out / "plots" / "asynchrony.png").exists()


def test_arrivals_are_taken_in_time_order_ties_by_device_id(fedsim_run: Run) -> None:
    """Five devices start together at t = 0 (concurrency 5); FedAsync takes one arrival per
    update: in order of arrival time (their busy seconds), ties by device id. The fake cost model
    charges by examples, and the iid split gives some devices equal counts: real ties."""
    scenario = small_scenario(rounds=5, asynchrony=_async(strategy="fedasync", concurrency=5))
    scenario["fleet"]["cost_model"] = "fake"
    scenario["fleet"]["partition"] = {"kind": "iid"}
    run = fedsim_run(scenario)
    order = [(float(r["busy_s"]), int(r["device_id"])) for r in run.devices]
    assert len(order) == 5
    assert order == sorted(order)
    assert len({busy for busy, _ in order}) < 5  # at least one tie was broken by id
    assert [r["staleness"] for r in run.rounds] == [[0], [1], [2], [3], [4]]


def test_a_device_that_goes_offline_mid_training_sends_nothing(fedsim_run: Run) -> None:
    """One Pi (~0.04 s a round) keeps the updates coming while three Picos (~5 s a round,
    online ~2 s at a time) mostly drop out before they finish."""
    scenario = {**_fleet(asynchrony=_async(strategy="fedasync", concurrency=4)), "rounds": 100}
    scenario["fleet"]["groups"][0] = {"profile": "rpi4", "count": 1}
    run = fedsim_run(scenario)
    dropped = [r for r in run.devices if r["status"] == "dropout"]
    assert dropped, "the Picos' ~2 s online spells must cut some of their ~5 s rounds"
    assert all(r["bytes_up"] == "0" and r["profile"] == "pico" for r in dropped)
    assert sum(r["dropouts"] for r in run.rounds) == len(dropped)
    assert sum(len(r["staleness"]) for r in run.rounds) == 100  # updates still come
    delivered = sum(r["status"] == "ok" for r in run.devices)
    assert delivered == 100


def test_both_execution_modes_give_the_same_run(fedsim_run: Run) -> None:
    """Crashes and Markov availability included: byte-identical rows and model."""
    scenario = _fleet(asynchrony=_async())
    assert_same_run(fedsim_run(scenario, mode="per-device"), fedsim_run(scenario, mode="cohort"))


def test_a_device_coming_online_fills_a_free_slot_at_once(fedsim_run: Run, tmp_path: Path) -> None:
    """Device 1 is online from t = 5 only: with a slot free it starts at 5 exactly, not at the
    next arrival of device 0 after 5."""
    trace = tmp_path / "trace.csv"
    trace.write_text("device,start,end\n1,5.0,1000.0\n", encoding="utf-8")
    scenario = small_scenario(rounds=160, asynchrony=_async(strategy="fedasync", concurrency=2))
    scenario["fleet"]["groups"] = [
        {"profile": "rpi4", "count": 1},
        {"profile": "rpi4", "count": 1, "availability": {"kind": "trace", "file": str(trace)}},
    ]
    run = fedsim_run(scenario)
    first = next(r for r in run.devices if r["device_id"] == "1")
    arrived = run.rounds[int(first["round"]) - 1]["sim_time_s"]
    assert arrived == pytest.approx(5.0 + float(first["busy_s"]), abs=1e-6)


def test_devices_still_training_are_accounted(fedsim_run: Run) -> None:
    run = fedsim_run(_fleet(asynchrony=_async()))
    started = sum(r["selected"] for r in run.rounds)
    assert started == len(run.devices) + run.rounds[-1]["in_flight"]["devices"]
    assert all(r["in_flight"]["devices"] <= 4 for r in run.rounds)


def test_a_run_where_nothing_is_ever_delivered_stops(fedsim_run: Run) -> None:
    scenario = small_scenario(asynchrony=_async())
    scenario["fleet"]["groups"] = [{"profile": "rpi4", "count": 4, "faults": {"crash_prob": 1.0}}]
    with pytest.raises(RunStoppedError, match="delivered nothing"):
        fedsim_run(scenario)


def test_the_number_of_workers_never_changes_an_asynchronous_run(fedsim_run: Run) -> None:
    scenario = _fleet(asynchrony=_async())
    one = fedsim_run(scenario, mode="cohort", execution__actors=1)
    assert_same_run(one, fedsim_run(scenario, mode="cohort", execution__actors=3))


def test_same_scenario_same_run(fedsim_run: Run) -> None:
    scenario = _fleet(asynchrony=_async(strategy="fedasync", server_lr=0.6))
    assert_same_run(fedsim_run(scenario), fedsim_run(scenario))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"algorithm": {"kind": "tinyol"}}, "asynchrony"),
        ({"deadline_s": 10.0}, "deadline_s"),
        ({"clients_per_round": 2}, "clients_per_round"),
        (
            {"algorithm": {"kind": "tinyreptile", "epsilon": 0.5}},
            "algorithm.epsilon",
        ),
        ({"asynchrony": _async(concurrency=50)}, "asynchrony.concurrency"),
        ({"asynchrony": _async(strategy="fedasync", server_lr=1.5)}, "asynchrony.server_lr"),
    ],
)
def test_what_asynchrony_cannot_combine_with_is_refused(
    changes: dict[str, Any], where: str
) -> None:
    from fedsim.core.scenario import Scenario

    data = {**small_scenario(asynchrony=_async()), **changes}
    problems = Scenario.model_validate(data).consistency_problems()
    assert where in [p[0] for p in problems]
