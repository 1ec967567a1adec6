"""The round loop: discover nodes, then per round select, plan (``devices.clock``), send and
collect (``server.dispatch``), reduce, evaluate, record; at the end, write results back.

Device failures are data: an error reply or a missing reply is counted in the round's record and
in ``devices.csv``, and the remaining updates are aggregated. A failed device in a cohort fails
alone; a worker that fails or does not reply takes down only the devices it was running.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flwr.serverapp import Grid
from numpy.typing import NDArray

from devices.clock import DevicePlan, FleetCosts, RoundCost
from devices.fleet import load_fleet
from devices.tiers import finish_tiered, plan_tiered, topology_summary
from fedsim.core.algorithms import ServerRound
from fedsim.core.checkpoint import Checkpoint, load_checkpoint, restore_store
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError, RunStoppedError
from fedsim.core.models import get_arrays, set_arrays
from fedsim.core.payload import non_finite
from fedsim.core.plots import plot_accuracy, plot_fleet, plot_tiers
from fedsim.core.records import (
    DeviceRecord,
    DeviceStatus,
    RoundRecord,
    RunBinding,
)
from fedsim.core.report import run_report
from fedsim.core.results import RunWriter, read_rounds
from fedsim.core.scenario import Scenario
from fedsim.core.seeds import derive_seed
from fedsim.core.state import STATE_FILE
from fedsim.core.task_model import task_model
from server.adapt import adapt_and_score, held_out_devices
from server.dispatch import RoundContext, Work, cohort_round, per_device_round, work_payload
from server.evaluate import evaluate
from server.nodes import discover, find_gateway_nodes, find_workers
from server.outputs import (
    Usage,
    restore,
    run_summary,
    save_round,
    sig,
    write_adaptation,
    write_back,
)
from server.tiers import tiered_round

__all__ = ["LogObserver", "RoundObserver", "run_rounds", "stop_record"]

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
                busy_s=sig(cost.busy_s[d]),
                energy_mj=sig(cost.energy_mj[d]),
            )
        )
    return records


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
    delivered = {o.device_id for o in outcomes if o.status == "ok"}
    info = ServerRound(
        round_, scenario.rounds, len(delivered), len(ctx.fleet), tuple(ctx.model.state_dict())
    )
    ctx.global_arrays = scenario.algorithm.server_step(
        ctx.global_arrays, averaged, info, ctx.server_state
    )
    _check_global(ctx, round_, outcomes)
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
                "gateway_energy_mj": sig(tcost.gateway_energy_mj),
                "tiers": [{**t, "s": sig(float(t["s"]))} for t in tcost.tiers],
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
    _check_scores(round_, {"accuracy": accuracy, "loss": loss, "base accuracy": base})
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
        round_s=sig(cost.round_s),
        sim_time_s=sig(ctx.clock),
        energy_mj=sig(sum(cost.energy_mj.values())),
        offline=0 if available is None else int(len(available) - available.sum()),
        memory_skips=fates.count("memory-skip"),
        head_only=len(work.head_only),
        stragglers=fates.count("straggler"),
        dropouts=fates.count("dropout"),
        base_accuracy=base,
        adapted=None if adapted is None else sig(adapted.mean),
        adapted_ci95=None if adapted is None else sig(adapted.ci95),
        **tiers,
    )
    return record, devices


def stop_record(exc: BaseException) -> dict[str, str]:
    """What ``summary.json`` says of a run that stopped: its status and error line, and the
    error's parts, so that ``fedsim run`` prints the same line on every engine."""
    if isinstance(exc, FedsimError):
        status = exc.status if isinstance(exc, RunStoppedError) else "refused"
        return {"status": status, "error": exc.line(), **_parts(exc)}
    what = f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "error": what, "where": "", "what": what, "fix": ""}


def _parts(exc: FedsimError) -> dict[str, str]:
    return {"where": exc.where, "what": exc.what, "fix": exc.fix}


def _check_global(ctx: RoundContext, round_: int, outcomes: list[DeviceOutcome]) -> None:
    """Stop the run when the global model is no longer finite: every later round, metric and
    the saved model would be NaN, reported as numbers."""
    problem = non_finite(list(ctx.model.state_dict()), ctx.global_arrays)
    if problem:
        ok = sum(o.status == "ok" for o in outcomes)
        raise RunStoppedError(
            "diverged",
            f"round {round_}",
            f"the global model is not finite ({problem}) after aggregating {ok} device updates",
            "the federation diverged: lower algorithm.lr (or the server step); "
            "devices.csv has each device's training loss up to the round before",
        )


def _check_scores(round_: int, scores: dict[str, float | None]) -> None:
    """A finite model can still score NaN or inf (its outputs overflow): as useless as a NaN one,
    and not a number to record."""
    for name, value in scores.items():
        if value is not None and not math.isfinite(value):
            raise RunStoppedError(
                "diverged",
                f"round {round_}",
                f"the global model's test {name} is {value} (its outputs overflow)",
                "the federation diverged: lower algorithm.lr (or the server step)",
            )


def _check_delivered(usage: Usage, records: list[RoundRecord], first_error: str) -> None:
    """A run in which no device ever delivered an update learned nothing: it failed."""
    if usage.delivered or not records:
        return
    failures = sum(r.failures for r in records)
    why = f"; the first device error: {first_error}" if first_error else ""
    raise RunStoppedError(
        "no-updates",
        f"{len(records)} rounds",
        f"no device update succeeded ({usage.selected} device rounds selected, {failures} "
        f"failed or did not reply){why}",
        "see the error column of devices.csv; fedsim validate checks the scenario",
    )


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


def _writer(binding: RunBinding, scenario: Scenario, checkpoint: Checkpoint | None) -> RunWriter:
    """The run's writer. Resuming: the rows past the checkpoint are dropped, the resume is noted
    in the manifest and the device-state store is put back as it was at the checkpoint."""
    if not binding.resume:
        writer = RunWriter(binding.out)
        writer.manifest(scenario, binding.scenario, binding.command)
        return writer
    done = checkpoint.round if checkpoint is not None else 0
    writer = RunWriter(binding.out, resume_after=done)
    writer.resumed(done)
    restore_store(checkpoint, Path(binding.out) / STATE_FILE)
    return writer


def run_rounds(grid: Grid, binding: RunBinding, observer: RoundObserver) -> dict[str, Any]:
    """Run the scenario bound to this app on ``grid``; write results; return the summary.

    Each round's rows are on disk when the round ends; if the run stops early, ``summary.json``
    says how far it got and why.
    """
    torch.set_num_threads(1)
    started = time.perf_counter()
    scenario, fleet = load_fleet(binding.scenario)
    checkpoint = load_checkpoint(binding.out) if binding.resume else None
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = task_model(
        scenario, data.num_features, data.num_outputs, derive_seed(scenario.seed, "init")
    )
    scenario.algorithm.pretrained(model, scenario.seed)  # e.g. a frozen, pre-trained encoder
    cohort = scenario.execution.mode == "cohort"
    workers = find_workers(grid, DISCOVERY_TIMEOUT_S) if cohort else []
    gateway_nodes = find_gateway_nodes(grid, workers, fleet, DISCOVERY_TIMEOUT_S) if cohort else {}
    per_device = {} if cohort else discover(grid, fleet, DISCOVERY_TIMEOUT_S)
    ctx = RoundContext(
        grid=grid,
        scenario=scenario,
        fleet=fleet,
        model=model,
        data=data,
        aggregator=scenario.algorithm.aggregator(),
        costs=FleetCosts(scenario, fleet, model),
        device_to_node=per_device,
        workers=workers,
        gateway_nodes=gateway_nodes,
        global_arrays=get_arrays(model),
    )
    if scenario.evaluation.adapt is not None:
        ctx.held_out = held_out_devices(data, scenario.evaluation.adapt, scenario.seed)
    # a checkpoint that does not fit the model is refused before the run folder is touched
    usage = restore(ctx, checkpoint) if checkpoint is not None else Usage()
    writer = _writer(binding, scenario, checkpoint)
    records: list[RoundRecord] = []
    if checkpoint is not None:
        records = [RoundRecord(**r) for r in read_rounds(binding.out)]
    observer.start(scenario.rounds)
    for earlier in records:  # a resumed run's progress starts where it stopped
        observer.round(earlier)
    first_error = ""
    try:
        for round_ in range(len(records) + 1, scenario.rounds + 1):
            record, devices = _round(ctx, round_)
            writer.round(record, devices)
            records.append(record)
            usage.add(scenario, devices, fleet)
            first_error = first_error or next((d.error for d in devices if d.error), "")
            if scenario.output.checkpoint:
                save_round(binding.out, ctx, round_, usage)
            observer.round(record)
        _check_delivered(usage, records, first_error)
    except BaseException as exc:  # keep what was done: the rounds so far, and why it stopped
        writer.summary(
            {"scenario": scenario.name, **stop_record(exc), "rounds_completed": len(records)}
        )
        raise
    finally:
        observer.end()

    set_arrays(model, ctx.global_arrays)
    writer.model(dict(zip(model.state_dict(), ctx.global_arrays, strict=True)))
    if scenario.registry is not None and scenario.registry.write_back:
        write_back(scenario, fleet, binding)
    title = f"{scenario.name} ({scenario.algorithm.kind}, seed {scenario.seed})"
    plot_accuracy(binding.out, title)
    plot_fleet(binding.out, title)
    plot_tiers(binding.out, title)
    summary = {
        **run_summary(scenario, fleet, records),
        "device_rounds": {"selected": usage.selected, "trained": usage.delivered},
        "per_device_round": usage.means(),
        "train_ram_bytes": ctx.costs.full.train_bytes,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    if ctx.adaptation is not None:
        summary["adapted"] = write_adaptation(binding.out, ctx.adaptation, title)
    if fleet.topology is not None and fleet.topology.gateways:
        rounds = [r.tiers or [] for r in records]
        summary["gateway_energy_j"] = sig(sum(r.gateway_energy_mj for r in records) / 1000)
        summary["topology"] = topology_summary(fleet.topology, rounds)
        for key in ("gateways_down", "gateways_late", "gateways_lost", "gateway_cut"):
            summary["topology"][key] = sum(getattr(r, key) for r in records)
    writer.summary(summary)
    run_report(binding.out)
    return summary
