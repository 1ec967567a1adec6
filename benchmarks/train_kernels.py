"""Training kernels per Cortex-M core (issue 24): instructions and cycles per training MAC of the
project's own learner, ``fs_head_step`` (edge/firmware/core/fs_learner.c: forward, softmax
gradient and SGD update of a float32 linear head, batch 1), built for each core and counted by
QEMU.

* **Instructions**: ``train_bench.elf`` (edge/firmware/ports/qemu-bench) times steps at five head
  sizes with SysTick under ``-icount shift=0`` (one virtual nanosecond per instruction), minus the
  same loop calling an empty function. Deterministic: the same image prints the same counts on
  every run. Fitted per core: instructions per step = a · MACs + c · classes + b, with MACs =
  features × classes (the forward MACs of one sample). a is the instructions per forward MAC of
  a training step (the step's forward, gradient and update work that grows with MACs), c the
  softmax's per-class work (expf, the division, the bias update), b the rest of the step.
* **Cycles**: QEMU does not model time, so a core's cycles per instruction (CPI) comes from
  benchmarks/train_cycles.py: the executed instructions of the per-MAC work (a QEMU trace)
  weighted by the cycles its TRM lists for each instruction class. Cycles per training MAC =
  a × CPI.

    .venv/bin/python -m benchmarks.train_kernels [--write]

Prints a table; ``--write`` stores it in devices/data/train_kernels.json, which
tests/test_train_kernels.py holds the measured counts to.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.train_cycles import TIMINGS, trace_cpi
from edge.emulator import make_firmware

__all__ = ["CORES", "Build", "Fit", "build", "fit", "measure", "run_bench"]

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "edge" / "firmware"
JSON_PATH = ROOT / "devices" / "data" / "train_kernels.json"
ICOUNT = ["-icount", "shift=0,align=off,sleep=off"]
SEMIHOSTING = ["-semihosting-config", "enable=on,target=native"]


@dataclass(frozen=True)
class Build:
    """One firmware build (Makefile TB_* variables) and the core classes it stands for."""

    key: str  # build/qemu-<key>/
    machine: str
    classes: tuple[str, ...]


CORES = (
    Build("m0", "microbit", ("Cortex-M0", "Cortex-M0+")),
    Build("m4f", "mps2-an386", ("Cortex-M4F",)),
    Build("m7", "mps2-an500", ("Cortex-M7",)),
    Build("m33", "mps2-an505", ("Cortex-M33",)),
)


@dataclass(frozen=True)
class Fit:
    instructions_per_mac: float
    instructions_per_class: float
    overhead_instructions: float
    max_residual: float  # instructions, over the sizes
    steps: list[dict[str, float]]  # features, classes, macs, instructions_per_step


def build() -> None:
    """make -C edge/firmware train-bench; a failure says what make said."""
    done = make_firmware("train-bench")
    if done.returncode != 0:
        raise RuntimeError(f"make train-bench failed:\n{done.stdout}{done.stderr}")


def elf(core: Build, name: str = "train_bench") -> Path:
    return FIRMWARE / "build" / f"qemu-{core.key}" / f"{name}.elf"


def run_bench(core: Build, timeout_s: float = 60) -> str:
    """The bench's output lines (semihosting writes to QEMU's stderr, so both are read)."""
    done = subprocess.run(
        ["qemu-system-arm", "-M", core.machine, "-nographic", "-monitor", "none", *ICOUNT,
         *SEMIHOSTING, "-kernel", str(elf(core))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{elf(core)} on {core.machine}: exit {done.returncode}\n{done.stdout}")
    return done.stdout


def measure(output: str) -> list[dict[str, float]]:
    """Per size: features, classes, macs and instructions per step; checks the calibration."""
    cal = re.search(r"calibration=(\d+) known=(\d+)", output)
    if cal is None or abs(int(cal[1]) - int(cal[2])) > int(cal[2]) // 1000:
        raise RuntimeError(f"SysTick does not count instructions here: {cal and cal[0]!r}")
    rows = []
    for line in output.splitlines():
        if line.startswith("core="):
            f = dict(re.findall(r"(\w+)=(\S+)", line))
            rows.append(
                {"features": int(f["features"]), "classes": int(f["classes"]),
                 "macs": int(f["macs"]), "instructions_per_step": int(f["instructions_x100"]) / 100}
            )  # fmt: skip
    return rows


def fit(steps: list[dict[str, float]]) -> Fit:
    """Least squares of instructions per step on MACs, classes and a constant."""
    a = np.array([[s["macs"], s["classes"], 1.0] for s in steps])
    y = np.array([s["instructions_per_step"] for s in steps])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    residual = float(np.max(np.abs(y - a @ coef)))
    per_mac, per_class, overhead = (float(v) for v in coef)
    return Fit(
        round(per_mac, 3), round(per_class, 1), round(overhead, 1), round(residual, 1), steps
    )


def _compiler(path: Path) -> tuple[str, str]:
    """gcc's version and flags as recorded in the image's DWARF producer string."""
    text = subprocess.run(
        ["arm-none-eabi-readelf", "--debug-dump=info", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"DW_AT_producer\s*:.*?: GNU C99 (\S+ \d+) (.*)", text)
    assert m, f"{path}: no DW_AT_producer"
    return f"arm-none-eabi-gcc {m[1]}", m[2].strip()


METHOD = (
    "Instructions: QEMU {qemu} runs each core's build of the project's learner (fs_head_step, "
    "edge/firmware/core/fs_learner.c: forward, softmax gradient and plain SGD update of a float32 "
    "linear head, batch 1) under -icount shift=0, where SysTick counts executed instructions; "
    "steps at five head sizes minus the same loop calling an empty function; least squares "
    "instructions per step = instructions_per_mac * MACs + instructions_per_class * classes + "
    "overhead_instructions, MACs = features * classes, the forward MACs of one sample. So "
    "instructions_per_mac and cycles_per_train_mac are per forward MAC of an SGD training step "
    "(they include the backward pass and the update). Cycles: cpi = cycles / instructions of the "
    "per-MAC work (two sizes' difference, QEMU -singlestep exec trace), each executed instruction "
    "weighted by its core's TRM cycles (timing_source); cycles_per_train_mac = "
    "instructions_per_mac * cpi. No memory wait states, caches or bus contention are modelled."
)


def _qemu_version() -> str:
    out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout
    return out.split("\n")[0].removeprefix("QEMU emulator version ").strip()


def collect() -> dict[str, object]:
    """Builds, measures and traces every core; the JSON document."""
    build()
    cores: dict[str, object] = {}
    for core in CORES:
        fitted = fit(measure(run_bench(core)))
        cpis = trace_cpi(elf(core, "train_trace"), core.machine, list(core.classes))
        gcc, flags = _compiler(elf(core))
        for name in core.classes:
            cpi = round(cpis[name].cpi, 3)
            cores[name] = {
                "qemu_machine": core.machine,
                "build": f"edge/firmware/build/qemu-{core.key}/train_bench.elf",
                "compiler": gcc,
                "compiler_flags": flags,
                "instructions_per_mac": fitted.instructions_per_mac,
                "instructions_per_class": fitted.instructions_per_class,
                "overhead_instructions": fitted.overhead_instructions,
                "fit_max_residual_instructions": fitted.max_residual,
                "traced_instructions_per_mac": round(cpis[name].instructions_per_mac, 3),
                "cpi": cpi,
                "cycles_per_train_mac": round(fitted.instructions_per_mac * cpi, 2),
                "timing_source": TIMINGS[name].source,
                "measurements": fitted.steps,
            }
    return {"unit": "cycles per forward MAC of an SGD training step (includes backward and "
            "update)", "method": METHOD.format(qemu=_qemu_version()), "cores": cores}  # fmt: skip


def table(doc: dict[str, object]) -> str:
    cores = doc["cores"]
    assert isinstance(cores, dict)
    head = "| core | QEMU machine | instr/MAC | instr/class | instr/step | CPI | cycles/MAC |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|"]
    for name, c in cores.items():
        lines.append(
            f"| {name} | {c['qemu_machine']} | {c['instructions_per_mac']:.2f} | "
            f"{c['instructions_per_class']:.0f} | {c['overhead_instructions']:.0f} | "
            f"{c['cpi']:.2f} | {c['cycles_per_train_mac']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"store the results in {JSON_PATH}")
    args = parser.parse_args(argv)
    try:
        doc = collect()
    except (RuntimeError, subprocess.SubprocessError, FileNotFoundError) as exc:
        print(f"benchmarks.train_kernels: {exc}", file=sys.stderr)
        return 2
    print(table(doc))
    if args.write:
        JSON_PATH.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {JSON_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
