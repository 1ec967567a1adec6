"""What a round leaves behind: one ``DeviceRecord`` per selected device and the ``RoundRecord``.

Both are data only (no wall-clock values): a rerun writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devices.fleet import Fleet
from devices.tiers import TieredCost, TieredPlan
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.records import DeviceRecord, DeviceStatus, RoundRecord
from server.adapt import AdaptResult
from server.outputs import sig

__all__ = ["Scores", "device_records", "round_record"]


@dataclass(frozen=True)
class Scores:
    """The global model's evaluation in a round (all None in a round without one)."""

    accuracy: float | None = None
    loss: float | None = None
    base: float | None = None  # class-incremental: on the classes of the first evaluated round
    adapted: AdaptResult | None = None  # evaluation.adapt


def device_records(
    fleet: Fleet,
    round_: int,
    plan: TieredPlan,
    outcomes: list[DeviceOutcome],
    cost: TieredCost,
) -> list[DeviceRecord]:
    """One record per selected device: what it did, and what the round cost it."""
    by_device = {o.device_id: o for o in outcomes}
    records = []
    for p in plan.plans:
        d = p.device_id
        outcome = by_device.get(d)
        if outcome is None:  # it was never sent work
            status: DeviceStatus = "no-reply" if p.fate == "train" else p.fate
            outcome = DeviceOutcome(d, status)
        ok = outcome.status == "ok"
        records.append(
            DeviceRecord(
                round=round_,
                device_id=d,
                profile=fleet[d].profile.name,
                status=outcome.status,
                num_examples=outcome.num_examples,
                train_loss=outcome.train_loss,
                bytes_down=p.bytes_down,
                # a device whose gateway lost the partial did send its update to the gateway
                bytes_up=p.bytes_up if ok or p.fate == "gateway-lost" else 0,
                error=outcome.error,
                measured_s=outcome.measured_s,
                measured_mj=outcome.measured_mj,
                scope=p.scope,
                busy_s=sig(cost.busy_s[d]),
                energy_mj=sig(cost.energy_mj[d]),
            )
        )
    return records


def round_record(
    round_: int,
    available: NDArray[np.bool_] | None,
    plan: TieredPlan,
    cost: TieredCost,
    devices: list[DeviceRecord],
    clock: float,
    scores: Scores,
    tiered: bool,
) -> RoundRecord:
    """The round's line of ``rounds.jsonl``. ``tiered``: the run has gateways (a star, the
    one-tier topology, records none of their fields)."""
    ok = [d for d in devices if d.status == "ok"]
    examples = sum(d.num_examples for d in ok)
    fates = [p.fate for p in plan.plans]
    adapted = scores.adapted
    return RoundRecord(
        round=round_,
        selected=len(plan.plans),
        participants=len(ok),
        failures=sum(d.status in ("failed", "no-reply") for d in devices),
        accuracy=scores.accuracy,
        loss=scores.loss,
        train_loss=(
            sum((d.train_loss or 0.0) * d.num_examples for d in ok) / examples if examples else None
        ),
        bytes_down=sum(d.bytes_down for d in devices),
        bytes_up=sum(d.bytes_up for d in devices),
        round_s=sig(cost.round_s),
        sim_time_s=sig(clock),
        energy_mj=sig(sum(cost.energy_mj.values())),
        offline=0 if available is None else int(len(available) - available.sum()),
        memory_skips=fates.count("memory-skip"),
        head_only=sum(p.fate == "train" and p.scope == "head" for p in plan.plans),
        stragglers=fates.count("straggler"),
        dropouts=fates.count("dropout"),
        base_accuracy=scores.base,
        adapted=None if adapted is None else sig(adapted.mean),
        adapted_ci95=None if adapted is None else sig(adapted.ci95),
        **(_tier_fields(plan, cost) if tiered else {}),
    )


def _tier_fields(plan: TieredPlan, cost: TieredCost) -> dict[str, Any]:
    """The gateways' part of the round: how many were offline, lost or late, the devices they
    cut off, their energy, and per tier its bytes and time."""
    states = [r.status for r in plan.gateways.values()]
    return {
        "gateways_down": states.count("down"),
        "gateways_lost": states.count("lost"),
        "gateways_late": states.count("late"),
        "gateway_cut": sum(p.fate in ("gateway-down", "gateway-lost") for p in plan.plans),
        "gateway_energy_mj": sig(cost.gateway_energy_mj),
        "tiers": [{**t, "s": sig(float(t["s"]))} for t in cost.tiers],
    }
