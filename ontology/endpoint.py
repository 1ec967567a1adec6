"""A read-only SPARQL 1.1 Protocol endpoint over a registry store, on the standard library only.

    server = serve(open_store("oxigraph"))      # server.url: http://127.0.0.1:<port>/sparql
    ...
    server.shutdown()

Queries come as ``GET /sparql?query=…``, as a form ``POST`` (``query=…``) or as a
``POST`` of ``application/sparql-query``. SELECT and ASK answer in SPARQL JSON (the default), XML or
(SELECT only) CSV, CONSTRUCT and DESCRIBE in Turtle or N-Triples, chosen by the Accept header.

Refused, with a plain-text reason: updates (``update=`` or ``application/sparql-update``: 403),
malformed queries (400, the parser's message), queries running past ``timeout_s`` or more than
``max_running`` queries at once (503), types the client cannot accept (406). Results longer than
``max_rows`` rows (or triples) are cut there and say so in ``X-Fedsim-Truncated: <rows kept>``.

Each query runs in a worker thread that the handler stops waiting for at ``timeout_s``. The worker
may finish in the background: a SELECT or CONSTRUCT stops at its next row, but neither rdflib nor
pyoxigraph can interrupt an evaluation, so an aggregate or a sort runs to its end, holding one of
the ``max_running`` slots until then. The memory store must not be written while it is served.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, TypeVar, cast
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr

from rdflib import Graph

from ontology.store import PREFIXES, QueryError, RdfTriple, RegistryStore, Solutions, Term

__all__ = ["ENDPOINT_PATH", "TRUNCATED_HEADER", "SparqlServer", "serve"]

ENDPOINT_PATH = "/sparql"
TRUNCATED_HEADER = "X-Fedsim-Truncated"
MAX_BODY_BYTES = 1 << 20  # a POSTed query longer than this is refused (413)
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
_LOG = logging.getLogger(__name__)
Item = TypeVar("Item")


class _HttpError(Exception):
    """An answer other than 200: its status and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class _Answer:
    """A query's result, materialised by the worker so that serialising it cannot block."""

    form: Literal["select", "ask", "graph"]
    variables: list[str] = field(default_factory=list)
    rows: list[dict[str, Term]] = field(default_factory=list)
    triples: list[RdfTriple] = field(default_factory=list)
    boolean: bool = False
    truncated: bool = False


def _take(items: Iterator[Item], limit: int, stop: threading.Event) -> tuple[list[Item], bool]:
    """Up to ``limit`` items and whether there were more; stops early once ``stop`` is set."""
    kept: list[Item] = []
    for item in items:
        if stop.is_set():  # the handler gave up waiting: stop at the next row
            break
        if len(kept) == limit:
            return kept, True
        kept.append(item)
    return kept, False


def _evaluate(store: RegistryStore, query: str, max_rows: int, stop: threading.Event) -> _Answer:
    result = store.execute(query)
    if isinstance(result, bool):
        return _Answer("ask", boolean=result)
    if isinstance(result, Solutions):
        rows, truncated = _take(result.rows, max_rows, stop)
        return _Answer("select", variables=result.variables, rows=rows, truncated=truncated)
    triples, truncated = _take(result.triples, max_rows, stop)
    return _Answer("graph", triples=triples, truncated=truncated)


class _Runner:
    """Runs queries in worker threads, at most ``max_running`` at once, each up to ``timeout_s``."""

    def __init__(self, store: RegistryStore, timeout_s: float, max_rows: int, max_running: int):
        self.store, self.timeout_s, self.max_rows = store, timeout_s, max_rows
        self.max_running = max_running
        self._slots = threading.BoundedSemaphore(max_running)

    def run(self, query: str) -> _Answer:
        if not self._slots.acquire(blocking=False):
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{self.max_running} queries are running (some may have timed out); retry later",
            )
        outcome: list[_Answer | Exception] = []
        done, stop = threading.Event(), threading.Event()

        def work() -> None:
            try:
                outcome.append(_evaluate(self.store, query, self.max_rows, stop))
            except Exception as exc:  # handed to the waiting handler
                outcome.append(exc)
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=work, name="fedsim-sparql-query", daemon=True).start()
        if not done.wait(self.timeout_s):
            stop.set()
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the query ran past the endpoint's {self.timeout_s:g} s limit; "
                "narrow it (LIMIT, more bound terms) or ask for a longer timeout",
            )
        if isinstance(outcome[0], QueryError):
            raise _HttpError(HTTPStatus.BAD_REQUEST, outcome[0].what)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck on a slow client never blocks shutdown
    runner: _Runner


class _Handler(BaseHTTPRequestHandler):
    server_version = "fedsim-sparql/1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._guarded(lambda: self._query(parse_qs(url.query, keep_blank_values=True)), url.path)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self._guarded(lambda: self._post(parse_qs(url.query, keep_blank_values=True)), url.path)

    def do_PUT(self) -> None:
        reason = b"read-only endpoint: use GET or POST\n"
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, reason, PLAIN, {"Allow": "GET, POST"})

    def do_DELETE(self) -> None:
        self.do_PUT()

    def do_PATCH(self) -> None:
        self.do_PUT()

    def _guarded(self, action: Callable[[], None], path: str) -> None:
        try:
            if path != ENDPOINT_PATH:
                raise _HttpError(
                    HTTPStatus.NOT_FOUND, f"no such resource; the endpoint is {ENDPOINT_PATH}"
                )
            action()
        except _HttpError as error:
            self._send(error.status, f"{error.reason}\n".encode(), PLAIN)
        except Exception as exc:
            _LOG.exception("SPARQL endpoint: query failed")
            body = f"internal error: {type(exc).__name__}: {exc}\n".encode()
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, body, PLAIN)

    def _post(self, params: dict[str, list[str]]) -> None:
        content_type = self.headers.get_content_type()
        if content_type == "application/sparql-update":
            raise _HttpError(HTTPStatus.FORBIDDEN, "read-only endpoint: SPARQL updates are refused")
        try:
            body = self._body().decode(self.headers.get_content_charset("utf-8"))
        except (LookupError, UnicodeDecodeError) as exc:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"cannot decode the body: {exc}") from None
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(body, keep_blank_values=True)
            self._query({**params, **{k: params.get(k, []) + v for k, v in form.items()}})
        elif content_type == "application/sparql-query":
            if "query" in params:
                raise _HttpError(HTTPStatus.BAD_REQUEST, "query both in the URL and in the body")
            self._query({**params, "query": [body]})
        else:
            raise _HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"cannot read a {content_type} body; send application/x-www-form-urlencoded "
                "(query=...) or application/sparql-query",
            )

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
        if int(length) > MAX_BODY_BYTES:
            raise _HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"query over {MAX_BODY_BYTES} bytes"
            )
        return self.rfile.read(int(length))

    def _query(self, params: dict[str, list[str]]) -> None:
        if "update" in params:
            raise _HttpError(HTTPStatus.FORBIDDEN, "read-only endpoint: SPARQL updates are refused")
        if any(params.get(p) for p in ("default-graph-uri", "named-graph-uri")):
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, "dataset parameters are not supported: one default graph"
            )
        queries = params.get("query", [])
        if len(queries) != 1:
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, f"expected one query parameter, got {len(queries)}"
            )
        answer = cast(_Server, self.server).runner.run(queries[0])
        offers = OFFERS[answer.form]
        media_type = _negotiate(self.headers.get("Accept"), offers)
        if media_type is None:
            raise _HttpError(
                HTTPStatus.NOT_ACCEPTABLE,
                f"a {FORM_NAMES[answer.form]} result can be sent as {', '.join(offers)}",
            )
        extra = (
            {TRUNCATED_HEADER: str(len(answer.rows) + len(answer.triples))}
            if answer.truncated
            else {}
        )
        self._send(
            HTTPStatus.OK, SERIALIZERS[media_type](answer), f"{media_type}; charset=utf-8", extra
        )

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        _LOG.debug("%s " + format, self.address_string(), *args)


class SparqlServer:
    """A running endpoint: query ``url``; ``shutdown()`` stops it (also on leaving a ``with``)."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="fedsim-sparql-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{ENDPOINT_PATH}"

    def shutdown(self) -> None:
        """Stop serving and close the socket; query workers still running finish on their own."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> SparqlServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def serve(
    store: RegistryStore,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 10.0,
    max_rows: int = 10_000,
    max_running: int = 4,
) -> SparqlServer:
    """Serve ``store`` read-only at ``http://host:port/sparql`` (port 0: a free one) in a thread."""
    if timeout_s <= 0 or max_rows < 1 or max_running < 1:
        raise ValueError(
            f"timeout_s > 0, max_rows >= 1 and max_running >= 1 expected, got "
            f"{timeout_s}, {max_rows}, {max_running}"
        )
    httpd = _Server((host, port), _Handler)
    httpd.runner = _Runner(store, timeout_s, max_rows, max_running)
    return SparqlServer(httpd)
