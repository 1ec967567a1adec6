"""The registry store: one API, the same answers on rdflib (memory) and Oxigraph."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from rdflib import Graph, URIRef
from rdflib import Literal as RdfLiteral

from fedsim.core.errors import FedsimError
from ontology.registry import CATALOG_DIR
from ontology.store import STORES, Binding, QueryError, RegistryStore, Row, Term, Value, open_store
from ontology.synthetic import SENSORS, synthetic_fleet, synthetic_model
from ontology.terms import group_start

KINDS = sorted(STORES)
CATALOG = sorted(CATALOG_DIR.glob("*.ttl"))
FLEET_SIZE = 300
FEDSIM = "https://w3id.org/fedsim/vocab#"
PREFIX = f"PREFIX fedsim: <{FEDSIM}>\nPREFIX sosa: <http://www.w3.org/ns/sosa/>\n"
TEST_MODEL = "test-kws"  # needs a microphone, 64 KiB RAM and 512 KiB flash
MODEL_TTL = synthetic_model(TEST_MODEL, ["Microphone"], 64 * 1024, 512 * 1024)

# Devices that can run a model (ontology/README.md): every required sensor class hosted by the
# device or its profile, free RAM and flash (the device's, else the profile's) at least the need.
MATCH = (
    PREFIX
    + """
SELECT ?name WHERE {
  ?model fedsim:modelName ?modelName ;
         fedsim:inferenceRamBytes ?needRam ; fedsim:inferenceFlashBytes ?needFlash .
  ?device a fedsim:Device ; fedsim:deviceName ?name ; fedsim:hasProfile ?p .
  ?p fedsim:sramBytes ?sram ; fedsim:flashBytes ?pflash .
  OPTIONAL { ?device fedsim:freeSramBytes ?freeRam }
  OPTIONAL { ?device fedsim:freeFlashBytes ?freeFlash }
  FILTER (COALESCE(?freeRam, ?sram) >= ?needRam && COALESCE(?freeFlash, ?pflash) >= ?needFlash)
  FILTER NOT EXISTS {
    ?model fedsim:requiresSensor ?kind .
    FILTER NOT EXISTS { ?device sosa:hosts/a ?kind }
    FILTER NOT EXISTS { ?p sosa:hosts/a ?kind }
  }
}"""
)
INVENTORY = (
    PREFIX
    + """
SELECT ?profile ?site (COUNT(?device) AS ?devices) WHERE {
  ?device a fedsim:Device ; fedsim:hasProfile/fedsim:profileName ?profile ; fedsim:fleetName ?site .
} GROUP BY ?profile ?site"""
)
PROFILES = (
    PREFIX
    + """
SELECT ?p ?name ?cores ?clock ?sram ?fpu WHERE {
  ?p a fedsim:DeviceProfile ; fedsim:profileName ?name ; fedsim:coreCount ?cores ;
     fedsim:clockMHz ?clock ; fedsim:sramBytes ?sram ; fedsim:hasFPU ?fpu .
}"""
)
DEVICE_BY_NAME = PREFIX + "SELECT ?device ?name WHERE { ?device fedsim:deviceName ?name }"


def _filled(kind: str) -> RegistryStore:
    store = open_store(kind)  # type: ignore[arg-type]  # kind comes from STORES
    store.load(CATALOG)
    store.add_turtle(synthetic_fleet(FLEET_SIZE, seed=3), "synthetic fleet")
    store.add_turtle(MODEL_TTL, "test model")
    return store


@pytest.fixture(scope="module", params=KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[RegistryStore]:
    """A catalog + synthetic fleet store per backend, shared by the read-only tests."""
    with _filled(request.param) as filled:
        yield filled


@pytest.fixture(scope="module")
def both() -> Iterator[dict[str, RegistryStore]]:
    stores = {kind: _filled(kind) for kind in KINDS}
    yield stores
    for opened in stores.values():
        opened.close()


@pytest.fixture(params=KINDS)
def empty(request: pytest.FixtureRequest) -> Iterator[RegistryStore]:
    with open_store(request.param) as opened:
        yield opened


def _sorted(rows: list[Row]) -> list[list[tuple[str, object]]]:
    return sorted(sorted(row.items()) for row in rows)


def test_catalog_and_fleet_load_the_same_triples_on_every_backend(
    both: dict[str, RegistryStore],
) -> None:
    counts = {kind: s.triples_count() for kind, s in both.items()}

    assert len(set(counts.values())) == 1, counts
    assert counts[KINDS[0]] > FLEET_SIZE * 4  # type, name, profile, site per device at least


@pytest.mark.parametrize("query", [MATCH, INVENTORY, PROFILES, DEVICE_BY_NAME])
def test_every_backend_returns_the_same_rows(both: dict[str, RegistryStore], query: str) -> None:
    bindings = {"modelName": TEST_MODEL} if "?modelName" in query else None

    rows = {kind: _sorted(s.select(query, bindings)) for kind, s in both.items()}

    assert rows[KINDS[0]], "the query should match something"
    assert all(r == rows[KINDS[0]] for r in rows.values())


def test_select_gives_plain_python_values_by_datatype(store: RegistryStore) -> None:
    rows = store.select(PROFILES, {"name": "pico"})

    assert rows == [
        {
            "p": "https://w3id.org/fedsim/catalog/device/pico",
            "name": "pico",
            "cores": 2,
            "clock": 133.0,
            "sram": 270336,
            "fpu": False,
        }
    ]
    assert [type(v) for v in rows[0].values()] == [str, str, int, float, int, bool]


def test_bindings_of_every_type_select_the_same_profile(store: RegistryStore) -> None:
    pico = URIRef("https://w3id.org/fedsim/catalog/device/pico")
    clock = RdfLiteral(Decimal("133.0"))  # the catalog's clocks are xsd:decimal
    by_kind: list[dict[str, Binding]] = [
        {"name": "pico"},
        {"sram": 270336},
        {"p": pico},
        {"clock": clock},
    ]

    found = [[r["name"] for r in store.select(PROFILES, b)] for b in by_kind]
    without_fpu = {r["name"] for r in store.select(PROFILES, {"fpu": False})}

    assert found == [["pico"]] * len(by_kind)
    assert without_fpu == {"nucleo-g0b1re", "pico"}  # the catalog's Cortex-M0+ boards


def test_a_float_binding_is_an_xsd_double_and_matches_no_decimal(store: RegistryStore) -> None:
    # Patterns match terms, not values: 133.0 (xsd:double) is not "133.0"^^xsd:decimal.
    assert store.select(PROFILES, {"clock": 133.0}) == []


def test_capability_match_agrees_with_a_python_oracle(store: RegistryStore) -> None:
    facts = PREFIX + (
        "SELECT ?name ?sram ?flash ?freeRam ?freeFlash ?kind ?pkind WHERE {"
        " ?d fedsim:deviceName ?name ; fedsim:hasProfile ?p ."
        " ?p fedsim:sramBytes ?sram ; fedsim:flashBytes ?flash ."
        " OPTIONAL { ?d fedsim:freeSramBytes ?freeRam ; fedsim:freeFlashBytes ?freeFlash }"
        " OPTIONAL { ?d sosa:hosts/a ?kind } OPTIONAL { ?p sosa:hosts/a ?pkind } }"
    )
    sensors: dict[str, set[Value]] = {}
    memory: dict[str, tuple[Value, Value]] = {}
    for row in store.select(facts):
        sensors.setdefault(str(row["name"]), set()).update(
            row[k] for k in ("kind", "pkind") if k in row
        )
        memory[str(row["name"])] = (
            row.get("freeRam", row["sram"]),
            row.get("freeFlash", row["flash"]),
        )
    microphone = FEDSIM + "Microphone"
    expected = {
        name
        for name, (ram, flash) in memory.items()
        if microphone in sensors[name] and int(ram) >= 64 * 1024 and int(flash) >= 512 * 1024
    }

    matched = {r["name"] for r in store.select(MATCH, {"modelName": TEST_MODEL})}

    assert matched == expected
    assert 0 < len(matched) < FLEET_SIZE  # the fleet has devices on both sides


def test_an_injected_binding_is_matched_as_a_plain_literal(empty: RegistryStore) -> None:
    hostile = 'x"} ; DROP ALL ; #'
    empty.load(CATALOG)
    graph = Graph()
    device = URIRef("https://w3id.org/fedsim/device/odd")
    graph.add((device, URIRef(FEDSIM + "deviceName"), RdfLiteral(hostile)))
    empty.add_graph(graph)
    before = empty.triples_count()

    rows = empty.select(DEVICE_BY_NAME, {"name": hostile})
    none = empty.select(DEVICE_BY_NAME, {"name": 'x" }'})

    assert rows == [{"device": str(device), "name": hostile}]
    assert none == []
    assert empty.triples_count() == before


@pytest.mark.parametrize(("value", "message"), [(np.int64(3), "got int64"), (None, "NoneType")])
def test_a_binding_of_another_type_is_refused(
    store: RegistryStore, value: object, message: str
) -> None:
    with pytest.raises(FedsimError, match=rf"bindings.sram: .*{message}; cast numpy"):
        store.select(PROFILES, {"sram": value})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "query",
    [
        "# a comment with { braces\nSELECT ?name WHERE { ?p fedsim:profileName ?name }",
        'SELECT ?name WHERE { ?p fedsim:profileName ?name FILTER (?name != "}{") }',
        "SELECT ?name WHERE { { SELECT ?p WHERE { ?p a fedsim:DeviceProfile } }"
        " ?p fedsim:profileName ?name }",
    ],
    ids=["comment", "string", "subquery"],
)
def test_bindings_hold_for_the_outermost_group(store: RegistryStore, query: str) -> None:
    rows = store.select(PREFIX + query, {"name": "esp32-s3"})

    assert [r["name"] for r in rows] == ["esp32-s3"]


def test_braces_of_an_expression_are_not_the_group() -> None:
    # rdflib 7.6 cannot evaluate EXISTS in a projection ("What do I do with this CompValue?")
    query = (
        "SELECT (EXISTS { ?p a fedsim:DeviceProfile } AS ?e) ?name"
        " WHERE { ?p fedsim:profileName ?name }"
    )

    with open_store("oxigraph") as store:
        store.load(CATALOG)
        rows = store.select(PREFIX + query, {"name": "esp32-s3"})

    assert rows == [{"e": True, "name": "esp32-s3"}]


def test_bindings_bind_construct_and_refuse_its_short_form(store: RegistryStore) -> None:
    template = "{ ?p fedsim:profileName ?name }"

    graph = store.construct(f"{PREFIX}CONSTRUCT {template} WHERE {template}", {"name": "rpi4"})

    assert [str(o) for o in graph.objects()] == ["rpi4"]
    with pytest.raises(QueryError, match=r"write CONSTRUCT \{ template \} WHERE \{ pattern \}"):
        store.construct(f"{PREFIX}CONSTRUCT WHERE {template}", {"name": "rpi4"})


def test_a_binding_name_must_be_a_variable_name(store: RegistryStore) -> None:
    with pytest.raises(FedsimError, match=r"bindings.\?name: not a SPARQL variable name"):
        store.select(PROFILES, {"?name": "pico"})


def test_bad_turtle_is_located_at_file_and_line(empty: RegistryStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text(
        '@prefix fedsim: <https://w3id.org/fedsim/vocab#> .\n\nfedsim:x fedsim:y "open .\n'
    )

    with pytest.raises(FedsimError, match=rf"{bad}:3: Turtle syntax error: .*; fix the Turtle"):
        empty.load([bad])
    with pytest.raises(FedsimError, match=r"^pasted:2: Turtle syntax error"):
        empty.add_turtle("@prefix a: <http://a/> .\na:x a:y .\n", "pasted")


def test_an_oxigraph_file_with_an_error_adds_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "half.ttl"
    bad.write_text("@prefix a: <http://a/> .\na:x a:y a:z .\na:x a:y .\n")

    with open_store("oxigraph") as store:
        with pytest.raises(FedsimError, match=r"half\.ttl:3"):
            store.load([bad])
        assert store.triples_count() == 0


def test_a_persistent_oxigraph_store_keeps_its_triples(tmp_path: Path) -> None:
    with open_store("oxigraph", tmp_path / "db") as first:
        first.load(CATALOG)
        count = first.triples_count()

    with open_store("oxigraph", tmp_path / "db") as again:
        reopened = again.triples_count()
        names = {r["name"] for r in again.select(PROFILES)}

    assert reopened == count > 0
    assert "pico" in names


def test_a_malformed_query_is_a_query_error(store: RegistryStore) -> None:
    with pytest.raises(QueryError, match=r"^query: SPARQL syntax error: .+; fix the query"):
        store.select("SELECT ?x WHERE { ?x ")


def test_an_update_is_not_a_query(store: RegistryStore) -> None:
    before = store.triples_count()

    with pytest.raises(QueryError):
        store.select("DROP ALL")

    assert store.triples_count() == before


def test_a_query_of_the_wrong_form_names_both(store: RegistryStore) -> None:
    with pytest.raises(FedsimError, match="expected a SELECT query, got ASK"):
        store.select("ASK { ?s ?p ?o }")
    with pytest.raises(FedsimError, match="expected a CONSTRUCT or DESCRIBE query, got SELECT"):
        store.construct(PROFILES)


def test_ask_and_construct(store: RegistryStore) -> None:
    names = f"{PREFIX}CONSTRUCT {{ ?p fedsim:profileName ?n }} WHERE {{ ?p fedsim:profileName ?n }}"

    graph = store.construct(names)

    assert store.ask(f"{PREFIX}ASK {{ ?p fedsim:profileName ?n }}", {"n": "rpi4"})
    assert not store.ask(f"{PREFIX}ASK {{ ?p fedsim:profileName ?n }}", {"n": "rpi5"})
    assert sorted(str(o) for o in graph.objects()) == sorted(
        r["name"] for r in store.select(PROFILES)
    )


@pytest.mark.parametrize("fmt", ["turtle", "nt", "xml"])
def test_serialize_round_trips_to_the_other_backend(empty: RegistryStore, fmt: str) -> None:
    empty.load(CATALOG)
    other = next(k for k in KINDS if k != empty.kind)

    text = empty.serialize(fmt)  # type: ignore[arg-type]
    graph = Graph().parse(data=text, format=fmt)
    with open_store(other) as copy:  # type: ignore[arg-type]
        copy.add_graph(graph)
        copied = copy.triples_count()

    assert copied == empty.triples_count()


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(FedsimError, match="unknown store kind 'oxygraph'; known: memory, oxigraph"):
        open_store("oxygraph")  # type: ignore[arg-type]
    with pytest.raises(FedsimError, match="the memory store has no path"):
        open_store("memory", Path("db"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_store_says_so(kind: str) -> None:
    store = open_store(kind)  # type: ignore[arg-type]
    store.close()

    with pytest.raises(FedsimError, match="closed"):
        store.triples_count()


@pytest.mark.parametrize(
    ("term", "value"),
    [
        (Term("uri", "http://a/b"), "http://a/b"),
        (Term("bnode", "b0"), "_:b0"),
        (Term("literal", "7", "http://www.w3.org/2001/XMLSchema#int"), 7),
        (Term("literal", "2.5", "http://www.w3.org/2001/XMLSchema#decimal"), 2.5),
        (Term("literal", "1", "http://www.w3.org/2001/XMLSchema#boolean"), True),
        (Term("literal", "256 KB", "http://www.w3.org/2001/XMLSchema#integer"), "256 KB"),
        (Term("literal", "Grüße", lang="de"), "Grüße"),
    ],
)
def test_terms_convert_by_datatype_and_keep_ill_typed_text(term: Term, value: object) -> None:
    assert term.python() == value
    assert type(term.python()) is type(value)


def test_the_synthetic_fleet_is_seeded_and_mixed() -> None:
    text = synthetic_fleet(2_000, seed=11)

    devices = text.count(" a fedsim:Device ")
    attached = sum(text.count(f"[ a fedsim:{s} ]") for s in SENSORS)

    assert text == synthetic_fleet(2_000, seed=11) != synthetic_fleet(2_000, seed=12)
    assert devices == 2_000
    assert 0.25 < attached / devices < 0.35
    assert 0.45 < text.count("freeSramBytes") / devices < 0.55
    assert '"synth-000001"' in text
    assert '"synth-002000"' in text


def test_finding_the_group_of_an_unclosed_string_takes_linear_time() -> None:
    query = 'SELECT ?x WHERE """' + '\\"' * 40_000  # never closed: each quote once started a scan
    started = time.perf_counter()
    with pytest.raises(QueryError):
        group_start(query)
    assert time.perf_counter() - started < 5.0  # quadratic: ~35 s
