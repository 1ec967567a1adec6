"""When a device is online: always, a two-state Markov process, or an imported trace.

Simulated time is in seconds from the start of the run. Each model answers one question for a
batch of devices at time ``t``: is the device online, and until when (``inf``: for good). A device
that is online at a round's start but whose ``until`` falls before it finishes drops out
mid-round.

The Markov model draws each device's alternating on/off durations from the scenario seed, the
device id and the interval's index with a counter-based hash, so the answer at time ``t`` does not
depend on which devices were asked before, or in which order: seeded availability is reproducible
in any execution mode, with any cohort.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedsim.core.errors import FedsimError, clip
from fedsim.core.seeds import derive_seed
from fedsim.core.textfile import read_text

__all__ = ["AlwaysOn", "Availability", "MarkovOnOff", "Trace", "TraceError", "read_trace"]

Ids = NDArray[np.int64]


class Availability(Protocol):
    def online(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """For each device at time ``t``: whether it is online, and until when (if it is)."""
        ...

    def next_online(self, device_ids: Ids, t: float) -> NDArray[np.float64]:
        """For each device, the first time ≥ ``t`` it is online (inf: never again)."""
        ...


class AlwaysOn:
    def online(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        return np.ones(len(device_ids), dtype=bool), np.full(len(device_ids), math.inf)

    def next_online(self, device_ids: Ids, t: float) -> NDArray[np.float64]:
        return np.full(len(device_ids), t)


_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), 0x9E3779B97F4A7C15


def _uniform(key: int, device_ids: Ids, index: NDArray[np.int64]) -> NDArray[np.float64]:
    """Uniform draws in (0, 1) from (key, device, index): SplitMix64's finaliser, vectorised."""
    with np.errstate(over="ignore"):
        x = np.uint64(key) + device_ids.astype(np.uint64) * np.uint64(_GOLDEN)
        x = x ^ (index.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03))
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


class MarkovOnOff:
    """A two-state continuous-time Markov chain per device: on for Exp(mean_on_s), off for
    Exp(mean_off_s), alternating (rates 1/mean). Each device starts in the stationary
    distribution: online with probability mean_on / (mean_on + mean_off)."""

    def __init__(
        self, seed: int, mean_on_s: float, mean_off_s: float, devices: range | None = None
    ) -> None:
        if mean_on_s <= 0 or mean_off_s <= 0:
            raise ValueError("mean_on_s and mean_off_s must be positive")
        self.mean = (mean_on_s, mean_off_s)
        self._key = derive_seed(seed, "availability") << 32 | derive_seed(seed, "availability", 1)
        # each device's current interval (index, start, end; end < 0: not asked yet), in arrays
        # over the ids [_lo, _lo + len) (``devices`` if given, else grown to those asked): 24 bytes
        # per device, and a round that asks every device is a few vector operations
        self._lo = devices.start if devices is not None else 0
        size = len(devices) if devices is not None else 0
        self._index = np.zeros(size, dtype=np.int64)
        self._start = np.zeros(size, dtype=np.float64)
        self._end = np.full(size, -1.0)

    def _first_online(self, device_ids: Ids) -> NDArray[np.bool_]:
        p_on = self.mean[0] / (self.mean[0] + self.mean[1])
        return _uniform(self._key ^ 0x5EED, device_ids, np.zeros_like(device_ids)) < p_on

    def _slots(self, device_ids: Ids) -> Ids:
        """Where each device's interval is kept (the arrays grow to cover new ids)."""
        if not len(device_ids):
            return device_ids - self._lo
        low, high = int(device_ids.min()), int(device_ids.max()) + 1
        size = len(self._end)
        if size == 0:
            self._lo = low
        if low < self._lo or high > self._lo + size:
            lo = min(low, self._lo)
            grown = max(high, self._lo + size) - lo
            shift = self._lo - lo
            index, start = np.zeros(grown, dtype=np.int64), np.zeros(grown, dtype=np.float64)
            end = np.full(grown, -1.0)
            index[shift : shift + size] = self._index
            start[shift : shift + size] = self._start
            end[shift : shift + size] = self._end
            self._lo, self._index, self._start, self._end = lo, index, start, end
        return device_ids - self._lo

    def _intervals(self, device_ids: Ids, t: float) -> tuple[Ids, NDArray[np.float64]]:
        """Index and end of the interval that contains ``t``, for each device."""
        slots = self._slots(device_ids)
        index, start, end = self._index[slots], self._start[slots], self._end[slots]
        restart = (end < 0) | (start > t)  # new, or asked about the past: replay from zero
        index[restart], start[restart] = 0, 0.0
        end[restart] = self._duration(device_ids[restart], index[restart])
        late = end <= t
        while late.any():
            index[late] += 1
            start[late] = end[late]
            end[late] += self._duration(device_ids[late], index[late])
            late = end <= t
        self._index[slots], self._start[slots], self._end[slots] = index, start, end
        return index, end

    def _duration(self, device_ids: Ids, index: Ids) -> NDArray[np.float64]:
        on = self._first_online(device_ids) ^ (index % 2 == 1)
        mean = np.where(on, self.mean[0], self.mean[1])
        return -mean * np.log(_uniform(self._key, device_ids, index))

    def online(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        on, end = self.spell(device_ids, t)
        return on, np.where(on, end, math.nan)

    def next_online(self, device_ids: Ids, t: float) -> NDArray[np.float64]:
        on, end = self.spell(device_ids, t)
        return np.where(on, t, end)  # an off spell ends in an on spell

    def spell(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """Whether each device is online at ``t``, and when its current spell (on or off) ends."""
        device_ids = np.asarray(device_ids, dtype=np.int64)
        index, end = self._intervals(device_ids, t)
        return self._first_online(device_ids) ^ (index % 2 == 1), end


class Trace:
    """Online intervals per device, e.g. recorded from a real fleet; a device is offline outside
    its intervals (and always, if the trace does not mention it).

    Held flat: device ``ids[k]``'s merged spans are ``starts[offsets[k]:offsets[k + 1]]`` (and
    ``ends``), so a question about some devices costs a binary search per device asked, done for
    all of them at once, and nothing for the devices not asked."""

    def __init__(self, intervals: Mapping[int, Sequence[tuple[float, float]]]) -> None:
        self._ids = np.array(sorted(intervals), dtype=np.int64)
        starts: list[float] = []
        ends: list[float] = []
        offsets = [0]
        for device in self._ids.tolist():
            merged: list[list[float]] = []
            for start, end in sorted(intervals[device]):  # overlapping or touching spans join
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            starts += [s for s, _ in merged]
            ends += [e for _, e in merged]
            offsets.append(len(starts))
        self._starts = np.array(starts, dtype=np.float64)
        self._ends = np.array(ends, dtype=np.float64)
        self._offsets = np.array(offsets, dtype=np.int64)

    def devices(self) -> set[int]:
        return set(self._ids.tolist())

    def _search(self, device_ids: Ids, t: float) -> tuple[Ids, Ids, Ids]:
        """Per device asked: its first span (``lo``), the end of its spans (``hi``; lo = hi for a
        device the trace does not mention), and the first of its spans starting after ``t``."""
        ids = np.asarray(device_ids, dtype=np.int64)
        k = np.searchsorted(self._ids, ids)
        known = k < len(self._ids)
        known[known] = self._ids[k[known]] == ids[known]
        k = np.where(known, k, 0)
        lo = np.where(known, self._offsets[k], 0)
        hi = np.where(known, self._offsets[np.minimum(k + 1, len(self._offsets) - 1)], 0)
        a, b = lo.copy(), hi.copy()  # bisect each device's starts at once (side="right")
        last = max(len(self._starts) - 1, 0)
        while (active := a < b).any():
            mid = (a + b) // 2
            early = self._starts[np.minimum(mid, last)] <= t
            a = np.where(active & early, mid + 1, a)
            b = np.where(active & ~early, mid, b)
        return lo, hi, a

    def online(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        lo, _, after = self._search(device_ids, t)
        j = after - 1
        has = j >= lo
        end = self._ends[np.where(has, j, 0)] if len(self._ends) else np.zeros(len(j))
        on = has & (t < end)
        return on, np.where(on, end, math.nan)

    def next_online(self, device_ids: Ids, t: float) -> NDArray[np.float64]:
        lo, hi, after = self._search(device_ids, t)
        j = after - 1
        has = j >= lo
        end = self._ends[np.where(has, j, 0)] if len(self._ends) else np.zeros(len(j))
        on = has & (t < end)
        later = after < hi
        start = self._starts[np.where(later, after, 0)] if len(self._starts) else np.zeros(len(j))
        return np.where(on, t, np.where(later, start, math.inf))


TRACE_COLUMNS = ("device", "start", "end")


class TraceError(FedsimError):
    """A problem inside a trace file: ``where`` is already ``file:line``."""


# a trace is numbers: a 10-million-row fleet trace is ~200 MB; anything larger is the wrong file
MAX_TRACE_BYTES = 256 * 1024 * 1024


def read_trace(path: Path, where: str, devices: range) -> Trace:
    """Read a CSV with a header ``device,start,end`` (fleet device ids, seconds of simulated
    time, one online interval per row). Problems name the file and line; a file that is not a
    trace is refused without quoting it."""
    if not path.is_file():
        raise FedsimError(
            where, f"no trace file {path}", "give a CSV path relative to the scenario"
        )
    why = "a trace holds three numbers per online interval"
    text = read_text(path, "a trace (CSV)", MAX_TRACE_BYTES, why)
    reader = csv.reader(io.StringIO(text, newline=""))
    intervals: dict[int, list[tuple[float, float]]] = {}
    try:
        if tuple(next(reader, ())) != TRACE_COLUMNS:
            raise TraceError(
                f"{path}:1",
                f"expected a trace: a CSV whose first line is {','.join(TRACE_COLUMNS)}",
                f"check the path, or make the first line {','.join(TRACE_COLUMNS)}",
            )
        for row in reader:
            if row:  # blank lines are skipped, as csv.DictReader does
                device, start, end = _interval(row, f"{path}:{reader.line_num}", devices)
                intervals.setdefault(device, []).append((start, end))
    except csv.Error as exc:  # a field over csv.field_size_limit(), a stray quote
        raise TraceError(
            f"{path}:{reader.line_num}",
            f"not a line of CSV ({clip(str(exc), 80)})",
            "write device,start,end as three plain numbers",
        ) from None
    return Trace(intervals)


def _interval(row: list[str], where: str, devices: range) -> tuple[int, float, float]:
    """One row's (device, start, end), checked."""
    if len(row) != len(TRACE_COLUMNS):
        raise TraceError(
            where,
            f"expected {len(TRACE_COLUMNS)} columns ({','.join(TRACE_COLUMNS)}), got {len(row)}",
            "write one interval per line",
        )
    try:
        device, start, end = int(row[0]), float(row[1]), float(row[2])
    except ValueError:
        raise TraceError(
            where,
            "cannot read the row as an integer device id and two numbers of seconds",
            "write e.g. 3,0,120.5",
        ) from None
    if not start < end or start < 0:
        raise TraceError(
            where,
            f"interval [{start}, {end}) is empty or starts before 0",
            "each row needs 0 <= start < end",
        )
    if device not in devices:
        raise TraceError(
            where,
            f"device {clip(str(device), 20)} is not in this group (devices {devices.start}-"
            f"{devices.stop - 1})",
            "use the fleet's device ids (as in devices.csv)",
        )
    return device, start, end
