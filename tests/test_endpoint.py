"""The read-only SPARQL endpoint, queried with SPARQLWrapper (a stock client) and plain urllib."""

from __future__ import annotations

import csv
import io
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from rdflib import Graph
from SPARQLWrapper import CSV, JSON, POST, POSTDIRECTLY, TURTLE, URLENCODED, XML, SPARQLWrapper
from SPARQLWrapper.SPARQLExceptions import QueryBadFormed

from ontology.endpoint import TRUNCATED_HEADER, SparqlServer, serve
from ontology.registry import CATALOG_DIR
from ontology.store import STORES, RegistryStore, open_store
from ontology.synthetic import synthetic_fleet

KINDS = sorted(STORES)
MAX_ROWS = 50
PREFIX = "PREFIX fedsim: <https://w3id.org/fedsim/vocab#>\n"
NAMES = PREFIX + (
    "SELECT ?device ?name ?sram WHERE { ?device fedsim:deviceName ?name ;"
    " fedsim:hasProfile/fedsim:sramBytes ?sram } ORDER BY ?name LIMIT 5"
)
FIVE = [f"synth-{i:06d}" for i in range(1, 6)]
SLOW = "SELECT ?a ?c ?e WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f }"  # a cross product


def _store(kind: str, devices: int) -> RegistryStore:
    store = open_store(kind)  # type: ignore[arg-type]  # kind comes from STORES
    store.load(sorted(CATALOG_DIR.glob("*.ttl")))
    store.add_turtle(synthetic_fleet(devices, seed=5))
    return store


@pytest.fixture(scope="module", params=KINDS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[RegistryStore, SparqlServer]]:
    with _store(request.param, 30) as store, serve(store, max_rows=MAX_ROWS) as server:
        yield store, server


@pytest.fixture
def client(served: tuple[RegistryStore, SparqlServer]) -> SPARQLWrapper:
    return SPARQLWrapper(served[1].url)


def _ask(wrapper: SPARQLWrapper, query: str, fmt: str) -> Any:
    wrapper.setQuery(query)
    wrapper.setReturnFormat(fmt)
    return wrapper.query().convert()


def _http(
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """Status, headers and body text of one request, errors included."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def _get(server: SparqlServer, **params: str) -> str:
    return f"{server.url}?{urllib.parse.urlencode(params)}"


def test_select_as_json_is_what_the_store_selects(
    client: SPARQLWrapper, served: tuple[RegistryStore, SparqlServer]
) -> None:
    result = _ask(client, NAMES, JSON)

    bindings = result["results"]["bindings"]
    assert result["head"]["vars"] == ["device", "name", "sram"]
    assert [b["name"]["value"] for b in bindings] == FIVE
    assert bindings[0]["device"] == {
        "type": "uri",
        "value": "https://w3id.org/fedsim/device/synth-000001",
    }
    sram = bindings[0]["sram"]
    assert sram["datatype"] == "http://www.w3.org/2001/XMLSchema#integer"
    assert [int(b["sram"]["value"]) for b in bindings] == [
        r["sram"] for r in served[0].select(NAMES)
    ]


def test_select_as_xml(client: SPARQLWrapper) -> None:
    document = _ask(client, NAMES, XML)

    names = [b.firstChild.firstChild.data for b in document.getElementsByTagName("binding")]
    assert [n for n in names if n.startswith("synth-")] == FIVE


def test_select_as_csv(client: SPARQLWrapper) -> None:
    text = _ask(client, NAMES, CSV).decode()

    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == FIVE
    assert rows[0]["device"] == "https://w3id.org/fedsim/device/synth-000001"


@pytest.mark.parametrize("encoding", [URLENCODED, POSTDIRECTLY])
def test_post_as_a_form_and_as_a_query_body(client: SPARQLWrapper, encoding: str) -> None:
    client.setMethod(POST)
    client.setRequestMethod(encoding)

    result = _ask(client, NAMES, JSON)

    assert [b["name"]["value"] for b in result["results"]["bindings"]] == FIVE


@pytest.mark.parametrize("fmt", [JSON, XML])
def test_ask(client: SPARQLWrapper, fmt: str) -> None:
    yes = _ask(client, PREFIX + 'ASK { ?d fedsim:deviceName "synth-000003" }', fmt)
    no = _ask(client, PREFIX + 'ASK { ?d fedsim:deviceName "synth-999999" }', fmt)

    if fmt == XML:
        yes, no = (d.getElementsByTagName("boolean")[0].firstChild.data for d in (yes, no))
        assert (yes, no) == ("true", "false")
    else:
        assert (yes["boolean"], no["boolean"]) == (True, False)


def test_construct_as_turtle(client: SPARQLWrapper) -> None:
    query = PREFIX + "CONSTRUCT { ?d fedsim:deviceName ?n } WHERE { ?d fedsim:deviceName ?n }"

    graph = Graph().parse(data=_ask(client, query, TURTLE), format="turtle")

    assert len(graph) == 30


def test_construct_as_n_triples(served: tuple[RegistryStore, SparqlServer]) -> None:
    query = PREFIX + "CONSTRUCT { ?d fedsim:deviceName ?n } WHERE { ?d fedsim:deviceName ?n }"

    status, headers, body = _http(
        _get(served[1], query=query), headers={"Accept": "application/n-triples"}
    )

    assert status == 200
    assert headers["Content-Type"].startswith("application/n-triples")
    assert len(Graph().parse(data=body, format="nt")) == 30


@pytest.mark.parametrize(
    ("data", "headers", "params"),
    [
        (b"update=DROP+ALL", {"Content-Type": "application/x-www-form-urlencoded"}, {}),
        (b"DROP ALL", {"Content-Type": "application/sparql-update"}, {}),
        (None, {}, {"update": "DROP ALL"}),
    ],
    ids=["form", "body", "get"],
)
def test_updates_are_refused_and_change_nothing(
    served: tuple[RegistryStore, SparqlServer],
    data: bytes | None,
    headers: dict[str, str],
    params: dict[str, str],
) -> None:
    store, server = served
    before = store.triples_count()

    status, _, body = _http(_get(server, **params) if params else server.url, data, headers)

    assert (status, body) == (403, "read-only endpoint: SPARQL updates are refused\n")
    assert store.triples_count() == before


def test_sparqlwrapper_updates_are_refused(client: SPARQLWrapper) -> None:
    client.setMethod(POST)
    client.setQuery("INSERT DATA { <http://a/x> <http://a/y> <http://a/z> }")

    with pytest.raises(urllib.error.HTTPError, match="403"):
        client.query()


def test_a_malformed_query_is_400_with_the_parsers_message(client: SPARQLWrapper) -> None:
    with pytest.raises(QueryBadFormed, match=r"SPARQL syntax error: .+"):
        _ask(client, "SELECT ?x WHERE { ?x ", JSON)


def test_long_results_are_truncated_and_say_so(served: tuple[RegistryStore, SparqlServer]) -> None:
    wrapper = SPARQLWrapper(served[1].url)
    wrapper.setQuery("SELECT * WHERE { ?s ?p ?o }")
    wrapper.setReturnFormat(JSON)

    result = wrapper.query()
    rows: Any = result.convert()
    short = _http(_get(served[1], query=NAMES))

    assert result.info()[TRUNCATED_HEADER.lower()] == str(MAX_ROWS)
    assert len(rows["results"]["bindings"]) == MAX_ROWS
    assert TRUNCATED_HEADER not in short[1]


@pytest.mark.parametrize(
    ("method", "path", "data", "headers", "status", "reason"),
    [
        ("GET", "/other", None, {}, 404, "the endpoint is /sparql"),
        ("GET", "/sparql", None, {}, 400, "expected one query parameter, got 0"),
        ("GET", "/sparql?query=ASK{}", None, {"Accept": "text/csv"}, 406, "ASK result can be"),
        ("POST", "/sparql", b"x", {"Content-Type": "text/plain"}, 415, "cannot read a text/plain"),
        ("PUT", "/sparql", b"x", {}, 405, "read-only endpoint: use GET or POST"),
    ],
)
def test_other_mistakes_have_their_status(
    served: tuple[RegistryStore, SparqlServer],
    method: str,
    path: str,
    data: bytes | None,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    url = served[1].url.removesuffix("/sparql") + path

    got, _, body = _http(url, data, headers, method)

    assert got == status
    assert reason in body


def _query_workers() -> int:
    return sum(t.name == "fedsim-sparql-query" for t in threading.enumerate())


@pytest.mark.parametrize("kind", KINDS)
def test_a_query_past_the_timeout_is_503_and_its_worker_stops(kind: str) -> None:
    with (
        _store(kind, 10) as store,
        serve(store, timeout_s=0.05, max_rows=10**9) as server,
    ):
        start = time.perf_counter()
        status, _, body = _http(_get(server, query=SLOW))
        waited = time.perf_counter() - start
        deadline = time.monotonic() + 10
        while _query_workers() and time.monotonic() < deadline:
            time.sleep(0.02)

    assert status == 503
    assert "ran past the endpoint's 0.05 s limit" in body
    assert waited < 5
    assert _query_workers() == 0  # it stopped at its next row, not at the end of the product
