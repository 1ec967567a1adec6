"""The round loop: discover nodes, then per round select, send, collect, reduce, evaluate, record.

Per-device mode sends one message per selected device to that device's node. Cohort mode cuts the
round's sorted cohort into reduction blocks (``fedsim.core.reduce``), gives each worker node a
contiguous run of whole blocks, and merges the block partials the workers return. Either way the
global model is the same: same blocks, same order.

Device failures are data: an error reply or a missing reply is counted in the round's record and
in ``devices.csv``, and the remaining updates are aggregated. A failed device in a cohort fails
alone; a worker that fails or does not reply takes down only the devices it was running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from torch import nn

from devices.fleet import Fleet, load_fleet
from fedsim.core.aggregators import ModelAggregator, aggregator_for
from fedsim.core.cohort import CohortOrder, CohortReply, DeviceOutcome
from fedsim.core.data import TaskData, load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.models import build_model, get_arrays, set_arrays
from fedsim.core.plots import plot_accuracy
from fedsim.core.records import (
    ARRAYS,
    CONFIG,
    DEVICE_ID,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    DeviceRecord,
    DeviceStatus,
    RoundRecord,
    RunBinding,
)
from fedsim.core.reduce import Arrays, WeightedSum, block_size, merge_blocks, reduce_blocks
from fedsim.core.results import RunWriter
from fedsim.core.scenario import Scenario
from fedsim.core.seeds import derive_seed
from server.evaluate import evaluate

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


def _select(scenario: Scenario, round_: int) -> list[int]:
    """This round's devices, drawn from the scenario seed, in ascending id order."""
    rng = np.random.default_rng(derive_seed(scenario.seed, "select", round_))
    chosen = rng.choice(scenario.fleet.size, size=scenario.cohort_size, replace=False)
    return sorted(int(d) for d in chosen)


def _collect(
    replies: Iterable[Message],
    node_to_device: dict[int, int],
    fleet: Fleet,
    round_: int,
    selected: list[int],
    bytes_down: int,
) -> tuple[list[tuple[int, tuple[Arrays, int]]], list[DeviceRecord]]:
    """``(position, update)`` pairs in cohort order, and one record per selected device."""
    got: dict[int, Message] = {node_to_device[r.metadata.src_node_id]: r for r in replies}
    updates, records = [], []
    for position, device_id in enumerate(selected):
        profile = fleet[device_id].profile.name
        reply = got.get(device_id)
        if reply is None:
            records.append(
                DeviceRecord(
                    round_,
                    device_id,
                    profile,
                    "no-reply",
                    0,
                    None,
                    bytes_down,
                    0,
                    "no reply before round_timeout_s",
                )
            )
        elif reply.has_error():
            records.append(
                DeviceRecord(
                    round_, device_id, profile, "failed", 0, None, bytes_down, 0, _reason(reply)
                )
            )
        else:
            arrays: ArrayRecord = reply.content[ARRAYS]  # type: ignore[assignment]
            metrics = reply.content[METRICS]
            n = int(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]
            updates.append((position, (arrays.to_numpy_ndarrays(), n)))
            records.append(
                DeviceRecord(
                    round_,
                    device_id,
                    profile,
                    "ok",
                    n,
                    float(metrics[TRAIN_LOSS]),  # type: ignore[arg-type]
                    bytes_down,
                    arrays.count_bytes(),
                )
            )
    return updates, records


@dataclass
class _RoundContext:
    """What every round of one run needs; ``global_arrays`` is replaced after each round."""

    grid: Grid
    scenario: Scenario
    fleet: Fleet
    model: nn.Module
    data: TaskData
    aggregator: ModelAggregator
    device_to_node: dict[int, int]  # per-device mode
    workers: list[int]  # cohort mode
    global_arrays: Arrays

    @property
    def node_to_device(self) -> dict[int, int]:
        return {n: d for d, n in self.device_to_node.items()}


def _per_device_round(
    ctx: _RoundContext, round_: int, selected: list[int], payload: ArrayRecord
) -> tuple[WeightedSum, list[DeviceRecord]]:
    messages = [
        Message(
            RecordDict({ARRAYS: payload, CONFIG: ConfigRecord({SERVER_ROUND: round_})}),
            dst_node_id=ctx.device_to_node[d],
            message_type=MessageType.TRAIN,
        )
        for d in selected
    ]
    replies = ctx.grid.send_and_receive(messages, timeout=ctx.scenario.execution.round_timeout_s)
    updates, devices = _collect(
        replies, ctx.node_to_device, ctx.fleet, round_, selected, payload.count_bytes()
    )
    partials = reduce_blocks(ctx.aggregator, updates, block_size(len(selected)))
    return merge_blocks(ctx.aggregator, partials), devices


def _orders(round_: int, selected: list[int], workers: int) -> list[CohortOrder]:
    """Contiguous runs of whole reduction blocks, one per worker (fewer if blocks are few)."""
    block = block_size(len(selected))
    blocks = -(-len(selected) // block)
    orders = []
    for share in np.array_split(np.arange(blocks), min(workers, blocks)):
        first, end = int(share[0]) * block, min((int(share[-1]) + 1) * block, len(selected))
        orders.append(CohortOrder(round_, selected[first:end], first, block))
    return orders


def _cohort_round(
    ctx: _RoundContext, round_: int, selected: list[int], payload: ArrayRecord
) -> tuple[WeightedSum, list[DeviceRecord]]:
    orders = _orders(round_, selected, len(ctx.workers))
    messages = [
        Message(
            RecordDict({ARRAYS: payload, CONFIG: order.config()}),
            dst_node_id=worker,
            message_type=MessageType.TRAIN,
        )
        for order, worker in zip(orders, ctx.workers, strict=False)
    ]
    by_worker = {m.metadata.dst_node_id: o for m, o in zip(messages, orders, strict=True)}
    replies = ctx.grid.send_and_receive(messages, timeout=ctx.scenario.execution.round_timeout_s)
    got = {r.metadata.src_node_id: r for r in replies}
    size = payload.count_bytes()  # down per device; up too: an update is the model's size
    partials: dict[int, WeightedSum] = {}
    outcomes: list[DeviceOutcome] = []
    for worker, order in by_worker.items():
        reply = got.get(worker)
        if reply is None or reply.has_error():  # the worker's devices share its fate
            status: DeviceStatus = "no-reply" if reply is None else "failed"
            reason = "no reply before round_timeout_s" if reply is None else _reason(reply)
            outcomes += [DeviceOutcome(d, status, error=reason) for d in order.device_ids]
            continue
        result = CohortReply.from_content(reply.content, ctx.aggregator)
        partials |= result.partials
        outcomes += result.outcomes
    devices = [_device_record(ctx.fleet, round_, o, size) for o in outcomes]
    devices.sort(key=lambda d: d.device_id)
    return merge_blocks(ctx.aggregator, partials), devices


def _reason(reply: Message) -> str:
    return reply.error.reason.strip().splitlines()[-1][:200] if reply.error.reason else ""


def _device_record(fleet: Fleet, round_: int, o: DeviceOutcome, size: int) -> DeviceRecord:
    profile = fleet[o.device_id].profile.name
    if o.status == "ok":
        return DeviceRecord(
            round_, o.device_id, profile, "ok", o.num_examples, o.train_loss, size, size
        )
    return DeviceRecord(round_, o.device_id, profile, o.status, 0, None, size, 0, o.error)


def _round(ctx: _RoundContext, round_: int) -> tuple[RoundRecord, list[DeviceRecord]]:
    scenario = ctx.scenario
    selected = _select(scenario, round_)
    payload = ArrayRecord(ctx.global_arrays)
    run = _cohort_round if ctx.workers else _per_device_round
    partial, devices = run(ctx, round_, selected, payload)
    ctx.global_arrays = ctx.aggregator.finalize(ctx.global_arrays, partial)

    accuracy = loss = None
    if round_ % scenario.evaluation.every == 0 or round_ == scenario.rounds:
        set_arrays(ctx.model, ctx.global_arrays)
        accuracy, loss = evaluate(ctx.model, ctx.data.x_test, ctx.data.y_test)
    ok = [d for d in devices if d.status == "ok"]
    examples = sum(d.num_examples for d in ok)
    record = RoundRecord(
        round=round_,
        selected=len(selected),
        participants=len(ok),
        failures=len(devices) - len(ok),
        accuracy=accuracy,
        loss=loss,
        train_loss=(
            sum((d.train_loss or 0.0) * d.num_examples for d in ok) / examples if examples else None
        ),
        bytes_down=sum(d.bytes_down for d in devices),
        bytes_up=sum(d.bytes_up for d in devices),
    )
    return record, devices


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
    }


def run_rounds(grid: Grid, binding: RunBinding, observer: RoundObserver) -> dict[str, Any]:
    """Run the scenario bound to this app on ``grid``; write results; return the summary.

    Each round's rows are on disk when the round ends; if the run stops early, ``summary.json``
    says how far it got and why.
    """
    torch.set_num_threads(1)
    started = time.perf_counter()
    scenario, fleet = load_fleet(binding.scenario)
    writer = RunWriter(binding.out)
    writer.manifest(scenario, binding.scenario, binding.command)
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = build_model(
        scenario.task.model, data.num_features, data.num_classes, derive_seed(scenario.seed, "init")
    )
    cohort = scenario.execution.mode == "cohort"
    workers = _workers(grid, DISCOVERY_TIMEOUT_S) if cohort else []
    per_device = {} if cohort else _discover(grid, fleet, DISCOVERY_TIMEOUT_S)
    ctx = _RoundContext(
        grid=grid,
        scenario=scenario,
        fleet=fleet,
        model=model,
        data=data,
        aggregator=aggregator_for(scenario.algorithm.kind),
        device_to_node=per_device,
        workers=workers,
        global_arrays=get_arrays(model),
    )
    records: list[RoundRecord] = []
    observer.start(scenario.rounds)
    try:
        for round_ in range(1, scenario.rounds + 1):
            record, devices = _round(ctx, round_)
            writer.round(record, devices)
            records.append(record)
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
    plot_accuracy(binding.out, f"{scenario.name} ({scenario.algorithm.kind}, seed {scenario.seed})")
    summary = {
        **_summary(scenario, fleet, records),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    writer.summary(summary)
    return summary
