"""What a round costs a device: memory fit, compute time, link time, energy.

Small pluggable objects with one method each (design §5), bundled in a ``CostModel``:

- **memory** decides what a device can train: the whole model, only its head (TinyOL style: the
  frozen layers stay in flash, the head and what its training needs sit in SRAM), or nothing;
- **compute** turns multiply-accumulates into seconds: MACs × cycles per MAC of the core ÷ clock;
- **link** turns a payload into seconds: one fixed latency per round trip (a packet on BLE, LoRa
  and serial; a TCP window on WiFi and Ethernet) plus bits ÷ throughput;
- **energy** adds active power × compute time, radio power × airtime and idle power × the rest of
  the round.

``datasheet`` uses the catalog's figures; ``fake`` uses round numbers that make tests easy to
check by hand. A user's cost model is a ``CostModel`` instance: listed by an installed package
under the entry-point group ``fedsim.cost_models``, or named in a scenario as
``fleet.cost_model: "package.module:COSTS"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from devices.footprint import Footprint
from fedsim.core.errors import FedsimError, clip
from fedsim.core.plugins import Plugins
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType

__all__ = [
    "COST_MODELS",
    "Activity",
    "CostModel",
    "Scope",
    "cost_model",
]

Scope = Literal["full", "head", "skip"]
MemoryPolicy = Literal["skip", "head-only"]


@dataclass(frozen=True)
class Activity:
    """Where a device's time went in one round (seconds)."""

    compute_s: float = 0.0
    down_s: float = 0.0
    up_s: float = 0.0
    idle_s: float = 0.0


class MemoryModel(Protocol):
    def scope(
        self, profile: DeviceProfile, full: Footprint, head: Footprint, policy: MemoryPolicy
    ) -> Scope: ...


class ComputeModel(Protocol):
    def seconds(self, profile: DeviceProfile, macs: int) -> float: ...


class LinkModel(Protocol):
    def seconds(self, link: LinkType, nbytes: int) -> float: ...


class EnergyModel(Protocol):
    def millijoules(
        self, profile: DeviceProfile, link: LinkPower | None, activity: Activity
    ) -> float: ...


def head_sram_bytes(head: Footprint) -> int:
    """SRAM for head-only training: the frozen weights stay in flash, the rest is in SRAM."""
    frozen = head.weight_bytes - head.gradient_bytes
    return head.train_bytes - frozen


class SramFit:
    """Train what fits in SRAM (the model must also fit in flash): all, the head, or nothing."""

    def scope(
        self, profile: DeviceProfile, full: Footprint, head: Footprint, policy: MemoryPolicy
    ) -> Scope:
        if full.weight_bytes > profile.flash_bytes:
            return "skip"
        if full.train_bytes <= profile.sram_bytes:
            return "full"
        if policy == "head-only" and head_sram_bytes(head) <= profile.sram_bytes:
            return "head"
        return "skip"


class CyclesPerMac:
    """One core at full clock; ``cycles_per_mac`` from the catalog (FPU vs soft float)."""

    def seconds(self, profile: DeviceProfile, macs: int) -> float:
        return macs * profile.cycles_per_mac / (profile.clock_mhz * 1e6)


class Messages:
    """``ceil(bytes / mtu_bytes)`` round trips, each paying the link's latency, plus bits /
    throughput."""

    def seconds(self, link: LinkType, nbytes: int) -> float:
        if nbytes <= 0:
            return 0.0
        messages = math.ceil(nbytes / link.mtu_bytes)
        return messages * link.latency_s + nbytes * 8 / link.throughput_bps


class PowerTimesTime:
    """Active power while computing, the link's TX/RX power while sending/receiving (instead of
    active), idle power otherwise; mW × s = mJ."""

    def millijoules(
        self, profile: DeviceProfile, link: LinkPower | None, activity: Activity
    ) -> float:
        tx, rx = (link.tx_mw, link.rx_mw) if link is not None else (0.0, 0.0)
        return (
            profile.active_mw * activity.compute_s
            + (profile.idle_mw + tx) * activity.up_s
            + (profile.idle_mw + rx) * activity.down_s
            + profile.idle_mw * activity.idle_s
        )


class FakeCompute:
    """1 µs per MAC on every device."""

    def seconds(self, profile: DeviceProfile, macs: int) -> float:
        return macs * 1e-6


class FakeLink:
    """0.1 s per message (MTU ignored) + 1 µs per byte."""

    def seconds(self, link: LinkType, nbytes: int) -> float:
        return 0.1 + nbytes * 1e-6 if nbytes > 0 else 0.0


class FakeEnergy:
    """1 mW computing or on air, 0.001 mW idle, on every device."""

    def millijoules(
        self, profile: DeviceProfile, link: LinkPower | None, activity: Activity
    ) -> float:
        return activity.compute_s + activity.up_s + activity.down_s + 0.001 * activity.idle_s


@dataclass(frozen=True)
class CostModel:
    memory: MemoryModel
    compute: ComputeModel
    link: LinkModel
    energy: EnergyModel


COST_MODELS: Plugins[CostModel] = Plugins("cost model", group="fedsim.cost_models")


@COST_MODELS.register("datasheet")
def _datasheet() -> CostModel:
    return CostModel(SramFit(), CyclesPerMac(), Messages(), PowerTimesTime())


@COST_MODELS.register("fake")
def _fake() -> CostModel:
    return CostModel(SramFit(), FakeCompute(), FakeLink(), FakeEnergy())


# what each part of a CostModel must answer (the protocols above)
_PARTS = {
    "memory": "scope",
    "compute": "seconds",
    "link": "seconds",
    "energy": "millijoules",
}


def cost_model(name: str, where: str = "fleet.cost_model") -> CostModel:
    """The ``CostModel`` ``name`` stands for (a built-in, an installed entry point, or
    ``package.module:attr``); a located error if it does not resolve or is incomplete."""
    found: object = COST_MODELS.get(name, where)
    if not isinstance(found, CostModel):
        raise FedsimError(
            where,
            f"'{clip(name)}' is a {type(found).__name__}, not a cost model: a cost model is a "
            "devices.cost.CostModel",
            "point it at a CostModel(memory, compute, link, energy) instance",
        )
    lacking = [
        f"{part}.{method}"
        for part, method in _PARTS.items()
        if not callable(getattr(getattr(found, part), method, None))
    ]
    if lacking:
        raise FedsimError(
            where,
            f"cost model '{clip(name)}' is incomplete: it has no {', '.join(lacking)}",
            "give each part the method of its protocol in devices/cost.py "
            "(MemoryModel.scope, ComputeModel.seconds, LinkModel.seconds, EnergyModel.millijoules)",
        )
    return found
