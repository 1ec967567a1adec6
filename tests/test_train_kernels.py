"""Training kernels per Cortex-M core (issue 24, benchmarks/train_kernels.py): QEMU's instruction
counts of the learner's SGD step are deterministic, match the committed
devices/data/train_kernels.json (so a kernel or compiler change that moves them is caught), and
soft float costs the M0 what it should."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import train_kernels as tk

STORED = json.loads(tk.JSON_PATH.read_text())["cores"]


@pytest.fixture(scope="module")
def built() -> None:
    for program in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (see edge/firmware/README.md)")
    tk.build()


@pytest.fixture(scope="module")
def fits(built: None) -> dict[str, tk.Fit]:
    return {core.key: tk.fit(tk.measure(tk.run_bench(core, timeout_s=30))) for core in tk.CORES}


@pytest.mark.parametrize("core", tk.CORES, ids=lambda c: c.key)
def test_counts_are_the_same_on_every_run(built: None, core: tk.Build) -> None:
    first, second = (tk.run_bench(core, timeout_s=30) for _ in range(2))

    assert first == second
    assert len(tk.measure(first)) == 5


@pytest.mark.parametrize("core", tk.CORES, ids=lambda c: c.key)
def test_instructions_per_mac_match_the_stored_json(
    fits: dict[str, tk.Fit], core: tk.Build
) -> None:
    fitted = fits[core.key]

    for name in core.classes:
        stored = STORED[name]
        assert stored["qemu_machine"] == core.machine
        assert fitted.instructions_per_mac == stored["instructions_per_mac"], name
        assert fitted.overhead_instructions == stored["overhead_instructions"], name
        assert fitted.steps == stored["measurements"], name


def test_soft_float_m0_needs_many_times_the_m4f_instructions(fits: dict[str, tk.Fit]) -> None:
    m0, m4f, m7 = (fits[k].instructions_per_mac for k in ("m0", "m4f", "m7"))

    assert m0 > 10 * m4f
    assert 5 < m7 <= m4f < 40  # forward + update loops: a few instructions a MAC each


def test_stored_cycles_are_instructions_times_cpi() -> None:
    for name, core in STORED.items():
        assert core["cycles_per_train_mac"] == pytest.approx(
            core["instructions_per_mac"] * core["cpi"], abs=0.01
        ), name
    assert (
        STORED["Cortex-M0+"]["instructions_per_mac"] == STORED["Cortex-M0"]["instructions_per_mac"]
    )
