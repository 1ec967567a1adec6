"""The round loop's callbacks (server/callbacks.py), and the star as the one-tier topology."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.app import make_client_app
from devices.clock import FleetCosts
from devices.fleet import load_fleet
from devices.tiers import finish_tiered, one_tier, plan_tiered
from fedsim.core.data import load_task_data
from fedsim.core.records import DeviceRecord, RoundRecord, RunBinding
from fedsim.core.task_model import task_model
from fedsim.inline import run_inline
from server.app import make_server_app
from server.callbacks import RoundCallback, RunState
from tests.conftest import SCENARIOS, tiny_scenario

COHORT = tiny_scenario(execution={"engine": "inline", "mode": "cohort"})


class Spy(RoundCallback):
    def __init__(self, fail_in: str = "") -> None:
        self.heard: list[Any] = []
        self.fail_in = fail_in

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        self.heard.append(("round", record.round, len(run.records), len(devices)))
        if self.fail_in == "round" and record.round == 2:
            raise RuntimeError("callback blew up")

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        self.heard.append(("end", (Path(run.out) / "summary.json").exists()))
        summary["spy"] = "was here"
        if self.fail_in == "end":
            raise RuntimeError("callback blew up")

    def on_summary(self, run: RunState, summary: dict[str, Any]) -> None:
        self.heard.append(("summary", json.loads((Path(run.out) / "summary.json").read_text())))


def _run(path: Path, out: Path, spy: Spy) -> None:
    binding = RunBinding(str(path), str(out))
    run_inline(make_server_app(binding, callbacks=[spy]), make_client_app(binding), 2)


def test_a_callback_hears_every_round_then_the_end_then_the_summary(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    spy = Spy()

    _run(write_scenario(COHORT), tmp_path / "out", spy)

    rounds = [h for h in spy.heard if h[0] == "round"]
    assert [h[1:3] for h in rounds] == [(1, 1), (2, 2), (3, 3)]  # the run has added it up
    assert spy.heard[3] == ("end", False)  # before summary.json: it may still add to it
    kind, summary = spy.heard[4]
    assert kind == "summary"
    assert summary["status"] == "completed"
    assert summary["spy"] == "was here"


def test_a_callback_that_fails_in_a_round_stops_the_run_with_a_summary(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="callback blew up"):
        _run(write_scenario(COHORT), tmp_path / "out", Spy(fail_in="round"))

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["rounds_completed"] == 2  # round 2's rows were written before the callback


def test_a_callback_that_fails_at_the_end_leaves_no_summary(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="callback blew up"):
        _run(write_scenario(COHORT), tmp_path / "out", Spy(fail_in="end"))

    assert not (tmp_path / "out" / "summary.json").exists()  # the run did not complete


@pytest.mark.parametrize("deadline_s", [12.0, None])
@pytest.mark.parametrize("memory_policy", ["head-only", "skip"])
def test_the_star_is_planned_and_costed_as_the_one_tier_topology(
    deadline_s: float | None, memory_policy: str
) -> None:
    """Oracle: a star's flat plan and cost (``FleetCosts``) against the topology path's, on a fleet
    with churn, head-only devices or memory skips, and a deadline or none."""
    shipped, fleet = load_fleet(SCENARIOS / "heterogeneous-fleet.yaml")
    fleet_spec = shipped.fleet.model_copy(update={"memory_policy": memory_policy})
    scenario = shipped.model_copy(update={"deadline_s": deadline_s, "fleet": fleet_spec})
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = task_model(scenario, data.num_features, data.num_outputs, 0)
    costs = FleetCosts(scenario, fleet, model)
    rng = np.random.default_rng(0)
    for round_, t in enumerate([0.0, 95.0, 410.0, 1333.0], start=1):
        chosen = sorted(int(d) for d in rng.choice(len(fleet), 24, replace=False))
        flat = costs.plan(chosen, t, round_)

        tiered = plan_tiered(costs, one_tier(), chosen, t, round_)

        assert tiered.plans == flat
        assert tiered.gateways == {}
        going = [p.device_id for p in flat if p.fate == "train"]
        for delivered in (set(going), set(going[1:]), set()):
            star = costs.finish(flat, delivered)
            cost = finish_tiered(costs, one_tier(), tiered, delivered, {})
            assert (cost.round_s, cost.energy_mj, cost.busy_s) == (
                star.round_s,
                star.energy_mj,
                star.busy_s,
            )
