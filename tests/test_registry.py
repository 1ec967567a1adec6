"""The RDF device catalog and the minimal registry API over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.core.errors import FedsimError
from ontology.registry import CATALOG_DIR, DeviceRegistry, default_registry

DESIGN_PROFILES = {
    # name: (cores, clock MHz, SRAM bytes, FPU)
    "nano33-ble-sense": (1, 64, 256 * 1024, True),
    "pico": (2, 133, 264 * 1024, False),
    "esp32-s3": (2, 240, 512 * 1024, True),
    "stm32f746-disco": (1, 216, 320 * 1024, True),
    "rpi4": (4, 1500, 4 * 1024**3, True),
    "rpi-zero2w": (4, 1000, 512 * 1024**2, True),
}


# Boards with MLPerf Tiny results (issue 24): name: (board, SoC, core, clock MHz, SRAM KiB, FPU)
MLPERF_TINY_PROFILES = {
    "nucleo-l4r5zi": ("NUCLEO-L4R5ZI", "STM32L4R5ZI", "Cortex-M4F", 120, 640, True),
    "nucleo-h7a3zi-q": ("NUCLEO-H7A3ZI-Q", "STM32H7A3ZI", "Cortex-M7", 280, 1376, True),
    "nrf5340-dk": ("nRF5340 DK", "nRF5340", "Cortex-M33", 128, 512, True),
    "nucleo-u575zi-q": ("NUCLEO-U575ZI-Q", "STM32U575ZI", "Cortex-M33", 160, 784, True),
    "nucleo-g0b1re": ("NUCLEO-G0B1RE", "STM32G0B1RE", "Cortex-M0+", 64, 144, False),
    "ek-ra8d1": ("EK-RA8D1", "R7FA8D1AHECBD", "Cortex-M85", 480, 1024, True),
    "cy8cproto-062-4343w": ("CY8CPROTO-062-4343W", "PSoC 62", "Cortex-M4F", 150, 1024, True),
    "b-u585i-iot02a": ("B-U585I-IOT02A", "STM32U585AI", "Cortex-M33", 160, 784, True),
    "ek-ra6m4": ("EK-RA6M4", "R7FA6M4AF3CFB", "Cortex-M33", 200, 256, True),
    "nucleo-u385rg-q": ("NUCLEO-U385RG-Q", "STM32U385RG", "Cortex-M33", 96, 256, True),
    "nucleo-u3c5zi-q": ("NUCLEO-U3C5ZI-Q", "STM32U3C5ZI", "Cortex-M33", 96, 640, True),
    "numaker-m467hj": ("NuMaker-M467HJ", "M467HJHAN", "Cortex-M4F", 200, 512, True),
    "xg24-dk2601b": ("xG24-DK2601B", "EFR32MG24B310F1536IM48", "Cortex-M33", 78, 256, True),
}


def test_catalog_has_the_design_and_mlperf_tiny_profiles_with_datasheet_figures() -> None:
    profiles = {p.name: p for p in default_registry().profiles()}

    assert set(profiles) == set(DESIGN_PROFILES) | set(MLPERF_TINY_PROFILES)
    for name, (cores, clock, sram, fpu) in DESIGN_PROFILES.items():
        p = profiles[name]
        assert (p.cores, p.clock_mhz, p.sram_bytes, p.fpu) == (cores, clock, sram, fpu), name
        assert p.source  # every figure has its source noted


def test_every_profile_names_its_board_and_soc() -> None:
    profiles = default_registry().profiles()

    assert all(p.board.strip() and p.soc.strip() for p in profiles)
    assert default_registry().profile("rpi4").board == "Raspberry Pi 4 Model B"


@pytest.mark.parametrize("name", sorted(MLPERF_TINY_PROFILES))
def test_mlperf_tiny_profiles_load_with_their_core_and_clock(name: str) -> None:
    board, soc, core, clock, sram_kib, fpu = MLPERF_TINY_PROFILES[name]

    p = default_registry().profile(name)

    assert (p.board, p.soc, p.core, p.clock_mhz) == (board, soc, core, clock)
    assert (p.sram_bytes, p.fpu, p.cores) == (sram_kib * 1024, fpu, 1)
    assert "mlcommons/tiny_results_v" in p.source  # the system description it appears in
    # measured under QEMU for its core, or (the M85, which QEMU cannot run) an estimate from one
    assert p.cycles_source.startswith(("Measured:", "Estimate: the Cortex-M7's measured"))


DESIGN_LINKS = {
    "nano33-ble-sense": ("ble",),
    "pico": ("serial",),  # USB CDC to a gateway: the Pico has no radio
    "esp32-s3": ("ble", "wifi"),
    "stm32f746-disco": ("ethernet", "serial"),
    "rpi4": ("ble", "ethernet", "lte", "wifi"),  # LTE: a gateway's uplink
    "rpi-zero2w": ("ble", "wifi"),
}


def test_links_are_read_sorted_by_kind_with_their_power() -> None:
    registry = default_registry()

    for name, kinds in DESIGN_LINKS.items():
        assert registry.profile(name).radios == kinds, name
    wifi = registry.profile("esp32-s3").link("wifi")
    assert wifi is not None
    assert wifi.tx_mw > wifi.rx_mw > 0  # transmitting costs more than receiving


@pytest.mark.parametrize("name", sorted(DESIGN_PROFILES | MLPERF_TINY_PROFILES.keys()))
def test_every_profile_has_power_cycles_and_sourced_links(name: str) -> None:
    p = default_registry().profile(name)

    assert 0 < p.idle_mw < p.active_mw
    assert p.cycles_per_mac > 0
    assert p.power_source
    assert p.cycles_source
    assert p.links
    for link in p.links:
        assert min(link.tx_mw, link.rx_mw) > 0, link.kind
        assert link.source, link.kind


def test_soft_float_costs_far_more_cycles_per_mac_than_any_fpu() -> None:
    profiles = default_registry().profiles()

    soft = [p.cycles_per_mac for p in profiles if not p.fpu]
    hard = [p.cycles_per_mac for p in profiles if p.fpu]
    assert min(soft) > 10 * max(hard)


def test_every_device_link_names_a_link_type() -> None:
    registry = default_registry()

    kinds = {t.kind for t in registry.link_types()}
    assert {k for p in registry.profiles() for k in p.radios} <= kinds


def test_link_types_are_read_with_their_figures() -> None:
    registry = default_registry()

    types = registry.link_types()

    assert [t.kind for t in types] == ["ble", "ethernet", "lora", "lte", "serial", "wifi"]
    serial = registry.link_type("serial")
    assert serial.throughput_bps == 115200 * 8 / 10  # 8N1: 10 bits on the wire per byte
    assert serial.mtu_bytes == 2048  # the serial frame's payload limit
    ble = registry.link_type("ble")
    assert (ble.latency_s, ble.mtu_bytes) == (0.03, 244)
    assert all(t.source and t.label for t in types)
    rate = {t.kind: t.throughput_bps for t in types}
    assert rate["lora"] < rate["serial"] < rate["ble"] < rate["wifi"] < rate["ethernet"]


def test_unknown_link_type_lists_known_and_suggests() -> None:
    with pytest.raises(
        FedsimError,
        match=r"^x: unknown link 'wify'; known: ble, ethernet, lora, lte, serial, wifi "
        r"\(did you mean 'wifi'\?\)$",
    ):
        default_registry().link_type("wify", "x")


def test_unknown_profile_lists_known_and_suggests() -> None:
    with pytest.raises(
        FedsimError,
        match=r"^x: unknown profile 'rpi5'; known: b-u585i-iot02a, .*esp32-s3, .* "
        r"\(did you mean 'rpi4'\?\)$",
    ):
        default_registry().profile("rpi5", "x")


PREFIXES = (CATALOG_DIR / "devices.ttl").read_text().split("dev:nano33-ble-sense")[0]
TINY = (
    'dev:tiny a fedsim:DeviceProfile ; fedsim:profileName "tiny" ; rdfs:label "Tiny" ;\n'
    '  fedsim:boardName "Tiny Board" ; fedsim:socName "Tiny SoC" ;\n'
    '  fedsim:core "M0" ; fedsim:coreCount 1 ; fedsim:clockMHz 48.0 ; fedsim:sramBytes 32768 ;\n'
    '  fedsim:flashBytes 262144 ; fedsim:hasFPU false ; fedsim:figureSource "test" ;\n'
    "  fedsim:activePowerMilliwatts 10.0 ; fedsim:idlePowerMilliwatts 0.01 ;\n"
    '  fedsim:powerSource "test" ; fedsim:cyclesPerMAC 100.0 ; fedsim:cyclesSource "test" .\n'
)
END = 'fedsim:cyclesSource "test" .'


def tiny_with_link(link: str) -> str:
    """TINY with one fedsim:hasLink node holding ``link``'s properties."""
    return TINY.replace(END, f'fedsim:cyclesSource "test" ;\n  fedsim:hasLink [ {link} ] .')


def test_registry_reads_any_catalog(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text(PREFIXES + TINY)

    registry = DeviceRegistry.from_files([extra])

    assert registry.names() == ["tiny"]
    tiny = registry.profile("tiny")
    assert (tiny.sram_bytes, tiny.active_mw, tiny.cycles_per_mac) == (32768, 10.0, 100.0)
    assert tiny.link() is None
    assert registry.link_types() == []


def test_a_profile_missing_a_figure_is_a_located_error(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text(PREFIXES + TINY.replace(" fedsim:idlePowerMilliwatts 0.01 ;", ""))

    with pytest.raises(
        FedsimError,
        match=r"extra\.ttl: profile 'tiny': missing fedsim:idlePowerMilliwatts; add it ",
    ):
        DeviceRegistry.from_files([extra])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("clockMHz 48.0", 'clockMHz "48 MHz"', "fedsim:clockMHz is '48 MHz', not a number"),
        ("coreCount 1", "coreCount 1, 2", "fedsim:coreCount has 2 values"),
        ("idlePowerMilliwatts 0.01", "idlePowerMilliwatts -1.0", "idle_mw: Input should be"),
    ],
)
def test_bad_figures_are_located_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text(PREFIXES + TINY.replace(old, new))

    with pytest.raises(FedsimError, match=rf"extra\.ttl: profile 'tiny': {message}"):
        DeviceRegistry.from_files([extra])


def test_a_link_missing_a_figure_is_a_located_error(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text(PREFIXES + tiny_with_link('fedsim:linkKind "ble"'))

    with pytest.raises(
        FedsimError, match=r"profile 'tiny': link 'ble': missing fedsim:txPowerMilliwatts"
    ):
        DeviceRegistry.from_files([CATALOG_DIR / "links.ttl", extra])


def test_a_link_of_an_unknown_type_is_a_located_error(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    link = (
        'fedsim:linkKind "blu" ; fedsim:txPowerMilliwatts 1.0 ; fedsim:rxPowerMilliwatts 1.0 ;'
        ' fedsim:figureSource "test"'
    )
    extra.write_text(PREFIXES + tiny_with_link(link))

    with pytest.raises(
        FedsimError,
        match=r"profile 'tiny': unknown link 'blu'; known: ble, .* \(did you mean 'ble'\?\)$",
    ):
        DeviceRegistry.from_files([CATALOG_DIR / "links.ttl", extra])
