"""What a model costs on a device profile: inference latency and energy, memory as deployed, and a
training step, each with where its figure comes from (``fedsim devices predict``).

- **inference latency**: MACs by layer kind (``devices.deployment``) × the (core, precision,
  kernels) figure of ``devices.kernels`` ÷ the profile's clock;
- **inference energy**: MLPerf Tiny's measured energy per inference where it published one for the
  same board, model, precision and kernels; else the profile's active power (calibrated on MLPerf
  Tiny energy results where the board has some, else the datasheet) × that latency;
- **flash / arena**: weights at the precision and the peak of live activations;
- **training** (float32, what the learners do, batch 1, all layers): ``footprint``'s training MACs
  × the profile's cycles per MAC ÷ clock: the very figure a simulated run charges.

Where MLPerf Tiny published a result for the same board, model, precision and kernel library, it
is shown beside the prediction (``measured``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from devices.calibration import (
    BENCHMARK_MODEL,
    ROUND_ORDER,
    board_key,
    choose_figure,
    load_results,
)
from devices.deployment import PRECISION_BYTES, deployment
from devices.footprint import footprint
from devices.kernels import KERNEL_FAMILIES, kernel_figures
from fedsim.core.errors import FedsimError
from fedsim.core.profiles import DeviceProfile

__all__ = ["DEFAULT_KERNELS", "ModelInput", "basis_of", "model_input", "predict_costs"]

DEFAULT_KERNELS = {"int8": "cmsis-nn", "float16": "fedsim-c", "float32": "fedsim-c"}


@dataclass(frozen=True)
class ModelInput:
    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    benchmark: str | None  # the MLPerf Tiny benchmark it is the reference model of


def model_input(name: str, dataset: str | None) -> ModelInput:
    """An MLPerf Tiny reference model at its own input, or a zoo model on ``dataset``."""
    from fedsim.core.mlperf_models import MLPERF_MODELS, build_mlperf

    if name in MLPERF_MODELS:
        spec = MLPERF_MODELS[name]
        benchmark = next(b for b, m in BENCHMARK_MODEL.items() if m == name)
        return ModelInput(name, build_mlperf(name), (spec.num_features,), benchmark)
    from fedsim.core.data import load_task_data
    from fedsim.core.models import build_model

    if dataset is None:
        raise FedsimError(
            "--dataset",
            f"model '{name}' takes its input shape from a dataset, and none was given",
            f"add --dataset (e.g. --dataset digits), or use one of {', '.join(MLPERF_MODELS)}",
        )
    data = load_task_data(dataset, 0)
    try:
        model = build_model(name, data.num_features, data.num_outputs, 0)
    except ValueError as exc:
        raise FedsimError("--model", str(exc), "choose a model that takes this dataset") from None
    return ModelInput(f"{name}.{dataset}", model, tuple(data.sample_shape), None)


def basis_of(source: str) -> str:
    """'calibrated', 'measured', 'estimate' or 'datasheet', from a catalog source text."""
    head = source.split(":", 1)[0].strip().lower()
    for basis in ("calibrated", "measured", "estimate"):
        if head.startswith(basis):
            return basis
    return "datasheet"


def _measured(profile: DeviceProfile, benchmark: str | None, precision: str, kernels: str) -> Any:
    if benchmark is None:
        return None
    same = [
        r
        for r in load_results()
        if board_key(r.board) == board_key(profile.board)
        and (r.benchmark, r.precision, r.kernels) == (benchmark, precision, kernels)
        and abs(r.clock_mhz - profile.clock_mhz) < 1e-6
    ]
    if not same:
        return None
    r = max(same, key=lambda r: ROUND_ORDER[r.round])
    return {
        "latency_ms": r.latency_ms,
        "energy_uj": r.energy_uj,
        "round": r.round,
        "system": r.system,
        "source": r.source,
    }


def predict_costs(
    profile: DeviceProfile, model: ModelInput, precision: str = "int8", kernels: str | None = None
) -> dict[str, Any]:
    """The costs of ``model`` on ``profile`` (one JSON object, see the module docstring)."""
    if precision not in PRECISION_BYTES:
        raise FedsimError(
            "--precision", f"unknown precision '{precision}'", "use int8, float16 or float32"
        )
    kernels = DEFAULT_KERNELS[precision] if kernels is None else kernels
    if kernels not in KERNEL_FAMILIES:
        raise FedsimError(
            "--kernels", f"unknown kernel library '{kernels}'", f"use {', '.join(KERNEL_FAMILIES)}"
        )
    lookup = "float32" if precision == "float16" else precision  # no float16 figures: float32's
    figures = kernel_figures()
    try:
        figure, factor, basis, note = choose_figure(figures, profile.core, lookup, kernels)
    except LookupError:
        have = sorted({f"--precision {f.precision}" for f in figures if f.core == profile.core})
        raise FedsimError(
            "--precision",
            f"no {lookup} inference figures for a {profile.core} ({profile.name})",
            f"use {' or '.join(have)}"
            if have
            else f"no MLPerf Tiny result or measurement covers a {profile.core}",
        ) from None
    if precision == "float16":
        note = (
            "float16 is costed as float32 arithmetic (the Cortex-M FPUs have no half-precision "
            "arithmetic: float16 halves storage only); " + (note or figure.source)
        )
    deployed = deployment(model.model, model.input_shape, precision)
    seconds = figure.cycles(deployed.macs) * factor / (profile.clock_mhz * 1e6)
    train = footprint(model.model, model.input_shape, 1)
    train_s = train.train_macs * profile.cycles_per_mac / (profile.clock_mhz * 1e6)
    power_basis = basis_of(profile.power_source)
    measured = _measured(profile, model.benchmark, precision, kernels)
    energy_uj = profile.active_mw * seconds * 1e3  # mW × ms
    energy_source = {
        "basis": power_basis,
        "detail": f"active power x latency; {profile.power_source}",
    }
    if measured is not None and measured["energy_uj"] is not None:
        energy_uj = measured["energy_uj"]
        energy_source = {"basis": "measured", "detail": measured["source"]}
    return {
        "model": model.name,
        "profile": profile.name,
        "board": profile.board,
        "core": profile.core,
        "clock_mhz": profile.clock_mhz,
        "precision": precision,
        "kernels": kernels,
        "macs": deployed.macs,
        "inference_latency_ms": round(seconds * 1e3, 4),
        "inference_energy_uj": round(energy_uj, 3),
        "arena_bytes": deployed.arena_bytes,
        "flash_bytes": deployed.flash_bytes,
        "train_ram_bytes": train.train_bytes,
        "train_latency_ms_per_sample": round(train_s * 1e3, 4),
        "train_energy_uj_per_sample": round(profile.active_mw * train_s * 1e3, 3),
        "fits": {
            "flash": deployed.flash_bytes <= profile.flash_bytes,
            "arena": deployed.arena_bytes <= profile.sram_bytes,
            "training": train.train_bytes <= profile.sram_bytes,
        },
        "measured": measured,
        "sources": {
            "inference_latency_ms": {
                "basis": basis,
                "figure": f"{figure.core} {figure.precision} {figure.kernels}",
                "detail": note or figure.source,
            },
            "inference_energy_uj": energy_source,
            "arena_bytes": {"basis": "counted", "detail": "peak of live activations"},
            "flash_bytes": {"basis": "counted", "detail": f"{precision} weights and biases"},
            "train_latency_ms_per_sample": {
                "basis": basis_of(profile.cycles_source),
                "detail": profile.cycles_source,
            },
            "train_energy_uj_per_sample": {"basis": power_basis, "detail": profile.power_source},
        },
    }
