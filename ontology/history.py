"""Runs write back: who took part in which round of a run, and how, as RDF.

At the end of a run with a ``registry`` section, ``participation.ttl`` in the run folder describes
the run (``fedsim:Run``) and one ``fedsim:Participation`` per row of ``devices.csv``; with a
persistent registry (``registry.db``) it is also added to that store, so later queries can select
devices by their history (``queries/run-devices.rq``). Devices a query picked from the registry
keep their registry IRI; devices of a profile-based group are named ``<run id>-<device id>``.
A run with an edge topology also records it: each gateway as a run-scoped ``fedsim:Gateway``
named ``<run id>-gw-<gateway name>`` (``fedsim:usedGateway`` of the run, with its profile, uplink
kind and ``fedsim:reportsTo`` edge server), each device ``fedsim:attachedTo`` its gateway, and the
run's ``fedsim:localRounds``; ``queries/devices-behind-gateway.rq`` answers with its name.
Written line by line (a 10,000-device run has 100,000 rows or more), every value escaped by rdflib.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rdflib import Literal, URIRef
from rdflib.namespace import XSD

from fedsim.core.results import DEVICES
from fedsim.core.scenario import Scenario
from ontology.vocab import DEV, DEVICE, FEDSIM, MODEL, RUN

__all__ = [
    "PARTICIPATION",
    "GatewayRow",
    "RunTopology",
    "device_iri",
    "gateway_iri",
    "participation_lines",
    "write_participation",
]

PARTICIPATION = "participation.ttl"


def _iri(text: str) -> str:
    return quote(text, safe="-._~")


# A fleet's devices as the history needs them, by device id: (registry IRI or None, profile name).
Members = Sequence[tuple[str | None, str]]


def device_iri(members: Members, device_id: int, run_id: str) -> URIRef:
    iri = members[device_id][0]
    return URIRef(iri) if iri is not None else DEVICE[f"{_iri(run_id)}-{device_id}"]


# One gateway of a run's topology: (name, profile name, uplink link kind, parent gateway's name
# or None for the server, ids of the devices attached to it).
GatewayRow = tuple[str, str, str, str | None, tuple[int, ...]]


@dataclass(frozen=True)
class RunTopology:
    """A run's edge topology as plain values (ontology/ does not import devices/)."""

    gateways: Sequence[GatewayRow]
    local_rounds: int


def gateway_iri(run_id: str, name: str) -> URIRef:
    return DEVICE[f"{_iri(run_id)}-gw-{_iri(name)}"]


def _n3(value: object, datatype: URIRef | None = None) -> str:
    return Literal(value, datatype=datatype).n3()


def participation_lines(
    scenario: Scenario,
    members: Members,
    out: Path,
    run_id: str,
    topology: RunTopology | None = None,
) -> Iterator[str]:
    """The run's participation as N-Triples-like Turtle lines (no prefixes needed), and its
    topology when it has one."""
    run = RUN[_iri(run_id)].n3()
    a = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
    model = MODEL[f"{scenario.task.model}.{scenario.task.dataset}"].n3()
    yield f"{run} {a} {FEDSIM.Run.n3()} ."
    yield f"{run} {FEDSIM.runId.n3()} {_n3(run_id)} ."
    yield f"{run} {FEDSIM.scenarioName.n3()} {_n3(scenario.name)} ."
    yield f"{run} {FEDSIM.scenarioSha256.n3()} {_n3(scenario.digest())} ."
    yield f"{run} {FEDSIM.usedModel.n3()} {model} ."
    for device_id, (iri, profile) in enumerate(members):
        if iri is None:  # a simulated device: it exists only in this run's graph
            node = device_iri(members, device_id, run_id).n3()
            yield f"{node} {a} {FEDSIM.Device.n3()} ."
            yield f"{node} {FEDSIM.deviceName.n3()} {_n3(f'{run_id}-{device_id}')} ."
            yield f"{node} {FEDSIM.hasProfile.n3()} {DEV[profile].n3()} ."
    if topology is not None:
        yield from _topology_lines(topology, members, run_id)
    with (out / DEVICES).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            device_id, round_ = int(row["device_id"]), int(row["round"])
            node = RUN[f"{_iri(run_id)}/round-{round_}/device-{device_id}"].n3()
            participant = device_iri(members, device_id, run_id).n3()
            yield f"{node} {a} {FEDSIM.Participation.n3()} ."
            yield f"{node} {FEDSIM.inRun.n3()} {run} ."
            yield f"{node} {FEDSIM.participant.n3()} {participant} ."
            yield f"{node} {FEDSIM.round.n3()} {_n3(round_, XSD.integer)} ."
            yield f"{node} {FEDSIM.status.n3()} {_n3(row['status'])} ."
            yield f"{node} {FEDSIM.numExamples.n3()} {_n3(int(row['num_examples']), XSD.integer)} ."
            if row["train_loss"]:
                loss = _n3(float(row["train_loss"]), XSD.double)
                yield f"{node} {FEDSIM.trainLoss.n3()} {loss} ."
            energy = _n3(float(row["energy_mj"]), XSD.double)
            yield f"{node} {FEDSIM.energyMillijoules.n3()} {energy} ."
            yield f"{node} {FEDSIM.busySeconds.n3()} {_n3(float(row['busy_s']), XSD.double)} ."
            yield f"{node} {FEDSIM.bytesDown.n3()} {_n3(int(row['bytes_down']), XSD.integer)} ."
            yield f"{node} {FEDSIM.bytesUp.n3()} {_n3(int(row['bytes_up']), XSD.integer)} ."


def _topology_lines(topology: RunTopology, members: Members, run_id: str) -> Iterator[str]:
    run = RUN[_iri(run_id)].n3()
    a = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
    names = {gateway[0] for gateway in topology.gateways}
    yield f"{run} {FEDSIM.localRounds.n3()} {_n3(topology.local_rounds, XSD.integer)} ."
    for name, profile, uplink, parent, device_ids in topology.gateways:
        if parent is not None and parent not in names:
            raise ValueError(f"gateway '{name}' reports to '{parent}', not a gateway of the run")
        node = gateway_iri(run_id, name).n3()
        yield f"{run} {FEDSIM.usedGateway.n3()} {node} ."
        yield f"{node} {a} {FEDSIM.Gateway.n3()} ."
        yield f"{node} {FEDSIM.deviceName.n3()} {_n3(f'{run_id}-gw-{name}')} ."
        yield f"{node} {FEDSIM.hasProfile.n3()} {DEV[profile].n3()} ."
        yield f"{node} {FEDSIM.uplinkKind.n3()} {_n3(uplink)} ."
        if parent is not None:
            yield f"{node} {FEDSIM.reportsTo.n3()} {gateway_iri(run_id, parent).n3()} ."
        for device_id in device_ids:
            device = device_iri(members, device_id, run_id).n3()
            yield f"{device} {FEDSIM.attachedTo.n3()} {node} ."


def write_participation(
    scenario: Scenario,
    members: Members,
    out: Path,
    run_id: str,
    topology: RunTopology | None = None,
) -> Path:
    """``<out>/participation.ttl`` (with the run's topology, if given); returns its path."""
    path = out / PARTICIPATION
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(f"# who took part in run {run_id} ({scenario.name}), and how\n")
        for line in participation_lines(scenario, members, out, run_id, topology):
            handle.write(line + "\n")
    tmp.replace(path)
    return path
