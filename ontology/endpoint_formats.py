"""What the SPARQL endpoint answers in: content negotiation and the result serialisers.

SELECT and ASK answer in SPARQL JSON (the default), XML or (SELECT only) CSV, CONSTRUCT and
DESCRIBE in Turtle or N-Triples, chosen by the Accept header. ``reply`` runs in a query worker
(ontology/endpoint_workers.py): the server process only moves the bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal, TypeVar
from xml.sax.saxutils import escape, quoteattr

from rdflib import Graph

from ontology.store import PREFIXES, QueryResult, RdfTriple, Solutions, Term

__all__ = ["PLAIN", "TRUNCATED_HEADER", "Reply", "reply"]

TRUNCATED_HEADER = "X-Fedsim-Truncated"
JSON, XML, CSV = "application/sparql-results+json", "application/sparql-results+xml", "text/csv"
TURTLE, NTRIPLES = "text/turtle", "application/n-triples"
ALIASES = {"application/json": JSON, "application/xml": XML, "application/turtle": TURTLE}
OFFERS = {  # per query form, what the endpoint can answer in; the first is the default
    "select": [JSON, XML, CSV],
    "ask": [JSON, XML],
    "graph": [TURTLE, NTRIPLES],
}
FORM_NAMES = {"select": "SELECT", "ask": "ASK", "graph": "CONSTRUCT or DESCRIBE"}
PLAIN = "text/plain; charset=utf-8"
RESULTS_NS = "http://www.w3.org/2005/sparql-results#"
Item = TypeVar("Item")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, ready to send: it crosses from a worker process as a pickle."""

    status: int
    body: bytes
    content_type: str = PLAIN
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def plain(cls, status: HTTPStatus, reason: str) -> Reply:
        """A refusal or failure: a one-line reason in plain text, never an exception's text."""
        return cls(int(status), f"{reason}\n".encode())


@dataclass
class _Answer:
    """A query's result, cut at ``max_rows`` rows (or triples)."""

    form: Literal["select", "ask", "graph"]
    variables: list[str] = field(default_factory=list)
    rows: list[dict[str, Term]] = field(default_factory=list)
    triples: list[RdfTriple] = field(default_factory=list)
    boolean: bool = False
    truncated: bool = False


def _take(items: Iterator[Item], limit: int) -> tuple[list[Item], bool]:
    """Up to ``limit`` items and whether there were more."""
    kept: list[Item] = []
    for item in items:
        if len(kept) == limit:
            return kept, True
        kept.append(item)
    return kept, False


def _answer(result: QueryResult, max_rows: int) -> _Answer:
    if isinstance(result, bool):
        return _Answer("ask", boolean=result)
    if isinstance(result, Solutions):
        rows, truncated = _take(result.rows, max_rows)
        return _Answer("select", variables=result.variables, rows=rows, truncated=truncated)
    triples, truncated = _take(result.triples, max_rows)
    return _Answer("graph", triples=triples, truncated=truncated)


def reply(result: QueryResult, accept: str | None, max_rows: int) -> Reply:
    """``result`` serialised as the client accepts best (406 if it accepts nothing offered)."""
    answer = _answer(result, max_rows)
    offers = OFFERS[answer.form]
    media_type = _negotiate(accept, offers)
    if media_type is None:
        return Reply.plain(
            HTTPStatus.NOT_ACCEPTABLE,
            f"a {FORM_NAMES[answer.form]} result can be sent as {', '.join(offers)}",
        )
    kept = len(answer.rows) + len(answer.triples)
    extra = {TRUNCATED_HEADER: str(kept)} if answer.truncated else {}
    body = SERIALIZERS[media_type](answer)
    return Reply(HTTPStatus.OK, body, f"{media_type}; charset=utf-8", extra)


def _accepted(header: str | None) -> list[str]:
    """The media ranges of an Accept header, best first, q=0 left out; ``*/*`` when absent."""
    ranges = []
    for position, part in enumerate((header or "*/*").split(",")):
        media_range, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media_range and q > 0:
            ranges.append((-q, position, ALIASES.get(media_range.lower(), media_range.lower())))
    return [media_range for _, _, media_range in sorted(ranges)]


def _negotiate(header: str | None, offers: list[str]) -> str | None:
    """The offered type the client accepts best (``offers[0]`` for ``*/*``), or None."""
    for media_range in _accepted(header):
        if media_range == "*/*":
            return offers[0]
        prefix = media_range.removesuffix("*")
        found = [
            t
            for t in offers
            if t == media_range or (prefix != media_range and t.startswith(prefix))
        ]
        if found:
            return found[0]
    return None


def _json_term(term: Term) -> dict[str, str]:
    out = {"type": term.kind, "value": term.value}
    if term.lang:
        out["xml:lang"] = term.lang
    elif term.datatype:
        out["datatype"] = term.datatype
    return out


def _json(answer: _Answer) -> bytes:
    if answer.form == "ask":
        return json.dumps({"head": {}, "boolean": answer.boolean}).encode()
    bindings = [{name: _json_term(t) for name, t in row.items()} for row in answer.rows]
    document = {"head": {"vars": answer.variables}, "results": {"bindings": bindings}}
    return json.dumps(document, ensure_ascii=False).encode()


def _xml_term(term: Term) -> str:
    if term.kind != "literal":
        return f"<{term.kind}>{escape(term.value)}</{term.kind}>"
    attribute = (
        f" xml:lang={quoteattr(term.lang)}"
        if term.lang
        else f" datatype={quoteattr(term.datatype)}"
        if term.datatype
        else ""
    )
    return f"<literal{attribute}>{escape(term.value)}</literal>"


def _xml(answer: _Answer) -> bytes:
    lines = ['<?xml version="1.0" encoding="utf-8"?>', f'<sparql xmlns="{RESULTS_NS}">']
    if answer.form == "ask":
        lines += ["<head/>", f"<boolean>{str(answer.boolean).lower()}</boolean>"]
    else:
        lines.append("<head>")
        lines += [f"<variable name={quoteattr(name)}/>" for name in answer.variables]
        lines += ["</head>", "<results>"]
        for row in answer.rows:
            cells = (
                f"<binding name={quoteattr(n)}>{_xml_term(t)}</binding>" for n, t in row.items()
            )
            lines.append(f"<result>{''.join(cells)}</result>")
        lines.append("</results>")
    lines.append("</sparql>")
    return "\n".join(lines).encode()


def _csv(answer: _Answer) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180, as SPARQL's CSV results
    writer.writerow(answer.variables)
    for row in answer.rows:
        terms = (row.get(name) for name in answer.variables)
        writer.writerow(
            "" if t is None else f"_:{t.value}" if t.kind == "bnode" else t.value for t in terms
        )
    return text.getvalue().encode()


def _graph(answer: _Answer, rdf_format: str) -> bytes:
    graph = Graph()
    for prefix, iri in PREFIXES.items():
        graph.bind(prefix, iri)
    for triple in answer.triples:
        graph.add(triple)
    return graph.serialize(format=rdf_format).encode()


SERIALIZERS: dict[str, Callable[[_Answer], bytes]] = {
    JSON: _json,
    XML: _xml,
    CSV: _csv,
    TURTLE: lambda answer: _graph(answer, "turtle"),
    NTRIPLES: lambda answer: _graph(answer, "nt"),
}
