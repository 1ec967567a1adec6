"""Prototype averaging for class-incremental "federated reconnaissance" (design §6.5).

A frozen encoder maps a sample to a D-dimensional embedding; a class is its prototype, the mean
embedding of every sample of it that any client has reported, and a sample is classified as the
nearest prototype (squared Euclidean) over every class seen so far.

On each *mission* a client embeds its new labelled samples and reports, per class, the **sum** of
the new embeddings and their **count** (``ClassSums``); no gradient step. The server keeps sums and
counts per class, so merging is addition: associative, commutative, and the merged prototypes equal
the prototypes computed centrally on the pooled samples (up to float rounding). The reference code
instead blends a client's running mean with the server's using the new samples' count only, which
under-weights new data for classes the server already knew (``reference_blend`` for one class,
``reference_finalize`` for a round; ``merge: reference`` runs it in the engine, to show the
difference on missions where classes recur).

Merging is idempotent per mission: a report carries its mission id (device and mission number), a
partial keeps the reports by id, and the server's state remembers the ids it merged, so a
duplicated or replayed message is never counted twice. Reports are merged in mission-id order
whatever order they arrive in, so the result is bit-identical for any merge order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ClassSums",
    "PrototypeArrays",
    "PrototypeError",
    "PrototypeMerge",
    "PrototypePartial",
    "PrototypeState",
    "class_sums",
    "decode_report",
    "encode_report",
    "reference_blend",
    "reference_finalize",
    "report_bytes",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class PrototypeError(ValueError):
    """A report that must not be merged (the message names the mission and what is wrong)."""


@dataclass(frozen=True)
class ClassSums:
    """One client's report for one mission: per class, the sum of its new embeddings and how
    many there were."""

    mission: str  # unique per (device, mission number), e.g. "3:2"
    classes: I64  # [k] global class indices, distinct
    sums: F64  # [k, D]
    counts: I64  # [k], each ≥ 1

    def same_as(self, other: ClassSums) -> bool:
        return (
            np.array_equal(self.classes, other.classes)
            and np.array_equal(self.sums, other.sums)
            and np.array_equal(self.counts, other.counts)
        )


def report_bytes(classes: int, dim: int, value_bytes: int = 4) -> int:
    """Bytes of a report on the wire: per class its index (uint32), D sums and a count (uint32)."""
    return classes * (4 + dim * value_bytes + 4)


def class_sums(
    mission: str, embeddings: NDArray[np.floating], labels: NDArray[np.integer]
) -> ClassSums:
    """A mission's report from the client's new embeddings ``[n, D]`` and their labels ``[n]``."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), embeddings.shape[1]), np.float64)
    np.add.at(sums, inverse, np.asarray(embeddings, np.float64))
    return ClassSums(mission, classes.astype(np.int64), sums, counts.astype(np.int64))


@dataclass(frozen=True)
class PrototypeState:
    """The server's knowledge: per class the sum of every reported embedding and the count, and
    the missions already merged."""

    sums: F64  # [C, D]
    counts: I64  # [C]; 0 = never seen
    merged: frozenset[str] = frozenset()

    @classmethod
    def empty(cls, num_classes: int, dim: int) -> PrototypeState:
        return cls(np.zeros((num_classes, dim)), np.zeros(num_classes, np.int64))

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def seen(self) -> I64:
        """Classes with at least one sample, ascending."""
        return np.flatnonzero(self.counts > 0).astype(np.int64)

    def prototypes(self) -> F64:
        """``[len(seen), D]`` mean embeddings of the seen classes (in ``seen`` order)."""
        seen = self.seen
        return self.sums[seen] / self.counts[seen, None]

    def classify(self, embeddings: NDArray[np.floating]) -> I64:
        """Nearest prototype (squared Euclidean) among the seen classes, as class indices."""
        seen = self.seen
        if not len(seen):
            raise PrototypeError("no class has been reconnoitred yet: nothing to classify against")
        protos = self.prototypes()
        e = np.asarray(embeddings, np.float64)
        distances = (e**2).sum(1)[:, None] - 2 * e @ protos.T + (protos**2).sum(1)[None, :]
        nearest: I64 = seen[np.argmin(distances, axis=1)]
        return nearest


@dataclass(frozen=True)
class PrototypePartial:
    """Reports by mission id (a cohort's, a worker's, or a round's)."""

    reports: Mapping[str, ClassSums] = field(default_factory=dict)

    def uplink(self, dtype: str) -> tuple[PrototypePartial, int]:
        """Forwarded as the devices sent the reports (already in the wire format); its bytes."""
        nbytes = sum(
            sum(a.nbytes for a in encode_report(r, dtype).values()) for r in self.reports.values()
        )
        return self, nbytes


def _join(left: Mapping[str, ClassSums], right: Mapping[str, ClassSums]) -> dict[str, ClassSums]:
    out = dict(left)
    for mission, report in right.items():
        known = out.get(mission)
        if known is None:
            out[mission] = report
        elif not known.same_as(report):
            raise PrototypeError(
                f"mission {mission}: two different reports under one mission id; "
                "a mission id must name one report (device and mission number)"
            )
    return out


class PrototypeMerge:
    """The associative reduce of reports into prototype sums: ``zero / accumulate / merge /
    finalize`` (``fedsim.core.reduce.Aggregator``), plus ``pack``/``unpack`` for Flower records."""

    def __init__(self, num_classes: int, dim: int) -> None:
        self.num_classes, self.dim = num_classes, dim

    def check(self, report: ClassSums) -> None:
        """Refuse a report that would corrupt the prototypes; say which mission and why."""
        where = f"mission {report.mission}"
        k = len(report.classes)
        if report.sums.shape != (k, self.dim) or report.counts.shape != (k,):
            raise PrototypeError(
                f"{where}: expected sums [{k}, {self.dim}] and counts [{k}] for {k} classes, got "
                f"{list(report.sums.shape)} and {list(report.counts.shape)} (embedding dimension "
                f"must be the encoder's, {self.dim})"
            )
        if k and (report.classes.min() < 0 or report.classes.max() >= self.num_classes):
            raise PrototypeError(f"{where}: class index outside 0..{self.num_classes - 1}")
        if len(np.unique(report.classes)) != k:
            raise PrototypeError(f"{where}: a class appears twice; send one sum per class")
        if k and report.counts.min() < 1:
            raise PrototypeError(f"{where}: counts must be ≥ 1, got {int(report.counts.min())}")
        if not np.isfinite(report.sums).all():
            raise PrototypeError(f"{where}: sums contain NaN or infinity")

    def zero(self) -> PrototypePartial:
        return PrototypePartial()

    def accumulate(self, partial: PrototypePartial, update: ClassSums) -> PrototypePartial:
        self.check(update)
        return PrototypePartial(_join(partial.reports, {update.mission: update}))

    def merge(self, left: PrototypePartial, right: PrototypePartial) -> PrototypePartial:
        return PrototypePartial(_join(left.reports, right.reports))

    def finalize(self, global_state: PrototypeState, partial: PrototypePartial) -> PrototypeState:
        """Add the reports of missions not merged before, in mission-id order."""
        sums, counts = global_state.sums.copy(), global_state.counts.copy()
        new = sorted(set(partial.reports) - global_state.merged)
        for mission in new:
            report = partial.reports[mission]
            sums[report.classes] += report.sums
            counts[report.classes] += report.counts
        return PrototypeState(sums, counts, global_state.merged | frozenset(new))

    def pack(self, partial: PrototypePartial) -> dict[str, NDArray[Any]]:
        return pack_reports(partial)

    def unpack(self, packed: Mapping[str, NDArray[Any]]) -> PrototypePartial:
        partial = unpack_reports(packed)
        for report in partial.reports.values():
            self.check(report)
        return partial


def pack_reports(partial: PrototypePartial) -> dict[str, NDArray[Any]]:
    """A partial as named arrays (``<mission>/classes``, ``/sums``, ``/counts``)."""
    packed: dict[str, NDArray[Any]] = {}
    for mission, r in partial.reports.items():
        packed[f"{mission}/classes"] = r.classes
        packed[f"{mission}/sums"] = r.sums
        packed[f"{mission}/counts"] = r.counts
    return packed


def unpack_reports(packed: Mapping[str, NDArray[Any]]) -> PrototypePartial:
    reports = {}
    for m in sorted({key.rsplit("/", 1)[0] for key in packed}):
        try:
            sums = np.asarray(packed[f"{m}/sums"], np.float64)
            reports[m] = ClassSums(
                m,
                np.asarray(packed[f"{m}/classes"], np.int64),
                sums,
                np.asarray(packed[f"{m}/counts"], np.int64),
            )
        except KeyError as missing:
            raise PrototypeError(f"mission {m}: the packed partial lacks {missing}") from None
    return PrototypePartial(reports)


class PrototypeArrays:
    """``PrototypeMerge`` over the engine's global arrays: the model's last two arrays are the
    prototype head's ``sums [C, D]`` and ``counts [C]`` (``conv4-proto``); the rest (the frozen
    encoder) never changes. Keeps the ids of the missions it merged, so a report merged in one
    round is never added again. ``merge="reference"`` merges a round as the reference code does
    (``reference_finalize``; the sums then hold prototype × count)."""

    def __init__(self, merge: Literal["exact", "reference"] = "exact") -> None:
        self.merged: frozenset[str] = frozenset()
        self.rule = merge

    def zero(self) -> PrototypePartial:
        return PrototypePartial()

    def accumulate(self, partial: PrototypePartial, update: ClassSums) -> PrototypePartial:
        return PrototypePartial(_join(partial.reports, {update.mission: update}))

    def merge(self, left: PrototypePartial, right: PrototypePartial) -> PrototypePartial:
        return PrototypePartial(_join(left.reports, right.reports))

    def finalize(
        self, global_state: list[NDArray[np.float32]], partial: PrototypePartial
    ) -> list[NDArray[np.float32]]:
        sums, counts = global_state[-2], global_state[-1]
        state = PrototypeState(sums.astype(np.float64), counts.astype(np.int64), self.merged)
        if self.rule == "reference":
            new = reference_finalize(state, partial)
        else:
            new = PrototypeMerge(*sums.shape).finalize(state, partial)
        self.merged = new.merged
        return [*global_state[:-2], new.sums.astype(np.float32), new.counts.astype(np.float32)]

    def pack(self, partial: PrototypePartial) -> dict[str, NDArray[Any]]:
        return pack_reports(partial)

    def unpack(self, packed: Mapping[str, NDArray[Any]]) -> PrototypePartial:
        return unpack_reports(packed)


def reference_blend(server_mean: F64, server_count: int, new_sum: F64, new_count: int) -> F64:
    """The reference code's merge for a class the server already knew, kept to test against.

    The client's prototype is a running mean that starts from the server's (weight
    ``server_count``) and adds its new samples; the server then blends that prototype in with the
    weight of the new samples only. The server's samples are counted again inside the client's
    mean, so the new samples end up with weight new²/(server + new) instead of new."""
    client_mean = (server_count * server_mean + new_sum) / (server_count + new_count)
    blended: F64 = (server_count * server_mean + new_count * client_mean) / (
        server_count + new_count
    )
    return blended


def reference_finalize(state: PrototypeState, partial: PrototypePartial) -> PrototypeState:
    """One round merged as the reference code's server does it, kept to show what it costs.

    Every client of the round started from the server's prototypes ``p`` and counts ``n`` of the
    round's start and folded its ``k`` new samples (sum ``S``) into a running mean,
    ``q = (n·p + S) / (n + k)``; the server then takes the reports one by one (mission-id order)
    and moves its current prototype towards ``q`` with the weight of the new samples only,
    ``p ← p + k / n' · (q − p)`` with ``n' = n_now + k`` (a class it has no prototype for yet
    takes ``q`` and ``k`` as they are). Exact when a class is new to the server, even from several
    clients in one round; for a class the server already knew, the old samples are counted inside
    ``q`` again and the new ones end up under-weighted (``reference_blend``). The returned sums are
    prototype × count, so ``PrototypeState.prototypes`` reads the blended prototypes."""
    sums, counts = state.sums.copy(), state.counts.copy()
    start_sums, start_counts = state.sums, state.counts
    new = sorted(set(partial.reports) - state.merged)
    for mission in new:
        report = partial.reports[mission]
        for i, c in enumerate(report.classes.tolist()):
            k = int(report.counts[i])
            n0 = int(start_counts[c])
            client = (start_sums[c] + report.sums[i]) / (n0 + k)  # the client's running mean
            n = int(counts[c])
            if n == 0:
                sums[c], counts[c] = client * k, k
                continue
            proto = sums[c] / n
            proto = proto + k / (n + k) * (client - proto)
            counts[c] = n + k
            sums[c] = proto * (n + k)
    return PrototypeState(sums, counts, state.merged | frozenset(new))


CLASSES, SUMS, COUNTS = "classes", "sums", "counts"  # a report on the wire


def encode_report(report: ClassSums, dtype: str = "float32") -> dict[str, NDArray[Any]]:
    """What a device sends: class indices and counts as uint32, sums in the payload's format."""
    return {
        CLASSES: report.classes.astype(np.uint32),
        SUMS: report.sums.astype(dtype),
        COUNTS: report.counts.astype(np.uint32),
    }


def decode_report(
    wire: Mapping[str, NDArray[Any]], mission: str, num_classes: int, dim: int
) -> ClassSums:
    """The report a server merges, checked (``PrototypeError`` names the mission and the fault)."""
    missing = {CLASSES, SUMS, COUNTS} - set(wire)
    if missing:
        raise PrototypeError(f"mission {mission}: the report lacks {', '.join(sorted(missing))}")
    report = ClassSums(
        mission,
        np.asarray(wire[CLASSES]).astype(np.int64),
        np.asarray(wire[SUMS]).astype(np.float64),
        np.asarray(wire[COUNTS]).astype(np.int64),
    )
    if report.sums.ndim == 1 and len(report.classes) == 0:
        report = ClassSums(mission, report.classes, report.sums.reshape(0, dim), report.counts)
    PrototypeMerge(num_classes, dim).check(report)
    return report
