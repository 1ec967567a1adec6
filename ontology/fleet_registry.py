"""The registry as the fleet's source of truth: catalog + fleet devices + run history, queried.

``FleetRegistry`` opens a store (``memory``: rdflib; ``oxigraph``: pyoxigraph, optionally
persistent on disk) with the catalog (profiles, links, model descriptions) and any Turtle files of
fleet devices, and answers the questions fedsim asks with the named queries in ``queries/``,
bound, never string-formatted. Answers are pydantic objects, never RDF nodes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from rdflib import Literal as RdfLiteral
from rdflib import URIRef

from fedsim.core.errors import FedsimError, did_you_mean, known_names
from fedsim.core.textfile import read_text
from ontology.capability import CapabilityIndex
from ontology.endpoint_guard import variables
from ontology.registry import CATALOG_DIR, QUERY_DIR
from ontology.store import RegistryStore, open_store
from ontology.vocab import PREFIXES

__all__ = [
    "DeviceMatch",
    "FleetRegistry",
    "InventoryRow",
    "ModelFit",
    "ProfileMatch",
    "RunDevice",
    "check_bindings",
    "parse_binding",
    "query_path",
    "read_query",
]

Train = Literal["full", "head", "no"]
Binding = str | int | float | bool | URIRef | RdfLiteral


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class DeviceMatch(_Row):
    name: str
    profile: str
    fleet: str
    ram: int
    flash: int
    train: Train


class ProfileMatch(_Row):
    profile: str
    ram: int
    flash: int
    train: Train
    sensors: Literal["built-in", "attach"]


class ModelFit(_Row):
    model: str
    architecture: str
    dataset: str
    inference_ram: int
    flash_need: int
    train_ram: int
    train: Train
    sensors: Literal["built-in", "attach"] = "built-in"


class InventoryRow(_Row):
    profile: str
    fleet: str
    devices: int


class RunDevice(_Row):
    device: str
    profile: str
    rounds: int
    delivered: int
    energy_mj: float
    bytes: int
    mean_loss: float | None = None


def query_path(name_or_path: str | Path, base: Path | None = None) -> Path:
    """A named query (``model-devices``) or a ``.rq`` file (relative to ``base``)."""
    named = QUERY_DIR / f"{name_or_path}.rq"
    if named.is_file():
        return named
    path = Path(name_or_path)
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.suffix == ".rq" and path.is_file():
        return path
    known = [p.stem for p in QUERY_DIR.glob("*.rq")]
    raise FedsimError(
        str(name_or_path),
        known_names("query", str(name_or_path), known),
        "name a query in ontology/queries or give the path of a .rq file",
    )


QUERY_BYTES = 1024 * 1024  # read no further: no query the registry runs is longer


def check_bindings(text: str, name: str, bindings: Mapping[str, Any], where: str) -> None:
    """Refuse a binding of a variable the query ``name`` does not mention: it would bind nothing,
    and the rows would silently be those of the unbound query."""
    mentioned = variables(text)
    for variable in bindings:
        if variable not in mentioned:
            known = ", ".join(sorted(mentioned)) or "none"
            located = f"{where} {variable}" if where.startswith("--") else f"{where}.{variable}"
            raise FedsimError(
                located,
                f"{name} has no variable ?{variable}{did_you_mean(variable, mentioned)}",
                f"bind one of its variables: {known}",
            )


def read_query(path: Path) -> str:
    """The SPARQL text of a ``.rq`` file: UTF-8, or a located error."""
    return read_text(path, "SPARQL query", QUERY_BYTES, "a query for the registry")


def parse_binding(text: str) -> tuple[str, Any]:
    """``name=value``: an integer, a number, true/false, ``<iri>`` or ``prefix:name`` (an IRI
    with a known prefix), else a string literal. Values become typed RDF terms, never query text.
    """
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise FedsimError("--bind", f"'{text}' is not name=value", "e.g. --bind modelName=mlp.kws")
    if re.fullmatch(r"-?\d+", value):
        return name, int(value)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", value):
        return name, float(value)
    if value in ("true", "false"):
        return name, value == "true"
    if value.startswith("<") and value.endswith(">"):
        return name, URIRef(value[1:-1])
    prefix, colon, local = value.partition(":")
    if colon and prefix in PREFIXES and re.fullmatch(r"[\w.\-]+", local):
        return name, URIRef(PREFIXES[prefix] + local)
    return name, value


class FleetRegistry:
    """Catalog, fleet devices and run history in one store."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self._capabilities: CapabilityIndex | None = None

    @classmethod
    def open(
        cls,
        data: Iterable[Path] = (),
        store: Literal["memory", "oxigraph"] = "memory",
        db: Path | None = None,
    ) -> FleetRegistry:
        """The catalog plus ``data`` (Turtle files of fleet devices) in a ``store``. With ``db``
        (oxigraph only), a persistent store on disk that keeps what is added to it (run
        histories): the catalog and ``data`` are loaded when it is created, not again (blank
        nodes would repeat); delete the folder to rebuild it."""
        if db is not None and store != "oxigraph":
            raise FedsimError(
                "registry.db", "a database folder needs store: oxigraph", "set store: oxigraph"
            )
        opened = open_store(store, db)
        registry = cls(opened)
        if db is None or not registry.has_catalog():
            opened.load([*sorted(CATALOG_DIR.glob("*.ttl")), *data])
        return registry

    def has_catalog(self) -> bool:
        return self.store.ask("ASK { ?p a <https://w3id.org/fedsim/vocab#DeviceProfile> }", None)

    def __enter__(self) -> FleetRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.store.close()

    def query(
        self,
        name_or_path: str | Path,
        bindings: Mapping[str, Binding] | None = None,
        where: str = "bind",
    ) -> list[dict[str, Any]]:
        """Rows of a named query or ``.rq`` file, values as plain Python. A binding of a variable
        the query does not mention (it would bind nothing) is an error located at ``where``."""
        path = query_path(name_or_path)
        text = read_query(path)
        check_bindings(text, path.name, bindings or {}, where)
        return self.store.select(text, dict(bindings or {}))

    def _known(self, query: str, what: str, name: str) -> None:
        names = [str(r["name"]) for r in self.store.select(query, None)]
        if name not in names:
            raise FedsimError(what, known_names(what, name, names))

    def check_model(self, model: str) -> None:
        self._known(
            "SELECT ?name WHERE { ?m <https://w3id.org/fedsim/vocab#modelName> ?name }",
            "model",
            model,
        )

    def capabilities(self) -> CapabilityIndex:
        """The capability index of the store as it is now: read on first use, read again after
        the store took a write (a fleet file, a run's participation, an attached device)."""
        index = self._capabilities
        if index is None or index.generation != self.store.generation:
            index = self._capabilities = CapabilityIndex(self.store)
        return index

    def devices_for(self, model: str) -> list[DeviceMatch]:
        """Fleet devices that can run ``model`` (and whether they can train it): the rows of
        ``model-devices.rq``, from the capability index where it can tell (ontology/capability.py).
        """
        self.check_model(model)
        rows = self.capabilities().match(self.store, model)
        if rows is None:
            rows = self.query("model-devices", {"modelName": model})
        return [DeviceMatch.model_validate(r) for r in rows]

    def profiles_for(self, model: str) -> list[ProfileMatch]:
        """Device profiles (as shipped) that can run ``model``."""
        self.check_model(model)
        rows = self.query("model-profiles", {"modelName": model})
        return [ProfileMatch.model_validate(r) for r in rows]

    def models_for(self, device: str) -> list[ModelFit]:
        """Models that fit a fleet device, or a profile if ``device`` names one."""
        profiles = {str(r["name"]) for r in self.query("profile-names")}
        if device in profiles:
            rows = self.query("profile-models", {"profileName": device})
        else:
            devices = [str(r["name"]) for r in self.query("device-iris")]
            if device not in devices:
                raise FedsimError(
                    "device", known_names("device or profile", device, [*devices, *profiles])
                )
            rows = self.query("device-models", {"deviceName": device})
        return [ModelFit.model_validate(r) for r in rows]

    def inventory(self) -> list[InventoryRow]:
        return [InventoryRow.model_validate(r) for r in self.query("inventory")]

    def run_devices(self, run_id: str) -> list[RunDevice]:
        return [RunDevice.model_validate(r) for r in self.query("run-devices", {"runId": run_id})]

    def add_turtle(self, text: str) -> None:
        self.store.add_turtle(text)

    def close(self) -> None:
        self.store.close()
