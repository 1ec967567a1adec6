"""Runs write back: who took part in which round of a run, and how, as RDF.

At the end of a run with a ``registry`` section, ``participation.ttl`` in the run folder describes
the run (``fedsim:Run``) and one ``fedsim:Participation`` per row of ``devices.csv``; with a
persistent registry (``registry.db``) it is also added to that store, so later queries can select
devices by their history (``queries/run-devices.rq``). Devices a query picked from the registry
keep their registry IRI; devices of a profile-based group are named ``<run id>-<device id>``.
Written line by line (a 10,000-device run has 100,000 rows or more), every value escaped by rdflib.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from rdflib import Literal, URIRef
from rdflib.namespace import XSD

from fedsim.core.results import DEVICES
from fedsim.core.scenario import Scenario
from ontology.vocab import DEV, DEVICE, FEDSIM, MODEL, RUN

__all__ = ["PARTICIPATION", "device_iri", "participation_lines", "write_participation"]

PARTICIPATION = "participation.ttl"


def _iri(text: str) -> str:
    return quote(text, safe="-._~")


# A fleet's devices as the history needs them, by device id: (registry IRI or None, profile name).
Members = Sequence[tuple[str | None, str]]


def device_iri(members: Members, device_id: int, run_id: str) -> URIRef:
    iri = members[device_id][0]
    return URIRef(iri) if iri is not None else DEVICE[f"{_iri(run_id)}-{device_id}"]


def _n3(value: object, datatype: URIRef | None = None) -> str:
    return Literal(value, datatype=datatype).n3()


def participation_lines(
    scenario: Scenario, members: Members, out: Path, run_id: str
) -> Iterator[str]:
    """The run's participation as N-Triples-like Turtle lines (no prefixes needed)."""
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


def write_participation(scenario: Scenario, members: Members, out: Path, run_id: str) -> Path:
    """``<out>/participation.ttl``; returns its path."""
    path = out / PARTICIPATION
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(f"# who took part in run {run_id} ({scenario.name}), and how\n")
        for line in participation_lines(scenario, members, out, run_id):
            handle.write(line + "\n")
    tmp.replace(path)
    return path
