"""The round loop. A round: select → plan → send/collect and reduce → server step → cost →
evaluate; after it, every callback (``server.callbacks``: results files, checkpoint, registry
write-back, adaptation, and the top floor's plots and report) and the observer hear of it.

A star is the one-tier case of the topology path (``devices.tiers.one_tier``): one code path plans,
sends, reduces and costs every round. Device failures are data: an error reply or a missing reply
is counted in the round's record and in ``devices.csv``, and the remaining updates are aggregated.
A failed device in a cohort fails alone; a worker that fails or does not reply takes down only the
devices it was running.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flwr.serverapp import Grid
from numpy.typing import NDArray

from devices.clock import DevicePlan, FleetCosts
from devices.fleet import load_fleet
from devices.tiers import finish_tiered, one_tier, plan_tiered
from fedsim.core.algorithms import ServerRound
from fedsim.core.checkpoint import Checkpoint, load_checkpoint, restore_store
from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.models import get_arrays, set_arrays
from fedsim.core.records import DeviceRecord, RoundRecord, RunBinding
from fedsim.core.results import RunWriter, read_rounds
from fedsim.core.scenario import Scenario
from fedsim.core.seeds import derive_seed
from fedsim.core.state import STATE_FILE
from fedsim.core.task_model import task_model
from server.adapt import adapt_and_score, held_out_devices
from server.asynchrony import AsyncServer
from server.callbacks import (
    Checkpoints,
    ResultsFiles,
    RoundCallback,
    RunState,
    builtin_callbacks,
)
from server.checks import (
    check_delivered,
    check_global,
    check_scores,
    interrupted_record,
    stop_record,
)
from server.dispatch import RoundContext, Work, work_payload
from server.evaluate import evaluate
from server.nodes import discover, find_gateway_nodes, find_workers
from server.outputs import (
    Usage,
    restore,
    run_summary,
    sig,
    topology_part,
    write_scenario_copy,
)
from server.tally import Scores, device_records, round_record
from server.tiers import tiered_round

__all__ = ["LogObserver", "RoundObserver", "run_rounds", "select", "stop_record"]

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


def run_rounds(
    grid: Grid,
    binding: RunBinding,
    observer: RoundObserver,
    callbacks: Sequence[RoundCallback] = (),
) -> dict[str, Any]:
    """Run the scenario bound to this app on ``grid``; return the summary. ``callbacks`` run after
    the built-in ones (``server.callbacks.builtin_callbacks``).

    Each round's rows are on disk when the round ends; if the run stops early, ``summary.json``
    says how far it got and why.
    """
    torch.set_num_threads(1)
    keep_freed_memory()
    started = time.perf_counter()
    run, checkpoint = _open(grid, binding)  # refuses a bad checkpoint before anything is written
    asynchronous = AsyncServer(run.ctx) if run.scenario.asynchrony is not None else None
    if asynchronous is not None and binding.resume:
        raise FedsimError(
            "--resume",
            "an asynchronous run cannot resume: the devices training when it stopped are not "
            "checkpointed",
            "run it again from the start",
        )
    results = ResultsFiles(_writer(binding, run.scenario, checkpoint), len(run.records))
    hooks = [*builtin_callbacks(run.scenario, results), *callbacks]
    observer.start(run.scenario.rounds)
    for earlier in run.records:  # a resumed run's progress starts where it stopped
        observer.round(earlier)
    try:
        for round_ in range(len(run.records) + 1, run.scenario.rounds + 1):
            if asynchronous is not None:
                record, devices = _async_update(asynchronous, round_)
            else:
                record, devices = _round(run.ctx, round_)
            run.add(record, devices)
            for hook in hooks:
                hook.on_round(run, record, devices)
            observer.round(record)
        check_delivered(run.usage, run.records, run.first_error)
    except BaseException as exc:  # keep what was done: the rounds so far, and why it stopped
        stopped = {**stop_record(exc), "rounds_completed": results.written}
        if isinstance(exc, KeyboardInterrupt):  # say how to go on, here and on the terminal
            checkpointed = any(isinstance(h, Checkpoints) for h in hooks)
            stopped |= interrupted_record(
                binding, results.written, checkpointed, asynchronous is not None
            )
            exc.add_note(str(stopped["error"]))
        results.writer.summary({"scenario": run.scenario.name, **stopped})
        raise
    finally:
        observer.end()
    summary = _summary(run, time.perf_counter() - started)
    for hook in hooks:
        hook.on_end(run, summary)
    results.writer.summary(summary)
    for hook in hooks:
        hook.on_summary(run, summary)
    return summary


# glibc's mallopt options (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30  # freed heap memory kept for reuse instead of handed back
MMAP_FROM_BYTES = 1 << 25  # glibc's ceiling for the mmap threshold (32 MB on 64-bit)


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory instead of handing it back and faulting it in again: each
    round allocates and frees the same large arrays (a cohort's data, the availability of every
    registered device), and by default glibc unmaps or trims them each time. At 1M registered x
    10k a round that was 2.6M minor page faults in 2 rounds (4.8 s of system time; 0.15M and
    0.6 s with this), for ~3 % more peak RSS. No-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
    except (OSError, AttributeError):  # another C library: its defaults stand
        return


def _round(ctx: RoundContext, round_: int) -> tuple[RoundRecord, list[DeviceRecord]]:
    """One round, from the global model and the clock at its start to its records."""
    scenario = ctx.scenario
    available = ctx.costs.available(ctx.clock)
    chosen = select(scenario.seed, scenario.fleet.size, scenario.cohort_size, round_, available)
    plan = plan_tiered(ctx.costs, ctx.topology, chosen, ctx.clock, round_)
    partial, outcomes, uplinks = tiered_round(ctx, _work(ctx, round_, plan.plans))
    delivered = {o.device_id for o in outcomes if o.status == "ok"}
    averaged = ctx.aggregator.finalize(ctx.global_arrays, partial)
    names = tuple(ctx.model.state_dict())
    step = ServerRound(round_, scenario.rounds, len(delivered), len(ctx.fleet), names)
    ctx.global_arrays = scenario.algorithm.server_step(
        ctx.global_arrays, averaged, step, ctx.server_state
    )
    check_global(names, ctx.global_arrays, round_, outcomes)
    cost = finish_tiered(ctx.costs, ctx.topology, plan, delivered, uplinks)
    ctx.clock += cost.round_s
    devices = device_records(ctx.fleet, round_, plan, outcomes, cost)
    scores = _evaluate(ctx, round_)
    tiered = bool(ctx.topology.gateways)
    record = round_record(round_, available, plan, cost, devices, ctx.clock, scores, tiered)
    return record, devices


def _async_update(server: AsyncServer, round_: int) -> tuple[RoundRecord, list[DeviceRecord]]:
    """One server update of an asynchronous run, evaluated like a round."""
    record, devices, _ = server.update(round_)
    scores = _evaluate(server.ctx, round_)
    adapted = scores.adapted
    record = replace(
        record,
        accuracy=scores.accuracy,
        loss=scores.loss,
        base_accuracy=scores.base,
        adapted=None if adapted is None else sig(adapted.mean),
        adapted_ci95=None if adapted is None else sig(adapted.ci95),
    )
    return record, devices


def select(
    seed: int, fleet_size: int, cohort: int, round_: int, available: NDArray[np.bool_] | None
) -> list[int]:
    """This round's devices, drawn from the scenario seed among those online, in ascending id
    order (fewer than ``cohort`` if fewer are online)."""
    rng = np.random.default_rng(derive_seed(seed, "select", round_))
    if available is None:
        chosen = rng.choice(fleet_size, size=cohort, replace=False)
    else:
        online = np.flatnonzero(available)
        size = min(cohort, len(online))
        chosen = rng.choice(online, size=size, replace=False) if size else online
    return sorted(int(d) for d in chosen)


def _work(ctx: RoundContext, round_: int, plans: list[DevicePlan]) -> Work:
    """What the devices planned to train are sent: the global model, and what to send back."""
    go = [p for p in plans if p.fate == "train"]
    return Work(
        round=round_,
        devices=[p.device_id for p in go],
        head_only=frozenset(p.device_id for p in go if p.scope == "head"),
        payload=work_payload(ctx),
        bytes_up={p.device_id: p.bytes_up for p in go},
        sent={p.device_id: ctx.costs.sent(p.device_id) for p in go},
    )


def _evaluate(ctx: RoundContext, round_: int) -> Scores:
    """The global model's scores, every ``evaluation.every`` rounds and in the last one."""
    spec = ctx.scenario.evaluation
    if round_ % spec.every and round_ != ctx.scenario.rounds:
        return Scores()
    set_arrays(ctx.model, ctx.global_arrays)
    base = adapted = None
    seen = ctx.scenario.algorithm.seen_classes(ctx.global_arrays)
    if seen is not None:  # class-incremental: score the classes seen so far
        accuracy, loss, base = _reconnaissance(ctx, seen)
    else:
        accuracy, loss = evaluate(ctx.model, ctx.data.x_test, ctx.data.y_test)
    if spec.adapt is not None:
        adapted = ctx.adaptation = adapt_and_score(
            ctx.model, ctx.global_arrays, ctx.held_out, spec.adapt, ctx.scenario.seed
        )
    check_scores(round_, {"accuracy": accuracy, "loss": loss, "base accuracy": base})
    return Scores(accuracy, loss, base, adapted)


def _reconnaissance(
    ctx: RoundContext, seen: NDArray[np.bool_]
) -> tuple[float | None, float | None, float | None]:
    """Class-incremental: accuracy and loss on the test samples of every class reconnoitred so
    far, and accuracy on the classes of the first evaluated round (what the server retains)."""
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


def _open(grid: Grid, binding: RunBinding) -> tuple[RunState, Checkpoint | None]:
    """The run as it starts (or resumes): scenario, fleet, data, model, the nodes, and the
    checkpoint put back. A ``FedsimError`` for a checkpoint that does not fit; nothing written."""
    scenario, fleet = load_fleet(binding.scenario)
    checkpoint = load_checkpoint(binding.out) if binding.resume else None
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = task_model(
        scenario, data.num_features, data.num_outputs, derive_seed(scenario.seed, "init")
    )
    # e.g. a frozen, pre-trained encoder
    scenario.algorithm.pretrained_for(model, scenario.seed, scenario.task.dataset)
    cohort = scenario.execution.mode == "cohort"
    workers = find_workers(grid, DISCOVERY_TIMEOUT_S) if cohort else []
    ctx = RoundContext(
        grid=grid,
        scenario=scenario,
        fleet=fleet,
        model=model,
        data=data,
        aggregator=scenario.algorithm.aggregator(),
        costs=FleetCosts(scenario, fleet, model),
        device_to_node={} if cohort else discover(grid, fleet, DISCOVERY_TIMEOUT_S),
        workers=workers,
        topology=fleet.topology or one_tier(),
        gateway_nodes=(
            find_gateway_nodes(grid, workers, fleet, DISCOVERY_TIMEOUT_S) if cohort else {}
        ),
        global_arrays=get_arrays(model),
    )
    if scenario.evaluation.adapt is not None:
        ctx.held_out = held_out_devices(data, scenario.evaluation.adapt, scenario.seed)
    usage = restore(ctx, checkpoint) if checkpoint is not None else Usage()
    run = RunState(binding, scenario, fleet, ctx, usage)
    if checkpoint is not None:  # rows past the checkpoint are dropped (_writer): not done
        done = read_rounds(binding.out)
        run.records = [RoundRecord(**r) for r in done if r["round"] <= checkpoint.round]
    return run, checkpoint


def _writer(binding: RunBinding, scenario: Scenario, checkpoint: Checkpoint | None) -> RunWriter:
    """The run's writer; a new run's manifest and copy of its scenario. Resuming: the rows past
    the checkpoint are dropped, the resume is noted in the manifest and the device-state store is
    put back as it was at the checkpoint."""
    if not binding.resume:
        writer = RunWriter(binding.out)
        writer.manifest(scenario, binding.scenario, binding.command)
        write_scenario_copy(binding.out, scenario, binding.scenario)
        return writer
    done = checkpoint.round if checkpoint is not None else 0
    writer = RunWriter(binding.out, resume_after=done)
    writer.resumed(done)
    restore_store(checkpoint, Path(binding.out) / STATE_FILE)
    return writer


def _summary(run: RunState, wall_s: float) -> dict[str, Any]:
    """A completed run's ``summary.json`` (callbacks' ``on_end`` may add to it)."""
    s, usage = run.scenario, run.usage
    summary = {
        **run_summary(s.name, s.algorithm.kind, s.rounds, run.fleet, run.records),
        "device_rounds": {"selected": usage.selected, "trained": usage.delivered},
        "per_device_round": usage.means(),
        "train_ram_bytes": run.ctx.costs.full.train_bytes,
        "wall_s": round(wall_s, 3),
    }
    if run.ctx.topology.gateways:
        summary |= topology_part(run.ctx.topology, run.records)
    return summary
