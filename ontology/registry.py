"""A read-only registry API over the Turtle catalog: device profiles and link types by name.

Each kind of record is read by one named query in ``queries/`` whose figures are all OPTIONAL, so
a record missing a figure comes back with it unbound and is reported by name (profile, property)
instead of silently dropping out of the results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from pydantic import BaseModel, ValidationError
from rdflib import Graph, Literal
from rdflib.term import Identifier

from fedsim.core.errors import FedsimError, known_names
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType

__all__ = ["CATALOG_DIR", "DeviceRegistry", "default_registry"]


def _data_dir() -> Path:
    """Where the Turtle catalog and the .rq queries are.

    Beside this module in a checkout or an installed wheel. Under ``flwr run`` this module runs
    from Flower's app bundle (FAB), which keeps only .py/.toml/.md/.yaml/.json files, so the data
    comes from the installed fedsim distribution instead (editable installs point at the checkout).
    """
    here = Path(__file__).parent
    if (here / "catalog").is_dir():
        return here
    dist = metadata.distribution("fedsim")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        return Path(url2pathname(urlparse(direct["url"]).path)) / "ontology"
    return Path(str(dist.locate_file("ontology")))


DATA_DIR = _data_dir()
CATALOG_DIR = DATA_DIR / "catalog"
QUERY_DIR = DATA_DIR / "queries"
VOCABULARY_FIX = "add it as the vocabulary says (ontology/fedsim.ttl)"

Model = TypeVar("Model", bound=BaseModel)
Row = dict[str, Identifier]


def _text(value: Any) -> str:
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("an integer")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("a number")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


@dataclass(frozen=True)
class _Figure:
    """One model field: the query variable that holds it, its RDF property, how to convert it."""

    field: str
    var: str
    prop: str
    convert: Callable[[Any], Any]


PROFILE_FIGURES = (
    _Figure("name", "name", "fedsim:profileName", _text),
    _Figure("label", "label", "rdfs:label", _text),
    _Figure("board", "board", "fedsim:boardName", _text),
    _Figure("soc", "soc", "fedsim:socName", _text),
    _Figure("core", "core", "fedsim:core", _text),
    _Figure("cores", "cores", "fedsim:coreCount", _integer),
    _Figure("clock_mhz", "clock", "fedsim:clockMHz", _number),
    _Figure("sram_bytes", "sram", "fedsim:sramBytes", _integer),
    _Figure("flash_bytes", "flash", "fedsim:flashBytes", _integer),
    _Figure("fpu", "fpu", "fedsim:hasFPU", _boolean),
    _Figure("source", "source", "fedsim:figureSource", _text),
    _Figure("active_mw", "active", "fedsim:activePowerMilliwatts", _number),
    _Figure("idle_mw", "idle", "fedsim:idlePowerMilliwatts", _number),
    _Figure("power_source", "powerSource", "fedsim:powerSource", _text),
    _Figure("cycles_per_mac", "cyclesPerMac", "fedsim:cyclesPerMAC", _number),
    _Figure("cycles_source", "cyclesSource", "fedsim:cyclesSource", _text),
)
LINK_FIGURES = (
    _Figure("kind", "kind", "fedsim:linkKind", _text),
    _Figure("tx_mw", "tx", "fedsim:txPowerMilliwatts", _number),
    _Figure("rx_mw", "rx", "fedsim:rxPowerMilliwatts", _number),
    _Figure("source", "source", "fedsim:figureSource", _text),
)
LINK_TYPE_FIGURES = (
    _Figure("kind", "kind", "fedsim:linkKind", _text),
    _Figure("label", "label", "rdfs:label", _text),
    _Figure("throughput_bps", "throughput", "fedsim:throughputBps", _number),
    _Figure("latency_s", "latency", "fedsim:latencySeconds", _number),
    _Figure("mtu_bytes", "mtu", "fedsim:mtuBytes", _integer),
    _Figure("source", "source", "fedsim:figureSource", _text),
)


@cache
def _query_text(name: str) -> str:
    return (QUERY_DIR / name).read_text(encoding="utf-8")


def _rows(graph: Graph, query: str, key: str) -> dict[Identifier, list[Row]]:
    """The rows of a named query grouped by the ``key`` variable (one group per RDF subject)."""
    groups: dict[Identifier, list[Row]] = {}
    for row in graph.query(_query_text(query)):
        values: Row = row.asdict()  # type: ignore[union-attr]
        groups.setdefault(values[key], []).append(values)
    return groups


def _values(rows: list[Row], figures: Iterable[_Figure], what: str, where: str) -> dict[str, Any]:
    """One record's model fields from its rows; a missing, repeated or ill-typed figure is an error.

    Several rows for one subject mean a property with several values (SPARQL joins them).
    """
    values: dict[str, Any] = {}
    for figure in figures:
        found = {row[figure.var] for row in rows if figure.var in row}
        if not found:
            raise FedsimError(where, f"{what}: missing {figure.prop}", VOCABULARY_FIX)
        if len(found) > 1:
            listed = ", ".join(sorted(f"'{v}'" for v in found))
            raise FedsimError(
                where, f"{what}: {figure.prop} has {len(found)} values ({listed})", "keep one"
            )
        term = found.pop()
        try:
            value = term.toPython() if isinstance(term, Literal) else str(term)
            values[figure.field] = figure.convert(value)
        except ValueError as exc:
            raise FedsimError(
                where, f"{what}: {figure.prop} is '{term}', not {exc}", VOCABULARY_FIX
            ) from None
    return values


def _build(model: type[Model], values: dict[str, Any], what: str, where: str) -> Model:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise FedsimError(where, f"{what}: {field}: {first['msg']}") from None


def _label(rows: list[Row], subject: Identifier, kind: str, var: str) -> str:
    """How an error names a record: by its short name when it has one, else by its IRI."""
    names = sorted(str(row[var]) for row in rows if var in row)
    return f"{kind} '{names[0]}'" if names else f"{kind} <{subject}>"


class DeviceRegistry:
    """Device profiles and link types read from an RDF graph with the queries in ``queries/``.

    ``where`` names the catalog in error messages (a file, or the files joined).
    """

    def __init__(self, graph: Graph, where: str = "catalog") -> None:
        self._link_types = self._read_link_types(graph, where)
        self._profiles = self._read_profiles(graph, where)

    @classmethod
    def from_files(cls, paths: list[Path]) -> DeviceRegistry:
        """Read UTF-8 Turtle files; an unreadable one or a syntax error is a located error."""
        from ontology.validate import load_turtle

        return cls(load_turtle(paths), ", ".join(str(p) for p in paths))

    @staticmethod
    def _read_link_types(graph: Graph, where: str) -> dict[str, LinkType]:
        types: dict[str, LinkType] = {}
        for subject, rows in _rows(graph, "link-types.rq", "type").items():
            what = _label(rows, subject, "link type", "kind")
            link_type = _build(LinkType, _values(rows, LINK_TYPE_FIGURES, what, where), what, where)
            if link_type.kind in types:
                raise FedsimError(where, f"{what} is described twice", "keep one description")
            types[link_type.kind] = link_type
        return types

    def _read_profiles(self, graph: Graph, where: str) -> dict[str, DeviceProfile]:
        links = _rows(graph, "device-links.rq", "device")
        profiles: dict[str, DeviceProfile] = {}
        for subject, rows in _rows(graph, "profiles.rq", "device").items():
            what = _label(rows, subject, "profile", "name")
            values = _values(rows, PROFILE_FIGURES, what, where)
            values["links"] = self._read_links(links.get(subject, []), what, where)
            profile = _build(DeviceProfile, values, what, where)
            if profile.name in profiles:
                raise FedsimError(where, f"{what} is described twice", "keep one description")
            profiles[profile.name] = profile
        return profiles

    def _read_links(self, rows: list[Row], what: str, where: str) -> tuple[LinkPower, ...]:
        """A profile's links sorted by kind; each kind must be a known link type, once."""
        by_node: dict[Identifier, list[Row]] = {}
        for row in rows:
            by_node.setdefault(row["link"], []).append(row)
        links: dict[str, LinkPower] = {}
        for node_rows in by_node.values():
            link_what = f"{what}: {_label(node_rows, node_rows[0]['link'], 'link', 'kind')}"
            link = _build(
                LinkPower, _values(node_rows, LINK_FIGURES, link_what, where), link_what, where
            )
            if link.kind not in self._link_types:
                raise FedsimError(
                    where, f"{what}: {known_names('link', link.kind, self._link_types)}"
                )
            if link.kind in links:
                raise FedsimError(where, f"{link_what} is described twice", "keep one")
            links[link.kind] = link
        return tuple(links[kind] for kind in sorted(links))

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def profiles(self) -> list[DeviceProfile]:
        return [self._profiles[n] for n in self.names()]

    def profile(self, name: str, where: str = "") -> DeviceProfile:
        """The profile ``name``; an unknown name lists the known ones and the closest match."""
        if name not in self._profiles:
            raise FedsimError(where, known_names("profile", name, self._profiles))
        return self._profiles[name]

    def link_types(self) -> list[LinkType]:
        """Every link technology, sorted by kind."""
        return [self._link_types[k] for k in sorted(self._link_types)]

    def link_type(self, kind: str, where: str = "") -> LinkType:
        """The link technology ``kind``; an unknown kind lists the known ones and the closest."""
        if kind not in self._link_types:
            raise FedsimError(where, known_names("link", kind, self._link_types))
        return self._link_types[kind]


@lru_cache(maxsize=1)
def default_registry() -> DeviceRegistry:
    """The registry of the catalog shipped with fedsim, every .ttl in it (read once per process)."""
    return DeviceRegistry.from_files(sorted(CATALOG_DIR.glob("*.ttl")))
