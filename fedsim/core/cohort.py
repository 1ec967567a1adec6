"""What crosses the Flower boundary in cohort mode: a worker's order and its reply.

Per round, each cohort worker (one Flower node) receives the global arrays and a ``CohortOrder``:
which devices to run, where they sit in the round's sorted cohort, and the reduction block size.
It replies with a ``CohortReply``: one packed partial aggregate per reduction block it owns, plus
one ``DeviceOutcome`` per device (a failed device is reported, not fatal to the cohort).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsim.core.records import (
    ARRAYS,
    BLOCK_SIZE,
    CONFIG,
    DEVICE_IDS,
    ERRORS,
    FIRST_POSITION,
    GATEWAY_DEVICES,
    GATEWAY_SIZES,
    GATEWAYS,
    HEAD_ONLY,
    MEASURED_MJ,
    MEASURED_S,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    STATUS,
    TRAIN_LOSS,
    DeviceStatus,
)
from fedsim.core.reduce import Aggregator, Packed

__all__ = ["CohortOrder", "CohortReply", "DeviceOutcome"]

P = TypeVar("P")
_STATUS_CODES: dict[DeviceStatus, int] = {
    "ok": 0,
    "failed": 1,
    "no-reply": 2,
    "memory-skip": 3,
    "straggler": 4,
    "dropout": 5,
    "gateway-down": 6,
    "gateway-lost": 7,
}
_STATUS_NAMES = {code: name for name, code in _STATUS_CODES.items()}


@dataclass(frozen=True)
class CohortOrder:
    round: int
    device_ids: list[int]  # ascending
    first_position: int  # position of device_ids[0] in the round's sorted cohort
    block_size: int
    head_only: frozenset[int] = frozenset()  # devices that train only the head (memory)
    # the gateways this worker plays (design §5.1): (gateway index, its devices this round)
    gateways: tuple[tuple[int, tuple[int, ...]], ...] = ()
    step: int = 1  # which local round of a gateway (1 without gateways)

    def config(self) -> ConfigRecord:
        config = ConfigRecord(
            {
                SERVER_ROUND: self.round,
                DEVICE_IDS: self.device_ids,
                FIRST_POSITION: self.first_position,
                BLOCK_SIZE: self.block_size,
                HEAD_ONLY: sorted(self.head_only),
            }
        )
        if self.gateways:
            config[GATEWAYS] = [g for g, _ in self.gateways]
            config[GATEWAY_SIZES] = [len(ids) for _, ids in self.gateways]
            config[GATEWAY_DEVICES] = [d for _, ids in self.gateways for d in ids]
        return config

    @classmethod
    def from_config(cls, config: ConfigRecord) -> CohortOrder | None:
        """The order in ``config``, or None for a per-device message."""
        if DEVICE_IDS not in config:
            return None
        ids = config[DEVICE_IDS]
        assert isinstance(ids, list)
        gateways: list[tuple[int, tuple[int, ...]]] = []
        if GATEWAYS in config:
            flat = [int(d) for d in config[GATEWAY_DEVICES]]  # type: ignore[union-attr]
            sizes = [int(n) for n in config[GATEWAY_SIZES]]  # type: ignore[union-attr]
            names = [int(g) for g in config[GATEWAYS]]  # type: ignore[union-attr]
            for g, size in zip(names, sizes, strict=True):
                gateways.append((g, tuple(flat[:size])))
                flat = flat[size:]
        return cls(
            round=int(config[SERVER_ROUND]),  # type: ignore[arg-type]
            device_ids=[int(d) for d in ids],
            first_position=int(config[FIRST_POSITION]),  # type: ignore[arg-type]
            block_size=int(config[BLOCK_SIZE]),  # type: ignore[arg-type]
            head_only=frozenset(int(d) for d in config[HEAD_ONLY]),  # type: ignore[union-attr]
            gateways=tuple(gateways),
        )


@dataclass(frozen=True)
class DeviceOutcome:
    device_id: int
    status: DeviceStatus
    num_examples: int = 0
    train_loss: float | None = None
    error: str = ""
    measured_s: float | None = None  # an attached device's own measurements
    measured_mj: float | None = None


@dataclass(frozen=True)
class CohortReply(Generic[P]):
    partials: dict[int, P]  # block index → partial aggregate
    outcomes: list[DeviceOutcome]  # one per ordered device, in order (then the gateways' devices)
    gateway_partials: dict[int, P] = field(default_factory=dict)  # gateway index → its partial

    def content(self, aggregator: Aggregator[Any, P, Any]) -> RecordDict:
        arrays: dict[str, Array] = {}
        for block, partial in sorted(self.partials.items()):
            arrays |= {f"{block}/{k}": Array(v) for k, v in aggregator.pack(partial).items()}
        for g, partial in sorted(self.gateway_partials.items()):
            arrays |= {f"g{g}/{k}": Array(v) for k, v in aggregator.pack(partial).items()}
        metrics = MetricRecord(
            {
                DEVICE_IDS: [o.device_id for o in self.outcomes],
                STATUS: [_STATUS_CODES[o.status] for o in self.outcomes],
                NUM_EXAMPLES: [o.num_examples for o in self.outcomes],
                TRAIN_LOSS: [_nan(o.train_loss) for o in self.outcomes],
                MEASURED_S: [_nan(o.measured_s) for o in self.outcomes],
                MEASURED_MJ: [_nan(o.measured_mj) for o in self.outcomes],
            }
        )
        errors = ConfigRecord({ERRORS: [o.error for o in self.outcomes]})
        return RecordDict({ARRAYS: ArrayRecord(arrays), METRICS: metrics, CONFIG: errors})

    @classmethod
    def from_content(
        cls, content: RecordDict, aggregator: Aggregator[Any, P, Any]
    ) -> CohortReply[P]:
        by_block: dict[str, Packed] = {}
        arrays: ArrayRecord = content[ARRAYS]  # type: ignore[assignment]
        for key, array in arrays.items():
            block, name = key.split("/", 1)
            by_block.setdefault(block, {})[name] = array.numpy()
        partials = {
            int(b): aggregator.unpack(packed)
            for b, packed in by_block.items()
            if not b.startswith("g")
        }
        gateways = {
            int(b[1:]): aggregator.unpack(packed)
            for b, packed in by_block.items()
            if b.startswith("g")
        }
        m: MetricRecord = content[METRICS]  # type: ignore[assignment]
        errors: list[str] = content[CONFIG][ERRORS]  # type: ignore[assignment]
        keys = (DEVICE_IDS, STATUS, NUM_EXAMPLES, TRAIN_LOSS, MEASURED_S, MEASURED_MJ)
        columns: list[list[Any]] = [m[k] for k in keys]  # type: ignore[misc]
        outcomes = [
            DeviceOutcome(
                device_id=int(d),
                status=_STATUS_NAMES[int(s)],
                num_examples=int(n),
                train_loss=_none(loss),
                error=str(e),
                measured_s=_none(seconds),
                measured_mj=_none(mj),
            )
            for d, s, n, loss, seconds, mj, e in zip(*columns, errors, strict=True)
        ]
        return cls(partials, outcomes, gateways)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
