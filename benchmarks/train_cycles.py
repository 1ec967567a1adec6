"""Cycles from instructions for the training-kernel benchmark (benchmarks/train_kernels.py): a
simple in-order timing model applied to the instructions QEMU actually executed.

QEMU counts instructions, not cycles. ``train_trace.elf`` runs two steps each of two head sizes
with the same classes (32 × 8 and 64 × 8) between the markers ``trace_begin`` and ``trace_end``;
QEMU logs every executed instruction's address (``-singlestep -d exec,nochain``). Each executed
instruction gets the cycles its core's Technical Reference Manual gives for its class (whether a
branch was taken is read off the next address); the difference between the two sizes is pure
per-MAC work, so its cycles over its instructions is the CPI of the training MAC.

The tables are data (``TIMINGS``): a core's cycles for each instruction class, with the source.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["TIMINGS", "Timing", "TraceCpi", "trace_cpi"]

TRACE_SIZES = ((32, 8), (64, 8))  # as train_bench.c's BENCH_TRACE SIZES
TRACE_STEPS = 2


@dataclass(frozen=True)
class Timing:
    """Cycles per instruction class for one core, as its TRM lists them (N: registers moved)."""

    alu: int  # data processing, moves, compares, extends, MUL/MULS, IT
    load_store: int  # LDR/STR of one register
    pipelined_load_store: int  # the same right after another single LDR/STR
    multiple_base: int  # LDM/STM/PUSH/POP/VLDM/VSTM/VPUSH/VPOP: base + N
    branch_taken: int  # B, taken B<cond>, CBZ/CBNZ, BX, BLX
    branch_link: int  # BL
    pop_pc_extra: int  # POP {.., pc}: base + N + this
    mul_acc: int  # MLA/MLS
    divide: int  # UDIV/SDIV (data-dependent range: middle taken)
    fp_simple: int  # VADD/VSUB/VMUL/VNEG/VABS/VCMP/VMOV/VCVT/VMRS
    fp_mul_acc: int  # VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS
    fp_divide: int  # VDIV/VSQRT
    fp_load_store: int  # VLDR/VSTR
    source: str


_ARMV6M = {"alu": 1, "load_store": 2, "pipelined_load_store": 2, "multiple_base": 1, "mul_acc": 0}
_NO_FPU = {"divide": 0, "fp_simple": 0, "fp_mul_acc": 0, "fp_divide": 0, "fp_load_store": 0}
_M4 = Timing(
    alu=1, load_store=2, pipelined_load_store=1, multiple_base=1, branch_taken=3, branch_link=3,
    pop_pc_extra=2, mul_acc=2, divide=7, fp_simple=1, fp_mul_acc=3, fp_divide=14, fp_load_store=2,
    source="Cortex-M4 TRM (DDI 0439B) table 3-1 and FPU table 7-1: ALU and MUL 1, MLA/MLS 2, "
    "LDR/STR 2 (1 when pipelined after another single load/store), LDM/STM 1+N, branches 1+P "
    "with P = 2 (the TRM's refill range is 1-3), POP {pc} 1+N+P, UDIV 2-12 (7); FPv4-SP: "
    "VADD/VMUL 1, VMLA/VMLS/VFMA 3, VDIV 14, VLDR/VSTR 2, VLDM/VSTM 1+N",
)  # fmt: skip

TIMINGS: dict[str, Timing] = {
    "Cortex-M0": Timing(
        **_ARMV6M, **_NO_FPU, branch_taken=3, branch_link=4, pop_pc_extra=3,
        source="Cortex-M0 TRM (DDI 0432C) table 3-1: ALU and MULS (single-cycle multiplier) 1, "
        "LDR/STR 2, LDM/STM/PUSH 1+N, POP {pc} 4+N, B and taken B<cond> 3 (not taken 1), BL 4, "
        "BX/BLX 3; no FPU: float arithmetic is libgcc's soft float, traced instruction by "
        "instruction",
    ),
    "Cortex-M0+": Timing(
        **_ARMV6M, **_NO_FPU, branch_taken=2, branch_link=3, pop_pc_extra=2,
        source="Cortex-M0+ TRM (DDI 0484C) table 3-1 (2-stage pipeline): ALU and MULS 1, LDR/STR "
        "2, LDM/STM/PUSH 1+N, POP {pc} 3+N, B and taken B<cond> 2 (not taken 1), BL 3, BX/BLX 2; "
        "applied to the Cortex-M0 build's trace (same ARMv6-M code)",
    ),
    "Cortex-M4F": _M4,
    "Cortex-M33": replace(
        _M4,
        source="Cortex-M4F's table: the M33 is a 3-stage in-order core like the M4 and its TRM "
        "gives no per-instruction table of its own; FPv5-SP timings assumed as FPv4-SP",
    ),
    "Cortex-M7": Timing(
        alu=1, load_store=1, pipelined_load_store=1, multiple_base=0, branch_taken=1,
        branch_link=1, pop_pc_extra=0, mul_acc=1, divide=1, fp_simple=1, fp_mul_acc=1,
        fp_divide=1, fp_load_store=1,
        source="no per-instruction table is published for the 6-stage dual-issue M7: one cycle "
        "per instruction (branches predicted, no refill), LDM/STM N; dual issue (which lowers "
        "CPI below 1) and FP result latency stalls (which raise it) are both left out",
    ),
}  # fmt: skip

_BRANCH = re.compile(r"^(b|bl|blx|bx|cbz|cbnz)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)?$")
_TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _registers(operands: str) -> int:
    """Registers in a list like {r4, r5-r7, pc} or {d8}; a d register moves two words."""
    inside = operands[operands.find("{") + 1 : operands.find("}")]
    count = 0
    for part in inside.split(","):
        ends = re.findall(r"[rsd](\d+)|\b(sl|fp|ip|sp|lr|pc)\b", part.strip())
        width = 2 if part.strip().startswith("d") else 1
        if "-" in part and len(ends) == 2:
            count += width * (int(ends[1][0]) - int(ends[0][0]) + 1)
        else:
            count += width
    return count


def _cycles(t: Timing, op: str, operands: str, taken: bool, after_load_store: bool) -> int:
    """Cycles of one executed instruction (op without .n/.w, lower case)."""
    if op in ("push", "pop", "vpush", "vpop") or re.match(r"^v?(ldm|stm)", op):
        n = _registers(operands)
        return t.multiple_base + n + (t.pop_pc_extra if "pc" in operands else 0)
    if re.match(r"^(ldr|str)", op):
        return t.pipelined_load_store if after_load_store else t.load_store
    if op in ("vldr", "vstr"):
        return t.fp_load_store
    if _BRANCH.match(op):
        if op == "bl":
            return t.branch_link
        return t.branch_taken if taken else 1
    if op in ("mla", "mls"):
        return t.mul_acc
    if op in ("udiv", "sdiv"):
        return t.divide
    if re.match(r"^v(n?ml[as]|fm[as]|fnm[as])", op):
        return t.fp_mul_acc
    if re.match(r"^v(div|sqrt)", op):
        return t.fp_divide
    return t.fp_simple if op.startswith("v") else t.alu


def _disassembly(elf: Path) -> tuple[dict[int, tuple[str, str, int]], dict[str, int]]:
    """Address → (mnemonic, operands, size in bytes), and symbol → address."""
    text = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    code: dict[int, tuple[str, str, int]] = {}
    symbols: dict[str, int] = {}
    for line in text.splitlines():
        if m := re.match(r"^([0-9a-f]+) <(\w+)>:$", line):
            symbols[m[2]] = int(m[1], 16)
        elif m := re.match(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(\S+)\s*(.*)$", line):
            size = len(m[2].replace(" ", "")) // 2
            op = re.sub(r"\.(n|w|f32|f64|32|64)$", "", m[3].lower())
            code[int(m[1], 16)] = (op, m[4], size)
    return code, symbols


def _windows(log: Path, begin: int, end: int) -> list[list[int]]:
    """The executed addresses between each call of trace_begin and the next of trace_end."""
    windows: list[list[int]] = []
    current: list[int] | None = None
    with log.open() as lines:
        for line in lines:
            if line.startswith("cpu_io_recompile") and current:
                current.pop()  # that block was rewound and runs again: counted once
            if not (m := _TRACE.match(line)):
                continue
            pc = int(m[1], 16)
            if pc == begin:
                current = []
            elif pc == end and current is not None:
                windows.append(current)
                current = None
            elif current is not None:
                current.append(pc)
    return windows


@dataclass(frozen=True)
class TraceCpi:
    instructions_per_mac: float  # traced, as a cross-check of the SysTick fit
    cycles_per_mac: float
    cpi: float


def trace_cpi(
    elf: Path, machine: str, cores: list[str], timeout_s: float = 60
) -> dict[str, TraceCpi]:
    """Runs the trace image in QEMU and gives, per core timing table, the per-MAC CPI."""
    code, symbols = _disassembly(elf)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "exec.log"
        subprocess.run(
            ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
             "-icount", "shift=0,align=off,sleep=off", "-singlestep", "-d", "exec,nochain",
             "-D", str(log), "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
            capture_output=True, timeout=timeout_s, check=True,
        )  # fmt: skip
        windows = _windows(log, symbols["trace_begin"], symbols["trace_end"])
    if len(windows) != len(TRACE_SIZES):
        raise RuntimeError(f"{elf}: {len(windows)} trace windows, expected {len(TRACE_SIZES)}")
    macs = [f * c * TRACE_STEPS for f, c in TRACE_SIZES]
    result: dict[str, TraceCpi] = {}
    for core in cores:
        totals = [_window_cycles(TIMINGS[core], code, w) for w in windows]
        d_mac = macs[1] - macs[0]
        d_insn, d_cyc = len(windows[1]) - len(windows[0]), totals[1] - totals[0]
        result[core] = TraceCpi(d_insn / d_mac, d_cyc / d_mac, d_cyc / d_insn)
    return result


def _window_cycles(t: Timing, code: dict[int, tuple[str, str, int]], pcs: list[int]) -> int:
    cycles, after_ls = 0, False
    for i, pc in enumerate(pcs):
        op, operands, size = code[pc]
        taken = i + 1 < len(pcs) and pcs[i + 1] != pc + size
        cycles += _cycles(t, op, operands, taken, after_ls)
        after_ls = bool(re.match(r"^(ldr|str)", op))
    return cycles
