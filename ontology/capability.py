"""The capability match (``queries/model-devices.rq``) answered from an index built once per load.

Over 100,000 devices the query costs Oxigraph ~1.5 s and rdflib over a minute, because it walks
every device's profile, optional figures and hosted sensors for every model asked about. The index
reads those facts once (one predicate scan each, ``RegistryStore.pairs``, no SPARQL) and keeps
per device what the match needs: its effective RAM and flash (its own figures, else its
profile's), and its sensor classes (its own and its profile's) as one interned set. A match is
then one pass over plain tuples.

The query stays the definition: this module reproduces its rows (same keys, same Python values,
sorted by name) and ``tests/test_registry_capability.py`` checks it against the query on fleets
with the edge cases (attached sensors, missing ones, memory just below and above the need, several
values of one figure). A model whose own figures it cannot read as plain numbers (missing, several,
ill-typed) makes ``match`` return None, and the caller runs the query.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import product

from ontology.store import RegistryStore, Solutions
from ontology.terms import INTEGER_TYPES, Row, Term, Value
from ontology.vocab import PREFIXES

__all__ = ["CapabilityIndex"]

FEDSIM, SOSA = PREFIXES["fedsim"], PREFIXES["sosa"]
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
XSD = "http://www.w3.org/2001/XMLSchema#"
Number = int | float | Decimal
EMPTY_FLEET = Term("literal", "")  # COALESCE(?f, "") in the query

# A model's figures and required sensor classes, by its name (bound as ?modelName).
MODEL_FIGURES = f"""PREFIX fedsim: <{FEDSIM}>
SELECT ?model ?needRam ?needFlash ?trainRam ?headRam WHERE {{
  ?model fedsim:modelName ?modelName ;
         fedsim:inferenceRamBytes ?needRam ; fedsim:inferenceFlashBytes ?needFlash ;
         fedsim:trainRamBytes ?trainRam ; fedsim:headTrainRamBytes ?headRam .
}}"""
MODEL_SENSORS = f"""PREFIX fedsim: <{FEDSIM}>
SELECT ?kind WHERE {{ ?model fedsim:modelName ?modelName ; fedsim:requiresSensor ?kind }}"""

# XSD lexical forms: what SPARQL compares as a number (Python's int() and float() take more).
_LEXICAL = {
    "integer": re.compile(r"[+-]?\d+"),
    "decimal": re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)"),
    "double": re.compile(r"[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|INF)|NaN"),
}


def number(term: Term) -> Number | None:
    """A numeric literal's value as SPARQL compares it; None for anything else (no match)."""
    if term.kind != "literal" or term.datatype is None:
        return None
    datatype, text = term.datatype, term.value
    if datatype in INTEGER_TYPES:
        return int(text) if _LEXICAL["integer"].fullmatch(text) else None
    if datatype == XSD + "decimal":
        return Decimal(text) if _LEXICAL["decimal"].fullmatch(text) else None
    if datatype in (XSD + "double", XSD + "float"):
        return float(text) if _LEXICAL["double"].fullmatch(text) else None
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One row the query could give for a device, before the model's needs are applied."""

    device: Value
    name: Value
    profile: Value
    fleet: Value
    ram: Value  # as the query returns them
    flash: Value
    ram_n: Number | None  # as SPARQL compares them (None: never >= a number)
    flash_n: Number | None
    sensors: int  # the index of its sensor-class set


FIGURES = (
    "deviceName",
    "hasProfile",
    "profileName",
    "sramBytes",
    "flashBytes",
    "freeSramBytes",
    "freeFlashBytes",
    "fleetName",
)
Key = tuple[Term, Term, Term, Term, Term, Term]  # device, name, profile, fleet, ram, flash


def _by_subject(store: RegistryStore, predicate: str) -> dict[Term, list[Term]]:
    values: dict[Term, list[Term]] = {}
    for subject, obj in store.pairs(predicate):
        values.setdefault(subject, []).append(obj)
    return values


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The build allocates a million small tuples, none cyclic: without the collector's passes
    over them it takes ~40% less time (100k devices: 2.5 s, not 4 s, on Oxigraph)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Facts:
    """The triples the match reads, by subject: one scan of each predicate."""

    def __init__(self, store: RegistryStore) -> None:
        self.types = _by_subject(store, RDF_TYPE)
        self.hosts = _by_subject(store, SOSA + "hosts")
        self.figures = {local: _by_subject(store, FEDSIM + local) for local in FIGURES}

    def get(self, local: str, subject: Term) -> list[Term]:
        return self.figures[local].get(subject, [])

    def kinds(self, holder: Term) -> frozenset[Term]:
        """The classes of the sensors ``holder`` hosts (``?holder sosa:hosts ?s . ?s a ?kind``)."""
        return frozenset(k for s in self.hosts.get(holder, ()) for k in self.types.get(s, ()))

    def rows(self, device: Term) -> Iterator[tuple[Key, frozenset[Term]]]:
        """The query's rows for ``device`` before the model's needs, with the sensor classes it
        hosts, itself or through the profile of that row: every combination of its values."""
        own = self.kinds(device)
        names, fleets = self.get("deviceName", device), self.get("fleetName", device)
        for p in self.get("hasProfile", device):
            sensors = own | self.kinds(p)
            sram, pflash = self.get("sramBytes", p), self.get("flashBytes", p)
            rams = self.get("freeSramBytes", device) or sram  # COALESCE(?freeRam, ?sram)
            flashes = self.get("freeFlashBytes", device) or pflash
            if not sram or not pflash:
                continue  # the profile's figures are required even where the device's are used
            for profile, name, fleet, ram, flash in product(
                self.get("profileName", p), names, fleets or [EMPTY_FLEET], rams, flashes
            ):
                yield (device, name, profile, fleet, ram, flash), sensors


class CapabilityIndex:
    """What the capability match needs of every device, read from ``store`` as it is now."""

    def __init__(self, store: RegistryStore) -> None:
        self.generation = store.generation
        with _gc_paused():
            self._build(store)

    def _build(self, store: RegistryStore) -> None:
        facts = _Facts(store)
        device_class = Term("uri", FEDSIM + "Device")
        keyed: dict[Key, frozenset[Term]] = {}
        for device, classes in facts.types.items():
            if device_class in classes:
                for key, sensors in facts.rows(device):
                    # the query's GROUP BY merges rows of one key: each must host every sensor
                    keyed[key] = keyed[key] & sensors if key in keyed else sensors
        set_ids: dict[frozenset[Term], int] = {}  # few distinct sets: a match tests each once
        self.entries = [
            _Entry(
                device.python(),
                name.python(),
                profile.python(),
                fleet.python(),
                ram.python(),
                flash.python(),
                number(ram),
                number(flash),
                set_ids.setdefault(sensors, len(set_ids)),
            )
            for (device, name, profile, fleet, ram, flash), sensors in keyed.items()
        ]
        self._sensor_sets = list(set_ids)

    def match(self, store: RegistryStore, model: str) -> list[Row] | None:
        """``model-devices.rq``'s rows for ``model``, or None where only the query can tell."""
        figures = store.execute(MODEL_FIGURES, {"modelName": model})
        assert isinstance(figures, Solutions)
        rows = list(figures.rows)
        if not rows:
            return []  # no model by that name with every figure: the query's join is empty
        needs = [number(rows[0][v]) for v in figures.variables[1:]]
        if len(rows) > 1 or any(n is None for n in needs):
            return None
        need_ram, need_flash, train_ram, head_ram = needs
        sensors = store.execute(MODEL_SENSORS, {"modelName": model})
        assert isinstance(sensors, Solutions)
        required = {row["kind"] for row in sensors.rows}
        hosting = [required <= kinds for kinds in self._sensor_sets]
        found = []
        for e in self.entries:
            if not hosting[e.sensors] or e.ram_n is None or e.flash_n is None:
                continue
            if e.ram_n >= need_ram and e.flash_n >= need_flash:  # type: ignore[operator]
                train = (
                    "full"
                    if e.ram_n >= train_ram  # type: ignore[operator]
                    else "head"
                    if e.ram_n >= head_ram  # type: ignore[operator]
                    else "no"
                )
                found.append(
                    {
                        "device": e.device,
                        "name": e.name,
                        "profile": e.profile,
                        "fleet": e.fleet,
                        "ram": e.ram,
                        "flash": e.flash,
                        "train": train,
                    }
                )
        found.sort(key=lambda row: str(row["name"]))
        return found
