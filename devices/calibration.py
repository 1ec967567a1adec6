"""Calibrate the compute and power figures on MLPerf Tiny, and test them on held-out rounds.

The data is ``devices/data/mlperf_tiny.csv``: every closed-division inference result of MLPerf Tiny
v0.5 to v1.3 (board, processor, clock, framework, benchmark, median latency, median energy per
inference where submitted; ``devices/data/MLPERF_TINY.md`` says where each comes from).

- **Compute**: for each (core class, precision, kernel family) a result's cycles are its latency ×
  the clock; the model is ``cycles = Σ_kind c_kind × MACs_kind`` over the layer kinds of
  ``devices.deployment`` counted on fedsim's own copies of the four reference models. The ``c`` are
  fitted by non-negative least squares on relative errors, on rounds v0.5 to v1.1 only
  (``FIT_ROUNDS``). Libraries improve from one release to the next, so a family's figures are
  fitted on its newest round in that window (``newest=True``, the default; ``newest=False`` pools
  every round, and the benchmark reports both).
- **Power**: a board's power while inferring is the median of energy ÷ latency over its results
  with an energy measurement in the fit rounds (EEMBC EnergyRunner measures the DUT supply); a
  board without one keeps its datasheet figure.
- **Test**: every result of rounds v1.2 and v1.3 (``TEST_ROUNDS``) on a board fedsim has a profile
  for is predicted from the fitted figures (at the result's own clock) and its error reported. Where
  a (core, precision, family) has no fit, the prediction falls back to the same family on another
  core scaled by a measured ratio (``scaled``), then to the core's ``cmsis-nn`` figure, and says so.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from devices.deployment import LAYER_KINDS, deployment
from devices.kernels import DATA, FIGURES_FILE, KernelFigure, core_class, kernel_family

__all__ = [
    "BENCHMARK_MODEL",
    "BOARD_ALIASES",
    "CORE_ESTIMATES",
    "FIT_KINDS",
    "FIT_ROUNDS",
    "RESULTS_FILE",
    "ROUND_ORDER",
    "TEST_ROUNDS",
    "TRAIN_KERNELS_FILE",
    "Prediction",
    "Result",
    "benchmark_macs",
    "board_key",
    "calibrate",
    "choose_figure",
    "fit_figures",
    "fit_power",
    "load_results",
    "predict",
    "training_figures",
    "write_figures",
]

RESULTS_FILE = DATA / "mlperf_tiny.csv"
FIT_ROUNDS = ("v0.5", "v0.7", "v1.0", "v1.1")
TEST_ROUNDS = ("v1.2", "v1.3")
BENCHMARK_MODEL = {"kws": "mlperf-kws", "vww": "mlperf-vww", "ic": "mlperf-ic", "ad": "mlperf-ad"}
ROUND_ORDER = {r: i for i, r in enumerate(FIT_ROUNDS + TEST_ROUNDS)}


@dataclass(frozen=True)
class Result:
    round: str
    submitter: str
    system: str
    board: str
    core: str
    clock_mhz: float
    kernels: str
    precision: str
    benchmark: str
    latency_ms: float
    energy_uj: float | None
    source: str

    @property
    def cycles(self) -> float:
        return self.latency_ms * 1e-3 * self.clock_mhz * 1e6

    @property
    def power_mw(self) -> float | None:
        return None if self.energy_uj is None else self.energy_uj / self.latency_ms


# MLPerf Tiny names for boards the catalog names otherwise (after the reduction below)
BOARD_ALIASES = {"raspberrypi4b": "raspberrypi4modelb", "nucleou3c5zit6": "nucleou3c5zi"}


def board_key(board: str) -> str:
    """A board name reduced for matching: lower case, letters and digits only, without the
    package/revision suffixes MLPerf submitters add or drop (NUCLEO_H7A3ZI_Q, NUCLEO-L4R5ZI-P: the
    -P board is the same chip with an SMPS, which changes its power but not its cycles)."""
    key = re.sub(r"[^a-z0-9]", "", board.lower())
    key = re.sub(r"(q|p)$", "", key) if key.startswith("nucleo") else key
    return BOARD_ALIASES.get(key, key)


def load_results(path: Path = RESULTS_FILE) -> list[Result]:
    """The results on cores fedsim models (processor text names a core class, clock known)."""
    results = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            core = core_class(row["processor"])
            if core is None or not row["clock_mhz"] or row["benchmark"] not in BENCHMARK_MODEL:
                continue
            results.append(
                Result(
                    round=row["round"],
                    submitter=row["submitter"],
                    system=row["system"],
                    board=row["board"],
                    core=core,
                    clock_mhz=float(row["clock_mhz"]),
                    kernels=kernel_family(f"{row['framework']} {row['system']}"),
                    precision=row["precision"],
                    benchmark=row["benchmark"],
                    latency_ms=float(row["latency_ms"]),
                    energy_uj=float(row["energy_uj"]) if row["energy_uj"] else None,
                    source=row["source"],
                )
            )
    return results


@cache
def benchmark_macs(benchmark: str) -> dict[str, int]:
    """MACs by layer kind of the benchmark's reference model (fedsim's copy)."""
    from fedsim.core.mlperf_models import MLPERF_MODELS, build_mlperf

    name = BENCHMARK_MODEL[benchmark]
    return deployment(build_mlperf(name), (MLPERF_MODELS[name].num_features,)).macs


# The four benchmarks run depthwise and pointwise layers only together, in the same 7:1 ratio (kws
# 288k:2.05M MACs, vww 0.80M:6.19M), so no fit can tell their costs apart: one "separable" figure
# serves both. Chosen by validation inside the fit window (fit v0.5-v1.0, predict v1.1; median
# absolute error): per-kind conv/separable/dense 4.3%; depthwise and pointwise apart 3.9% but with
# 0 cycles per pointwise MAC on five libraries (any other model then silently costs nothing); one
# shape per library x one scale per core 5.1%; one shape for all 9.4%. Pooling every round instead
# of each library's newest: 3.9% -> 10.5% (per-kind, apart).
FIT_KINDS = {"conv": ("conv",), "separable": ("pointwise", "depthwise"), "dense": ("dense",)}


def _fit_macs(benchmark: str) -> list[int]:
    macs = benchmark_macs(benchmark)
    return [sum(macs[k] for k in kinds) for kinds in FIT_KINDS.values()]


def _fit(results: Sequence[Result]) -> dict[str, float]:
    """Cycles per MAC by layer kind minimising the squared relative error (non-negative)."""
    a = np.array([[m / r.cycles for m in _fit_macs(r.benchmark)] for r in results])
    solution, _ = nnls(a, np.ones(len(results)))
    fitted = dict(zip(FIT_KINDS, (round(float(x), 4) for x in solution), strict=True))
    return {kind: fitted[group] for group, kinds in FIT_KINDS.items() for kind in kinds}


def _describe(results: Sequence[Result]) -> str:
    systems = sorted({f"{r.round} {r.submitter} {r.system}" for r in results})
    return f"{len(results)} MLPerf Tiny results: " + "; ".join(systems)


def fit_figures(
    results: Iterable[Result], rounds: Sequence[str] = FIT_ROUNDS, newest: bool = True
) -> list[KernelFigure]:
    """One calibrated figure per (core, precision, kernels) with results in ``rounds``."""
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        if r.round in rounds and r.kernels != "other":
            groups[(r.core, r.precision, r.kernels)].append(r)
    figures = []
    for (core, precision, kernels), members in sorted(groups.items()):
        if newest:
            last = max(ROUND_ORDER[r.round] for r in members)
            members = [r for r in members if ROUND_ORDER[r.round] == last]
        figures.append(
            KernelFigure(
                core=core,
                precision=precision,
                kernels=kernels,
                cycles_per_mac=_fit(members),
                basis="calibrated",
                source=f"Fitted on {_describe(members)}",
                extra={"rounds": sorted({r.round for r in members}), "results": len(members)},
            )
        )
    return figures


def fit_power(results: Iterable[Result], rounds: Sequence[str] = FIT_ROUNDS) -> dict[str, Any]:
    """Per board (``board_key``): the median power while inferring, from energy ÷ latency."""
    by_board: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.round in rounds and r.power_mw is not None and r.kernels != "other":
            by_board[board_key(r.board)].append(r)
    return {
        board: {
            "active_mw": round(statistics.median(r.power_mw for r in members if r.power_mw), 2),
            "results": len(members),
            "source": f"Median energy/latency of {_describe(members)}",
        }
        for board, members in sorted(by_board.items())
    }


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    figure: KernelFigure
    basis: str  # the figure's, or 'scaled'/'fallback' when it is another triple's
    note: str


# Cores with no result in the fit rounds: a calibrated core's figures times an architectural
# factor, decided from the cores' documented datapaths (not from any result).
CORE_ESTIMATES: dict[str, tuple[str, float, str]] = {
    "Cortex-M85": (
        "Cortex-M7",
        0.5,
        "Helium (M-profile vector extension): a 128-bit int8 vector MAC (16 MACs) every two "
        "cycles (dual-beat) against the M7's dual-issued SMLAD (2 MACs each), about half the "
        "cycles per MAC",
    ),
    "Cortex-A53": (
        "Cortex-A72",
        2.0,
        "in-order dual issue with a 64-bit NEON datapath against the A72's out-of-order triple "
        "issue with two 128-bit NEON pipes: about twice the cycles per MAC",
    ),
}


def choose_figure(
    figures: Sequence[KernelFigure], core: str, precision: str, kernels: str
) -> tuple[KernelFigure, float, str, str]:
    """The figure for a triple and a factor on its cycles, with its basis and a note:

    1. the triple's own figure;
    2. ``scaled``: the same kernels on another core × the two cores' measured ratio under the
       libraries both have (the median over those libraries, on the four benchmarks' MACs);
    3. ``estimate``: for a core with no figure at all, ``CORE_ESTIMATES``;
    4. ``fallback``: the core's own figure for another library (cmsis-nn, then fedsim-c).
    """
    index = {(f.core, f.precision, f.kernels): f for f in figures}
    exact = index.get((core, precision, kernels))
    if exact is not None:
        return exact, 1.0, exact.basis, ""
    probe = {k: sum(benchmark_macs(b)[k] for b in BENCHMARK_MODEL) for k in LAYER_KINDS}
    candidates = []
    for other in sorted({f.core for f in figures if f.kernels == kernels} - {core}):
        same = index.get((other, precision, kernels))
        shared = sorted(
            f.kernels
            for f in figures
            if f.core == core
            and f.precision == precision
            and (other, precision, f.kernels) in index
        )
        if same is not None and shared:
            candidates.append((-len(shared), other, same, shared))
    for _, other, same, shared in sorted(candidates, key=lambda c: (c[0], c[1])):  # most shared
        ratio = statistics.median(
            index[(core, precision, k)].cycles(probe) / index[(other, precision, k)].cycles(probe)
            for k in shared
        )
        under = ", ".join(shared)
        note = f"{kernels} on a {other} x {ratio:.2f} (the {core}/{other} ratio under {under})"
        return same, ratio, "scaled", note
    if not any(f.core == core for f in figures) and core in CORE_ESTIMATES:
        base, factor, why = CORE_ESTIMATES[core]
        figure, ratio, _, note = choose_figure(figures, base, precision, kernels)
        text = f"no results on a {core}: the {base}'s figure x {factor:g} ({why})"
        return figure, ratio * factor, "estimate", text + (f"; {note}" if note else "")
    own = sorted(k for (c, p, k) in index if (c, p) == (core, precision))
    for other in ("cmsis-nn", "fedsim-c", *own):
        fallback = index.get((core, precision, other))
        if fallback is not None:
            note = f"no {kernels} figure on a {core}: its {other} figure"
            return fallback, 1.0, "fallback", note
    raise LookupError(f"no {precision} figure for a {core}")


def predict(
    figures: Sequence[KernelFigure],
    core: str,
    precision: str,
    kernels: str,
    macs: dict[str, int],
    clock_mhz: float,
) -> Prediction:
    figure, factor, basis, note = choose_figure(figures, core, precision, kernels)
    cycles = figure.cycles(macs) * factor
    return Prediction(cycles / (clock_mhz * 1e6) * 1e3, figure, basis, note)


TRAIN_KERNELS_FILE = DATA / "train_kernels.json"


def training_figures(path: Path = TRAIN_KERNELS_FILE) -> list[KernelFigure]:
    """float32 figures from the QEMU instruction counts of fedsim's own training kernel.

    The count is per forward MAC of a whole SGD step (forward, gradients, update); a training step
    costs ``footprint``'s ``train_macs`` = 3 × the forward MACs of a layer that trains, so the
    figure per counted MAC is the step's cycles per forward MAC ÷ 3. A forward pass alone is
    charged the same per MAC (the same multiply-accumulate loop).
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    figures = []
    for core, entry in sorted(data["cores"].items()):
        per_mac = round(entry["cycles_per_train_mac"] / 3, 4)
        figures.append(
            KernelFigure(
                core=core,
                precision="float32",
                kernels="fedsim-c",
                cycles_per_mac=dict.fromkeys(LAYER_KINDS, per_mac),
                basis="measured",
                source=(
                    f"QEMU {entry['qemu_machine']} -icount: {entry['instructions_per_mac']:.4g} "
                    f"instructions per forward MAC of an SGD step of fs_learner.c x CPI "
                    f"{entry['cpi']:g} = {entry['cycles_per_train_mac']:.4g} cycles, / 3 per "
                    "counted training MAC (forward + 2x backward)"
                ),
            )
        )
    return figures


def calibrate(results: Sequence[Result] | None = None) -> dict[str, Any]:
    """Everything the device model takes from measurements, as ``kernel_figures.json`` holds it."""
    results = load_results() if results is None else results
    figures = fit_figures(results) + training_figures()
    return {
        "method": (
            "int8 (and the Raspberry Pi 4's float32) figures: cycles = sum over layer kinds of "
            "cycles/MAC x MACs, fitted by non-negative least squares on the relative error of "
            f"the MLPerf Tiny results of rounds {', '.join(FIT_ROUNDS)} (newest round of each "
            "library), devices/calibration.py; float32 fedsim-c figures: QEMU instruction "
            "counts x CPI (benchmarks/train_kernels.py)"
        ),
        "fit_rounds": list(FIT_ROUNDS),
        "test_rounds": list(TEST_ROUNDS),
        "figures": [f.as_json() for f in figures],
        "power": fit_power(results),
    }


def write_figures(path: Path = FIGURES_FILE) -> Path:
    path.write_text(json.dumps(calibrate(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
