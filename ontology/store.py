"""One small API over the registry's two RDF stores: rdflib in memory, or Oxigraph (design §8).

``open_store("memory")`` is an rdflib ``Graph``: the default, fine for the catalog and small
fleets. ``open_store("oxigraph", path)`` is a ``pyoxigraph.Store`` used directly (not through
oxrdflib), in memory or persistent on disk: the one for fleet-scale queries, which it answers
10–1000× faster than rdflib. Both give the same rows for the same query.

Callers see plain Python values (IRIs as ``str``, literals as ``int``/``float``/``bool``/``str`` by
datatype), never rdflib or pyoxigraph nodes. Bindings travel as typed RDF terms (rdflib's
``initBindings``; on Oxigraph a ``VALUES`` row written by pyoxigraph's term serialiser), never as
user text spliced into the query.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal

import pyoxigraph as ox
from rdflib import Graph, URIRef
from rdflib.plugins.parsers.notation3 import BadSyntax
from rdflib.query import ResultRow

from fedsim.core.errors import FedsimError, known_names
from fedsim.core.textfile import read_text
from ontology.terms import (
    PREFIXES,
    SERIAL_FORMATS,
    XSD_STRING,
    Binding,
    BindTerm,
    Form,
    QueryError,
    QueryResult,
    RdfTriple,
    Row,
    Solutions,
    StoreKind,
    Term,
    Triples,
    Value,
    from_ox,
    from_rdflib,
    group_start,
    ox_to_rdflib,
    rdf_term,
    rdflib_to_ox,
    turtle_error,
    with_values,
)

__all__ = [
    "PREFIXES",
    "STORES",
    "Binding",
    "QueryError",
    "QueryResult",
    "RdfTriple",
    "RegistryStore",
    "Row",
    "Solutions",
    "StoreKind",
    "Term",
    "Triples",
    "Value",
    "open_store",
]


TURTLE_BYTES = 256 * 1024 * 1024  # read no further: a larger file is not a device description


class RegistryStore(ABC):
    """An RDF store the registry reads with SPARQL; use as a context manager or ``close()`` it."""

    kind: ClassVar[StoreKind]
    generation = 0  # how many writes this store has taken: derived indexes rebuild when it moves

    def load(self, paths: Iterable[Path]) -> None:
        """Add Turtle files; a syntax error names ``file:line``."""
        for path in paths:
            text = read_text(Path(path), "Turtle", TURTLE_BYTES, "a Turtle file of devices")
            self._add_turtle(text, str(path), Path(path).resolve())

    def add_turtle(self, text: str, where: str = "turtle text") -> None:
        """Add Turtle text; ``where`` names it in a syntax error."""
        self._add_turtle(text, where, None)

    def pairs(self, predicate: str) -> Iterator[tuple[Term, Term]]:
        """(subject, object) of every triple whose predicate is the IRI ``predicate``.

        One index scan, no SPARQL: what the capability index (ontology/capability.py) reads a
        100k-device fleet with in a fraction of what the equivalent query costs.
        """
        return self._pairs(predicate)

    def execute(self, query: str, bindings: Mapping[str, Binding] | None = None) -> QueryResult:
        """Any query form: SELECT → ``Solutions``, ASK → bool, CONSTRUCT/DESCRIBE → ``Triples``.

        Bindings hold for the query's outermost group pattern, on both backends alike.
        """
        terms = {name: rdf_term(name, value) for name, value in (bindings or {}).items()}
        if terms:
            group_start(query)  # the same refusals on both backends (Oxigraph binds there)
        return self._execute(query, terms)

    def select(self, query: str, bindings: Mapping[str, Binding] | None = None) -> list[Row]:
        """The rows of a SELECT query as plain Python values (unbound variables left out)."""
        result = self._expect(query, bindings, Solutions, "SELECT")
        return [{name: term.python() for name, term in row.items()} for row in result.rows]

    def ask(self, query: str, bindings: Mapping[str, Binding] | None = None) -> bool:
        return self._expect(query, bindings, bool, "ASK")

    def construct(self, query: str, bindings: Mapping[str, Binding] | None = None) -> Graph:
        """A CONSTRUCT or DESCRIBE result as an rdflib graph (meant for small results)."""
        graph = Graph()
        for prefix, iri in PREFIXES.items():
            graph.bind(prefix, iri)
        for triple in self._expect(query, bindings, Triples, "CONSTRUCT or DESCRIBE").triples:
            graph.add(triple)
        return graph

    def _expect(
        self, query: str, bindings: Mapping[str, Binding] | None, form: type[Form], name: str
    ) -> Form:
        result = self.execute(query, bindings)
        if not isinstance(result, form):
            got = {Solutions: "SELECT", bool: "ASK", Triples: "CONSTRUCT"}[type(result)]
            raise FedsimError("query", f"expected a {name} query, got {got}")
        return result

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _add_turtle(self, text: str, where: str, base: Path | None) -> None: ...

    @abstractmethod
    def _execute(self, query: str, terms: dict[str, BindTerm]) -> QueryResult: ...

    @abstractmethod
    def _pairs(self, predicate: str) -> Iterator[tuple[Term, Term]]: ...

    @abstractmethod
    def add_graph(self, graph: Graph) -> None:
        """Add every triple of an rdflib graph (blank nodes keep their ids)."""

    @abstractmethod
    def triples_count(self) -> int:
        """How many triples the store holds (a full count on Oxigraph: not for hot paths)."""

    @abstractmethod
    def serialize(self, format: Literal["turtle", "nt", "xml"] = "turtle") -> str:
        """The whole store as text: for small stores (tests, exports of a few devices)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; a persistent Oxigraph store can then be opened again."""


class MemoryStore(RegistryStore):
    """An rdflib in-memory ``Graph``. A file that fails to parse may leave part of it behind."""

    kind = "memory"

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            raise FedsimError(str(path), "the memory store has no path", "use kind 'oxigraph'")
        self._graph: Graph | None = Graph()

    @property
    def _live(self) -> Graph:
        if self._graph is None:
            raise FedsimError("store", "the memory store is closed", "open a new one")
        return self._graph

    def _add_turtle(self, text: str, where: str, base: Path | None) -> None:
        self.generation += 1  # also on an error: part of the file may be in
        try:
            self._live.parse(data=text, format="turtle", publicID=base.as_uri() if base else None)
        except BadSyntax as exc:
            raise turtle_error(where, exc.lines + 1, str(exc._why)) from None

    def _pairs(self, predicate: str) -> Iterator[tuple[Term, Term]]:
        for subject, obj in self._live.subject_objects(URIRef(predicate)):
            yield from_rdflib(subject), from_rdflib(obj)

    def _execute(self, query: str, terms: dict[str, BindTerm]) -> QueryResult:
        try:
            result = self._live.query(query, initBindings=terms)
        except Exception as exc:  # pyparsing's ParseException, or rdflib's on unknown prefixes
            _raise_if_dataset(exc)
            raise QueryError(" ".join(str(exc).split())) from None
        if result.type == "ASK":
            return bool(result.askAnswer)
        if result.type in ("CONSTRUCT", "DESCRIBE"):
            assert result.graph is not None
            return Triples(iter(result.graph))
        names = [str(v) for v in result.vars or []]

        def rows() -> Iterator[dict[str, Term]]:
            try:
                for row in result:
                    assert isinstance(row, ResultRow)  # a SELECT yields rows
                    values = zip(names, row, strict=True)
                    yield {name: from_rdflib(node) for name, node in values if node is not None}
            except Exception as exc:  # rdflib evaluates GRAPH lazily, at the first row
                _raise_if_dataset(exc)
                raise

        return Solutions(names, rows())

    def add_graph(self, graph: Graph) -> None:
        self.generation += 1
        live = self._live  # no len() or bool() on either graph: each would count the triples
        live.addN((s, p, o, live) for s, p, o in graph)

    def triples_count(self) -> int:
        return len(self._live)

    def serialize(self, format: Literal["turtle", "nt", "xml"] = "turtle") -> str:
        _serial_format(format)
        return self._live.serialize(format=format)

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
        self._graph = None


def _raise_if_dataset(exc: Exception) -> None:
    """rdflib's plain ``Exception`` for GRAPH or FROM NAMED on a ``Graph``, as a located error."""
    if "requiring a dataset" in str(exc):
        raise FedsimError(
            "query",
            "GRAPH and FROM NAMED need named graphs; the memory store holds one default graph",
            "drop them, or use the oxigraph store",
        ) from None


class OxigraphStore(RegistryStore):
    """A ``pyoxigraph.Store``: in memory, or on disk at ``path`` (one process at a time)."""

    kind = "oxigraph"

    def __init__(self, path: Path | None = None, read_only: bool = False) -> None:
        if read_only and path is None:
            raise FedsimError("store", "a read-only Oxigraph store needs a path", "give its folder")
        self.path = path
        self._store: ox.Store | None = (
            ox.Store.read_only(str(path))
            if read_only and path is not None
            else ox.Store(str(path) if path is not None else None)
        )
        self._persistent = path is not None and not read_only

    @property
    def _live(self) -> ox.Store:
        if self._store is None:
            raise FedsimError("store", "the Oxigraph store is closed", "open it again")
        return self._store

    def _add_turtle(self, text: str, where: str, base: Path | None) -> None:
        try:  # one transaction: a file with an error adds nothing
            self._live.load(text, ox.RdfFormat.TURTLE, base_iri=base.as_uri() if base else None)
        except SyntaxError as exc:
            raise turtle_error(where, exc.lineno, str(exc.msg)) from None
        self.generation += 1

    def _pairs(self, predicate: str) -> Iterator[tuple[Term, Term]]:
        # from_ox, unrolled: this runs for every device and figure of a fleet (~1 µs a pair)
        quads = self._live.quads_for_pattern(None, ox.NamedNode(predicate), None, ox.DefaultGraph())
        named, literal = ox.NamedNode, ox.Literal
        for quad in quads:
            subject, obj = quad.subject, quad.object  # no RDF-star triples here
            kind: Literal["uri", "bnode"] = "uri" if type(subject) is named else "bnode"
            node = Term(kind, subject.value)  # type: ignore[union-attr]
            if type(obj) is literal and obj.datatype.value == XSD_STRING:
                yield node, Term("literal", obj.value)
            else:
                yield node, from_ox(obj)

    def _execute(self, query: str, terms: dict[str, BindTerm]) -> QueryResult:
        # Not Store.query(substitutions=…): Oxigraph 0.5 (SEP-0007) takes only variables of the
        # SELECT projection there, and the registry binds others (?modelName in model-devices.rq).
        try:
            result = self._live.query(with_values(query, terms) if terms else query)
        except SyntaxError as exc:
            raise QueryError(" ".join(str(exc).split())) from None
        if isinstance(result, ox.QueryBoolean):
            return bool(result)
        if isinstance(result, ox.QueryTriples):
            return Triples(
                (ox_to_rdflib(t.subject), ox_to_rdflib(t.predicate), ox_to_rdflib(t.object))
                for t in result
            )
        names = [v.value for v in result.variables]

        def rows() -> Iterator[dict[str, Term]]:
            for solution in result:  # a solution iterates its values in the variables' order
                values = zip(names, solution, strict=True)
                yield {name: from_ox(node) for name, node in values if node is not None}

        return Solutions(names, rows())

    def add_graph(self, graph: Graph) -> None:
        self.generation += 1
        self._live.extend(
            ox.Quad(rdflib_to_ox(s), rdflib_to_ox(p), rdflib_to_ox(o))  # type: ignore[arg-type]
            for s, p, o in graph
        )

    def triples_count(self) -> int:
        return len(self._live)

    def serialize(self, format: Literal["turtle", "nt", "xml"] = "turtle") -> str:
        data = self._live.dump(
            format=_serial_format(format), from_graph=ox.DefaultGraph(), prefixes=PREFIXES
        )
        assert data is not None  # no output given: the bytes are returned
        return data.decode("utf-8")

    def close(self) -> None:
        if self._store is not None and self._persistent:
            self._store.flush()
        self._store = None  # the last reference: RocksDB's lock goes with it


def _serial_format(name: str) -> ox.RdfFormat:
    if name not in SERIAL_FORMATS:
        raise FedsimError("serialize", known_names("format", name, SERIAL_FORMATS))
    return SERIAL_FORMATS[name]


STORES: dict[str, Callable[[Path | None], RegistryStore]] = {
    "memory": MemoryStore,
    "oxigraph": OxigraphStore,
}


def open_store(kind: StoreKind = "memory", path: Path | None = None) -> RegistryStore:
    """A new store of ``kind``; ``path`` makes an Oxigraph store persistent (opened or created)."""
    if kind not in STORES:
        raise FedsimError("store", known_names("store kind", kind, STORES))
    return STORES[kind](path)
