"""RDF terms between rdflib, pyoxigraph and plain Python, for the registry's stores.

Query answers become plain values (IRIs as ``str``, literals as ``int``/``float``/``bool``/``str``
by datatype); bindings become typed terms, and on Oxigraph a ``VALUES`` row written by pyoxigraph's
own serialiser, placed first in the query's outermost group (``with_values``): never user text
spliced into a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias, TypeVar

import pyoxigraph as ox
from rdflib import BNode, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import RDF, XSD
from rdflib.term import Node

from fedsim.core.errors import FedsimError
from ontology.vocab import PREFIXES

__all__ = [
    "PREFIXES",
    "BindTerm",
    "Binding",
    "OxTerm",
    "QueryError",
    "QueryResult",
    "RdfTriple",
    "Row",
    "Solutions",
    "StoreKind",
    "Term",
    "Triples",
    "Value",
    "from_ox",
    "from_rdflib",
    "group_start",
    "ox_to_rdflib",
    "rdf_term",
    "rdflib_to_ox",
    "turtle_error",
    "with_values",
]

StoreKind = Literal["memory", "oxigraph"]
Value: TypeAlias = str | int | float | bool
Binding: TypeAlias = str | int | float | bool | URIRef | RdfLiteral
Row: TypeAlias = dict[str, Value]
RdfTriple: TypeAlias = tuple[Node, Node, Node]
OxTerm: TypeAlias = ox.NamedNode | ox.BlankNode | ox.Literal | ox.Triple

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


class Term(NamedTuple):
    """An RDF term as SPARQL results describe it; ``datatype`` is None for plain strings.

    A tuple, not a dataclass: the capability index hashes a few hundred thousand of them, and a
    tuple's hash and equality run in C.
    """

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


def rdf_term(name: str, value: Binding) -> BindTerm:
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
# A string that is not closed runs as far as it can (the parser refuses the query anyway): were it
# not matched, the scan would restart at every quote inside it, in time quadratic in the query.
_TOKENS = re.compile(
    r"""(?P<skip>\#[^\n]*|<[^<>"{}|^`\\\x00-\x20]*>|[?$]\w+
       |\"\"\"(?:[^"\\]|\\.|"(?!""))*+(?:\"\"\")?|'''(?:[^'\\]|\\.|'(?!''))*+(?:''')?
       |"(?:[^"\\\n]|\\.)*+"?|'(?:[^'\\\n]|\\.)*+'?)
      |(?P<word>[A-Za-z_][\w.-]*(?::[\w.:%-]*)?|:[\w.:%-]*)
      |(?P<open>\{)|(?P<close>\})|(?P<paren>[()])""",
    re.VERBOSE,
)


def group_start(query: str) -> int:
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


def with_values(query: str, terms: Mapping[str, BindTerm]) -> str:
    """``query`` with ``VALUES (?a ?b) { (ta tb) }`` first in its outermost group pattern.

    Each term is written by pyoxigraph's own serialiser (N-Triples escaping), never as raw text.
    No newline is added, so the parser's line numbers still point into the caller's query.
    """
    at = group_start(query)
    names = " ".join(f"?{name}" for name in terms)
    values = " ".join(str(rdflib_to_ox(term)) for term in terms.values())
    return f"{query[:at]} VALUES ({names}) {{ ({values}) }} {query[at:]}"


def from_rdflib(node: Node) -> Term:
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


def from_ox(node: OxTerm) -> Term:
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


def ox_to_rdflib(node: OxTerm) -> Node:
    term = from_ox(node)
    if term.kind == "uri":
        return URIRef(term.value)
    if term.kind == "bnode":
        return BNode(term.value)
    return RdfLiteral(term.value, lang=term.lang, datatype=term.datatype)


def rdflib_to_ox(node: Node) -> ox.NamedNode | ox.BlankNode | ox.Literal:
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


def turtle_error(where: str, line: int | None, message: str) -> FedsimError:
    located = f"{where}:{line}" if line is not None else where
    return FedsimError(located, f"Turtle syntax error: {message}", "fix the Turtle there")
