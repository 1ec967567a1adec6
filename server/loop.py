"""The round loop: discover nodes, then per round select, plan (``devices.clock``), send and
collect (``server.dispatch``), reduce, evaluate, record; at the end, write results back.

Device failures are data: an error reply or a missing reply is counted in the round's record and
in ``devices.csv``, and the remaining updates are aggregated. A failed device in a cohort fails
alone; a worker that fails or does not reply takes down only the devices it was running.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid
from numpy.typing import NDArray

from devices.clock import DevicePlan, FleetCosts, RoundCost
from devices.fleet import Fleet, load_fleet, open_registry
from devices.tiers import finish_tiered, plan_tiered, topology_summary
from fedsim.core.aggregators import aggregator_for, server_step
from fedsim.core.checkpoint import Checkpoint, load_checkpoint, restore_store, save_checkpoint
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.models import get_arrays, set_arrays
from fedsim.core.plots import plot_accuracy, plot_adaptation, plot_fleet, plot_tiers
from fedsim.core.pretrain import PretrainConfig, pretrain_encoder
from fedsim.core.records import (
    CONFIG,
    DEVICE_ID,
    METRICS,
    NODE_GATEWAY,
    DeviceRecord,
    DeviceStatus,
    RoundRecord,
    RunBinding,
)
from fedsim.core.report import run_report
from fedsim.core.results import RunWriter, read_rounds
from fedsim.core.scenario import PrototypesSpec, Scenario
from fedsim.core.seeds import derive_seed
from fedsim.core.state import STATE_FILE
from fedsim.core.task_model import task_model
from ontology.history import RunTopology, write_participation
from server.adapt import AdaptResult, adapt_and_score, held_out_devices
from server.dispatch import RoundContext, Work, cohort_round, per_device_round, work_payload
from server.evaluate import evaluate
from server.tiers import tiered_round

__all__ = ["LogObserver", "RoundObserver", "run_rounds"]

log = logging.getLogger("fedsim.server")
DISCOVERY_TIMEOUT_S = 120.0


class RoundObserver(Protocol):
    def start(self, total_rounds: int) -> None: ...
    def round(self, record: RoundRecord) -> None: ...
    def end(self) -> None: ...


class LogObserver:
    """The default observer (e.g. under ``flwr run``): one log line per round."""

    def start(self, total_rounds: int) -> None:
        log.info("fedsim: %d rounds", total_rounds)

    def round(self, record: RoundRecord) -> None:
        log.info("fedsim round %d: %s", record.round, record.to_json())

    def end(self) -> None:
        log.info("fedsim: done")


def _wait_for_nodes(grid: Grid, wanted: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        node_ids = list(grid.get_node_ids())
    return sorted(node_ids)


def _workers(grid: Grid, timeout_s: float) -> list[int]:
    """Cohort mode: every node is a worker; how many there are never changes the results."""
    workers = _wait_for_nodes(grid, 1, timeout_s)
    if not workers:
        raise FedsimError(
            "federation", "no Flower node joined the run", "start at least one SuperNode"
        )
    return workers


def _gateway_nodes(
    grid: Grid, workers: list[int], fleet: Fleet, timeout_s: float
) -> dict[int, int]:
    """Cohort mode with gateways: which worker nodes play which gateway (node config
    ``gateway='name'``, e.g. a Raspberry Pi SuperNode with the gateway's devices on its serial
    ports). The other gateways go to the workers round-robin."""
    topology = fleet.topology
    if topology is None or not topology.gateways:
        return {}
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in workers
    ]
    index = {g.name: g.index for g in topology.gateways}
    nodes: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout_s):
        if reply.has_error() or CONFIG not in reply.content:
            continue
        name = str(reply.content[CONFIG][NODE_GATEWAY])
        if name not in index or not topology.gateways[index[name]].devices:
            raise FedsimError(
                "federation",
                f"node {reply.metadata.src_node_id} plays gateway '{name}', which is not a "
                "gateway with devices in this scenario's topology",
                "fix its --node-config gateway='…' (the names are in topology.gateways)",
            )
        if index[name] in nodes:
            raise FedsimError(
                "federation",
                f"nodes {nodes[index[name]]} and {reply.metadata.src_node_id} both play gateway "
                f"'{name}'",
                "give each gateway SuperNode its own gateway='…'",
            )
        nodes[index[name]] = reply.metadata.src_node_id
    return nodes


def _discover(grid: Grid, fleet: Fleet, timeout_s: float) -> dict[int, int]:
    """Per-device mode: map device id → node id by asking every node which device it is."""
    node_ids = _wait_for_nodes(grid, len(fleet), timeout_s)
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in node_ids
    ]
    nodes: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout_s):
        if not reply.has_error():
            device_id = int(reply.content[METRICS][DEVICE_ID])  # type: ignore[arg-type]
            nodes[device_id] = reply.metadata.src_node_id
    missing = sorted(set(range(len(fleet))) - set(nodes))
    if missing:
        raise FedsimError(
            "federation",
            f"{len(missing)} of {len(fleet)} devices have no Flower node "
            f"(e.g. device {missing[0]})",
            "start one node per device (num-supernodes = fleet size)",
        )
    return nodes


def _select(scenario: Scenario, round_: int, available: NDArray[np.bool_] | None) -> list[int]:
    """This round's devices, drawn from the scenario seed among those online, in ascending id
    order (fewer than ``clients_per_round`` if fewer are online)."""
    rng = np.random.default_rng(derive_seed(scenario.seed, "select", round_))
    if available is None:
        chosen = rng.choice(scenario.fleet.size, size=scenario.cohort_size, replace=False)
    else:
        online = np.flatnonzero(available)
        size = min(scenario.cohort_size, len(online))
        chosen = rng.choice(online, size=size, replace=False) if size else online
    return sorted(int(d) for d in chosen)


def _device_records(
    ctx: RoundContext,
    round_: int,
    plans: list[DevicePlan],
    outcomes: dict[int, DeviceOutcome],
    cost: RoundCost,
) -> list[DeviceRecord]:
    """One record per selected device: what it did, and what the round cost it."""
    records = []
    for plan in plans:
        d = plan.device_id
        outcome = outcomes.get(d)
        if outcome is None:  # it was never sent work
            status: DeviceStatus = "no-reply" if plan.fate == "train" else plan.fate
            outcome = DeviceOutcome(d, status)
        ok = outcome.status == "ok"
        records.append(
            DeviceRecord(
                round=round_,
                device_id=d,
                profile=ctx.fleet[d].profile.name,
                status=outcome.status,
                num_examples=outcome.num_examples,
                train_loss=outcome.train_loss,
                bytes_down=plan.bytes_down,
                # a device whose gateway lost the partial did send its update to the gateway
                bytes_up=plan.bytes_up if ok or plan.fate == "gateway-lost" else 0,
                error=outcome.error,
                measured_s=outcome.measured_s,
                measured_mj=outcome.measured_mj,
                scope=plan.scope,
                busy_s=_sig(cost.busy_s[d]),
                energy_mj=_sig(cost.energy_mj[d]),
            )
        )
    return records


def _sig(x: float) -> float:
    """``x`` to 9 significant digits: readable files, no information a person needs lost."""
    return float(f"{x:.9g}")


def _round(ctx: RoundContext, round_: int) -> tuple[RoundRecord, list[DeviceRecord]]:
    scenario = ctx.scenario
    available = ctx.costs.available(ctx.clock)
    selected = _select(scenario, round_, available)
    topology = ctx.fleet.topology
    tiered = None
    if topology is None:
        plans = ctx.costs.plan(selected, ctx.clock, round_)
    else:
        tiered = plan_tiered(ctx.costs, topology, selected, ctx.clock, round_)
        plans = tiered.plans
    go = [p for p in plans if p.fate == "train"]
    work = Work(
        round=round_,
        devices=[p.device_id for p in go],
        head_only=frozenset(p.device_id for p in go if p.scope == "head"),
        payload=work_payload(ctx),
        bytes_up={p.device_id: p.bytes_up for p in go},
        sent={p.device_id: ctx.costs.sent(p.device_id) for p in go},
    )
    uplinks: dict[int, int] = {}
    if topology is None:
        run = cohort_round if ctx.workers else per_device_round
        partial, outcomes = run(ctx, work)
    else:
        partial, outcomes, uplinks = tiered_round(ctx, work, topology)
    averaged = ctx.aggregator.finalize(ctx.global_arrays, partial)
    epsilon = scenario.algorithm.server_lr(round_, scenario.rounds)
    ctx.global_arrays = server_step(ctx.global_arrays, averaged, epsilon)
    delivered = {o.device_id for o in outcomes if o.status == "ok"}
    tiers: dict[str, Any] = {}
    if topology is None or tiered is None:
        cost = ctx.costs.finish(plans, delivered)
    else:
        tcost = finish_tiered(ctx.costs, topology, tiered, delivered, uplinks)
        cost = RoundCost(tcost.round_s, tcost.energy_mj, tcost.busy_s)
        if topology.gateways:  # a one-tier topology records what a star records
            states = [r.status for r in tiered.gateways.values()]
            tiers = {
                "gateways_down": states.count("down"),
                "gateways_lost": states.count("lost"),
                "gateways_late": states.count("late"),
                "gateway_cut": sum(p.fate in ("gateway-down", "gateway-lost") for p in plans),
                "gateway_energy_mj": _sig(tcost.gateway_energy_mj),
                "tiers": [{**t, "s": _sig(float(t["s"]))} for t in tcost.tiers],
            }
    ctx.clock += cost.round_s
    devices = _device_records(ctx, round_, plans, {o.device_id: o for o in outcomes}, cost)

    accuracy = loss = adapted = base = None
    if round_ % scenario.evaluation.every == 0 or round_ == scenario.rounds:
        set_arrays(ctx.model, ctx.global_arrays)
        if ctx.fleet.missions is not None:  # class-incremental: score the classes seen so far
            accuracy, loss, base = _reconnaissance(ctx)
        else:
            accuracy, loss = evaluate(ctx.model, ctx.data.x_test, ctx.data.y_test)
        if scenario.evaluation.adapt is not None:
            adapted = ctx.adaptation = adapt_and_score(
                ctx.model, ctx.global_arrays, ctx.held_out, scenario.evaluation.adapt, scenario.seed
            )
    ok = [d for d in devices if d.status == "ok"]
    examples = sum(d.num_examples for d in ok)
    fates = [p.fate for p in plans]
    record = RoundRecord(
        round=round_,
        selected=len(selected),
        participants=len(ok),
        failures=sum(d.status in ("failed", "no-reply") for d in devices),
        accuracy=accuracy,
        loss=loss,
        train_loss=(
            sum((d.train_loss or 0.0) * d.num_examples for d in ok) / examples if examples else None
        ),
        bytes_down=sum(d.bytes_down for d in devices),
        bytes_up=sum(d.bytes_up for d in devices),
        round_s=_sig(cost.round_s),
        sim_time_s=_sig(ctx.clock),
        energy_mj=_sig(sum(cost.energy_mj.values())),
        offline=0 if available is None else int(len(available) - available.sum()),
        memory_skips=fates.count("memory-skip"),
        head_only=len(work.head_only),
        stragglers=fates.count("straggler"),
        dropouts=fates.count("dropout"),
        base_accuracy=base,
        adapted=None if adapted is None else _sig(adapted.mean),
        adapted_ci95=None if adapted is None else _sig(adapted.ci95),
        **tiers,
    )
    return record, devices


def _reconnaissance(ctx: RoundContext) -> tuple[float | None, float | None, float | None]:
    """Prototype averaging: accuracy and loss on the test samples of every class reconnoitred so
    far, and accuracy on the classes of the first evaluated round (what the server retains)."""
    seen = ctx.global_arrays[-1] > 0
    if not seen.any():
        return None, None, None
    if ctx.base_classes is None:
        ctx.base_classes = seen.copy()
    y = ctx.data.y_test
    mask = seen[y]
    accuracy, loss = evaluate(ctx.model, ctx.data.x_test[mask], y[mask])
    first = ctx.base_classes[y]
    base, _ = evaluate(ctx.model, ctx.data.x_test[first], y[first])
    return accuracy, loss, base


def _summary(scenario: Scenario, fleet: Fleet, records: list[RoundRecord]) -> dict[str, Any]:
    final = records[-1]
    return {
        "scenario": scenario.name,
        "status": "completed",
        "algorithm": scenario.algorithm.kind,
        "rounds": scenario.rounds,
        "devices": len(fleet),
        "devices_by_profile": fleet.by_profile(),
        "final_accuracy": final.accuracy,
        "final_loss": final.loss,
        "best_accuracy": max((r.accuracy for r in records if r.accuracy is not None), default=None),
        "failures": sum(r.failures for r in records),
        "bytes_down": sum(r.bytes_down for r in records),
        "bytes_up": sum(r.bytes_up for r in records),
        "sim_time_s": records[-1].sim_time_s,
        "energy_j": _sig(sum(r.energy_mj for r in records) / 1000),
        "memory_skips": sum(r.memory_skips for r in records),
        "stragglers": sum(r.stragglers for r in records),
        "dropouts": sum(r.dropouts for r in records),
    }


class _Usage:
    """Running totals of what rounds asked of devices, for per-device-round means."""

    def __init__(self) -> None:
        self.selected = self.delivered = 0
        self.totals = dict.fromkeys(
            ("samples", "bytes_down", "bytes_up", "energy_mj", "busy_s"), 0.0
        )

    def add(self, scenario: Scenario, devices: list[DeviceRecord], fleet: Fleet) -> None:
        """A device behind a gateway does ``local_rounds`` device rounds in a global round."""
        topology = fleet.topology
        for d in devices:
            rounds = 1
            behind = topology is not None and d.device_id in topology.gateway_of
            if behind and d.status not in ("gateway-down", "memory-skip"):
                assert topology is not None
                rounds = topology.local_rounds  # it was asked for all of them
            self.selected += rounds
            self.totals["bytes_down"] += d.bytes_down
            self.totals["energy_mj"] += d.energy_mj
            self.totals["busy_s"] += d.busy_s
            if d.status == "ok":
                self.delivered += rounds
                self.totals["bytes_up"] += d.bytes_up
                self.totals["samples"] += scenario.algorithm.samples_processed(d.num_examples)

    def to_json(self) -> dict[str, Any]:
        return {"selected": self.selected, "delivered": self.delivered, "totals": self.totals}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> _Usage:
        usage = cls()
        usage.selected, usage.delivered = int(saved["selected"]), int(saved["delivered"])
        usage.totals = {k: float(v) for k, v in saved["totals"].items()}
        return usage

    def means(self) -> dict[str, float]:
        """Samples and bytes up per delivering device; the rest per selected device."""
        out = {}
        for key, total in self.totals.items():
            count = self.delivered if key in ("samples", "bytes_up") else self.selected
            out[key] = _sig(total / count) if count else 0.0
        return out


def _checkpoint(out: str, ctx: RoundContext, round_: int, usage: _Usage) -> None:
    """What the loop carries from round to round, for ``fedsim run --resume``."""
    server = {
        "usage": usage.to_json(),
        "base_classes": None if ctx.base_classes is None else ctx.base_classes.tolist(),
        "adaptation": None if ctx.adaptation is None else asdict(ctx.adaptation),
    }
    saved = Checkpoint(round_, ctx.clock, ctx.scenario.digest(), ctx.global_arrays, server)
    save_checkpoint(out, saved, Path(out) / STATE_FILE)


def _restore(ctx: RoundContext, checkpoint: Checkpoint) -> _Usage:
    """Put the loop back where ``checkpoint`` left it; the running totals."""
    if checkpoint.scenario_sha256 != ctx.scenario.digest():
        raise FedsimError(
            ctx.scenario.name,
            "the scenario changed since this run started (its SHA-256 differs from the checkpoint)",
            "resume with the scenario as it was, or start a new run",
        )
    ctx.global_arrays = checkpoint.arrays
    ctx.clock = checkpoint.clock
    server = checkpoint.server
    if server["base_classes"] is not None:
        ctx.base_classes = np.array(server["base_classes"], dtype=bool)
    if server["adaptation"] is not None:
        a = server["adaptation"]
        ctx.adaptation = AdaptResult(
            **{**a, "curve": tuple(a["curve"]), "per_device": tuple(a["per_device"])}
        )
    return _Usage.from_json(server["usage"])


def _adaptation(out: str, result: AdaptResult, title: str) -> dict[str, Any]:
    """``adaptation.json`` and ``plots/adaptation.png``; the summary's part."""
    payload = {
        "metric": result.metric,
        "mean": _sig(result.mean),
        "ci95": _sig(result.ci95),
        "before": _sig(result.before),
        "curve": [_sig(v) for v in result.curve],
        "per_device": [_sig(v) for v in result.per_device],
    }
    (Path(out) / "adaptation.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot_adaptation(out, title)
    return {k: payload[k] for k in ("metric", "mean", "ci95", "before")}


def _write_back(scenario: Scenario, fleet: Fleet, binding: RunBinding) -> None:
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


def _load_encoder(model: torch.nn.Module, spec: PrototypesSpec, seed: int) -> None:
    """Put the pre-trained encoder (``fedsim pretrain``; trained now if not cached) into the model;
    the prototype head stays empty."""
    e = spec.encoder
    config = PretrainConfig(
        e.dataset,
        e.architecture,
        e.episodes,
        e.n_way,
        e.k_shot,
        e.q_queries,
        e.lr,
        e.rotations,
        seed,
    )

    def show(step: int, loss: float) -> None:
        if step % 100 == 0 or step == config.episodes:
            log.info("pre-training the encoder: %d/%d episodes, loss %.3f", step, e.episodes, loss)

    trained = list(pretrain_encoder(config, show).values())
    arrays = get_arrays(model)
    set_arrays(model, [*trained[:-2], *arrays[-2:]])  # the linear head ↔ the prototype buffers


def run_rounds(grid: Grid, binding: RunBinding, observer: RoundObserver) -> dict[str, Any]:
    """Run the scenario bound to this app on ``grid``; write results; return the summary.

    Each round's rows are on disk when the round ends; if the run stops early, ``summary.json``
    says how far it got and why.
    """
    torch.set_num_threads(1)
    started = time.perf_counter()
    scenario, fleet = load_fleet(binding.scenario)
    checkpoint = load_checkpoint(binding.out) if binding.resume else None
    if binding.resume:
        done = checkpoint.round if checkpoint is not None else 0
        writer = RunWriter(binding.out, resume_after=done)
        writer.resumed(done)
        restore_store(checkpoint, Path(binding.out) / STATE_FILE)
    else:
        writer = RunWriter(binding.out)
        writer.manifest(scenario, binding.scenario, binding.command)
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = task_model(
        scenario, data.num_features, data.num_outputs, derive_seed(scenario.seed, "init")
    )
    if isinstance(scenario.algorithm, PrototypesSpec):  # the frozen, pre-trained encoder
        _load_encoder(model, scenario.algorithm, scenario.seed)
    cohort = scenario.execution.mode == "cohort"
    workers = _workers(grid, DISCOVERY_TIMEOUT_S) if cohort else []
    gateway_nodes = _gateway_nodes(grid, workers, fleet, DISCOVERY_TIMEOUT_S) if cohort else {}
    per_device = {} if cohort else _discover(grid, fleet, DISCOVERY_TIMEOUT_S)
    ctx = RoundContext(
        grid=grid,
        scenario=scenario,
        fleet=fleet,
        model=model,
        data=data,
        aggregator=aggregator_for(scenario.algorithm.kind, scenario.algorithm.uniform_weights),
        costs=FleetCosts(scenario, fleet, model),
        device_to_node=per_device,
        workers=workers,
        gateway_nodes=gateway_nodes,
        global_arrays=get_arrays(model),
    )
    if scenario.evaluation.adapt is not None:
        ctx.held_out = held_out_devices(data, scenario.evaluation.adapt, scenario.seed)
    records: list[RoundRecord] = []
    usage = _Usage()
    if checkpoint is not None:
        records = [RoundRecord(**r) for r in read_rounds(binding.out)]
        usage = _restore(ctx, checkpoint)
    observer.start(scenario.rounds)
    for earlier in records:  # a resumed run's progress starts where it stopped
        observer.round(earlier)
    try:
        for round_ in range(len(records) + 1, scenario.rounds + 1):
            record, devices = _round(ctx, round_)
            writer.round(record, devices)
            records.append(record)
            usage.add(scenario, devices, fleet)
            if scenario.output.checkpoint:
                _checkpoint(binding.out, ctx, round_, usage)
            observer.round(record)
    except BaseException as exc:  # keep what was done: the rounds so far, and why it stopped
        error = f"{type(exc).__name__}: {exc}"
        writer.summary(
            {
                "scenario": scenario.name,
                "status": "failed",
                "error": error,
                "rounds_completed": len(records),
            }
        )
        raise
    finally:
        observer.end()

    set_arrays(model, ctx.global_arrays)
    writer.model(dict(zip(model.state_dict(), ctx.global_arrays, strict=True)))
    if scenario.registry is not None and scenario.registry.write_back:
        _write_back(scenario, fleet, binding)
    title = f"{scenario.name} ({scenario.algorithm.kind}, seed {scenario.seed})"
    plot_accuracy(binding.out, title)
    plot_fleet(binding.out, title)
    plot_tiers(binding.out, title)
    summary = {
        **_summary(scenario, fleet, records),
        "device_rounds": {"selected": usage.selected, "trained": usage.delivered},
        "per_device_round": usage.means(),
        "train_ram_bytes": ctx.costs.full.train_bytes,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    if ctx.adaptation is not None:
        summary["adapted"] = _adaptation(binding.out, ctx.adaptation, title)
    if fleet.topology is not None and fleet.topology.gateways:
        rounds = [r.tiers or [] for r in records]
        summary["gateway_energy_j"] = _sig(sum(r.gateway_energy_mj for r in records) / 1000)
        summary["topology"] = topology_summary(fleet.topology, rounds)
        for key in ("gateways_down", "gateways_late", "gateways_lost", "gateway_cut"):
            summary["topology"][key] = sum(getattr(r, key) for r in records)
    writer.summary(summary)
    run_report(binding.out)
    return summary
