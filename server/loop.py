"""The round loop: discover devices, then per round select, send, collect, reduce, evaluate, record.

Device failures are data: an error reply or a missing reply is counted in the round's record and
in ``devices.csv``, and the remaining updates are aggregated.
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
    RoundRecord,
    RunBinding,
)
from fedsim.core.reduce import Arrays, reduce_all
from fedsim.core.results import RunWriter
from fedsim.core.scenario import Scenario
from fedsim.core.seeds import derive_seed
from server.evaluate import evaluate
from server.strategies import AGGREGATORS, ModelAggregator

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


def _discover(grid: Grid, fleet: Fleet, timeout_s: float) -> dict[int, int]:
    """Map device id → Flower node id by asking every node which device it simulates."""
    deadline = time.monotonic() + timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < len(fleet) and time.monotonic() < deadline:
        time.sleep(0.1)
        node_ids = list(grid.get_node_ids())
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
) -> tuple[list[tuple[Arrays, int]], list[DeviceRecord]]:
    """Updates (sorted by device id) and one record per selected device."""
    got: dict[int, Message] = {node_to_device[r.metadata.src_node_id]: r for r in replies}
    updates, records = [], []
    for device_id in selected:
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
            reason = reply.error.reason.strip().splitlines()[-1][:200] if reply.error.reason else ""
            records.append(
                DeviceRecord(round_, device_id, profile, "failed", 0, None, bytes_down, 0, reason)
            )
        else:
            arrays: ArrayRecord = reply.content[ARRAYS]  # type: ignore[assignment]
            metrics = reply.content[METRICS]
            n = int(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]
            updates.append((arrays.to_numpy_ndarrays(), n))
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
    device_to_node: dict[int, int]
    global_arrays: Arrays

    @property
    def node_to_device(self) -> dict[int, int]:
        return {n: d for d, n in self.device_to_node.items()}


def _round(ctx: _RoundContext, round_: int) -> tuple[RoundRecord, list[DeviceRecord]]:
    scenario = ctx.scenario
    selected = _select(scenario, round_)
    payload = ArrayRecord(ctx.global_arrays)
    messages = [
        Message(
            RecordDict({ARRAYS: payload, CONFIG: ConfigRecord({SERVER_ROUND: round_})}),
            dst_node_id=ctx.device_to_node[d],
            message_type=MessageType.TRAIN,
        )
        for d in selected
    ]
    replies = ctx.grid.send_and_receive(messages, timeout=scenario.execution.round_timeout_s)
    updates, devices = _collect(
        replies, ctx.node_to_device, ctx.fleet, round_, selected, payload.count_bytes()
    )
    ctx.global_arrays = ctx.aggregator.finalize(
        ctx.global_arrays, reduce_all(ctx.aggregator, updates)
    )

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
    ctx = _RoundContext(
        grid=grid,
        scenario=scenario,
        fleet=fleet,
        model=model,
        data=data,
        aggregator=AGGREGATORS.get(scenario.algorithm.kind, "algorithm.kind")(),
        device_to_node=_discover(grid, fleet, DISCOVERY_TIMEOUT_S),
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

    plot_accuracy(binding.out, f"{scenario.name} ({scenario.algorithm.kind}, seed {scenario.seed})")
    summary = {
        **_summary(scenario, fleet, records),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    writer.summary(summary)
    return summary
