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


def test_catalog_has_the_six_design_profiles_with_datasheet_figures() -> None:
    profiles = {p.name: p for p in default_registry().profiles()}

    assert set(profiles) == set(DESIGN_PROFILES)
    for name, (cores, clock, sram, fpu) in DESIGN_PROFILES.items():
        p = profiles[name]
        assert (p.cores, p.clock_mhz, p.sram_bytes, p.fpu) == (cores, clock, sram, fpu), name
        assert p.source  # every figure has its source noted


def test_radios_are_read_as_sets() -> None:
    registry = default_registry()

    assert registry.profile("esp32-s3").radios == ("ble", "wifi")
    assert registry.profile("pico").radios == ()


def test_unknown_profile_lists_known_and_suggests() -> None:
    with pytest.raises(
        FedsimError,
        match=r"^x: unknown profile 'rpi5'; known: esp32-s3, .* "
        r"\(did you mean 'rpi4'\?\)$",
    ):
        default_registry().profile("rpi5", "x")


def test_registry_reads_any_catalog(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text(
        (CATALOG_DIR / "devices.ttl").read_text().split("dev:nano33-ble-sense")[0]
        + 'dev:tiny a fedsim:DeviceProfile ; fedsim:profileName "tiny" ; rdfs:label "Tiny" ;'
        ' fedsim:core "M0" ; fedsim:coreCount 1 ; fedsim:clockMHz 48.0 ; fedsim:sramBytes 32768 ;'
        ' fedsim:flashBytes 262144 ; fedsim:hasFPU false ; fedsim:figureSource "test" .\n'
    )

    registry = DeviceRegistry.from_files([extra])

    assert registry.names() == ["tiny"]
    assert registry.profile("tiny").sram_bytes == 32768
