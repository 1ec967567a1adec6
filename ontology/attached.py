"""A real device's self-description (its serial-bridge HELLO) as a registry device in RDF.

``fedsim devices attach PORT`` asks the device who it is and writes it as a ``fedsim:Device``:
its name, the catalog profile the cost model uses for it, the sensors it hosts (SOSA), its free
RAM and flash, and what the firmware said (board, firmware and protocol versions, learner slots,
weight capacity, learner kinds, port). The result validates against the shapes with the catalog,
so registry queries ("devices that can train model M", "devices behind port P") see it like any
other device. This module takes plain values: the registry does not import the bridge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rdflib import RDF, BNode, Graph, Literal, URIRef
from rdflib.namespace import XSD

from fedsim.core.errors import FedsimError
from ontology.vocab import DEV, DEVICE, FEDSIM, PREFIXES

__all__ = [
    "SENSOR_CLASSES",
    "AttachedDevice",
    "attached_graph",
    "guess_profile",
    "merge_device",
    "register",
]

# sensor names a firmware reports → the vocabulary's sensor classes
SENSOR_CLASSES: dict[str, tuple[str, ...]] = {
    "microphone": ("Microphone",),
    "camera": ("Camera",),
    "imu": ("Accelerometer", "Gyroscope"),
    "accelerometer": ("Accelerometer",),
    "gyroscope": ("Gyroscope",),
    "magnetometer": ("Magnetometer",),
    "temperature": ("TemperatureSensor",),
    "humidity": ("HumiditySensor",),
    "pressure": ("PressureSensor",),
    "light": ("LightSensor",),
    "co2": ("CO2Sensor",),
}

# boards a firmware reports → catalog profiles (the Arduino and Pico ports, the Pi agent)
_BOARDS = (
    (re.compile(r"nano ?33", re.I), "nano33-ble-sense"),
    (re.compile(r"pico|rp2040", re.I), "pico"),
    (re.compile(r"raspberry pi 4", re.I), "rpi4"),
    (re.compile(r"raspberry pi zero 2", re.I), "rpi-zero2w"),
    (re.compile(r"esp32-?s3", re.I), "esp32-s3"),
    (re.compile(r"stm32f746", re.I), "stm32f746-disco"),
)


@dataclass(frozen=True)
class AttachedDevice:
    name: str
    profile: str
    port: str
    board: str
    firmware: str
    protocol: int
    sram_bytes: int
    flash_bytes: int
    learner_slots: int
    weight_capacity: int
    learners: Sequence[str]
    sensors: Sequence[str]
    fleet: str | None = None


def guess_profile(board: str, known: Sequence[str]) -> str:
    """The catalog profile of a reported board, or a ``FedsimError`` asking for ``--profile``."""
    for pattern, profile in _BOARDS:
        if pattern.search(board) and profile in known:
            return profile
    raise FedsimError(
        "--profile",
        f"the device reports board '{board}', which is not a catalog profile",
        f"say which profile models it with --profile (one of {', '.join(sorted(known))})",
    )


def attached_graph(device: AttachedDevice) -> Graph:
    """The device as RDF (``device:<name>``), to validate with the catalog and merge."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", device.name):
        raise FedsimError(
            "--name",
            f"'{device.name}' is not a usable device name",
            "use letters, digits, '.', '_' and '-', e.g. lab-nano-1",
        )
    g = Graph()
    for prefix, iri in PREFIXES.items():
        g.bind(prefix, iri)
    node = DEVICE[device.name]
    integer = {
        FEDSIM.freeSramBytes: device.sram_bytes,
        FEDSIM.freeFlashBytes: device.flash_bytes,
        FEDSIM.protocolVersion: device.protocol,
        FEDSIM.learnerSlots: device.learner_slots,
        FEDSIM.weightCapacity: device.weight_capacity,
    }
    text = {
        FEDSIM.deviceName: device.name,
        FEDSIM.serialPort: device.port,
        FEDSIM.boardName: device.board,
        FEDSIM.firmwareVersion: device.firmware,
    }
    g.add((node, RDF.type, FEDSIM.Device))
    g.add((node, FEDSIM.hasProfile, DEV[device.profile]))
    for prop, number in integer.items():
        g.add((node, prop, Literal(number, datatype=XSD.integer)))
    for prop, value in text.items():
        g.add((node, prop, Literal(value)))
    if device.fleet:
        g.add((node, FEDSIM.fleetName, Literal(device.fleet)))
    for kind in device.learners:
        g.add((node, FEDSIM.learnerKind, Literal(kind)))
    sosa_hosts = URIRef(PREFIXES["sosa"] + "hosts")
    sosa_sensor = URIRef(PREFIXES["sosa"] + "Sensor")
    for name in device.sensors:
        for cls in SENSOR_CLASSES.get(name.lower(), ()) or (None,):
            sensor = BNode()
            g.add((node, sosa_hosts, sensor))
            g.add((sensor, RDF.type, FEDSIM[cls] if cls else sosa_sensor))
            if cls is None:
                g.add((sensor, URIRef(str(PREFIXES["rdfs"]) + "label"), Literal(name)))
    return g


def merge_device(existing: Graph, device: Graph, name: str) -> Graph:
    """``existing`` with device ``name``'s old description (and its sensors) replaced."""
    node = DEVICE[name]
    for _, _, obj in list(existing.triples((node, None, None))):
        if isinstance(obj, BNode):
            existing.remove((obj, None, None))
    existing.remove((node, None, None))
    for triple in device:
        existing.add(triple)
    for prefix, iri in PREFIXES.items():
        existing.bind(prefix, iri, replace=True)
    return existing


def register(device: AttachedDevice, path: Path) -> None:
    """Write ``device`` into the Turtle file ``path`` (replacing an earlier description of it),
    after validating the result with the catalog; a ``FedsimError`` names the first problem."""
    from ontology.registry import CATALOG_DIR
    from ontology.validate import load_turtle, validate

    existing = load_turtle(path) if path.exists() else Graph()
    merged = merge_device(existing, attached_graph(device), device.name)
    problems = validate(merged + load_turtle(sorted(CATALOG_DIR.glob("*.ttl"))))
    if problems:
        raise FedsimError(str(path), f"the description does not validate: {problems[0]}")
    path.write_text(merged.serialize(format="turtle"), encoding="utf-8")
