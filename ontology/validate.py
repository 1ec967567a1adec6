"""SHACL validation of registry descriptions, with one located line per problem.

``load_turtle`` reads Turtle files and reports a syntax error as ``file:line``; ``validate`` checks
a graph against the shapes in ``shapes/fedsim-shapes.ttl`` and returns ``Violation``s that name the
node, the property, the offending value and a fix, e.g.::

    dev:nano33-ble-sense fedsim:sramBytes = "256 KB": wrong datatype: RAM is exactly one
    xsd:integer number of bytes > 0; write an xsd:integer number of bytes, e.g. ...

A device names its profile (``fedsim:hasProfile``), which must be in the validated graph: validate
devices together with the catalog (``validate_files(paths, with_catalog=True)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal as TypingLiteral
from typing import cast

from rdflib import RDF, RDFS, BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import SH, XSD, NamespaceManager
from rdflib.plugins.parsers.notation3 import BadSyntax
from rdflib.term import Node

from fedsim.core.errors import FedsimError
from fedsim.core.textfile import read_text
from ontology.store import TURTLE_BYTES
from ontology.vocab import FEDSIM, PREFIXES

__all__ = [
    "PREFIXES",
    "SHAPES_PATH",
    "VOCABULARY_PATH",
    "Severity",
    "Violation",
    "load_turtle",
    "validate",
    "validate_files",
]

HERE = Path(__file__).parent
SHAPES_PATH = HERE / "shapes" / "fedsim-shapes.ttl"
VOCABULARY_PATH = HERE / "fedsim.ttl"
CATALOG_DIR = HERE / "catalog"


FSH = Namespace("https://w3id.org/fedsim/shapes#")
SOSA = Namespace(PREFIXES["sosa"])

Severity = TypingLiteral["Violation", "Warning", "Info"]

# What went wrong, by SHACL constraint component; the shape's sh:message says what is expected.
# Earlier entries win when one value breaks several constraints of a shape ("256 KB" as sramBytes
# is both the wrong datatype and not > 0: the datatype is the news).
PROBLEMS: dict[str, str] = {
    "Datatype": "wrong datatype",
    "NodeKind": "wrong kind of node",
    "Class": "wrong class",
    "Node": "not valid",
    "In": "not an allowed value",
    "Pattern": "malformed",
    "MinLength": "too short",
    "MaxLength": "too long",
    "MinCount": "missing",
    "QualifiedMinCount": "missing",
    "MaxCount": "more than one value",
    "QualifiedMaxCount": "more than one value",
    "MinExclusive": "out of range",
    "MinInclusive": "out of range",
    "MaxExclusive": "out of range",
    "MaxInclusive": "out of range",
    "LessThan": "inconsistent",
    "LessThanOrEquals": "inconsistent",
    "HasValue": "missing value",
}
_RANK = {name: rank for rank, name in enumerate(PROBLEMS)}
_LOCAL = re.compile(r"[\w.\-]*")  # local names we shorten to prefix:name


@dataclass(frozen=True)
class Violation:
    """One SHACL result, with nodes named by the graph's prefixes.

    ``focus`` is the node the rule is about (a blank node is named by the node that links to it,
    e.g. ``dev:pico fedsim:hasLink [ a fedsim:DeviceLink ; fedsim:linkKind "serial" ]``);
    ``path`` the property ("" for a rule on the node itself); ``value`` the offending value in
    Turtle syntax, or None when a value is missing; ``message`` what went wrong and what is
    expected; ``fix`` how to repair it ("" when the shape does not say).
    """

    focus: str
    path: str
    value: str | None
    message: str
    severity: Severity = "Violation"
    fix: str = ""

    def line(self) -> str:
        """``focus path = value: message; fix`` as one line, prefixed when not a violation."""
        where = f"{self.focus} {self.path}" if self.path else self.focus
        if self.value is not None:
            where = f"{where} = {self.value}"
        text = f"{where}: {self.message}"
        if self.fix:
            text = f"{text}; {self.fix}"
        return text if self.severity == "Violation" else f"{self.severity.lower()}: {text}"


def load_turtle(paths: str | Path | Iterable[str | Path]) -> Graph:
    """One graph of the Turtle files; a syntax error is a FedsimError at ``file:line``."""
    if isinstance(paths, str | Path):
        paths = [paths]
    graph = Graph(bind_namespaces="core")  # rdflib's defaults bind schema: to https://schema.org/
    for path in paths:
        text = read_text(Path(path), "Turtle", TURTLE_BYTES, "a Turtle file of devices")
        try:  # the file's own IRI stays the base of its relative IRIs
            graph.parse(data=text, format="turtle", publicID=Path(path).resolve().as_uri())
        except BadSyntax as error:
            line = cast(int, getattr(error, "lines", 0)) + 1
            why = cast(str, getattr(error, "_why", "bad syntax"))
            raise FedsimError(
                f"{path}:{line}",
                f"Turtle syntax error: {why}",
                "check this line and the end of the statement before it (each ends with ' .')",
            ) from None
    return graph


def validate(data_graph: Graph, shapes: Graph | None = None) -> list[Violation]:
    """The graph's violations of ``shapes`` (default: fedsim's), sorted; empty when it conforms.

    The vocabulary (fedsim.ttl) is mixed in only when the graph uses sensor classes and lacks it:
    the shapes check that a hosted node or a required sensor is a subclass of sosa:Sensor.
    """
    shapes_graph = _shapes() if shapes is None else shapes
    ont_graph = _vocabulary() if _needs_vocabulary(data_graph) else None
    import pyshacl  # ~24 MB and 0.35 s: only where shapes are checked, not where Turtle is read

    _, report, _ = pyshacl.validate(
        data_graph,
        shacl_graph=shapes_graph,
        ont_graph=ont_graph,
        inference="none",
        abort_on_first=False,
        allow_warnings=True,
    )
    return _violations(cast(Graph, report), shapes_graph, _Namer(data_graph))


def validate_files(
    paths: str | Path | Iterable[str | Path], *, with_catalog: bool = False
) -> list[Violation]:
    """``validate`` of the Turtle files together; ``with_catalog`` adds the shipped catalog.

    Each file is read once even if named twice or also in the catalog (blank nodes would double).
    """
    named = [paths] if isinstance(paths, str | Path) else list(paths)
    if with_catalog:
        named += sorted(CATALOG_DIR.glob("*.ttl"))
    seen: set[Path] = set()
    files = []
    for path in named:
        if Path(path).resolve() not in seen:
            seen.add(Path(path).resolve())
            files.append(path)
    return validate(load_turtle(files))


@cache
def _shapes() -> Graph:
    return load_turtle(SHAPES_PATH)


@cache
def _vocabulary() -> Graph:
    return load_turtle(VOCABULARY_PATH)


def _needs_vocabulary(graph: Graph) -> bool:
    if (FEDSIM.Microphone, RDFS.subClassOf, SOSA.Sensor) in graph:
        return False
    return any((None, used, None) in graph for used in (SOSA.hosts, FEDSIM.requiresSensor))


def _violations(report: Graph, shapes: Graph, namer: _Namer) -> list[Violation]:
    """One Violation per (focus, path, value, shape): the most telling constraint wins."""
    best: dict[tuple[Node | None, ...], tuple[int, Violation]] = {}
    for result in report.objects(None, SH.result):  # not the sh:detail results nested in them
        focus, path = report.value(result, SH.focusNode), report.value(result, SH.resultPath)
        value, shape = report.value(result, SH.value), report.value(result, SH.sourceShape)
        component = str(report.value(result, SH.sourceConstraintComponent) or "")
        component = component.removeprefix(str(SH)).removesuffix("ConstraintComponent")
        problem = PROBLEMS.get(component, component)
        if component == "MaxCount" and shape is not None and _forbids(shapes, shape):
            problem = "not allowed"
        rule = report.value(result, SH.resultMessage) or ""
        fix = ""
        if shape is not None:
            fix = str(report.value(shape, FSH.fix) or shapes.value(shape, FSH.fix) or "")
        severity = str(report.value(result, SH.resultSeverity) or SH.Violation)
        violation = Violation(
            focus=namer.node(focus) if focus is not None else "",
            path=namer.path(path),
            value=None if value is None else namer.term(value),
            message=f"{problem}: {rule}" if problem else str(rule),
            severity=cast(Severity, severity.removeprefix(str(SH))),
            fix=fix,
        )
        key = (focus, path, value, shape)
        rank = _RANK.get(component, len(_RANK))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, violation)
    found = [violation for _, violation in best.values()]
    return sorted(found, key=lambda v: (v.focus, v.path, v.value or "", v.message))


def _forbids(shapes: Graph, shape: Node) -> bool:
    """Whether the property shape says the property must be absent (sh:maxCount 0)."""
    limit = shapes.value(shape, SH.maxCount)
    return isinstance(limit, Literal) and limit.value == 0


def _plain(literal: Literal) -> str | None:
    """A well-formed number or boolean as Turtle writes it bare (64.0, 262144, true), else None."""
    if literal.ill_typed or literal.datatype not in (XSD.integer, XSD.decimal, XSD.boolean):
        return None
    lexical = str(literal)
    return lexical if literal.datatype != XSD.decimal or "." in lexical else None


class _Namer:
    """Short names for nodes: the registry's prefixes first, then the graph's own."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        prefixes = dict(PREFIXES)
        for prefix, uri in graph.namespaces():
            if prefix and prefix not in prefixes and str(uri) not in prefixes.values():
                prefixes[prefix] = str(uri)
        self.manager = NamespaceManager(Graph(bind_namespaces="none"), bind_namespaces="none")
        for prefix, namespace in prefixes.items():
            self.manager.bind(prefix, namespace)
        self.longest_first = sorted(prefixes.items(), key=lambda item: -len(item[1]))

    def iri(self, iri: URIRef) -> str:
        for prefix, namespace in self.longest_first:
            if iri.startswith(namespace) and _LOCAL.fullmatch(iri[len(namespace) :]):
                return f"{prefix}:{iri[len(namespace) :]}"
        return f"<{iri}>"

    def term(self, node: Node) -> str:
        """An IRI or literal as Turtle writes it; a blank node as ``[ a type ]``."""
        if isinstance(node, URIRef):
            return self.iri(node)
        if isinstance(node, Literal):
            return _plain(node) or node.n3(self.manager)
        types = sorted(self.term(t) for t in self.graph.objects(node, RDF.type))
        said = [f"a {', '.join(types)}"] if types else []
        said += [f"fedsim:linkKind {k.n3()}" for k in self.graph.objects(node, FEDSIM.linkKind)]
        return f"[ {' ; '.join(said)} ]" if said else "[]"

    def node(self, node: Node, depth: int = 0) -> str:
        """``term``, with a blank node prefixed by the node and property that reach it."""
        parent = None
        if isinstance(node, BNode) and depth < 3:
            parent = next(iter(self.graph.subject_predicates(node)), None)
        if parent is None:
            return self.term(node)
        where = f"{self.node(parent[0], depth + 1)} {self.iri(cast(URIRef, parent[1]))}"
        return f"{where} {self.term(node)}"

    def path(self, path: Node | None) -> str:
        if path is None:
            return ""
        return self.iri(path) if isinstance(path, URIRef) else "(a property path)"
