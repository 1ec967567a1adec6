"""What a run keeps besides its rounds: running totals per device round, the summary, the
per-round checkpoint (``fedsim run --resume``), the adaptation results, and the write-back of
who took part (and through which gateways) to the registry. ``server.callbacks`` calls them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.fleet import Fleet, open_registry
from devices.tiers import topology_summary
from devices.topology import Topology
from fedsim.core.checkpoint import Checkpoint, save_checkpoint
from fedsim.core.checkpoint_verify import REPAIR, first_problem
from fedsim.core.errors import FedsimError
from fedsim.core.records import DeviceRecord, RoundRecord, RunBinding
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import anchor_paths
from fedsim.core.state import STATE_FILE
from ontology.history import RunTopology, write_participation
from server.adapt import AdaptResult
from server.dispatch import RoundContext

__all__ = [
    "SCENARIO_COPY",
    "Usage",
    "check_resumable",
    "restore",
    "run_summary",
    "save_round",
    "sig",
    "topology_part",
    "write_adaptation",
    "write_back",
    "write_scenario_copy",
]


def run_summary(
    name: str, algorithm: str, rounds: int, fleet: Fleet, records: list[RoundRecord]
) -> dict[str, Any]:
    """A completed run's totals over ``records`` (every round's)."""
    final = records[-1]
    return {
        "scenario": name,
        "status": "completed",
        "algorithm": algorithm,
        "rounds": rounds,
        "devices": len(fleet),
        "devices_by_profile": fleet.by_profile(),
        "final_accuracy": final.accuracy,
        "final_loss": final.loss,
        "best_accuracy": max((r.accuracy for r in records if r.accuracy is not None), default=None),
        "failures": sum(r.failures for r in records),
        "bytes_down": sum(r.bytes_down for r in records),
        "bytes_up": sum(r.bytes_up for r in records),
        "sim_time_s": records[-1].sim_time_s,
        "energy_j": sig(sum(r.energy_mj for r in records) / 1000),
        "memory_skips": sum(r.memory_skips for r in records),
        "stragglers": sum(r.stragglers for r in records),
        "dropouts": sum(r.dropouts for r in records),
    }


def topology_part(topology: Topology, records: list[RoundRecord]) -> dict[str, Any]:
    """The summary's part of a run with gateways: their energy and, per tier, bytes and time."""
    part = topology_summary(topology, [r.tiers or [] for r in records])
    for key in ("gateways_down", "gateways_late", "gateways_lost", "gateway_cut"):
        part[key] = sum(getattr(r, key) for r in records)
    return {
        "gateway_energy_j": sig(sum(r.gateway_energy_mj for r in records) / 1000),
        "topology": part,
    }


USAGE_TOTALS = ("samples", "bytes_down", "bytes_up", "energy_mj", "busy_s")


class Usage:
    """Running totals of what rounds asked of devices, for per-device-round means."""

    def __init__(self) -> None:
        self.selected = self.delivered = 0
        self.totals = dict.fromkeys(USAGE_TOTALS, 0.0)

    def add(
        self, devices: list[DeviceRecord], topology: Topology, samples: Callable[[int], float]
    ) -> None:
        """A device behind a gateway does ``local_rounds`` device rounds in a global round.
        ``samples``: how many samples a device round over so many examples processes."""
        for d in devices:
            rounds = 1
            behind = d.device_id in topology.gateway_of
            if behind and d.status not in ("gateway-down", "memory-skip"):
                rounds = topology.local_rounds  # it was asked for all of them
            self.selected += rounds
            self.totals["bytes_down"] += d.bytes_down
            self.totals["energy_mj"] += d.energy_mj
            self.totals["busy_s"] += d.busy_s
            if d.status == "ok":
                self.delivered += rounds
                self.totals["bytes_up"] += d.bytes_up
                self.totals["samples"] += samples(d.num_examples)

    def to_json(self) -> dict[str, Any]:
        return {"selected": self.selected, "delivered": self.delivered, "totals": self.totals}

    def means(self) -> dict[str, float]:
        """Samples and bytes up per delivering device; the rest per selected device."""
        out = {}
        for key, total in self.totals.items():
            count = self.delivered if key in ("samples", "bytes_up") else self.selected
            out[key] = sig(total / count) if count else 0.0
        return out


def _check_state(kind: str, state: dict[str, Any]) -> None:
    """An algorithm's server state is float32 arrays: what a checkpoint keeps exactly."""
    for name, value in state.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            got = type(value).__name__ if not isinstance(value, np.ndarray) else str(value.dtype)
            raise FedsimError(
                "algorithm.kind",
                f"{kind}'s server_step keeps state '{name}' as {got}: a checkpoint keeps float32 "
                "arrays only, so a resumed run would differ",
                "store np.float32 arrays in server_step's state",
            )


def save_round(out: str, ctx: RoundContext, round_: int, usage: Usage) -> None:
    """What the loop carries from round to round, for ``fedsim run --resume``."""
    _check_state(ctx.scenario.algorithm.kind, ctx.server_state)
    server = {
        "usage": usage.to_json(),
        "base_classes": None if ctx.base_classes is None else ctx.base_classes.tolist(),
        "adaptation": None if ctx.adaptation is None else asdict(ctx.adaptation),
        # the algorithm's server state (e.g. FedAvgM's momentum): exact, float32 → JSON → float32
        "algorithm_state": {
            name: {"shape": list(a.shape), "values": a.ravel().tolist()}
            for name, a in ctx.server_state.items()
        },
    }
    saved = Checkpoint(round_, ctx.clock, ctx.scenario.digest(), ctx.global_arrays, server)
    save_checkpoint(out, saved, Path(out) / STATE_FILE)


def restore(ctx: RoundContext, checkpoint: Checkpoint) -> Usage:
    """Put the loop back where ``checkpoint`` left it; the running totals. A ``FedsimError`` when
    it does not fit the scenario: another scenario, other arrays than its model's, running values
    of the wrong form."""
    running = check_resumable(ctx.scenario, checkpoint, ctx.global_arrays)
    ctx.global_arrays = checkpoint.arrays
    ctx.clock = checkpoint.clock
    if running.base_classes is not None:
        ctx.base_classes = np.array(running.base_classes, dtype=bool)
    for name, saved in running.algorithm_state.items():
        values = np.array(saved.values, dtype=np.float32)
        if values.size != math.prod(saved.shape):
            what = f"values.algorithm_state.{name}: {values.size} values for shape {saved.shape}"
            raise FedsimError(checkpoint.path("server"), what, REPAIR)
        ctx.server_state[name] = values.reshape(saved.shape)
    if running.adaptation is not None:
        a = running.adaptation
        ctx.adaptation = AdaptResult(
            a.metric, a.mean, a.ci95, a.before, tuple(a.curve), tuple(a.per_device)
        )
    usage = Usage()
    usage.selected, usage.delivered = running.usage.selected, running.usage.delivered
    usage.totals = dict(running.usage.totals)
    return usage


def check_resumable(
    scenario: Scenario, checkpoint: Checkpoint, model: list[NDArray[Any]]
) -> _Running:
    """Refuse (``FedsimError``) a checkpoint that does not fit ``scenario`` and its ``model``'s
    arrays: another scenario, other arrays, running values of the wrong form. Changes nothing."""
    if checkpoint.scenario_sha256 != scenario.digest():
        raise FedsimError(
            scenario.name,
            "the scenario changed since this run started (its SHA-256 differs from the checkpoint)",
            "resume with the scenario as it was, or start a new run",
        )
    _check_arrays(checkpoint, model)
    return _running(checkpoint)


def _check_arrays(checkpoint: Checkpoint, model: list[NDArray[Any]]) -> None:
    """The checkpoint's arrays are the scenario's model's: as many, each of its shape and dtype."""
    where = checkpoint.path("global")
    if len(checkpoint.arrays) != len(model):
        raise FedsimError(
            where,
            f"holds {len(checkpoint.arrays)} arrays, the scenario's model has {len(model)}",
            REPAIR,
        )
    for i, (got, want) in enumerate(zip(checkpoint.arrays, model, strict=True)):
        if got.shape != want.shape or got.dtype != want.dtype:
            raise FedsimError(
                where,
                f"arr_{i} is {got.dtype} {list(got.shape)}, the scenario's model has "
                f"{want.dtype} {list(want.shape)} there",
                REPAIR,
            )


class _Saved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _SavedUsage(_Saved):
    selected: int = Field(ge=0)
    delivered: int = Field(ge=0)
    totals: dict[str, float]


class _SavedAdaptation(_Saved):
    metric: str
    mean: float
    ci95: float
    before: float
    curve: list[float]
    per_device: list[float]


class _SavedArray(_Saved):
    shape: list[int]
    values: list[float]


class _Running(_Saved):
    """What ``save_round`` keeps besides the arrays and the clock."""

    usage: _SavedUsage
    base_classes: list[bool] | None
    adaptation: _SavedAdaptation | None
    algorithm_state: dict[str, _SavedArray] = {}


def _running(checkpoint: Checkpoint) -> _Running:
    try:
        running = _Running.model_validate(checkpoint.server)
    except ValidationError as exc:
        problem = first_problem(exc, prefix="values.")
        raise FedsimError(checkpoint.path("server"), problem, REPAIR) from None
    if set(running.usage.totals) != set(USAGE_TOTALS):
        what = f"values.usage.totals: needs exactly {', '.join(USAGE_TOTALS)}"
        raise FedsimError(checkpoint.path("server"), what, REPAIR)
    return running


def write_adaptation(out: str, result: AdaptResult) -> dict[str, Any]:
    """``adaptation.json``; the summary's part."""
    payload = {
        "metric": result.metric,
        "mean": sig(result.mean),
        "ci95": sig(result.ci95),
        "before": sig(result.before),
        "curve": [sig(v) for v in result.curve],
        "per_device": [sig(v) for v in result.per_device],
    }
    (Path(out) / "adaptation.json").write_text(json.dumps(payload, indent=2) + "\n")
    return {k: payload[k] for k in ("metric", "mean", "ci95", "before")}


def write_back(scenario: Scenario, fleet: Fleet, binding: RunBinding) -> None:
    """The run's participation as RDF in the run folder, and in a persistent registry."""
    out = Path(binding.out)
    members = [(d.iri, d.profile.name) for d in fleet.devices]
    topology = None
    if fleet.topology is not None and fleet.topology.gateways:
        gateways = fleet.topology.gateways
        rows = [
            (g.name, g.profile.name, g.link_type.kind, _parent_name(fleet, g.parent), g.devices)
            for g in gateways
        ]
        topology = RunTopology(rows, fleet.topology.local_rounds)
    path = write_participation(scenario, members, out, out.name, topology)
    assert scenario.registry is not None
    if scenario.registry.db is not None:
        with open_registry(scenario, Path(binding.scenario).parent) as registry:
            registry.store.load([path])


def _parent_name(fleet: Fleet, parent: int | None) -> str | None:
    assert fleet.topology is not None
    return None if parent is None else fleet.topology.gateways[parent].name


def sig(x: float) -> float:
    """``x`` to 9 significant digits: readable files, no information a person needs lost."""
    return float(f"{x:.9g}")


SCENARIO_COPY = "scenario.yaml"


def write_scenario_copy(out: str, scenario: Scenario, source: str) -> Path:
    """``scenario.yaml``: the scenario as the run validated it (``extends`` merged, every default
    written out), so that the run folder alone says what ran and ``fedsim run`` runs it again.
    Relative file paths (``registry.data``, trace files) meant relative to ``source``'s folder:
    here they are absolute, which changes the SHA-256 only of a scenario that had any."""
    data = scenario.model_dump(mode="json")
    anchored = copy.deepcopy(data)
    anchor_paths(anchored, Path(source).parent)
    header = [
        f"# The scenario of this run, resolved from {source}",
        "# (extends merged, defaults written out): `fedsim run` runs it as it ran.",
        f"# SHA-256 {scenario.digest()}",
    ]
    if anchored != data:
        canonical = json.dumps(anchored, sort_keys=True, separators=(",", ":"))
        header.append(
            "# Its relative file paths are absolute here, so this copy's SHA-256 is "
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
    body = yaml.safe_dump(anchored, sort_keys=False, allow_unicode=True)
    path = Path(out) / SCENARIO_COPY
    path.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    return path
