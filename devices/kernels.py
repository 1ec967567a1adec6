"""Cycles per MAC of a (core class, precision, kernel library) triple, by layer kind.

The figures live in ``devices/data/kernel_figures.json``, written by the calibration
(``devices.calibration``, ``python -m benchmarks.calibration --write``): int8 inference figures are
fitted on the MLPerf Tiny results of rounds v0.5 to v1.1 (``devices/data/mlperf_tiny.csv``);
float32 training figures are QEMU instruction counts of fedsim's own C training kernel
(``devices/data/train_kernels.json``, ``python -m benchmarks.train_kernels``). Every figure says its
``basis``: ``calibrated`` (fitted on measurements), ``measured`` (counted), ``scaled`` (a calibrated
figure of another core times a measured ratio) or ``estimate`` (reasoned from the architecture).

Kernel libraries are families of inference engines, named as MLPerf Tiny submitters describe them
(``kernel_family``): ``cmsis-nn`` (TFLite Micro or microTVM calling Arm's CMSIS-NN), ``reference``
(TFLite Micro's portable C kernels), ``microtvm`` (microTVM's generated C), ``x-cube-ai`` (ST),
``plumerai``, ``hale`` (Bosch), ``onnc`` (Skymizer), ``leip`` (Latent AI) and ``fedsim-c``
(fedsim's own float32 training loops, the firmware's ``fs_learner.c``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fedsim.core.errors import FedsimError

__all__ = [
    "DATA",
    "FIGURES_FILE",
    "KERNEL_FAMILIES",
    "KernelFigure",
    "core_class",
    "figure_for",
    "kernel_family",
    "kernel_figures",
]

DATA = Path(__file__).parent / "data"
FIGURES_FILE = DATA / "kernel_figures.json"
KERNEL_FAMILIES = (
    "cmsis-nn",
    "reference",
    "microtvm",
    "x-cube-ai",
    "plumerai",
    "hale",
    "onnc",
    "leip",
    "fedsim-c",
)

# processor text (MLPerf system descriptions, catalog profiles) -> core class
_CORES = (
    (r"cortex[^a-z0-9]*m0\+|cortex[^a-z0-9]*m0plus", "Cortex-M0+"),
    (r"cortex[^a-z0-9]*m0\b", "Cortex-M0"),
    (r"cortex[^a-z0-9]*m4", "Cortex-M4F"),
    (r"cortex[^a-z0-9]*m7", "Cortex-M7"),
    (r"cortex[^a-z0-9]*m33", "Cortex-M33"),
    (r"cortex[^a-z0-9]*m55", "Cortex-M55"),
    (r"cortex[^a-z0-9]*m85", "Cortex-M85"),
    (r"cortex[^a-z0-9]*a72|bcm2711", "Cortex-A72"),
    (r"cortex[^a-z0-9]*a53|rp3a0", "Cortex-A53"),
    (r"xtensa[^a-z0-9]*lx7", "Xtensa LX7"),
)


def core_class(processor: str) -> str | None:
    """The core class a processor description names (None: not one fedsim models)."""
    text = processor.lower().replace("®", "").replace("™", "")
    return next((name for pattern, name in _CORES if re.search(pattern, text)), None)


def kernel_family(framework: str) -> str:
    """The kernel library family an inference framework's description names ('other' if none)."""
    text = framework.lower()
    if "plumerai" in text:
        return "plumerai"
    if "cube" in text or "stedge" in text:
        return "x-cube-ai"
    if "hale" in text:
        return "hale"
    if "onnc" in text:
        return "onnc"
    if "leip" in text:
        return "leip"
    if "gecko" in text:  # Silicon Labs: its MVP matrix accelerator does the work, not the core
        return "other"
    if "cmsis" in text:
        return "cmsis-nn"
    if "tvm" in text:
        return "microtvm"
    if "tflite" in text or "tensorflow lite" in text or "tflm" in text:
        return "reference"
    return "other"


@dataclass(frozen=True)
class KernelFigure:
    core: str
    precision: str
    kernels: str
    cycles_per_mac: dict[str, float]  # by layer kind
    basis: str  # calibrated | measured | scaled | estimate
    source: str
    overhead_cycles: float = 0.0  # per inference (int8) or per training step (float32)
    extra: dict[str, Any] = field(default_factory=dict)

    def cycles(self, macs: dict[str, int]) -> float:
        return self.overhead_cycles + sum(
            self.cycles_per_mac[kind] * count for kind, count in macs.items() if count
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "precision": self.precision,
            "kernels": self.kernels,
            "cycles_per_mac": self.cycles_per_mac,
            "overhead_cycles": self.overhead_cycles,
            "basis": self.basis,
            "source": self.source,
            **self.extra,
        }


def _figure(entry: dict[str, Any]) -> KernelFigure:
    known = {"core", "precision", "kernels", "cycles_per_mac", "overhead_cycles", "basis", "source"}
    return KernelFigure(
        core=entry["core"],
        precision=entry["precision"],
        kernels=entry["kernels"],
        cycles_per_mac={k: float(v) for k, v in entry["cycles_per_mac"].items()},
        basis=entry["basis"],
        source=entry["source"],
        overhead_cycles=float(entry.get("overhead_cycles", 0.0)),
        extra={k: v for k, v in entry.items() if k not in known},
    )


@cache
def kernel_figures(path: Path = FIGURES_FILE) -> tuple[KernelFigure, ...]:
    """Every (core class, precision, kernels) figure of the calibration file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(_figure(entry) for entry in data["figures"])


def figure_for(core: str, precision: str, kernels: str, where: str = "--kernels") -> KernelFigure:
    """The figure of a triple; a located error listing what exists when there is none."""
    figures = kernel_figures()
    for figure in figures:
        if (figure.core, figure.precision, figure.kernels) == (core, precision, kernels):
            return figure
    have = sorted(f.kernels for f in figures if f.core == core and f.precision == precision)
    raise FedsimError(
        where,
        f"no {precision} figures for kernels '{kernels}' on a {core}",
        f"choose one of: {', '.join(have)}"
        if have
        else f"no {precision} figures exist for a {core}; try another --precision",
    )
