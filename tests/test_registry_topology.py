"""Gateways in the registry: a building's floors and rooms validate, ``devices-behind-gateway``
answers through edge servers (API, fleet groups, CLI), runs record the topology they used, and a
gateway or an attachment that breaks the shapes is reported with the shape's message."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devices.fleet import load_fleet
from fedsim.core.records import DeviceRecord
from fedsim.core.results import DEVICES
from fedsim.core.scenario import Scenario
from ontology.fleet_registry import FleetRegistry
from ontology.history import RunTopology, participation_lines, write_participation
from ontology.validate import validate_files
from ontology.vocab import DEVICE
from tests.conftest import ROOT, tiny_scenario

BUILDING = ROOT / "scenarios" / "fleets" / "building.ttl"
FLEET = ROOT / "tests" / "data" / "fleet.ttl"
STORES = ["memory", "oxigraph"]
PREFIXES = """\
@prefix fedsim: <https://w3id.org/fedsim/vocab#> .
@prefix dev: <https://w3id.org/fedsim/catalog/device/> .
@prefix device: <https://w3id.org/fedsim/device/> .
"""
# floor-1 behind an edge server: the edge's devices are floor-1's rooms
EDGE = (
    PREFIXES
    + """device:edge a fedsim:Gateway ; fedsim:deviceName "edge" ; fedsim:hasProfile dev:rpi4 ;
    fedsim:uplinkKind "lte" .
device:floor-1 fedsim:reportsTo device:edge .
"""
)
Write = Callable[..., Path]


def _rooms(floor: int) -> list[str]:
    return [f"room-{floor}-{room}" for room in range(1, 9)]


def _fedsim(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m fedsim.cli ARGS`` in the repository, as a user runs it (tests/test_cli.py)."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "200"}
    command = [sys.executable, "-m", "fedsim.cli", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False
    )


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the building in the registry -----------------------------------------------------------


def test_the_building_validates_with_the_catalog() -> None:
    assert [v.line() for v in validate_files(BUILDING, with_catalog=True)] == []


@pytest.mark.parametrize("store", STORES)
def test_devices_behind_a_floor_gateway_are_its_rooms_in_name_order(store: str) -> None:
    with FleetRegistry.open([BUILDING], store) as registry:  # type: ignore[arg-type]
        rows = registry.query("devices-behind-gateway", {"gatewayName": "floor-2"})

    assert [r["name"] for r in rows] == _rooms(2)
    assert {r["profile"] for r in rows} == {"nano33-ble-sense"}
    assert rows[0]["device"] == str(DEVICE["room-2-1"])


@pytest.mark.parametrize("store", STORES)
def test_devices_behind_an_edge_server_are_those_of_the_gateways_below_it(
    store: str, tmp_path: Path
) -> None:
    edge = _write(tmp_path, "edge.ttl", EDGE)

    with FleetRegistry.open([BUILDING, edge], store) as registry:  # type: ignore[arg-type]
        behind_edge = registry.query("devices-behind-gateway", {"gatewayName": "edge"})
        behind_floor = registry.query("devices-behind-gateway", {"gatewayName": "floor-1"})
        behind_nothing = registry.query("devices-behind-gateway", {"gatewayName": "floor-9"})

    assert [r["name"] for r in behind_edge] == _rooms(1)
    assert behind_floor == behind_edge
    assert behind_nothing == []
    assert validate_files([BUILDING, edge], with_catalog=True) == []


def test_gateways_are_not_learners_in_device_queries() -> None:
    with FleetRegistry.open([BUILDING]) as registry:
        inventory = registry.inventory()

    # 24 rooms; the three Raspberry Pi gateways are fedsim:Gateway, not counted as fleet devices
    assert [(r.profile, r.fleet, r.devices) for r in inventory] == [
        ("nano33-ble-sense", "building", 24)
    ]


def test_a_fleet_group_selects_the_devices_behind_a_gateway(write_scenario: Write) -> None:
    scenario = tiny_scenario(
        task={"dataset": "kws", "model": "mlp"},
        fleet={
            "groups": [
                {
                    "query": "devices-behind-gateway",
                    "bind": {"gatewayName": "floor-3"},
                    "count": 3,
                },
                {"profile": "rpi4", "count": 2},
            ],
            "memory_policy": "head-only",
        },
        registry={"data": [str(BUILDING)]},
    )

    _, fleet = load_fleet(write_scenario(scenario))

    named = [d for d in fleet.devices if d.group == 0]
    assert len({d.name for d in named}) == 3
    assert {d.name for d in named} <= set(_rooms(3))
    assert {d.profile.name for d in named} == {"nano33-ble-sense"}


def test_cli_query_lists_the_rooms_behind_a_gateway() -> None:
    proc = _fedsim(
        "registry",
        "query",
        "devices-behind-gateway",
        "--bind",
        "gatewayName=floor-3",
        "--data",
        BUILDING,
        "--format",
        "csv",
    )

    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(proc.stdout.splitlines()))
    assert [r["name"] for r in rows] == _rooms(3)


# --- a run records its topology ---------------------------------------------------------------

# registry devices (tests/data/fleet.ttl) and simulated ones, behind two floors and an edge server
MEMBERS: list[tuple[str | None, str]] = [
    (str(DEVICE["nano-1"]), "nano33-ble-sense"),
    (str(DEVICE["pi-2"]), "rpi4"),
    (None, "pico"),
    (None, "pico"),
    (None, "rpi4"),
]
TOPOLOGY = RunTopology(
    gateways=[
        ("edge", "rpi4", "lte", None, ()),
        ("floor-a", "rpi4", "ethernet", "edge", (0, 2)),
        ("floor-b", "rpi4", "wifi", "edge", (1, 3)),
        ("annex", "rpi4", "wifi", None, (4,)),
    ],
    local_rounds=3,
)
BEHIND_RUN_GATEWAYS = """\
PREFIX fedsim: <https://w3id.org/fedsim/vocab#>
SELECT ?gateway ?name ?k WHERE {
  ?run fedsim:runId ?runId ; fedsim:localRounds ?k ; fedsim:usedGateway ?gw .
  ?gw fedsim:deviceName ?gateway .
  ?d fedsim:attachedTo/fedsim:reportsTo* ?gw ; fedsim:deviceName ?name .
}
"""


def _run_folder(tmp_path: Path) -> Path:
    """A run folder ``r1`` whose devices.csv has one round of the five MEMBERS."""
    out = tmp_path / "r1"
    out.mkdir()
    with (out / DEVICES).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, DeviceRecord.columns())
        writer.writeheader()
        for device_id, (_, profile) in enumerate(MEMBERS):
            record = DeviceRecord(1, device_id, profile, "ok", 32, 0.5, 1000, 1000, energy_mj=1.0)
            writer.writerow(record.row())
    return out


def _scenario() -> Scenario:
    return Scenario.model_validate(tiny_scenario())


@pytest.mark.parametrize("store", STORES)
def test_a_run_records_its_gateways_and_what_is_behind_them(store: str, tmp_path: Path) -> None:
    out = _run_folder(tmp_path)

    path = write_participation(_scenario(), MEMBERS, out, "r1", TOPOLOGY)

    assert [v.line() for v in validate_files([FLEET, path], with_catalog=True)] == []
    with FleetRegistry.open([FLEET, path], store) as registry:  # type: ignore[arg-type]
        rows: list[dict[str, Any]] = registry.store.select(BEHIND_RUN_GATEWAYS, {"runId": "r1"})
        via_named = registry.query("devices-behind-gateway", {"gatewayName": "r1-gw-floor-b"})
    behind: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        behind[str(row["gateway"])].add(str(row["name"]))
    assert dict(behind) == {
        "r1-gw-edge": {"nano-1", "pi-2", "r1-2", "r1-3"},
        "r1-gw-floor-a": {"nano-1", "r1-2"},
        "r1-gw-floor-b": {"pi-2", "r1-3"},
        "r1-gw-annex": {"r1-4"},
    }
    assert {row["k"] for row in rows} == {3}
    assert [r["name"] for r in via_named] == ["pi-2", "r1-3"]


def test_without_a_topology_the_write_back_is_unchanged(tmp_path: Path) -> None:
    out = _run_folder(tmp_path)

    plain = list(participation_lines(_scenario(), MEMBERS, out, "r1"))
    with_topology = list(participation_lines(_scenario(), MEMBERS, out, "r1", TOPOLOGY))

    added = [line for line in with_topology if line not in plain]
    assert [line for line in with_topology if line in plain] == plain
    assert not any("Gateway" in line or "attachedTo" in line for line in plain)
    # localRounds; per gateway usedGateway, type, name, profile, uplink; 3 reportsTo; 5 devices
    assert len(added) == 1 + 4 * 5 + 2 + 5


def test_a_gateway_reporting_to_an_unknown_gateway_is_refused(tmp_path: Path) -> None:
    topology = RunTopology([("floor-a", "rpi4", "ethernet", "edge", (0,))], local_rounds=1)

    with pytest.raises(ValueError, match="'floor-a' reports to 'edge', not a gateway of the run"):
        list(participation_lines(_scenario(), MEMBERS, _run_folder(tmp_path), "r1", topology))


# --- bad inputs -------------------------------------------------------------------------------

GOOD = """\
device:gw a fedsim:Gateway ; fedsim:deviceName "gw" ; fedsim:hasProfile dev:rpi4 ;
    fedsim:uplinkKind "ethernet" .
device:sensor a fedsim:Device ; fedsim:deviceName "sensor" ;
    fedsim:hasProfile dev:nano33-ble-sense ; fedsim:attachedTo device:gw .
device:other a fedsim:Device ; fedsim:deviceName "other" ; fedsim:hasProfile dev:pico .
"""

# (case, text in GOOD, replacement, the one violation's line up to the fix)
BAD = [
    ("gateway without a profile", "fedsim:hasProfile dev:rpi4 ;", "",
     "device:gw fedsim:hasProfile: missing: a device has exactly one profile, "
     "a fedsim:DeviceProfile in the graph"),
    ("attached to a device that is no gateway", "fedsim:attachedTo device:gw",
     "fedsim:attachedTo device:other",
     "device:sensor fedsim:attachedTo = device:other: wrong class: a device is attached to a "
     "gateway, a fedsim:Gateway of the graph"),
    ("reports to a device that is no gateway", 'fedsim:uplinkKind "ethernet"',
     'fedsim:uplinkKind "ethernet" ; fedsim:reportsTo device:other',
     "device:gw fedsim:reportsTo = device:other: wrong class: a gateway reports to at most one "
     "edge server, a fedsim:Gateway of the graph"),
    ("uplink kind as a number", 'fedsim:uplinkKind "ethernet"', "fedsim:uplinkKind 5",
     "device:gw fedsim:uplinkKind = 5: wrong datatype: a gateway has at most one non-empty "
     "xsd:string uplink kind"),
    ("gateway attached, not reporting", 'fedsim:uplinkKind "ethernet"',
     'fedsim:uplinkKind "ethernet" ; fedsim:attachedTo device:gw',
     "device:gw fedsim:attachedTo: not allowed: a gateway is not attached to a gateway: "
     "it reports to its edge server"),
]  # fmt: skip


def test_the_good_description_conforms(tmp_path: Path) -> None:
    path = _write(tmp_path, "good.ttl", PREFIXES + GOOD)

    assert validate_files(path, with_catalog=True) == []


@pytest.mark.parametrize(("case", "old", "new", "expected"), BAD, ids=[c[0] for c in BAD])
def test_a_broken_gateway_or_attachment_is_reported_with_the_shape_message(
    case: str, old: str, new: str, expected: str, tmp_path: Path
) -> None:
    assert old in GOOD, case
    path = _write(tmp_path, "bad.ttl", PREFIXES + GOOD.replace(old, new, 1))

    violations = validate_files(path, with_catalog=True)

    assert [v.line().split("; ", 1)[0] for v in violations] == [expected]
    assert violations[0].fix
