"""Synthetic fleets as Turtle, for tests and benchmarks of the registry at 1k–100k devices.

Devices follow ontology/README.md ("A fleet device"): each has a name, a catalog profile, a fleet
(site), about 30% an attached sensor, about 50% less free RAM and flash than their profile has.
The text is built as strings, not rdflib triples: 100k devices take well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ontology.registry import default_registry

__all__ = ["PROFILE_WEIGHTS", "SENSORS", "SITES", "synthetic_fleet", "synthetic_model"]

PROFILE_WEIGHTS = {  # profile name -> share of the fleet: mostly MCUs, some Linux boards
    "nano33-ble-sense": 0.25,
    "esp32-s3": 0.25,
    "pico": 0.20,
    "stm32f746-disco": 0.10,
    "rpi-zero2w": 0.10,
    "rpi4": 0.10,
}
SENSORS = ("Camera", "Microphone", "Accelerometer", "TemperatureSensor", "LightSensor", "CO2Sensor")
SITES = ("home", "factory", "farm", "office", "campus")
ATTACHED_SHARE = 0.3  # devices with one attached sensor
REDUCED_SHARE = 0.5  # devices whose firmware leaves less free memory than the profile has
FREE_RANGE = (0.3, 0.95)  # free share of the profile's RAM and flash on those devices

HEADER = """\
@prefix fedsim: <https://w3id.org/fedsim/vocab#> .
@prefix dev: <https://w3id.org/fedsim/catalog/device/> .
@prefix device: <https://w3id.org/fedsim/device/> .
@prefix model: <https://w3id.org/fedsim/catalog/model/> .
@prefix sosa: <http://www.w3.org/ns/sosa/> .
"""


def synthetic_fleet(n: int, seed: int) -> str:
    """``n`` devices named ``synth-000001``… as Turtle; the same ``seed`` gives the same text."""
    if n < 0:
        raise ValueError(f"n: expected a device count >= 0, got {n}")
    registry = default_registry()
    names = list(PROFILE_WEIGHTS)
    profiles = [registry.profile(name, "ontology/synthetic.py") for name in names]
    weights = np.array([PROFILE_WEIGHTS[name] for name in names])

    rng = np.random.default_rng(seed)  # plain lists below: indexing numpy arrays per item is slow
    profile = rng.choice(len(names), size=n, p=weights / weights.sum()).tolist()
    site = rng.integers(len(SITES), size=n).tolist()
    attached = (rng.random(n) < ATTACHED_SHARE).tolist()
    sensor = rng.integers(len(SENSORS), size=n).tolist()
    reduced = (rng.random(n) < REDUCED_SHARE).tolist()
    free = rng.uniform(*FREE_RANGE, size=(n, 2)).tolist()  # shares of the profile's RAM, flash

    width = max(6, len(str(n)))
    lines = [HEADER]
    for i in range(n):
        name = f"synth-{i + 1:0{width}d}"
        p = profiles[profile[i]]
        parts = [
            f'device:{name} a fedsim:Device ; fedsim:deviceName "{name}" ;',
            f' fedsim:hasProfile dev:{p.name} ; fedsim:fleetName "{SITES[site[i]]}"',
        ]
        if attached[i]:
            parts.append(f" ; sosa:hosts [ a fedsim:{SENSORS[sensor[i]]} ]")
        if reduced[i]:
            ram, flash = int(p.sram_bytes * free[i][0]), int(p.flash_bytes * free[i][1])
            parts.append(f" ; fedsim:freeSramBytes {ram} ; fedsim:freeFlashBytes {flash}")
        parts.append(" .\n")
        lines.append("".join(parts))
    return "".join(lines)


def synthetic_model(
    name: str, sensors: Sequence[str], inference_ram_bytes: int, inference_flash_bytes: int
) -> str:
    """A minimal model description (``model:<name>``) as Turtle, for tests without the catalog.

    Training figures are set to the inference ones; ``sensors`` are fedsim sensor class names.
    """
    required = "".join(f" fedsim:requiresSensor fedsim:{s} ;" for s in sensors)
    ram, flash = int(inference_ram_bytes), int(inference_flash_bytes)
    return (
        f"{HEADER}model:{name} a fedsim:ModelDescription ;"
        f' fedsim:modelName "{name}" ;{required}'
        f" fedsim:inferenceRamBytes {ram} ; fedsim:inferenceFlashBytes {flash} ;"
        f" fedsim:trainRamBytes {ram} ; fedsim:headTrainRamBytes {ram} .\n"
    )
