"""W3C WoT Thing Descriptions (TD 1.1, JSON-LD) of fleet devices and device profiles.

``export_td`` writes the thing's description as TD metadata: the TD's own terms (``id``, ``title``,
``@type`` with ``Thing``, a ``nosec`` security definition) and every triple of the thing as a
``prefix:term`` key, so a TD consumer sees a valid TD and ``import_td`` gets the triples back.

What is exported (``exported_triples``): the thing's concise bounded description, i.e. every triple
whose subject is the thing and, recursively, every triple of a blank node reached as an object
(links, memory nodes, hosted sensors); IRIs reached as objects (the profile, sensor classes,
units) are named, not described. Triples in the TD's own namespaces are left out both ways.

The TD has no interaction affordances (``properties``): a device's memory, clock and links are
static metadata with no endpoint to read them from, so a ``form`` would invent one.

TD JSON-LD parses offline: ``td_to_rdf`` resolves the TD 1.1 context URL to the copy shipped in
``ontology/standards/wot-td/`` (W3C files with their licence and source) and refuses any other
remote context, so no TD is ever fetched; the JSON Schema and SHACL checks read the same folder.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema
from rdflib import RDF, RDFS, BNode, Graph, Literal, URIRef
from rdflib.namespace import XSD
from rdflib.term import Node

from fedsim.core.errors import FedsimError, did_you_mean
from ontology.validate import PREFIXES, load_turtle, validate
from ontology.vocab import FEDSIM

__all__ = [
    "TD_CONTEXT",
    "TD_NAMESPACES",
    "check_td",
    "export_td",
    "exported_triples",
    "import_td",
    "td_json_schema",
    "td_to_rdf",
]

STANDARDS = Path(__file__).resolve().parent / "standards" / "wot-td"  # W3C files: package data
TD_CONTEXT = "https://www.w3.org/2022/wot/td/v1.1"
TD_NAMESPACES = (  # the TD's own vocabularies: TD structure, not the thing's description
    "https://www.w3.org/2019/wot/td#",
    "https://www.w3.org/2019/wot/hypermedia#",
    "https://www.w3.org/2019/wot/security#",
    "https://www.w3.org/2019/wot/json-schema#",
    "https://www.w3.org/2019/wot/tm#",
)
TD_THING = URIRef(TD_NAMESPACES[0] + "Thing")
KINDS = (FEDSIM.Device, FEDSIM.DeviceProfile)


def export_td(graph: Graph, iri: str) -> dict[str, Any]:
    """The TD 1.1 JSON-LD document of a fleet device or a device profile.

    ``iri`` is the thing's IRI, full or with a registry prefix (``device:kitchen-nano-3``,
    ``dev:pico``); it must be typed fedsim:Device or fedsim:DeviceProfile in ``graph``.
    """
    thing = _thing(graph, iri)
    triples = exported_triples(graph, thing)
    document: dict[str, Any] = {
        "@context": [TD_CONTEXT, dict(PREFIXES)],
        "@type": ["Thing", *sorted(_compact(t) for t in triples.objects(thing, RDF.type))],
        "id": str(thing),
        "title": _title(triples, thing),
        "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
        "security": ["nosec_sc"],
    }
    document.update(_JsonLd(triples).members(thing))
    return document


def import_td(document: Mapping[str, Any], where: str = "TD") -> Graph:
    """The fedsim description in a TD: ``exported_triples`` of its thing, TD terms left out.

    The document must satisfy the TD JSON Schema and describe a fedsim:Device or
    fedsim:DeviceProfile; ``where`` names it in errors (a file name, an URL).
    """
    problems = _schema_problems(document)
    if problems:
        pointer, problem = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        place = f"{where} at {pointer}" if pointer else where
        raise FedsimError(place, problem + more, _SCHEMA_FIX)
    parsed = td_to_rdf(document, where)
    things = [t for t in parsed.subjects(RDF.type, TD_THING) if isinstance(t, URIRef)]
    if len(things) != 1 or not any((things[0], RDF.type, kind) in parsed for kind in KINDS):
        raise FedsimError(
            f"{where} at /@type",
            "the TD is not of one thing with an id, typed fedsim:Device or fedsim:DeviceProfile",
            'give it "id": its registry IRI and "@type": ["Thing", "fedsim:Device"]',
        )
    thing = things[0]
    triples = exported_triples(parsed, thing)
    triples.remove((thing, RDF.type, TD_THING))
    return triples


def exported_triples(graph: Graph, thing: URIRef) -> Graph:
    """The thing's concise bounded description without TD-namespace triples (module docstring)."""
    found = Graph(bind_namespaces="core")
    for prefix, namespace in PREFIXES.items():
        found.bind(prefix, namespace)
    todo: list[Node] = [thing]
    seen: set[Node] = set()
    while todo:
        subject = todo.pop()
        seen.add(subject)
        for _, predicate, obj in graph.triples((subject, None, None)):
            if str(predicate).startswith(TD_NAMESPACES):
                continue
            found.add((subject, predicate, obj))
            if isinstance(obj, BNode) and obj not in seen:
                todo.append(obj)
    return found


def td_to_rdf(document: Mapping[str, Any], where: str = "TD") -> Graph:
    """The TD as RDF, parsed offline: the TD 1.1 context is read from the local standards copy.

    Any other remote context is refused (no network): inline it as an object.
    """
    contexts = document.get("@context")
    resolved = []
    for context in contexts if isinstance(contexts, list) else [contexts]:
        if context == TD_CONTEXT:
            resolved.append(_td_context())
        elif isinstance(context, dict):
            resolved.append(context)
        else:
            raise FedsimError(
                f"{where} at /@context",
                f"cannot resolve context {context!r} offline",
                f"use {TD_CONTEXT!r} and inline other contexts as objects",
            )
    offline = {**document, "@context": resolved}
    base = str(document.get("id", "urn:fedsim:td"))
    try:
        with warnings.catch_warnings():  # rdflib's own parser still builds a ConjunctiveGraph
            warnings.filterwarnings("ignore", "ConjunctiveGraph is deprecated", DeprecationWarning)
            return Graph().parse(data=json.dumps(offline), format="json-ld", base=base)
    except (ValueError, TypeError) as error:
        raise FedsimError(where, f"not valid JSON-LD: {error}") from None


def check_td(document: Mapping[str, Any]) -> list[str]:
    """Problems of a TD: the TD JSON Schema's (with ``td_json_schema``) and the TD SHACL shapes'."""
    problems = [f"{path or '/'}: {message}" for path, message in _schema_problems(document)]
    violations = validate(td_to_rdf(document), shapes=_td_shapes())
    return problems + [violation.line() for violation in violations]


@cache
def td_json_schema() -> dict[str, Any]:
    """The W3C TD JSON Schema, with the TD 1.1 rule for ``@context``.

    The shipped snapshot is of the W3C main branch, which drafts TD 2.0: its ``thing-context``
    accepts only ``https://www.w3.org/ns/wot-next/td``. A TD 1.1 document names the TD 1.1 context
    instead (first, possibly followed by prefix maps), as the TD 1.1 schema says; every other
    keyword is checked as the snapshot has it.
    """
    text = _standard("td-json-schema-validation.json").read_text(encoding="utf-8")
    schema = cast(dict[str, Any], json.loads(text))
    definitions = schema["definitions"]
    more = definitions["thing-context"]["anyOf"][1]["additionalItems"]
    td11 = {"$ref": "#/definitions/thing-context-td-uri-v1.1"}
    definitions["thing-context"] = {
        "anyOf": [td11, {"type": "array", "items": [td11], "additionalItems": more}]
    }
    return schema


_SCHEMA_FIX = "see the W3C TD 1.1 JSON Schema (ontology/standards/wot-td/)"


def _schema_problems(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(JSON pointer, problem) per JSON Schema error, sorted by pointer."""
    validator = jsonschema.Draft7Validator(td_json_schema())
    problems = []
    for error in validator.iter_errors(document):
        pointer = "".join(f"/{part}" for part in error.absolute_path)  # "" for the document
        combined = error.validator in ("anyOf", "oneOf")  # their message repeats the instance
        message = "matches none of the allowed forms" if combined else error.message
        problems.append((pointer, message))
    return sorted(problems)


@cache
def _td_context() -> dict[str, Any]:
    context = json.loads(_standard("td-context-1.1.jsonld").read_text(encoding="utf-8"))["@context"]
    return cast(dict[str, Any], context)


@cache
def _td_shapes() -> Graph:
    return load_turtle(_standard("td-validation.ttl"))


def _standard(name: str) -> Path:
    path = STANDARDS / name
    if not path.is_file():
        raise FedsimError(
            str(path),
            "W3C TD file not found (it ships with fedsim)",
            "restore ontology/standards/wot-td/ from the repository or reinstall fedsim",
        )
    return path


def _thing(graph: Graph, iri: str) -> URIRef:
    prefix, _, local = iri.partition(":")
    thing = URIRef(PREFIXES[prefix] + local if prefix in PREFIXES else iri)
    if any((thing, RDF.type, kind) in graph for kind in KINDS):
        return thing
    known = [_compact(s) for kind in KINDS for s in graph.subjects(RDF.type, kind)]
    raise FedsimError(
        iri,
        f"no fedsim:Device or fedsim:DeviceProfile with this IRI{did_you_mean(iri, known)}",
        "name a device (device:<name>) or a profile (dev:<name>) of the graph",
    )


def _title(graph: Graph, thing: URIRef) -> str:
    for predicate in (FEDSIM.deviceName, RDFS.label, FEDSIM.profileName):
        value = graph.value(thing, predicate)
        if value is not None:
            return str(value)
    return _compact(thing)


def _compact(iri: Node) -> str:
    """``prefix:name`` for an IRI under a registry prefix, else the IRI itself."""
    text = str(iri)
    for prefix, namespace in PREFIXES.items():
        if text.startswith(namespace) and "/" not in text[len(namespace) :]:
            return f"{prefix}:{text[len(namespace) :]}"
    return text


class _JsonLd:
    """JSON-LD for the triples of a thing: blank nodes nest, the rest are values.

    A blank node reached twice (or on a cycle) is nested once with an ``@id`` of ``_:bN`` and
    referenced by it afterwards, so the document gives back the same graph.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        uses = Counter(o for o in graph.objects() if isinstance(o, BNode))
        shared = [node for node, count in uses.items() if count > 1]
        self.labels = {node: f"_:b{i}" for i, node in enumerate(shared)}
        self.done: set[BNode] = set()

    def members(self, subject: Node) -> dict[str, Any]:
        """``prefix:term`` key → value (a list when several) for the subject's non-type triples."""
        grouped: dict[str, list[Any]] = {}
        for predicate, obj in self.graph.predicate_objects(subject):
            if predicate != RDF.type:
                grouped.setdefault(_compact(predicate), []).append(self.value(obj))
        members = {}
        for key, values in sorted(grouped.items()):  # the same graph gives the same text
            values.sort(key=lambda value: json.dumps(value, sort_keys=True))
            members[key] = values[0] if len(values) == 1 else values
        return members

    def value(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return _literal(node)
        if not isinstance(node, BNode):
            return {"@id": _compact(node)}
        label = self.labels.get(node)
        if node in self.done:
            return {"@id": label}
        self.done.add(node)
        nested: dict[str, Any] = {"@id": label} if label else {}
        types = sorted(_compact(t) for t in self.graph.objects(node, RDF.type))
        if types:
            nested["@type"] = types[0] if len(types) == 1 else types
        return nested | self.members(node)


def _literal(literal: Literal) -> Any:
    """A JSON value that JSON-LD turns back into the same literal (lexical form kept)."""
    lexical, datatype = str(literal), literal.datatype
    if literal.language:
        return {"@value": lexical, "@language": literal.language}
    if datatype is None:
        return lexical
    if datatype == XSD.integer and not literal.ill_typed and str(int(lexical)) == lexical:
        return int(lexical)  # JSON-LD writes a JSON integer back as xsd:integer, canonically
    if datatype == XSD.boolean and lexical in ("true", "false"):
        return lexical == "true"
    return {"@value": lexical, "@type": _compact(datatype)}  # decimals: a JSON 64.0 is a double
