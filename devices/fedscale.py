"""FedScale's device traces as fedsim availability and capacity sources (docs/concepts/traces.md).

FedScale ships two files (``benchmark/dataset/data/device_info/`` in SymbioticLab/FedScale), each
a pickled dict keyed by client id:

- ``client_behave_trace``: ``{id: {"active": [s, ...], "inactive": [s, ...], "finish_time": s,
  "duration": s, "model": str}}``; FedScale (``ClientMetadata.is_active``) calls a client online
  at time t when ``active[k] <= t % finish_time <= inactive[k]`` for some k;
- ``client_device_capacity``: ``{id: {"computation": ms per sample, "communication": kbit/s}}``.

Pickles run code when loaded, so they are read with an unpickler that builds no object but
dicts, lists, tuples, strings and numbers (numpy scalars included); JSON with the same layout is
read too. A trace's intervals are held once, in flat arrays; devices index into its clients (device
i of a group → client i mod k, in id order, or through a seeded permutation), so a million devices
cost no memory per device and a query is a vectorised binary search.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from devices.availability import Ids, TraceError
from fedsim.core.errors import FedsimError, clip
from fedsim.core.seeds import derive_seed

__all__ = [
    "Assign",
    "BehaviourTrace",
    "CapacityTrace",
    "FedScaleAvailability",
    "client_index",
    "load_trace_file",
    "on_grid",
    "read_behaviour",
    "read_capacity",
]

Assign = Literal["in-order", "seeded"]

# a bound, so that a wrong path fails at once instead of reading a disk image into memory
MAX_TRACE_BYTES = 2 * 1024**3

# the only callables a FedScale pickle needs: numpy scalars (a float32 value), OrderedDict
_ALLOWED = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes inside a protocol-2 pickle (a numpy scalar's raw value)
    ("collections", "OrderedDict"),
}


class _DataOnly(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings and numbers; refuses any other class or function,
    so loading a hostile pickle runs nothing."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise TraceError(
            str(self.path),
            f"the pickle asks to call {clip(module, 40)}.{clip(name, 40)}; a FedScale trace holds "
            "only dicts, lists and numbers, so it is refused unread",
            "use FedScale's own file, or convert it to JSON in a process you trust",
        )


def load_trace_file(path: Path) -> dict[object, object]:
    """The dict in a FedScale trace file: JSON if its name ends in .json, else a pickle read
    without running code."""
    if not path.is_file():
        raise FedsimError(str(path), "no such trace file", "give a path relative to the scenario")
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise TraceError(str(path), f"{size} bytes is too big for a device trace", "check the path")
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            found = json.loads(data.decode("utf-8"))
        else:
            found = _DataOnly(data, path).load()
    except TraceError:
        raise
    except (
        pickle.UnpicklingError,
        ValueError,  # UnicodeDecodeError and json's errors among them
        EOFError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        OverflowError,
        RecursionError,
    ) as exc:  # what a truncated or garbled file raises, as a located error
        kind = "JSON" if path.suffix.lower() == ".json" else "a pickle"
        raise TraceError(
            str(path),
            f"cannot read it as {kind} ({clip(str(exc), 60)})",
            "give FedScale's client_behave_trace / client_device_capacity, or their JSON",
        ) from None
    if not isinstance(found, dict) or not found:
        raise TraceError(
            str(path),
            f"expected a non-empty dict keyed by client id, found {type(found).__name__}",
            "give FedScale's client_behave_trace or client_device_capacity",
        )
    return found


def _order(keys: Iterable[object]) -> list[object]:
    """Client ids in id order: numerically where they are integers (or digit strings, as JSON
    writes them), so a pickle and its JSON give the same order; other ids after, as text."""

    def key(k: object) -> tuple[int, int, str]:
        if isinstance(k, int) and not isinstance(k, bool):
            return (0, k, "")
        if isinstance(k, str) and k.isdecimal():
            return (0, int(k), "")
        return (1, 0, str(k))

    return sorted(keys, key=key)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _numbers(
    values: list[object], path: Path, where: list[str], sizes: list[int], indexed: bool
) -> NDArray[np.float64]:
    """``values`` as float64, each finite and ≥ 0; a bad one is named by client and field
    (``where[c]``, with its index in the client's list if ``indexed``)."""
    try:
        array = np.array(values) if values else np.zeros(0)
    except (ValueError, OverflowError):  # ragged lists
        array = np.array([], dtype=object)
    # numpy reads True as 1: a bool is refused, as a time or capacity it is a mistake
    ok = array.ndim == 1 and len(array) == len(values) and bool not in set(map(type, values))
    if ok and array.dtype.kind == "O":  # ints past int64: numbers still, if nothing else
        ok = all(_is_number(v) for v in values)
    if ok and array.dtype.kind in "iufO":
        with np.errstate(over="ignore"):
            array = array.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
        if not len(bad):
            return array
        first = int(bad[0])
    else:
        first = next((i for i, v in enumerate(values) if not _is_number(v)), 0)
    ends = np.cumsum(sizes)
    owner = int(np.searchsorted(ends, first, side="right"))
    index = first - (int(ends[owner - 1]) if owner else 0)
    raise TraceError(
        f"{path}: {where[owner]}[{index}]" if indexed else f"{path}: {where[owner]}",
        f"{clip(repr(values[first]), 30)} is not a finite number ≥ 0",
        "write times and capacities as plain non-negative numbers",
    )


def _entry(
    data: dict[object, object], client: object, path: Path, fields: tuple[str, ...]
) -> dict[object, object]:
    """The client's entry, a dict holding ``fields``."""
    entry = data[client]
    if not isinstance(entry, dict):
        raise TraceError(
            f"{path}: client {clip(str(client), 20)}",
            f"expected a dict with {', '.join(fields)}, found {type(entry).__name__}",
            "check that this is the right kind of FedScale trace",
        )
    missing = [f for f in fields if f not in entry]
    if missing:
        raise TraceError(
            f"{path}: client {clip(str(client), 20)}",
            f"no '{missing[0]}' (an entry has {', '.join(fields)})",
            "check that this is the right kind of FedScale trace",
        )
    return entry


def _times(
    value: object, client: object, name: str, path: Path
) -> list[object] | tuple[object, ...]:
    if not isinstance(value, list | tuple):
        raise TraceError(
            f"{path}: client {clip(str(client), 20)}: {name}",
            f"expected a list of seconds, found {type(value).__name__}",
            "write the times the client goes online / offline as a list",
        )
    return value


@dataclass(frozen=True)
class BehaviourTrace:
    """Each client's online intervals within its period, merged and sorted: client c's are
    ``starts[offsets[c]:offsets[c+1]]`` (seconds since the period began), ``period[c]`` its
    ``finish_time``. Closed intervals, as FedScale tests ``active <= t <= inactive``."""

    clients: tuple[object, ...]
    period: NDArray[np.float64]
    offsets: NDArray[np.int64]
    starts: NDArray[np.float64]
    ends: NDArray[np.float64]
    # sorted search keys client × span + start: one binary search serves all clients at once
    keys: NDArray[np.float64]
    span: float

    def __len__(self) -> int:
        return len(self.clients)

    @property
    def nbytes(self) -> int:
        arrays = (self.period, self.offsets, self.starts, self.ends, self.keys)
        return sum(a.nbytes for a in arrays)

    @classmethod
    def from_dict(cls, data: dict[object, object], path: Path) -> BehaviourTrace:
        clients = _order(data)
        active: list[list[object] | tuple[object, ...]] = []
        inactive: list[list[object] | tuple[object, ...]] = []
        finish: list[object] = []
        for client in clients:
            entry = _entry(data, client, path, ("active", "inactive", "finish_time"))
            on, off = entry["active"], entry["inactive"]
            on, off = _times(on, client, "active", path), _times(off, client, "inactive", path)
            if len(on) != len(off):
                raise TraceError(
                    f"{path}: client {clip(str(client), 20)}: inactive",
                    f"{len(on)} active times but {len(off)} inactive times",
                    "pair each active time with the inactive time that ends it",
                )
            active.append(on)
            inactive.append(off)
            finish.append(entry["finish_time"])
        sizes = [len(a) for a in active]
        names = [f"client {clip(str(c), 20)}" for c in clients]
        starts = _numbers(
            list(chain.from_iterable(active)), path, [f"{n}: active" for n in names], sizes, True
        )
        ends = _numbers(
            list(chain.from_iterable(inactive)),
            path,
            [f"{n}: inactive" for n in names],
            sizes,
            True,
        )
        period = _numbers(
            finish, path, [f"{n}: finish_time" for n in names], [1] * len(clients), False
        )
        if not (zero := np.flatnonzero(period <= 0)).size == 0:
            raise TraceError(
                f"{path}: {names[int(zero[0])]}: finish_time",
                "is 0: FedScale wraps time modulo finish_time, which must be positive",
                "give the length of the client's trace in seconds",
            )
        owner = np.repeat(np.arange(len(clients), dtype=np.int64), sizes)
        offsets, starts, ends = _merge(owner, starts, ends, period)
        owner = np.repeat(np.arange(len(clients), dtype=np.int64), np.diff(offsets))
        span = float(period.max()) * 2.0 + 1.0
        return cls(tuple(clients), period, offsets, starts, ends, owner * span + starts, span)

    def online(
        self, client: Ids, tau: NDArray[np.float64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """For clients at trace times ``tau``: online?, when that spell ends, and the next time
        ≥ tau it is online (tau if online; inf if never)."""
        period = self.period[client]
        norm = np.mod(tau, period)
        base = tau - norm
        lo, hi = self.offsets[client], self.offsets[client + 1]
        j = _last_start(self, client, norm, lo, hi)
        has = j >= lo
        jj = np.where(has, j, 0)
        on = has & (norm <= self.ends[jj])
        first = np.where(hi > lo, lo, 0)
        until = base + self.ends[jj]
        # a spell running to the period's end goes on into the next period's first spell
        wraps = on & (self.ends[jj] >= period) & (self.starts[first] <= 0) & (hi > lo)
        whole = wraps & (jj == first)
        until = np.where(wraps, base + period + self.ends[first], until)
        until = np.where(whole, math.inf, np.where(on, until, math.nan))
        nxt = np.maximum(j + 1, lo)
        later = nxt < hi
        back = np.where(later, base + self.starts[np.where(later, nxt, 0)], math.inf)
        back = np.where(~later & (hi > lo), base + period + self.starts[first], back)
        return on, until, np.where(on, tau, back)


def _merge(
    owner: Ids, starts: NDArray[np.float64], ends: NDArray[np.float64], period: NDArray[np.float64]
) -> tuple[Ids, NDArray[np.float64], NDArray[np.float64]]:
    """Per client: clip intervals to [0, period], drop empty ones (an inverted pair is never
    online in FedScale either), sort and join overlapping ones; vectorised over all clients."""
    ends = np.minimum(ends, period[owner])
    keep = starts < ends
    owner, starts, ends = owner[keep], starts[keep], ends[keep]
    order = np.lexsort((starts, owner))
    owner, starts, ends = owner[order], starts[order], ends[order]
    # running end within each client: shift each client's ends above the previous client's
    span = float(period.max()) + 1.0
    reach = np.maximum.accumulate(ends + owner * span) - owner * span
    new = np.ones(len(starts), dtype=bool)
    new[1:] = (owner[1:] != owner[:-1]) | (starts[1:] > reach[:-1])
    heads = np.flatnonzero(new)
    merged_ends = np.maximum.reduceat(ends, heads) if len(heads) else ends[:0]
    counts = np.bincount(owner[heads], minlength=len(period))
    offsets = np.zeros(len(period) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return offsets, starts[heads], merged_ends


def _last_start(
    trace: BehaviourTrace, client: Ids, norm: NDArray[np.float64], lo: Ids, hi: Ids
) -> Ids:
    """Index of each client's last interval starting at or before ``norm`` (lo - 1: none), by
    one binary search over all clients' starts at once."""
    j = np.searchsorted(trace.keys, client * trace.span + norm, side="right") - 1
    j = np.clip(j, lo - 1, hi - 1)
    # the combined key rounds at ~1e-16 × clients × period: settle the boundary exactly
    safe = np.clip(j, 0, max(len(trace.starts) - 1, 0))
    j = np.where((j >= lo) & (trace.starts[safe] > norm), j - 1, j)
    up = np.clip(j + 1, 0, max(len(trace.starts) - 1, 0))
    return np.where((j + 1 < hi) & (trace.starts[up] <= norm), j + 1, j)


def client_index(local: Ids, clients: int, assign: Assign, seed: int, what: str) -> Ids:
    """The trace client of each group-local device index: ``i mod k`` in id order, or through a
    seeded permutation of the k clients (each client used once before any is reused)."""
    if assign == "in-order":
        return local % clients
    return _permutation(seed, what, clients)[local % clients]


@lru_cache(maxsize=8)
def _permutation(seed: int, what: str, clients: int) -> Ids:
    rng = np.random.default_rng(derive_seed(seed, "fedscale", what))
    return rng.permutation(clients).astype(np.int64)


class FedScaleAvailability:
    """A group's availability from a FedScale behaviour trace: device ``first + i`` behaves as
    client ``client_index(i)``; simulated time t is trace time ``t + start_s``."""

    def __init__(
        self, trace: BehaviourTrace, first: int, assign: Assign, seed: int, start_s: float = 0.0
    ) -> None:
        self.trace, self.first, self.assign, self.seed, self.start_s = (
            trace,
            first,
            assign,
            seed,
            start_s,
        )

    def _ask(
        self, device_ids: Ids, t: float
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        local = np.asarray(device_ids, dtype=np.int64) - self.first
        client = client_index(local, len(self.trace), self.assign, self.seed, "availability")
        tau = np.full(len(local), t + self.start_s)
        on, until, back = self.trace.online(client, tau)
        return on, until - self.start_s, back - self.start_s

    def online(self, device_ids: Ids, t: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        on, until, _ = self._ask(device_ids, t)
        return on, until

    def next_online(self, device_ids: Ids, t: float) -> NDArray[np.float64]:
        return self._ask(device_ids, t)[2]


@dataclass(frozen=True)
class CapacityTrace:
    """Each client's ``computation`` (FedScale: inference latency, ms per sample) and
    ``communication`` (kbit/s) in id order."""

    clients: tuple[object, ...]
    computation_ms: NDArray[np.float64]
    communication_kbps: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.clients)

    @classmethod
    def from_dict(cls, data: dict[object, object], path: Path) -> CapacityTrace:
        clients = _order(data)
        fields = ("computation", "communication")
        entries = [_entry(data, c, path, fields) for c in clients]
        names = [f"client {clip(str(c), 20)}" for c in clients]
        ones = [1] * len(clients)
        values = [
            _numbers([e[f] for e in entries], path, [f"{n}: {f}" for n in names], ones, False)
            for f in fields
        ]
        for f, array in zip(fields, values, strict=True):
            if (zero := np.flatnonzero(array <= 0)).size:
                raise TraceError(
                    f"{path}: {names[int(zero[0])]}: {f}",
                    "is 0: a device needs some compute speed and bandwidth",
                    "give a positive number (computation: ms per sample; communication: kbit/s)",
                )
        return cls(tuple(clients), values[0], values[1])

    def compute_factor(self) -> NDArray[np.float64]:
        """Each client's compute time relative to the trace's median client: the group's profile
        stands for the median, the trace gives the spread."""
        return self.computation_ms / float(np.median(self.computation_ms))

    def throughput_bps(self) -> NDArray[np.float64]:
        """Bits per second; FedScale's kbit is 1024 bits (it sizes updates as bytes / 1024 × 8)."""
        return self.communication_kbps * 1024.0


# derived profiles and links are shared by devices whose values agree within 0.5 %: bandwidths
# from 10 kbit/s to 1 Gbit/s fit ~2,300 steps, however many distinct values a trace holds
GRID_STEP = math.log1p(0.005)


def on_grid(values: NDArray[np.float64]) -> tuple[Ids, NDArray[np.float64]]:
    """Each positive value's step on a logarithmic 0.5 % grid, and the grid value (within
    ±0.25 % of it)."""
    step = np.rint(np.log(values) / GRID_STEP).astype(np.int64)
    return step, np.exp(step * GRID_STEP)


def _stamp(path: Path, where: str) -> tuple[str, int, int]:
    if not path.is_file():
        raise FedsimError(where, f"no trace file {path}", "give a path relative to the scenario")
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def read_behaviour(path: Path, where: str = "") -> BehaviourTrace:
    """A FedScale behaviour trace, read once per file version and shared by every group;
    ``where`` locates a missing file (the scenario key naming it)."""
    return _behaviour(*_stamp(path, where or str(path)))


def read_capacity(path: Path, where: str = "") -> CapacityTrace:
    """A FedScale capacity trace, read once per file version and shared by every group."""
    return _capacity(*_stamp(path, where or str(path)))


@lru_cache(maxsize=2)
def _behaviour(name: str, mtime: int, size: int) -> BehaviourTrace:
    return BehaviourTrace.from_dict(load_trace_file(Path(name)), Path(name))


@lru_cache(maxsize=2)
def _capacity(name: str, mtime: int, size: int) -> CapacityTrace:
    return CapacityTrace.from_dict(load_trace_file(Path(name)), Path(name))
