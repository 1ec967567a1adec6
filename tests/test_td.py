"""W3C TD export and import: valid TDs (JSON Schema and SHACL), and the description round-trips."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, RDFS

from fedsim.core.errors import FedsimError
from ontology.td import (
    STANDARDS,
    TD_CONTEXT,
    TD_THING,
    check_td,
    export_td,
    exported_triples,
    import_td,
    td_json_schema,
    td_to_rdf,
)
from ontology.validate import load_turtle, validate
from ontology.vocab import DEV, DEVICE, FEDSIM
from tests.conftest import ROOT

CATALOG = sorted((ROOT / "ontology" / "catalog").glob("*.ttl"))
SOSA_HOSTS = URIRef("http://www.w3.org/ns/sosa/hosts")
INJECTED = 'x"} ; DROP ALL ; #'


def _fleet() -> Graph:
    """The catalog plus two fleet devices of ontology/README.md, one with an injected name."""
    graph = load_turtle(CATALOG)
    kitchen, injected, camera = DEVICE["kitchen-nano-3"], DEVICE["injected"], BNode()
    graph.add((kitchen, RDF.type, FEDSIM.Device))
    graph.add((kitchen, FEDSIM.deviceName, Literal("kitchen-nano-3")))
    graph.add((kitchen, FEDSIM.hasProfile, DEV["nano33-ble-sense"]))
    graph.add((kitchen, FEDSIM.fleetName, Literal("home")))
    graph.add((kitchen, SOSA_HOSTS, camera))
    graph.add((camera, RDF.type, FEDSIM.Camera))
    graph.add((kitchen, FEDSIM.freeSramBytes, Literal(176128)))
    graph.add((kitchen, FEDSIM.freeFlashBytes, Literal(643072)))
    graph.add((injected, RDF.type, FEDSIM.Device))
    graph.add((injected, FEDSIM.deviceName, Literal(INJECTED)))
    graph.add((injected, FEDSIM.hasProfile, DEV.pico))
    return graph


FLEET = _fleet()
PROFILES = sorted(str(p) for p in FLEET.subjects(RDF.type, FEDSIM.DeviceProfile))
THINGS = [str(DEVICE["kitchen-nano-3"]), str(DEVICE["injected"]), *PROFILES]


def _short(iri: str) -> str:
    return iri.rsplit("/", 1)[-1]


def _via_json(document: dict[str, Any]) -> dict[str, Any]:
    """The document as another program reads it: through JSON text."""
    return json.loads(json.dumps(document))  # type: ignore[no-any-return]


def test_catalog_has_profiles_to_export() -> None:
    assert len(PROFILES) >= 6


@pytest.mark.parametrize("thing", THINGS, ids=_short)
def test_export_satisfies_the_td_json_schema(thing: str) -> None:
    document = _via_json(export_td(FLEET, thing))

    errors = list(jsonschema.Draft7Validator(td_json_schema()).iter_errors(document))

    assert [error.message for error in errors] == []


def test_the_shared_schema_differs_only_on_the_td_version_of_context() -> None:
    """The snapshot drafts TD 2.0 (context wot-next); everything but @context is as it says."""
    raw = json.loads((STANDARDS / "td-json-schema-validation.json").read_text())
    document = _via_json(export_td(FLEET, "dev:esp32-s3"))

    errors = list(jsonschema.Draft7Validator(raw).iter_errors(document))
    next_draft = {
        **document,
        "@context": ["https://www.w3.org/ns/wot-next/td", *document["@context"][1:]],
    }

    assert [list(error.absolute_path) for error in errors] == [["@context"]]
    assert list(jsonschema.Draft7Validator(raw).iter_errors(next_draft)) == []
    assert document["@context"][0] == TD_CONTEXT


@pytest.mark.parametrize("thing", THINGS, ids=_short)
def test_export_conforms_to_the_td_shacl_shapes(thing: str) -> None:
    document = _via_json(export_td(FLEET, thing))

    problems = check_td(document)

    assert problems == []
    assert (URIRef(thing), RDF.type, TD_THING) in td_to_rdf(document)  # the shapes did apply


def test_a_broken_td_fails_both_the_schema_and_the_shapes() -> None:
    document = _via_json(export_td(FLEET, "dev:pico"))
    del document["title"]

    problems = check_td(document)

    assert "/: 'title' is a required property" in problems
    assert any(re.match(r"dev:pico td:title: missing", p) for p in problems), problems


@pytest.mark.parametrize("thing", THINGS, ids=_short)
def test_export_then_import_gives_back_the_description(thing: str) -> None:
    original = exported_triples(FLEET, URIRef(thing))

    imported = import_td(_via_json(export_td(FLEET, thing)))

    assert isomorphic(imported, original)
    assert set(original.triples((URIRef(thing), None, None))) == set(
        FLEET.triples((URIRef(thing), None, None))
    )


def test_export_is_the_same_text_for_the_same_description() -> None:
    again = load_turtle(CATALOG)  # other blank-node ids

    first, second = export_td(FLEET, "dev:rpi4"), export_td(again, "dev:rpi4")

    assert json.dumps(first) == json.dumps(second)


def test_device_td_carries_the_registry_terms() -> None:
    document = export_td(FLEET, "device:kitchen-nano-3")

    assert document["@type"] == ["Thing", "fedsim:Device"]
    assert document["id"] == str(DEVICE["kitchen-nano-3"])
    assert document["title"] == "kitchen-nano-3"
    assert document["fedsim:hasProfile"] == {"@id": "dev:nano33-ble-sense"}
    assert document["fedsim:freeSramBytes"] == 176128
    assert document["sosa:hosts"] == {"@type": "fedsim:Camera"}
    assert document["security"] == ["nosec_sc"]
    assert "properties" not in document  # metadata, not interaction affordances


def test_decimals_keep_their_lexical_form_and_datatype() -> None:
    document = export_td(FLEET, "dev:nano33-ble-sense")

    assert document["fedsim:clockMHz"] == {"@value": "64.0", "@type": "xsd:decimal"}
    assert document["fedsim:hasFPU"] is True


def test_injected_name_round_trips_as_a_literal() -> None:
    document = export_td(FLEET, str(DEVICE["injected"]))
    text = json.dumps(document)

    imported = import_td(json.loads(text))
    registry = load_turtle(CATALOG)
    for triple in imported:
        registry.add(triple)

    assert document["title"] == document["fedsim:deviceName"] == INJECTED
    assert [str(n) for n in imported.objects(None, FEDSIM.deviceName)] == [INJECTED]
    assert validate(registry) == []
    assert len(imported) == 3


def test_imported_device_validates_with_the_catalog() -> None:
    imported = import_td(_via_json(export_td(FLEET, "device:kitchen-nano-3")))
    registry = load_turtle(CATALOG)
    for triple in imported:
        registry.add(triple)

    assert validate(registry) == []


def test_a_shared_blank_node_round_trips() -> None:
    graph = load_turtle(CATALOG)
    device, sensor = DEVICE["shared"], BNode()
    for triple in [
        (device, RDF.type, FEDSIM.Device),
        (device, FEDSIM.deviceName, Literal("shared")),
        (device, FEDSIM.hasProfile, DEV.pico),
        (device, SOSA_HOSTS, sensor),
        (device, RDFS.seeAlso, sensor),
        (sensor, RDF.type, FEDSIM.Camera),
        (sensor, RDFS.seeAlso, sensor),
    ]:
        graph.add(triple)

    imported = import_td(_via_json(export_td(graph, "device:shared")))

    assert isomorphic(imported, exported_triples(graph, device))
    assert len(imported) == 7


def test_export_of_an_unknown_thing_suggests_the_closest() -> None:
    with pytest.raises(FedsimError, match=re.escape("dev:pic: no fedsim:Device or fedsim:Device")):
        export_td(FLEET, "dev:pic")
    with pytest.raises(FedsimError, match=re.escape("(did you mean 'dev:pico'?)")):
        export_td(FLEET, "dev:pic")


def test_import_refuses_a_td_missing_security() -> None:
    document = _via_json(export_td(FLEET, "dev:pico"))
    del document["security"]

    with pytest.raises(FedsimError, match=re.escape("pico.td.json: 'security' is a required")):
        import_td(document, where="pico.td.json")


def test_import_refuses_a_remote_context() -> None:
    document = _via_json(export_td(FLEET, "dev:pico"))
    document["@context"].append("https://example.org/other-context.jsonld")

    with pytest.raises(FedsimError, match=re.escape("TD at /@context: cannot resolve context")):
        import_td(document)


def test_import_refuses_a_thing_that_is_no_fedsim_device() -> None:
    document = _via_json(export_td(FLEET, "dev:pico"))
    document["@type"] = "Thing"

    with pytest.raises(FedsimError, match=re.escape("TD at /@type: the TD is not of one thing")):
        import_td(document)


def test_export_leaves_the_graph_unchanged() -> None:
    graph = copy.deepcopy(FLEET)

    export_td(graph, "dev:esp32-s3")

    assert isomorphic(graph, FLEET)
