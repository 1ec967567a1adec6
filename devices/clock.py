"""The simulated clock of a run: who can take part in a round, how long it lasts, what it costs.

Before a round the server asks ``FleetCosts`` for a ``DevicePlan`` per selected device. Everything
in it follows from the scenario (seed, profiles, links, availability, the model's counted
footprint, the payload sizes), never from wall time, so it is the same in every execution mode:

- **memory-skip**: its SRAM cannot hold training (nor, under ``head-only``, head training);
- **dropout**: online at the round's start, but its online spell ends before it would finish;
- **straggler**: it would finish after ``deadline_s``; the round cuts it at the deadline;
- **train**: it trains (``full`` or ``head``) and its update arrives in time, unless it fails.

Only ``train`` devices are sent work: a cut or dropped device's update would be discarded anyway.
After the round ``finish`` gives its simulated duration (the slowest delivering device; the
deadline if one was set and anyone missed it) and each device's energy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from torch import nn

from devices.availability import Availability
from devices.cost import Activity, CostModel, Scope, cost_model
from devices.fleet import Device, Devices, Fleet
from devices.footprint import Footprint, footprint, head_parameters
from fedsim.core.payload import payload_bytes, sent_mask
from fedsim.core.scenario import Scenario

__all__ = ["EMPTY_ROUND_S", "DevicePlan", "Fate", "FleetCosts", "RoundCost", "stop_plan"]

Fate = Literal["train", "memory-skip", "straggler", "dropout", "gateway-down", "gateway-lost"]
# A round in which no device can train lasts the deadline, or this long without one.
EMPTY_ROUND_S = 60.0


@dataclass(frozen=True)
class DevicePlan:
    device_id: int
    fate: Fate
    scope: Scope
    bytes_down: int
    bytes_up: int
    down_s: float
    compute_s: float
    up_s: float
    stop_s: float | None = None  # straggler: the deadline; dropout: when it went offline
    start_s: float = 0.0  # behind gateways: when the model reached its gateway

    @property
    def busy_s(self) -> float:
        """Seconds from the round's start until it delivers (or stops)."""
        full = self.down_s + self.compute_s + self.up_s
        return full if self.stop_s is None else min(full, self.stop_s)

    def activity(self, round_s: float, delivered: bool) -> Activity:
        """Where its time went in a round of ``round_s``: transfers and compute up to where it
        stopped, idle for the rest (none after a dropout: it is off)."""
        if self.fate in ("memory-skip", "gateway-down"):
            return Activity(idle_s=round_s)
        until = self.busy_s if delivered else min(self.busy_s, self.down_s + self.compute_s)
        down = min(self.down_s, until)
        compute = min(self.compute_s, until - down)
        up = min(self.up_s, until - down - compute)
        # before the model reached its gateway (start_s) it waited; a dropout is off afterwards
        idle = self.start_s if self.fate == "dropout" else max(0.0, round_s - until)
        return Activity(compute, down, up, idle)


@dataclass(frozen=True)
class RoundCost:
    round_s: float
    energy_mj: dict[int, float]
    busy_s: dict[int, float]


class FleetCosts:
    """Per-profile training scope and per-device plans for one run's scenario and model."""

    def __init__(self, scenario: Scenario, fleet: Fleet, model: nn.Module) -> None:
        self.scenario, self.fleet = scenario, fleet
        self.model: CostModel = cost_model(scenario.fleet.cost_model)
        algorithm = scenario.algorithm
        sample_shape = fleet.data.sample_shape
        batch, copies = algorithm.batch_size, algorithm.state_copies
        head = head_parameters(model)
        self.full: Footprint = footprint(model, sample_shape, batch, None, copies)
        self.head: Footprint = footprint(model, sample_shape, batch, head, copies)
        names = list(model.state_dict())
        self.shapes = [tuple(t.shape) for t in model.state_dict().values()]
        self.head_mask = tuple(name in head for name in names)
        shapes = [tuple(t.shape) for t in model.state_dict().values()]
        local = algorithm.local_head
        frozen = tuple(algorithm.frozen(n) for n in names)
        self.frozen_mask = frozen
        down = algorithm.sent_down(self.head_mask, frozen)  # what the device does not hold
        self.bytes_down = payload_bytes(shapes, scenario.fleet.payload_dtype, down)
        self.sent_full = sent_mask(self.head_mask, False, local, frozen)
        self.sent_head = sent_mask(self.head_mask, True, local, frozen)
        self.up_full = scenario.upload.bytes(shapes, self.sent_full)
        self.up_head = scenario.upload.bytes(shapes, self.sent_head)
        self._scopes: dict[tuple[str, int | None, int | None], Scope] = {}
        counts = [g.count for g in scenario.fleet.groups]
        self._group_starts = np.cumsum([0, *counts], dtype=np.int64)  # group g: [g], [g + 1])

    def scope(self, device_id: int) -> Scope:
        """What the device can train: its profile's memory, or the free memory the registry
        gives it."""
        device = self.fleet[device_id]
        key = (device.profile.name, device.sram_bytes, device.flash_bytes)
        if key not in self._scopes:
            profile = device.profile
            if device.sram_bytes is not None or device.flash_bytes is not None:
                profile = profile.model_copy(
                    update={
                        "sram_bytes": device.sram_bytes or profile.sram_bytes,
                        "flash_bytes": device.flash_bytes or profile.flash_bytes,
                    }
                )
            policy = self.scenario.fleet.memory_policy
            if not self.scenario.algorithm.trains:  # inference only: weights in flash
                ram = self.full.inference_bytes - self.full.weight_bytes
                room = ram <= profile.sram_bytes and self.full.weight_bytes <= profile.flash_bytes
                self._scopes[key] = "full" if room else "skip"
            elif self.scenario.algorithm.head_only:  # the head or nothing, whatever fits
                fits = self.model.memory.scope(profile, self.full, self.head, "head-only")
                self._scopes[key] = "skip" if fits == "skip" else "head"
            else:
                self._scopes[key] = self.model.memory.scope(profile, self.full, self.head, policy)
        return self._scopes[key]

    def sent(self, device_id: int) -> tuple[bool, ...]:
        """Which tensors the device uploads (changes of), given what it can train."""
        return self.sent_head if self.scope(device_id) == "head" else self.sent_full

    def available(self, t: float) -> NDArray[np.bool_] | None:
        """Which devices are online at ``t`` (None: all, always)."""
        if not self.fleet.availability:
            return None
        online = np.zeros(len(self.fleet), dtype=bool)
        first = 0
        for group, availability in zip(
            self.scenario.fleet.groups, self.fleet.availability, strict=True
        ):
            ids = np.arange(first, first + group.count, dtype=np.int64)
            online[first : first + group.count] = availability.online(ids, t)[0]
            first += group.count
        return online

    def next_online(self, device_ids: list[int], t: float) -> float:
        """The first time ≥ ``t`` any of ``device_ids`` is online (inf: none ever is again)."""
        if not device_ids:
            return math.inf
        if not self.fleet.availability:
            return t
        first = math.inf
        for ids, availability in self._by_group(device_ids):
            if len(ids):
                first = min(first, float(availability.next_online(ids, t).min()))
        return first

    def until(self, device_ids: list[int], t: float) -> dict[int, float]:
        """When each device's current online spell ends (inf: never)."""
        if not self.fleet.availability:
            return {}
        ends: dict[int, float] = {}
        for ids, availability in self._by_group(device_ids):
            if len(ids):
                _, until = availability.online(ids, t)
                ends |= dict(zip(ids.tolist(), until.tolist(), strict=True))
        return ends

    def _by_group(self, device_ids: list[int]) -> list[tuple[NDArray[np.int64], Availability]]:
        """``device_ids`` by group (each in the order given), with the group's availability;
        groups hold consecutive ids, so no device is looked up."""
        ids = np.asarray(device_ids, dtype=np.int64)
        group = np.searchsorted(self._group_starts, ids, side="right") - 1
        return [(ids[group == g], a) for g, a in enumerate(self.fleet.availability)]

    def nominal(self, device_id: int, round_: int = 1) -> DevicePlan:
        """What a round asks of the device if it stays online and nothing is cut."""
        device, scope = self.fleet[device_id], self.scope(device_id)
        if scope == "skip":
            return DevicePlan(device_id, "memory-skip", scope, 0, 0, 0.0, 0.0, 0.0)
        assert device.link_type is not None
        macs = (self.full if scope == "full" else self.head).train_macs
        up = self.up_full if scope == "full" else self.up_head
        samples = self.scenario.algorithm.samples_processed(device.num_examples)
        if self.fleet.missions is not None:  # prototype averaging: embed the mission, report it
            classes, samples = self._mission(device_id, round_)
            macs = self.full.forward_macs
            itemsize = np.dtype(self.scenario.fleet.payload_dtype).itemsize
            up = self.scenario.algorithm.mission_bytes(classes, self.shapes, itemsize)
        return DevicePlan(
            device_id,
            "train",
            scope,
            self.bytes_down,
            up,
            self.model.link.seconds(device.link_type, self.bytes_down),
            self.model.compute.seconds(device.profile, macs * samples),
            self.model.link.seconds(device.link_type, up),
        )

    def _mission(self, device_id: int, round_: int) -> tuple[int, int]:
        """(classes it has samples of, samples) of the device's mission in ``round_``."""
        rows = self.fleet.mission_rows(device_id, round_)
        return len(np.unique(self.fleet.data.y_train[rows])), len(rows)

    def plan(self, device_ids: list[int], t: float, round_: int = 1) -> list[DevicePlan]:
        """Each selected device's fate in the round starting at simulated time ``t``."""
        deadline = self.scenario.deadline_s
        until = self.until(device_ids, t)
        plans = []
        for d in device_ids:
            plan = self.nominal(d, round_)
            if plan.fate == "train":
                off = until.get(d, math.inf) - t
                if off < plan.busy_s and (deadline is None or off < deadline):
                    plan = stop_plan(plan, "dropout", off)
                elif deadline is not None and plan.busy_s > deadline:
                    plan = stop_plan(plan, "straggler", deadline)
            plans.append(plan)
        return plans

    def alike(self) -> Iterator[tuple[Device, int]]:
        """The fleet's devices, each with how many differ from it only in their id (a template
        group of a million is one entry; ``Devices.alike``)."""
        devices = self.fleet.devices
        if isinstance(devices, Devices) and self.fleet.missions is None:  # missions: per round
            return devices.alike()
        return ((device, 1) for device in devices)

    def describe(self) -> list[str]:
        """One line per device group and profile: what it trains and what a round costs it
        (a range where its devices differ, e.g. in their sample counts)."""
        kinds: dict[tuple[int, str, Scope], list[tuple[int, int]]] = {}
        for device, count in self.alike():
            key = (device.group, device.profile.name, self.scope(device.device_id))
            kinds.setdefault(key, []).append((device.device_id, count))
        lines = []
        deadline = self.scenario.deadline_s
        for (_, name, _), members in kinds.items():
            device = self.fleet[members[0][0]]
            plans = [(self.nominal(d), n) for d, n in members]
            total = sum(n for _, n in members)
            plan, sram = plans[0][0], device.sram_bytes or device.profile.sram_bytes
            need = f"all layers need {_kb(self.full.train_bytes)} of SRAM, it has {_kb(sram)}"
            if plan.fate == "memory-skip":
                lines.append(f"{name} x{total}: sits rounds out ({need})")
                continue
            if self.scenario.algorithm.head_only:
                why = f"{self.scenario.algorithm.kind}: the rest is a frozen extractor in flash"
            else:
                why = need
            what = "all layers" if plan.scope == "full" else f"the head only ({why})"
            if not self.scenario.algorithm.trains:
                what = "nothing (embeds its samples: inference only)"
            elif any(self.frozen_mask) and plan.scope == "full":
                what = (
                    f"its {self.scenario.algorithm.kind} part (the pre-trained backbone is frozen)"
                )
            link = device.link.kind if device.link else "-"
            late = sum(n for p, n in plans if deadline is not None and p.busy_s > deadline)
            cut = ", past the deadline: cut" if late == total else ""
            if 0 < late < total:
                cut = f", {late} of them past the deadline: cut"
            fastest = min(plans, key=lambda pn: pn[0].busy_s)[0]
            slowest = max(plans, key=lambda pn: pn[0].busy_s)[0]
            takes = f"~{plan.busy_s:.3g} s"
            if f"{fastest.busy_s:.3g}" != f"{slowest.busy_s:.3g}":
                takes = f"~{fastest.busy_s:.3g}-{slowest.busy_s:.3g} s"
            lines.append(
                f"{name} x{total}: trains {what}; a round takes {takes} "
                f"({plan.down_s:.3g} down over {link}, {plan.compute_s:.3g} compute, "
                f"{plan.up_s:.3g} up){cut}"
            )
        return lines

    def finish(self, plans: list[DevicePlan], delivered: set[int]) -> RoundCost:
        """The round's simulated duration and each device's energy (mJ) and busy time."""
        deadline = self.scenario.deadline_s
        took_part = [p for p in plans if p.fate != "memory-skip"]
        missed = any(p.device_id not in delivered for p in took_part)
        if deadline is not None and (missed or not took_part):
            round_s = deadline
        elif took_part:
            round_s = max(p.busy_s for p in took_part)
        else:
            round_s = EMPTY_ROUND_S
        energy, busy = {}, {}
        for p in plans:
            ok = p.device_id in delivered
            activity = p.activity(round_s, ok)
            device = self.fleet[p.device_id]
            energy[p.device_id] = self.model.energy.millijoules(
                device.profile, device.link, activity
            )
            busy[p.device_id] = activity.compute_s + activity.down_s + activity.up_s
        return RoundCost(round_s, energy, busy)


def _kb(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1 << 30 else f"{n / (1 << 30):.0f} GB"


def stop_plan(plan: DevicePlan, fate: Fate, at: float) -> DevicePlan:
    """``plan`` cut ``at`` seconds into its work (a straggler at the deadline, a dropout)."""
    return replace(
        plan,
        fate=fate,
        # a download cut short counts the share of its airtime it got (latency included)
        bytes_down=plan.bytes_down
        if at >= plan.down_s
        else int(plan.bytes_down * at / plan.down_s),
        bytes_up=0,
        stop_s=at,
    )
