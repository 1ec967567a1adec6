"""The device model's calibration (issue 24): deployed memory and MACs by layer kind, the fit on
MLPerf Tiny rounds v0.5-v1.1 only, the held-out protocol, the figures every run reads, and
``fedsim devices predict``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from devices.calibration import (
    FIT_ROUNDS,
    TEST_ROUNDS,
    Result,
    benchmark_macs,
    board_key,
    calibrate,
    choose_figure,
    fit_figures,
    fit_power,
    load_results,
    predict,
    training_figures,
)
from devices.deployment import deployment
from devices.kernels import FIGURES_FILE, KernelFigure, core_class, kernel_family
from ontology.registry import default_registry
from tests.conftest import run_cli

fedsim = run_cli  # ``fedsim ARGS`` in this process: exit code, stdout, stderr


class _Residual(nn.Module):
    """input 8 -> a (16) -> b (16); out = b + a: ``a`` must stay alive across ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 16)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.a(x))
        return self.b(a) + a


def test_arena_keeps_a_residual_input_alive_and_fuses_relu() -> None:
    d = deployment(_Residual(), (8,), "int8")
    # at the add: a (16) and b (16) live, plus the sum (16); x (8) died after layer a
    assert d.arena_bytes == 48
    # int8 weights, an int32 bias and a float32 scale per output channel
    assert d.flash_bytes == (8 * 16 + 16 * 8) + (16 * 16 + 16 * 8)
    assert d.macs["dense"] == 8 * 16 + 16 * 16
    assert deployment(_Residual(), (8,), "float32").arena_bytes == 4 * 48


def test_chain_arena_is_the_largest_input_plus_output_and_batchnorm_folds() -> None:
    model = nn.Sequential(nn.Linear(10, 40), nn.BatchNorm1d(40), nn.ReLU(), nn.Linear(40, 5))
    d = deployment(model, (10,), "int8")
    assert d.arena_bytes == 10 + 40  # BatchNorm and ReLU write no new tensor
    assert d.layers == 2


def test_reference_models_macs_by_layer_kind() -> None:
    assert benchmark_macs("kws") == {
        "conv": 320_000,  # 10×4 stride 2, 64 filters on 25×5
        "pointwise": 2_048_000,  # 4 × 25·5·64·64
        "depthwise": 288_000,  # 4 × 25·5·64·9
        "dense": 768,
    }
    assert sum(benchmark_macs("ad").values()) == benchmark_macs("ad")["dense"] == 264_192


@pytest.mark.parametrize(
    ("processor", "core"),
    [
        ("32-bit Arm® Cortex®-M0+", "Cortex-M0+"),
        ("ARM Cortex-M4 with FPU", "Cortex-M4F"),
        ("32-Bit ARM® Cortex®-M7", "Cortex-M7"),
        ("Arm Cortex-M33 32-bit RISC core", "Cortex-M33"),
        ("32-bit Arm® Cortex®-M85", "Cortex-M85"),
        ("Broadcom BCM2711", "Cortex-A72"),
        ("HiFi3 + M0", None),
        ("RISC-V 64GCVB Core", None),
    ],
)
def test_core_class(processor: str, core: str | None) -> None:
    assert core_class(processor) == core


@pytest.mark.parametrize(
    ("framework", "family"),
    [
        ("X-CUBE-AI v7.3.0", "x-cube-ai"),
        ("microTVM | TVM, CMSIS_NN", "cmsis-nn"),
        ("microTVM | TVM", "microtvm"),
        ("Plumerai Inference Engine", "plumerai"),
        ("Bosch Hardware-Aware Lowering Engine (HALE) version 1.0", "hale"),
        ("Tensorflow Lite Micro 2.3.1", "reference"),
        ("TensorFlow Lite for Microcontrollers | Silicon Labs Gecko SDK", "other"),
        ("Qualcomm AI Stack", "other"),
    ],
)
def test_kernel_family(framework: str, family: str) -> None:
    assert kernel_family(framework) == family


def _synthetic(figure: dict[str, float], round_: str = "v1.1") -> list[Result]:
    out = []
    for bench, macs in ((b, benchmark_macs(b)) for b in ("kws", "vww", "ic", "ad")):
        cycles = sum(figure[k] * n for k, n in macs.items())
        out.append(
            Result(round_, "s", "sys", "NUCLEO-L4R5ZI", "Cortex-M4F", 100.0, "cmsis-nn", "int8",
                   bench, cycles / 100e6 * 1e3, None, "test")
        )  # fmt: skip
    return out


def test_fit_recovers_the_figures_that_generated_the_results() -> None:
    truth = {"conv": 2.0, "pointwise": 3.0, "depthwise": 3.0, "dense": 4.0}
    (figure,) = fit_figures(_synthetic(truth))
    assert figure.cycles_per_mac == pytest.approx(truth, rel=1e-3)
    assert figure.basis == "calibrated"


def test_held_out_rounds_never_reach_the_fit() -> None:
    results = load_results()
    assert {r.round for r in results} >= set(FIT_ROUNDS) | set(TEST_ROUNDS)
    fitted = fit_figures(results)
    # make every held-out result absurd: the figures must not move
    scrambled = [
        dataclasses.replace(r, latency_ms=r.latency_ms * 1000) if r.round in TEST_ROUNDS else r
        for r in results
    ]
    assert fit_figures(scrambled) == fitted
    assert all(set(f.extra["rounds"]) <= set(FIT_ROUNDS) for f in fitted)
    assert fit_power(scrambled) == fit_power(results)


def test_the_newest_fit_round_of_a_library_is_the_one_fitted() -> None:
    old = _synthetic({"conv": 9.0, "pointwise": 9.0, "depthwise": 9.0, "dense": 9.0}, "v0.7")
    new = _synthetic({"conv": 2.0, "pointwise": 2.0, "depthwise": 2.0, "dense": 2.0}, "v1.1")
    (figure,) = fit_figures(old + new)
    assert figure.cycles_per_mac["conv"] == pytest.approx(2.0, rel=1e-3)
    (pooled,) = fit_figures(old + new, newest=False)
    assert pooled.cycles_per_mac["conv"] > 2.2  # the old round pulls it up


def test_committed_figures_are_what_the_data_gives() -> None:
    """devices/data/kernel_figures.json is read by every run: it must not drift from the data
    (``python -m benchmarks.calibration --write`` rewrites it)."""
    assert json.loads(FIGURES_FILE.read_text(encoding="utf-8")) == json.loads(
        json.dumps(calibrate())
    )


def test_calibrated_figures_predict_the_fit_rounds_well() -> None:
    results = load_results()
    figures = fit_figures(results)
    errors = [
        abs(predict(figures, r.core, r.precision, r.kernels, benchmark_macs(r.benchmark),
                    r.clock_mhz).latency_ms / r.latency_ms - 1)
        for r in results
        if r.round in FIT_ROUNDS
    ]  # fmt: skip
    errors.sort()
    assert errors[len(errors) // 2] < 0.10


def test_a_core_without_results_is_scaled_or_estimated_and_says_so() -> None:
    figures = fit_figures(load_results()) + training_figures()
    _, _, basis, note = choose_figure(figures, "Cortex-M7", "int8", "cmsis-nn")
    assert basis == "scaled"
    assert "ratio" in note
    _, factor, basis, note = choose_figure(figures, "Cortex-M85", "int8", "cmsis-nn")
    assert basis == "estimate"
    assert "Helium" in note
    assert factor < 1
    figure, _, basis, _ = choose_figure(figures, "Cortex-M7", "float32", "hale")
    assert (figure.kernels, basis) == ("fedsim-c", "fallback")


def test_float32_training_figures_are_the_qemu_counts_over_three() -> None:
    qemu = json.loads((FIGURES_FILE.parent / "train_kernels.json").read_text(encoding="utf-8"))
    by_core = {f.core: f for f in training_figures()}
    for core in ("Cortex-M0+", "Cortex-M4F", "Cortex-M7", "Cortex-M33"):
        expected = qemu["cores"][core]["cycles_per_train_mac"] / 3
        assert by_core[core].cycles_per_mac["conv"] == pytest.approx(expected, rel=1e-3)
        assert by_core[core].basis == "measured"


def _calibrated_cycles() -> dict[str, float]:
    return {f.core: f.cycles_per_mac["dense"] for f in training_figures()}


def test_every_run_uses_the_calibrated_figures() -> None:
    """The catalog's cycles per MAC (what a run charges) is the QEMU-measured figure of the
    profile's core, and a board with MLPerf Tiny energy results has their power; each says so."""
    cycles = _calibrated_cycles()
    power = fit_power(load_results())
    checked = 0
    for p in default_registry().profiles():
        if p.core in cycles:
            assert p.cycles_per_mac == pytest.approx(cycles[p.core], abs=1e-3), p.name
            assert p.cycles_source.startswith("Measured"), p.name
            checked += 1
        if board_key(p.board) in power:
            assert p.active_mw == pytest.approx(power[board_key(p.board)]["active_mw"]), p.name
            assert p.power_source.startswith("Calibrated"), p.name
            checked += 1
    assert checked >= 10


def test_predict_json_has_every_figure_with_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = fedsim(
        capsys, "devices", "predict", "--model", "mlperf-kws", "--profile", "nucleo-l4r5zi",
        "--kernels", "x-cube-ai", "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    costs = json.loads(stdout)
    keys = {
        "inference_latency_ms",
        "inference_energy_uj",
        "arena_bytes",
        "flash_bytes",
        "train_latency_ms_per_sample",
        "train_energy_uj_per_sample",
    }
    assert keys <= set(costs)
    assert keys <= set(costs["sources"])
    assert costs["sources"]["inference_latency_ms"]["basis"] == "calibrated"
    # MLPerf Tiny published this board, model and library with an energy measurement: it is used
    assert costs["measured"]["latency_ms"] > 0
    assert costs["inference_energy_uj"] == pytest.approx(costs["measured"]["energy_uj"], abs=1e-3)
    assert costs["sources"]["inference_energy_uj"]["basis"] == "measured"


def test_predict_energy_is_power_times_latency_without_a_measurement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, stderr = fedsim(
        capsys, "devices", "predict", "--model", "mlperf-vww", "--profile", "nano33-ble-sense",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    costs = json.loads(stdout)
    assert costs["measured"] is None
    assert costs["sources"]["inference_latency_ms"]["basis"] == "calibrated"  # M4F cmsis-nn
    assert costs["inference_energy_uj"] == pytest.approx(
        costs["inference_latency_ms"] * default_registry().profile("nano33-ble-sense").active_mw,
        rel=1e-3,
    )
    assert costs["sources"]["inference_energy_uj"]["basis"] == "datasheet"


def test_every_profile_naming_an_mlperf_system_matches_its_results() -> None:
    """A profile whose sources cite an MLPerf Tiny system must meet its results in the
    calibration (board names differ: 'Raspberry Pi 4B', 'NUCLEO-U3C5ZIT6-Q'), and no two
    profiles may claim the same board."""
    boards = {board_key(r.board) for r in load_results()}
    keys = [board_key(p.board) for p in default_registry().profiles()]
    assert len(keys) == len(set(keys))
    cited = [p for p in default_registry().profiles() if "tiny_results" in p.source]
    assert len(cited) >= 13
    for p in [*cited, default_registry().profile("rpi4")]:
        assert board_key(p.board) in boards, p.name


def test_deployment_refuses_what_it_cannot_count() -> None:
    from fedsim.core.errors import FedsimError

    with pytest.raises(FedsimError, match="Conv1d"):
        deployment(nn.Sequential(nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3)), (8,))

    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, : len(x)]

    with pytest.raises(FedsimError, match="cannot be traced"):
        deployment(Untraceable(), (8,))


def test_a_parameter_read_in_forward_is_flash_not_arena() -> None:
    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1, 1000))
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.token[:, :4]

    assert deployment(WithToken(), (8,)).arena_bytes < 100


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--model", "mlperf-kws", "--profile", "no-such-board"], "--profile"),
        (["--model", "mlperf-kws", "--profile", "pico", "--precision", "int4"], "--precision"),
        (["--model", "mlperf-kws", "--profile", "pico", "--kernels", "magic"], "--kernels"),
        (["--model", "conv4", "--profile", "pico"], "--dataset"),
        (["--model", "mlperf-kws", "--profile", "esp32-s3"], "--precision"),
    ],
)
def test_predict_refuses_bad_input_with_a_located_error(
    capsys: pytest.CaptureFixture[str], args: list[str], where: str
) -> None:
    code, stdout, stderr = fedsim(capsys, "devices", "predict", *args)
    assert code == 2
    assert not stdout
    assert stderr.startswith(f"error: {where}")
    assert "Traceback" not in stderr


def test_profiles_json_lists_board_soc_core_and_clock(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = fedsim(capsys, "devices", "profiles", "--format", "json")
    assert code == 0, stderr
    profiles = json.loads(stdout)["profiles"]
    by_name = {p["name"]: p for p in profiles}
    assert by_name["nucleo-l4r5zi"]["board"] == "NUCLEO-L4R5ZI"
    assert by_name["nucleo-l4r5zi"]["soc"] == "STM32L4R5ZI"
    assert by_name["nucleo-l4r5zi"]["core"] == "Cortex-M4F"
    assert by_name["nucleo-l4r5zi"]["clock_mhz"] == 120.0
    assert all(p["board"] and p["soc"] for p in profiles)


def test_kernel_figure_cycles_sum_the_kinds() -> None:
    figure = KernelFigure("c", "int8", "k", {"conv": 2.0, "dense": 3.0}, "estimate", "s", 10.0)
    assert figure.cycles({"conv": 5, "dense": 2}) == 10 + 10 + 6
