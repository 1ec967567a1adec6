"""One small API over the registry's two RDF stores: rdflib in memory, or Oxigraph (DESIGN.md §8).

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

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, TypeAlias, TypeVar

import pyoxigraph as ox
from rdflib import BNode, Graph, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import RDF, XSD
from rdflib.plugins.parsers.notation3 import BadSyntax
from rdflib.query import ResultRow
from rdflib.term import Node

from fedsim.core.errors import FedsimError, known_names

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

StoreKind = Literal["memory", "oxigraph"]
Value: TypeAlias = str | int | float | bool
Binding: TypeAlias = str | int | float | bool | URIRef | RdfLiteral
Row: TypeAlias = dict[str, Value]
RdfTriple: TypeAlias = tuple[Node, Node, Node]
OxTerm: TypeAlias = ox.NamedNode | ox.BlankNode | ox.Literal | ox.Triple

PREFIXES = {  # ontology/README.md; used when serialising
    "fedsim": "https://w3id.org/fedsim/vocab#",
    "dev": "https://w3id.org/fedsim/catalog/device/",
    "link": "https://w3id.org/fedsim/catalog/link/",
    "model": "https://w3id.org/fedsim/catalog/model/",
    "device": "https://w3id.org/fedsim/device/",
    "run": "https://w3id.org/fedsim/run/",
    "sosa": "http://www.w3.org/ns/sosa/",
    "ssn-system": "http://www.w3.org/ns/ssn/systems/",
    "s3n": "http://w3id.org/s3n/",
    "schema": "http://schema.org/",
    "unit": "http://qudt.org/vocab/unit/",
    "nnet": "https://w3id.org/tinyml-schema/neural-network-schema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "xsd": str(XSD),
}
INTEGER_TYPES = {
    str(XSD[t])
    for t in [
        "integer",
        "long",
        "int",
        "short",
        "byte",
        "unsignedLong",
        "unsignedInt",
        "unsignedShort",
        "unsignedByte",
        "nonNegativeInteger",
        "positiveInteger",
        "nonPositiveInteger",
        "negativeInteger",
    ]
}
FLOAT_TYPES = {str(XSD.decimal), str(XSD.double), str(XSD.float)}
XSD_STRING, XSD_BOOLEAN, RDF_LANG_STRING = str(XSD.string), str(XSD.boolean), str(RDF.langString)
PLAIN_TYPES = {XSD_STRING, RDF_LANG_STRING}  # reported as no datatype
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUERY_FORMS = ("SELECT", "CONSTRUCT", "ASK", "DESCRIBE")
SERIAL_FORMATS = {
    "turtle": ox.RdfFormat.TURTLE,
    "nt": ox.RdfFormat.N_TRIPLES,
    "xml": ox.RdfFormat.RDF_XML,
}


class QueryError(FedsimError):
    """A malformed SPARQL query; ``what`` carries the parser's message."""

    def __init__(self, message: str) -> None:
        super().__init__("query", f"SPARQL syntax error: {message}", "fix the query")


@dataclass(frozen=True, slots=True)
class Term:
    """An RDF term as SPARQL results describe it; ``datatype`` is None for plain strings."""

    kind: Literal["uri", "bnode", "literal"]
    value: str
    datatype: str | None = None
    lang: str | None = None

    def python(self) -> Value:
        """IRIs as text, blank nodes as ``_:id``, literals as int/float/bool/str by datatype.

        An ill-typed literal (``"256 KB"^^xsd:integer``) comes back as its text.
        """
        if self.kind == "bnode":
            return f"_:{self.value}"
        if self.kind == "uri" or self.datatype is None:
            return self.value
        try:
            if self.datatype in INTEGER_TYPES:
                return int(self.value)
            if self.datatype in FLOAT_TYPES:
                return float(self.value)
        except ValueError:
            return self.value
        if self.datatype == XSD_BOOLEAN and self.value in ("true", "false", "1", "0"):
            return self.value in ("true", "1")
        return self.value


@dataclass(frozen=True)
class Solutions:
    """A SELECT result: the projected variables and the rows, produced lazily.

    A row holds only the variables bound in it (as SPARQL's JSON results do).
    """

    variables: list[str]
    rows: Iterator[dict[str, Term]]


@dataclass(frozen=True)
class Triples:
    """A CONSTRUCT or DESCRIBE result as rdflib triples, produced lazily."""

    triples: Iterator[RdfTriple]


QueryResult: TypeAlias = Solutions | bool | Triples
Form = TypeVar("Form", Solutions, bool, Triples)


BindTerm: TypeAlias = URIRef | RdfLiteral


def _rdf_term(name: str, value: Binding) -> BindTerm:
    """A binding as a typed rdflib term: ``str`` is a plain literal, IRIs are ``URIRef``."""
    where = f"bindings.{name}"
    if not VARIABLE_NAME.fullmatch(name):
        raise FedsimError(where, "not a SPARQL variable name", "give it without '?'")
    if isinstance(value, URIRef):
        try:
            ox.NamedNode(str(value))  # rdflib takes any text as an IRI; Oxigraph checks it
        except ValueError as exc:
            raise FedsimError(where, f"not an IRI: <{value}> ({exc})") from None
        return value
    if isinstance(value, RdfLiteral):
        return value
    if isinstance(value, bool | int | float | str):  # bool first: Literal(True) is xsd:boolean
        return RdfLiteral(value)
    raise FedsimError(
        where,
        f"expected str, int, float, bool, an rdflib URIRef or Literal, got {type(value).__name__}",
        "cast numpy scalars with int() or float(), wrap IRIs in rdflib.URIRef",
    )


# What may hide a brace or a keyword: comments, IRIs, variables, strings; then names and braces.
_TOKENS = re.compile(
    r"""(?P<skip>\#[^\n]*|<[^<>"{}|^`\\\x00-\x20]*>|[?$]\w+
       |\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|'''(?:[^'\\]|\\.|'(?!''))*'''
       |"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      |(?P<word>[A-Za-z_][\w.-]*(?::[\w.:%-]*)?|:[\w.:%-]*)
      |(?P<open>\{)|(?P<close>\})|(?P<paren>[()])""",
    re.VERBOSE,
)


def _group_start(query: str) -> int:
    """Where the query's outermost group pattern opens (just after its ``{``).

    That is the first top-level ``{`` of a SELECT, ASK or DESCRIBE, and of a CONSTRUCT the one
    after its template (the short form ``CONSTRUCT WHERE { … }`` admits triples only). Braces in
    parentheses (``SELECT (EXISTS { … } AS ?x)``) are expressions, not the group.
    """
    depth, parens, form, template_done = 0, 0, "", False
    for token in _TOKENS.finditer(query):
        kind, text = token.lastgroup, token.group().upper()
        if kind == "paren":
            parens += 1 if text == "(" else -1
        elif parens and depth == 0:
            continue
        elif kind == "word" and depth == 0 and not form and text in QUERY_FORMS:
            form = text
        elif kind == "word" and depth == 0 and form == "CONSTRUCT" and text == "WHERE":
            if not template_done:
                raise QueryError(
                    "bindings cannot go into CONSTRUCT WHERE { … }; "
                    "write CONSTRUCT { template } WHERE { pattern }"
                )
        elif kind == "open":
            if depth == 0 and form and (form != "CONSTRUCT" or template_done):
                return token.end()
            depth += 1
        elif kind == "close":
            depth -= 1
            template_done = template_done or (depth == 0 and form == "CONSTRUCT")
    raise QueryError("bindings need a query with a WHERE clause; found none")


def _with_values(query: str, terms: Mapping[str, BindTerm]) -> str:
    """``query`` with ``VALUES (?a ?b) { (ta tb) }`` first in its outermost group pattern.

    Each term is written by pyoxigraph's own serialiser (N-Triples escaping), never as raw text.
    No newline is added, so the parser's line numbers still point into the caller's query.
    """
    at = _group_start(query)
    names = " ".join(f"?{name}" for name in terms)
    values = " ".join(str(_rdflib_to_ox(term)) for term in terms.values())
    return f"{query[:at]} VALUES ({names}) {{ ({values}) }} {query[at:]}"


def _from_rdflib(node: Node) -> Term:
    if isinstance(node, URIRef):
        return Term("uri", str(node))
    if isinstance(node, BNode):
        return Term("bnode", str(node))
    if isinstance(node, RdfLiteral):
        datatype = str(node.datatype) if node.datatype is not None else None
        return Term(
            "literal", str(node), None if datatype in PLAIN_TYPES else datatype, node.language
        )
    raise TypeError(f"unexpected rdflib node {node!r}")


def _from_ox(node: OxTerm) -> Term:
    if isinstance(node, ox.Literal):  # the common case first: this runs per value of every row
        datatype = node.datatype.value
        if datatype == RDF_LANG_STRING:
            return Term("literal", node.value, None, node.language)
        return Term("literal", node.value, None if datatype == XSD_STRING else datatype)
    if isinstance(node, ox.NamedNode):
        return Term("uri", node.value)
    if isinstance(node, ox.BlankNode):
        return Term("bnode", node.value)
    raise TypeError(f"unexpected pyoxigraph term {node!r}")  # RDF-star triples: not used here


def _ox_to_rdflib(node: OxTerm) -> Node:
    term = _from_ox(node)
    if term.kind == "uri":
        return URIRef(term.value)
    if term.kind == "bnode":
        return BNode(term.value)
    return RdfLiteral(term.value, lang=term.lang, datatype=term.datatype)


def _rdflib_to_ox(node: Node) -> ox.NamedNode | ox.BlankNode | ox.Literal:
    if isinstance(node, URIRef):
        return ox.NamedNode(str(node))
    if isinstance(node, BNode):
        return ox.BlankNode(str(node))
    if isinstance(node, RdfLiteral):
        if node.language:
            return ox.Literal(str(node), language=node.language)
        if node.datatype is not None:
            return ox.Literal(str(node), datatype=ox.NamedNode(str(node.datatype)))
        return ox.Literal(str(node))
    raise FedsimError("add_graph", f"cannot store {type(node).__name__} {node!r}", "")


def _turtle_error(where: str, line: int | None, message: str) -> FedsimError:
    located = f"{where}:{line}" if line is not None else where
    return FedsimError(located, f"Turtle syntax error: {message}", "fix the Turtle there")


class RegistryStore(ABC):
    """An RDF store the registry reads with SPARQL; use as a context manager or ``close()`` it."""

    kind: ClassVar[StoreKind]

    def load(self, paths: Iterable[Path]) -> None:
        """Add Turtle files; a syntax error names ``file:line``."""
        for path in paths:
            self._add_turtle(
                Path(path).read_text(encoding="utf-8"), str(path), Path(path).resolve()
            )

    def add_turtle(self, text: str, where: str = "turtle text") -> None:
        """Add Turtle text; ``where`` names it in a syntax error."""
        self._add_turtle(text, where, None)

    def execute(self, query: str, bindings: Mapping[str, Binding] | None = None) -> QueryResult:
        """Any query form: SELECT → ``Solutions``, ASK → bool, CONSTRUCT/DESCRIBE → ``Triples``.

        Bindings hold for the query's outermost group pattern, on both backends alike.
        """
        terms = {name: _rdf_term(name, value) for name, value in (bindings or {}).items()}
        if terms:
            _group_start(query)  # the same refusals on both backends (Oxigraph binds there)
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
        try:
            self._live.parse(data=text, format="turtle", publicID=base.as_uri() if base else None)
        except BadSyntax as exc:
            raise _turtle_error(where, exc.lines + 1, str(exc._why)) from None

    def _execute(self, query: str, terms: dict[str, BindTerm]) -> QueryResult:
        try:
            result = self._live.query(query, initBindings=terms)
        except Exception as exc:  # pyparsing's ParseException, or rdflib's on unknown prefixes
            raise QueryError(" ".join(str(exc).split())) from None
        if result.type == "ASK":
            return bool(result.askAnswer)
        if result.type in ("CONSTRUCT", "DESCRIBE"):
            assert result.graph is not None
            return Triples(iter(result.graph))
        names = [str(v) for v in result.vars or []]

        def rows() -> Iterator[dict[str, Term]]:
            for row in result:
                assert isinstance(row, ResultRow)  # a SELECT yields rows
                values = zip(names, row, strict=True)
                yield {name: _from_rdflib(node) for name, node in values if node is not None}

        return Solutions(names, rows())

    def add_graph(self, graph: Graph) -> None:
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


class OxigraphStore(RegistryStore):
    """A ``pyoxigraph.Store``: in memory, or on disk at ``path`` (one process at a time)."""

    kind = "oxigraph"

    def __init__(self, path: Path | None = None) -> None:
        self._store: ox.Store | None = ox.Store(str(path) if path is not None else None)
        self._persistent = path is not None

    @property
    def _live(self) -> ox.Store:
        if self._store is None:
            raise FedsimError("store", "the Oxigraph store is closed", "open it again")
        return self._store

    def _add_turtle(self, text: str, where: str, base: Path | None) -> None:
        try:  # one transaction: a file with an error adds nothing
            self._live.load(text, ox.RdfFormat.TURTLE, base_iri=base.as_uri() if base else None)
        except SyntaxError as exc:
            raise _turtle_error(where, exc.lineno, str(exc.msg)) from None

    def _execute(self, query: str, terms: dict[str, BindTerm]) -> QueryResult:
        # Not Store.query(substitutions=…): Oxigraph 0.5 (SEP-0007) takes only variables of the
        # SELECT projection there, and the registry binds others (?modelName in model-devices.rq).
        try:
            result = self._live.query(_with_values(query, terms) if terms else query)
        except SyntaxError as exc:
            raise QueryError(" ".join(str(exc).split())) from None
        if isinstance(result, ox.QueryBoolean):
            return bool(result)
        if isinstance(result, ox.QueryTriples):
            return Triples(
                (_ox_to_rdflib(t.subject), _ox_to_rdflib(t.predicate), _ox_to_rdflib(t.object))
                for t in result
            )
        names = [v.value for v in result.variables]

        def rows() -> Iterator[dict[str, Term]]:
            for solution in result:  # a solution iterates its values in the variables' order
                values = zip(names, solution, strict=True)
                yield {name: _from_ox(node) for name, node in values if node is not None}

        return Solutions(names, rows())

    def add_graph(self, graph: Graph) -> None:
        self._live.extend(
            ox.Quad(_rdflib_to_ox(s), _rdflib_to_ox(p), _rdflib_to_ox(o))  # type: ignore[arg-type]
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
