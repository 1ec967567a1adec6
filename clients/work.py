"""A device's local work in one round, alone (per-device mode) or with its cohort (cohort mode).

``train_device`` is the one definition of what a simulated device does; a cohort worker runs it
for each of its devices (or, where the learner allows, the vectorised equivalent in
``clients.vectorized``) and reduces the updates into block partials, so both execution modes
compute the same thing.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clients.update import device_update, sent_tensors
from clients.vectorized import can_vectorize, train_vectorized
from devices.fleet import Fleet
from fedsim.core.algorithms import DeviceUpdate, Learner, ModelAggregator, NonFiniteUpdateError
from fedsim.core.algorithms.base import Algorithm
from fedsim.core.algorithms.prototype_sums import ClassSums
from fedsim.core.cohort import CohortOrder, CohortReply, DeviceOutcome
from fedsim.core.data import load_task_data
from fedsim.core.errors import clip
from fedsim.core.hierarchy import gateway_rounds
from fedsim.core.models import get_arrays, head_parameters, set_arrays
from fedsim.core.reduce import Arrays, ModelUpdate, reduce_blocks
from fedsim.core.scenario import Scenario
from fedsim.core.seeds import derive_seed
from fedsim.core.state import STATE_FILE, DeviceState, DeviceStateStore
from fedsim.core.task_model import task_model

MIN_GROUP = 8  # fewer train faster one by one (benchmarks.vectorize --devices 8: break-even)
log = logging.getLogger(__name__)
_FELL_BACK: set[type[BaseException]] = set()  # the kinds of batched failure already logged

WINDOW = 256  # devices in flight per worker: their data and updates, ~0.4 MB each for mlp-100

__all__ = [
    "STATE_FILE",
    "DeviceUpdate",
    "InjectedCrashError",
    "NonFiniteUpdateError",
    "run_cohort",
    "state_store",
    "train_device",
    "train_one",
]


class InjectedCrashError(RuntimeError):
    """A crash injected by the scenario's ``faults``; to the server it looks like a real one."""


def _crashes(seed: int, round_: int, device_id: int, prob: float) -> bool:
    if prob <= 0.0:
        return False
    draw = derive_seed(seed, "crash", round_, device_id) / 2**32  # uniform in [0, 1)
    return draw < prob


def _check_crash(scenario: Scenario, fleet: Fleet, round_: int, device_id: int) -> None:
    if _crashes(scenario.seed, round_, device_id, fleet[device_id].crash_prob):
        raise InjectedCrashError(f"injected crash of device {device_id} in round {round_}")


def _model(scenario: Scenario) -> nn.Module:
    data = load_task_data(scenario.task.dataset, scenario.seed)
    return task_model(scenario, data.num_features, data.num_outputs, 0)


def _learner(scenario: Scenario) -> Learner:
    return scenario.algorithm.learner()


def _device_learner(scenario: Scenario, fleet: Fleet, device_id: int) -> Learner:
    """The scenario's learner, or for an attached device the same steps run on the device (a
    gateway's node config may attach one to any scenario: ``on_device`` refuses what it cannot)."""
    attached = fleet[device_id].attached
    if attached is None:
        return _learner(scenario)
    return scenario.algorithm.attached_learner(attached)


def _measured(learner: Learner) -> tuple[float | None, float | None]:
    measured = getattr(learner, "measured", None)  # what an attached device reported
    if not measured:
        return None, None
    report = measured[-1]
    seconds = None if report.train_us is None else report.train_us / 1e6
    return seconds, None if report.energy_uj is None else report.energy_uj / 1e3


def _train_seed(scenario: Scenario, round_: int, device_id: int, step: int = 1) -> int:
    """Its training draws in ``round_``; behind a gateway, in local round ``step`` of it."""
    if step == 1:
        return derive_seed(scenario.seed, "train", round_, device_id)
    return derive_seed(scenario.seed, "train", round_, device_id, "local", step)


def state_store(out: str) -> DeviceStateStore:
    """The run's per-device state (``<out>/device-state.sqlite``), shared by all workers."""
    return DeviceStateStore(Path(out) / STATE_FILE)


def train_device(
    scenario: Scenario,
    fleet: Fleet,
    device_id: int,
    round_: int,
    global_arrays: Arrays,
    state: DeviceState,
    model: nn.Module | None = None,
    head_only: bool = False,
    step: int = 1,
) -> DeviceUpdate:
    """One device's round: start from the global arrays, train on its local data.

    ``state`` is the device's own state from earlier rounds; a stateful learner updates it in
    place. ``head_only``: only the last layer trains (its SRAM cannot hold more, TinyOL style).
    ``step``: behind a gateway, which of its local rounds this is (from the gateway's model).
    Raises whatever the device would (an injected crash included); the caller records it.
    """
    _check_crash(scenario, fleet, round_, device_id)
    torch.set_num_threads(1)  # one core per worker; also keeps float sums reproducible
    model = model or _model(scenario)
    set_arrays(model, global_arrays)
    x, y = fleet.round_data(device_id, round_)
    reported = scenario.algorithm.device_round(
        model, x, y, global_arrays, scenario.fleet.payload_dtype
    )
    if reported is not None:  # the algorithm's device sends something else than its model
        return reported
    seed = _train_seed(scenario, round_, device_id, step)
    frozen = _body(model) if head_only else []
    try:
        for p in frozen:
            p.requires_grad_(False)
        learner = _device_learner(scenario, fleet, device_id)
        loss = learner.train(model, x, y, seed, state)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    sent = sent_tensors(scenario, model, head_only)
    return device_update(
        scenario, model, get_arrays(model), global_arrays, sent, len(y), loss, _measured(learner)
    )


def _body(model: nn.Module) -> list[nn.Parameter]:
    """All but the last layer: what a head-only device holds frozen."""
    head = head_parameters(model)
    return [p for name, p in model.named_parameters() if name not in head]


def train_one(
    scenario: Scenario,
    fleet: Fleet,
    out: str,
    device_id: int,
    round_: int,
    global_arrays: Arrays,
    head_only: bool = False,
    step: int = 1,
) -> DeviceUpdate:
    """Per-device mode: ``train_device`` with the device's state loaded and saved."""
    if not _learner(scenario).stateful:
        return train_device(
            scenario, fleet, device_id, round_, global_arrays, {}, None, head_only, step
        )
    with state_store(out) as store:
        state = store.get(device_id) or {}
        try:
            return train_device(
                scenario, fleet, device_id, round_, global_arrays, state, None, head_only, step
            )
        finally:  # what it changed before failing is kept, as in cohort mode
            store.put(device_id, state)


def _failure(device_id: int, exc: BaseException) -> DeviceOutcome:
    reason = traceback.format_exception_only(exc)[-1].strip()[:200]
    return DeviceOutcome(device_id, "failed", error=reason)


def _sequential(
    scenario: Scenario,
    fleet: Fleet,
    order: CohortOrder,
    ids: list[int],
    global_arrays: Arrays,
    states: dict[int, DeviceState],
) -> dict[int, DeviceUpdate | DeviceOutcome]:
    model = _model(scenario)
    done: dict[int, DeviceUpdate | DeviceOutcome] = {}
    for device_id in ids:
        state = states.setdefault(device_id, {})
        try:
            done[device_id] = train_device(
                scenario,
                fleet,
                device_id,
                order.round,
                global_arrays,
                state,
                model,
                head_only=device_id in order.head_only,
                step=order.step,
            )
        except Exception as exc:  # this device fails; its cohort goes on
            done[device_id] = _failure(device_id, exc)
    return done


# how a cohort's devices run: one by one, or vectorised where the learner allows
Work = Callable[
    [Scenario, Fleet, CohortOrder, list[int], Arrays, dict[int, DeviceState]],
    dict[int, "DeviceUpdate | DeviceOutcome"],
]


def _vectorized(
    scenario: Scenario,
    fleet: Fleet,
    order: CohortOrder,
    ids: list[int],
    global_arrays: Arrays,
    states: dict[int, DeviceState],
) -> dict[int, DeviceUpdate | DeviceOutcome]:
    """Only for stateless learners (``can_vectorize``): ``states`` stays untouched."""
    done: dict[int, DeviceUpdate | DeviceOutcome] = {}
    data = {}
    for device_id in ids:
        try:  # what train_device does before training, device by device
            _check_crash(scenario, fleet, order.round, device_id)
            data[device_id] = fleet.round_data(device_id, order.round)
        except Exception as exc:
            done[device_id] = _failure(device_id, exc)
    # attached devices (their own learner) run one by one; the rest trains batched in two groups,
    # whole models and head-only ones (unequal sample counts are masked), unless too few to pay
    groups: dict[bool, list[int]] = {False: [], True: []}
    for d in data:
        if fleet[d].attached is None:
            groups[d in order.head_only].append(d)
    batched = {h: g for h, g in groups.items() if len(g) >= MIN_GROUP}
    alone = sorted(set(data) - {d for g in batched.values() for d in g})
    done |= _sequential(scenario, fleet, order, alone, global_arrays, states)
    for head_only, group in batched.items():
        mine = {d: data[d] for d in group}
        done |= _batched(scenario, fleet, order, mine, global_arrays, states, head_only)
    return done


def _batched(
    scenario: Scenario,
    fleet: Fleet,
    order: CohortOrder,
    data: dict[int, tuple[Any, Any]],
    global_arrays: Arrays,
    states: dict[int, DeviceState],
    head_only: bool,
) -> dict[int, DeviceUpdate | DeviceOutcome]:
    """The devices of ``data`` trained at once (``head_only``: all but the last layer frozen, as
    ``train_device`` freezes it); should the batched step fail, one by one (which pins the
    failure on the device that causes it)."""
    group = list(data)
    seeds = [_train_seed(scenario, order.round, d, order.step) for d in group]
    model = _model(scenario)
    if head_only:
        for p in _body(model):
            p.requires_grad_(False)
    try:
        trained = train_vectorized(
            model, global_arrays, _learner(scenario), list(data.values()), seeds
        )
    except Exception as exc:  # said once per worker process: slower, same results
        if type(exc) not in _FELL_BACK:
            _FELL_BACK.add(type(exc))
            log.warning(
                "batched training failed (%s: %s); these devices train one by one",
                type(exc).__name__,
                clip(str(exc), 200),
            )
        return _sequential(scenario, fleet, order, group, global_arrays, states)
    sent = sent_tensors(scenario, model, head_only)
    done: dict[int, DeviceUpdate | DeviceOutcome] = {}
    for device_id, (arrays, loss) in zip(group, trained, strict=True):
        n = len(data[device_id][1])
        try:
            done[device_id] = device_update(scenario, model, arrays, global_arrays, sent, n, loss)
        except Exception as exc:  # this device fails; its cohort goes on
            done[device_id] = _failure(device_id, exc)
    return done


def _reports(scenario: Scenario) -> bool:
    """Whether the algorithm's devices send something else than their model
    (``Algorithm.device_round``): only ``train_device`` knows to ask."""
    return type(scenario.algorithm).device_round is not Algorithm.device_round


def run_cohort(
    scenario: Scenario,
    fleet: Fleet,
    out: str,
    order: CohortOrder,
    global_arrays: Arrays,
    aggregator: ModelAggregator,
) -> CohortReply[Any]:
    """Run the ordered devices and reduce their updates into this worker's block partials.

    Devices run in windows of whole reduction blocks (about ``WINDOW`` devices), each window's
    updates reduced and dropped before the next: a worker's memory does not grow with its share.
    A stateful learner's states are read in one query and written in one transaction per window
    (failed devices included: what they changed before failing is kept).
    """
    torch.set_num_threads(1)
    learner = _learner(scenario)
    vectorize = (
        scenario.execution.vectorize
        and not learner.stateful  # a batched kernel neither reads nor writes a device's state
        and not _reports(scenario)
        and can_vectorize(_model(scenario), learner)
    )
    work: Work = _vectorized if vectorize else _sequential
    store = state_store(out) if learner.stateful else None
    per_window = max(1, WINDOW // order.block_size) * order.block_size
    partials: dict[int, Any] = {}
    outcomes: list[DeviceOutcome] = []
    try:
        for start in range(0, len(order.device_ids), per_window):
            ids = order.device_ids[start : start + per_window]
            first = order.first_position + start
            places = range(first, first + len(ids))
            done = _window(
                scenario, fleet, order, ids, places, global_arrays, aggregator, work, store
            )
            partials |= done[0]  # whole blocks
            outcomes += done[1]
        gateways = {}
        for g, members in order.gateways:
            gateways[g], played = _gateway(
                scenario, fleet, order, members, global_arrays, aggregator, work, store
            )
            outcomes += played
    finally:
        if store is not None:
            store.close()
    return CohortReply(partials, outcomes, gateways)


def _window(
    scenario: Scenario,
    fleet: Fleet,
    order: CohortOrder,
    ids: list[int],
    positions: Sequence[int],
    arrays: Arrays,
    aggregator: ModelAggregator,
    work: Work,
    store: DeviceStateStore | None,
) -> tuple[dict[int, Any], list[DeviceOutcome]]:
    """Run ``ids`` (whole reduction blocks, at ``positions``): their block partials and
    outcomes. A stateful learner's states are read in one query and written in one transaction
    (failed devices included: what they changed before failing is kept)."""
    states = store.get_many(ids) if store is not None else {}
    done = work(scenario, fleet, order, ids, arrays, states)
    if store is not None:
        store.put_many(states)
    updates: list[tuple[int, ModelUpdate | ClassSums]] = []
    outcomes: list[DeviceOutcome] = []
    for position, device_id in zip(positions, ids, strict=True):
        result = done.pop(device_id)
        if isinstance(result, DeviceOutcome):
            outcomes.append(result)
            continue
        outcomes.append(result.outcome(device_id))
        updates.append((position, result.update(f"{device_id}:{order.round}")))
    return reduce_blocks(aggregator, updates, order.block_size), outcomes


def _gateway(
    scenario: Scenario,
    fleet: Fleet,
    order: CohortOrder,
    ids: tuple[int, ...],
    received: Arrays,
    aggregator: ModelAggregator,
    work: Work,
    store: DeviceStateStore | None,
) -> tuple[Any, list[DeviceOutcome]]:
    """Play a gateway (design §5.1): its local rounds over its devices, its partial."""
    position = {d: i for i, d in enumerate(ids)}

    def train(
        step: int, arrays: Arrays, active: list[int], block: int
    ) -> tuple[dict[int, Any], list[DeviceOutcome]]:
        """A local round in windows of whole blocks, as a cohort runs (memory stays flat)."""
        per_window = max(1, WINDOW // block) * block
        alive = set(active)
        partials: dict[int, Any] = {}
        outcomes: list[DeviceOutcome] = []
        for start in range(0, len(ids), per_window):
            chunk = [d for d in ids[start : start + per_window] if d in alive]
            if chunk:
                local = replace(order, device_ids=chunk, block_size=block, step=step, gateways=())
                places = [position[d] for d in chunk]
                done = _window(
                    scenario, fleet, local, chunk, places, arrays, aggregator, work, store
                )
                partials |= done[0]
                outcomes += done[1]
        return partials, outcomes

    k, dtype = scenario.local_rounds, scenario.fleet.payload_dtype
    return gateway_rounds(aggregator, received, ids, k, dtype, train)
