"""SHACL shapes of the registry graph: the catalog conforms, and each broken figure is named.

Every bad-input case breaks one figure of a small valid description and expects exactly one
violation, located by node, property and value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyshacl
import pytest
from rdflib import Graph, Literal
from rdflib.namespace import RDF, SH

from fedsim.core.errors import FedsimError
from ontology.synthetic import synthetic_fleet
from ontology.validate import (
    SHAPES_PATH,
    Violation,
    load_turtle,
    validate,
    validate_files,
)
from ontology.vocab import DEV, DEVICE, FEDSIM
from tests.conftest import ROOT

CATALOG = sorted((ROOT / "ontology" / "catalog").glob("*.ttl"))

HEADER = """\
@prefix fedsim: <https://w3id.org/fedsim/vocab#> .
@prefix dev: <https://w3id.org/fedsim/catalog/device/> .
@prefix link: <https://w3id.org/fedsim/catalog/link/> .
@prefix model: <https://w3id.org/fedsim/catalog/model/> .
@prefix device: <https://w3id.org/fedsim/device/> .
@prefix run: <https://w3id.org/fedsim/run/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix sosa: <http://www.w3.org/ns/sosa/> .
@prefix ssn-system: <http://www.w3.org/ns/ssn/systems/> .
@prefix s3n: <http://w3id.org/s3n/> .
@prefix schema: <http://schema.org/> .
@prefix unit: <http://qudt.org/vocab/unit/> .
@prefix nnet: <https://w3id.org/tinyml-schema/neural-network-schema#> .
"""

# One valid description of each kind (ontology/README.md); the cases below break one figure.
VALID = """
dev:test-board a fedsim:DeviceProfile ;
    fedsim:profileName "test-board" ; rdfs:label "Test Board (nRF52840)" ;
    fedsim:boardName "Test Board" ; fedsim:socName "nRF52840" ;
    fedsim:core "Cortex-M4F" ; fedsim:coreCount 1 ; fedsim:clockMHz 64.0 ;
    fedsim:sramBytes 262144 ; fedsim:flashBytes 1048576 ; fedsim:hasFPU true ;
    fedsim:activePowerMilliwatts 9.9 ; fedsim:idlePowerMilliwatts 0.009 ; fedsim:powerSource "ps" ;
    fedsim:cyclesPerMAC 4.0 ; fedsim:cyclesSource "cs" ; fedsim:figureSource "fs" ;
    sosa:hosts [ a fedsim:Microphone ] ;
    fedsim:hasLink [ a fedsim:DeviceLink ; fedsim:linkKind "ble" ;
        fedsim:txPowerMilliwatts 24.3 ; fedsim:rxPowerMilliwatts 23.7 ; fedsim:figureSource "ls" ] ;
    ssn-system:hasSystemProperty
        [ a fedsim:RAM ; schema:value 256 ; schema:unitCode unit:KibiBYTE ] ,
        [ a fedsim:Flash ; schema:value 1024 ; schema:unitCode unit:KibiBYTE ] .

link:ble a fedsim:LinkType ; fedsim:linkKind "ble" ; rdfs:label "BLE" ;
    fedsim:throughputBps 700000.0 ; fedsim:latencySeconds 0.03 ; fedsim:mtuBytes 244 ;
    fedsim:figureSource "lt" .

device:kitchen-nano-3 a fedsim:Device ; fedsim:deviceName "kitchen-nano-3" ;
    fedsim:hasProfile dev:test-board ; fedsim:fleetName "home" ; sosa:hosts [ a fedsim:Camera ] ;
    fedsim:freeSramBytes 176128 ; fedsim:freeFlashBytes 643072 .

model:mlp-100.kws a fedsim:ModelDescription , nnet:NeuralNetwork ;
    fedsim:modelName "mlp-100.kws" ; fedsim:architecture "mlp-100" ; fedsim:datasetName "kws" ;
    rdfs:label "mlp-100 on kws" ;
    fedsim:inputShape "49x40" ; fedsim:numClasses 12 ; fedsim:requiresSensor fedsim:Microphone ;
    fedsim:parameterCount 197212 ; fedsim:forwardMACs 197200 ; fedsim:trainMACs 591600 ;
    fedsim:inferenceRamBytes 8240 ; fedsim:inferenceFlashBytes 788848 ;
    fedsim:trainRamBytes 1716736 ; fedsim:headTrainRamBytes 16128 ; fedsim:trainBatchSize 16 ;
    fedsim:quantization "float32" ;
    s3n:hasProcedureFeature [ a s3n:ProcedureFeature ; ssn-system:inCondition
        [ a fedsim:RAM ; schema:minValue 8240 ; schema:unitCode unit:BYTE ] ,
        [ a fedsim:Flash ; schema:minValue 788848 ; schema:unitCode unit:BYTE ] ] .

run:r1 a fedsim:Run ; fedsim:runId "r1" ; fedsim:scenarioName "tiny" ;
    fedsim:scenarioSha256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" ;
    fedsim:usedModel model:mlp-100.kws .
[] a fedsim:Participation ; fedsim:inRun run:r1 ; fedsim:participant device:kitchen-nano-3 ;
    fedsim:round 3 ; fedsim:status "ok" ; fedsim:numExamples 96 ; fedsim:trainLoss 0.71e0 ;
    fedsim:energyMillijoules 12.5e0 ; fedsim:busySeconds 0.2e0 ; fedsim:bytesDown 101800 ;
    fedsim:bytesUp 101800 .
"""

BOARD, KITCHEN, MLP = "dev:test-board", "device:kitchen-nano-3", "model:mlp-100.kws"
LINK = f'{BOARD} fedsim:hasLink [ a fedsim:DeviceLink ; fedsim:linkKind "ble" ]'
BOARD_RAM = f"{BOARD} ssn-system:hasSystemProperty [ a fedsim:RAM ]"
MLP_NEEDS = f"{MLP} s3n:hasProcedureFeature [ a s3n:ProcedureFeature ]"
RUN_OF = "[ a fedsim:Participation ]"  # a blank node nothing links to

# (case, text in VALID, replacement, focus, property, value or None, problem)
CASES = [
    ("missing figure", "fedsim:clockMHz 64.0 ;", "", BOARD, "fedsim:clockMHz", None, "missing"),
    ("RAM as text", "fedsim:sramBytes 262144", 'fedsim:sramBytes "256 KB"', BOARD,
     "fedsim:sramBytes", '"256 KB"', "wrong datatype"),
    ("clock as integer", "fedsim:clockMHz 64.0", "fedsim:clockMHz 64", BOARD,
     "fedsim:clockMHz", "64", "wrong datatype"),
    ("negative power", "fedsim:idlePowerMilliwatts 0.009", "fedsim:idlePowerMilliwatts -0.5",
     BOARD, "fedsim:idlePowerMilliwatts", "-0.5", "out of range"),
    ("idle above active", "fedsim:idlePowerMilliwatts 0.009", "fedsim:idlePowerMilliwatts 20.0",
     BOARD, "fedsim:idlePowerMilliwatts", "20.0", "inconsistent"),
    ("figure twice", "fedsim:coreCount 1", "fedsim:coreCount 1, 2", BOARD,
     "fedsim:coreCount", None, "more than one value"),
    ("no link", "fedsim:hasLink [", "fedsim:oldLink [", BOARD, "fedsim:hasLink", None, "missing"),
    ("link power missing", "fedsim:txPowerMilliwatts 24.3 ;", "", LINK,
     "fedsim:txPowerMilliwatts", None, "missing"),
    ("memory in kilograms", "schema:value 256 ; schema:unitCode unit:KibiBYTE",
     "schema:value 256 ; schema:unitCode unit:KiloGM", BOARD_RAM, "schema:unitCode",
     "unit:KiloGM", "not an allowed value"),
    ("no S3N RAM", "[ a fedsim:RAM ; schema:value 256 ; schema:unitCode unit:KibiBYTE ] ,", "",
     BOARD, "ssn-system:hasSystemProperty", None, "missing"),
    ("profile hosts a platform", "sosa:hosts [ a fedsim:Microphone ]",
     "sosa:hosts [ a sosa:Platform ]", BOARD, "sosa:hosts", "[ a sosa:Platform ]", "wrong class"),
    ("zero MTU", "fedsim:mtuBytes 244", "fedsim:mtuBytes 0", "link:ble", "fedsim:mtuBytes", "0",
     "out of range"),
    ("device without profile", "fedsim:hasProfile dev:test-board ;", "", KITCHEN,
     "fedsim:hasProfile", None, "missing"),
    ("device of an unknown profile", "fedsim:hasProfile dev:test-board",
     "fedsim:hasProfile dev:esp32-s4", KITCHEN, "fedsim:hasProfile", "dev:esp32-s4", "wrong class"),
    ("device hosts a non-sensor", "sosa:hosts [ a fedsim:Camera ]",
     "sosa:hosts [ a s3n:MicroController ]", KITCHEN, "sosa:hosts",
     "[ a s3n:MicroController ]", "wrong class"),
    ("negative free RAM", "fedsim:freeSramBytes 176128", "fedsim:freeSramBytes -1", KITCHEN,
     "fedsim:freeSramBytes", "-1", "out of range"),
    ("empty device name", '"kitchen-nano-3" ;', '"" ;', KITCHEN, "fedsim:deviceName", '""',
     "too short"),
    ("model without training RAM", "fedsim:trainRamBytes 1716736 ;", "", MLP,
     "fedsim:trainRamBytes", None, "missing"),
    ("model needs a non-sensor", "fedsim:requiresSensor fedsim:Microphone",
     "fedsim:requiresSensor fedsim:RAM", MLP, "fedsim:requiresSensor", "fedsim:RAM", "not valid"),
    ("unknown number format", '"float32"', '"float64"', MLP, "fedsim:quantization",
     '"float64"', "not an allowed value"),
    ("malformed input shape", '"49x40"', '"49 by 40"', MLP, "fedsim:inputShape", '"49 by 40"',
     "malformed"),
    ("forward above training MACs", "fedsim:forwardMACs 197200", "fedsim:forwardMACs 600000",
     MLP, "fedsim:forwardMACs", "600000", "inconsistent"),
    ("no S3N flash requirement", "a fedsim:Flash ; schema:minValue",
     "a s3n:Memory ; schema:minValue", MLP_NEEDS, "ssn-system:inCondition", None, "missing"),
    ("bad scenario hash", '"9f86d081', '"XYZ9f86d081', "run:r1", "fedsim:scenarioSha256",
     '"XYZ9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"', "malformed"),
    ("unknown status", 'fedsim:status "ok"', 'fedsim:status "crashed"', RUN_OF, "fedsim:status",
     '"crashed"', "not an allowed value"),
    ("loss as decimal", "fedsim:trainLoss 0.71e0", "fedsim:trainLoss 0.71", RUN_OF,
     "fedsim:trainLoss", "0.71", "wrong datatype"),
]  # fmt: skip


def _graph(text: str) -> Graph:
    return Graph().parse(data=HEADER + text, format="turtle")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_catalog_is_there() -> None:
    assert {"devices.ttl", "links.ttl"} <= {path.name for path in CATALOG}


def test_whole_catalog_conforms() -> None:
    violations = validate_files(CATALOG)

    assert [v.line() for v in violations] == []


@pytest.mark.parametrize("path", CATALOG, ids=lambda path: path.name)
def test_each_catalog_file_conforms_alone(path: Path) -> None:
    assert [v.line() for v in validate_files(path)] == []


def test_catalog_memory_figures_agree_with_s3n_nodes() -> None:
    """Flat byte counts equal the S3N value times its unit (profiles) or minValue (models)."""
    graph = load_turtle(CATALOG)
    query = """
        PREFIX fedsim: <https://w3id.org/fedsim/vocab#>
        PREFIX ssn-system: <http://www.w3.org/ns/ssn/systems/>
        PREFIX s3n: <http://w3id.org/s3n/>
        PREFIX schema: <http://schema.org/>
        PREFIX unit: <http://qudt.org/vocab/unit/>
        SELECT ?thing ?flat ?bytes ?amount ?factor WHERE {
            VALUES (?class ?flat ?link ?amountOf) {
                (fedsim:RAM fedsim:sramBytes ssn-system:hasSystemProperty schema:value)
                (fedsim:Flash fedsim:flashBytes ssn-system:hasSystemProperty schema:value)
                (fedsim:RAM fedsim:inferenceRamBytes s3n:hasProcedureFeature schema:minValue)
                (fedsim:Flash fedsim:inferenceFlashBytes s3n:hasProcedureFeature schema:minValue) }
            VALUES (?unit ?factor) { (unit:BYTE 1) (unit:KibiBYTE 1024) (unit:MebiBYTE 1048576)
                                     (unit:GibiBYTE 1073741824) }
            ?thing ?flat ?bytes ; ?link ?via .
            ?via ssn-system:inCondition? ?memory .
            ?memory a ?class ; ?amountOf ?amount ; schema:unitCode ?unit .
        }"""
    things = {*graph.subjects(RDF.type, FEDSIM.DeviceProfile)}
    things |= {*graph.subjects(RDF.type, FEDSIM.ModelDescription)}

    rows = [
        (str(r[0]), str(r[1]), r[2].toPython(), r[3].toPython() * r[4].toPython())
        for r in graph.query(query)
    ]

    assert len(rows) == 2 * len(things)  # RAM and flash of each
    assert [row for row in rows if row[2] != row[3]] == []


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_valid_description_conforms_and_each_break_is_located(
    case: tuple[str, str, str, str, str, str | None, str],
) -> None:
    _, old, new, focus, path, value, problem = case
    assert validate(_graph(VALID)) == []
    assert old in VALID

    violations = validate(_graph(VALID.replace(old, new, 1)))

    assert len(violations) == 1, [v.line() for v in violations]
    found = violations[0]
    assert (found.focus, found.path, found.value) == (focus, path, value)
    assert found.message.startswith(f"{problem}: ")
    assert found.severity == "Violation"
    assert found.fix


def test_violation_line_names_node_property_value_and_fix() -> None:
    text = VALID.replace("fedsim:sramBytes 262144", 'fedsim:sramBytes "256 KB"')

    [violation] = validate(_graph(text))

    assert violation.line() == (
        'dev:test-board fedsim:sramBytes = "256 KB": wrong datatype: RAM is exactly one '
        "xsd:integer number of bytes > 0; write an xsd:integer number of bytes, "
        "e.g. fedsim:sramBytes 262144 for 256 KiB"
    )


def test_a_missing_value_has_no_value_in_the_line() -> None:
    violation = Violation("dev:x", "fedsim:clockMHz", None, "missing: rule", fix="add it")

    assert violation.line() == "dev:x fedsim:clockMHz: missing: rule; add it"
    assert Violation("dev:x", "", None, "m", "Warning").line() == "warning: dev:x: m"


def test_every_property_shape_has_a_name_a_message_and_a_fix() -> None:
    shapes = load_turtle(SHAPES_PATH)
    fix = shapes.namespace_manager.expand_curie("fsh:fix")
    node_shapes = shapes.subjects(RDF.type, SH.NodeShape)
    targeted = [shape for shape in node_shapes if (shape, SH.targetClass, None) in shapes]

    properties = [p for shape in targeted for p in shapes.objects(shape, SH.property)]

    assert len(properties) > 50
    for prop in properties:
        path = shapes.value(prop, SH.path)
        assert shapes.value(prop, SH.name), path
        assert shapes.value(prop, SH.message), path
        assert shapes.value(prop, fix), path


def test_shapes_are_valid_shacl() -> None:
    """The shapes graph conforms to the W3C SHACL-for-SHACL shapes (pyshacl's meta check)."""
    conforms, _, text = pyshacl.validate(
        Graph(), shacl_graph=load_turtle(SHAPES_PATH), meta_shacl=True, inference="none"
    )

    assert conforms, text


def test_turtle_syntax_error_is_located_at_file_and_line(tmp_path: Path) -> None:
    lines = [*HEADER.splitlines(), 'dev:a fedsim:profileName "a"', 'dev:b fedsim:profileName "b" .']
    path = _write(tmp_path, "broken.ttl", "\n".join(lines) + "\n")  # no '.' after dev:a

    with pytest.raises(FedsimError, match=re.escape(f"{path}:{len(lines)}: Turtle syntax error")):
        load_turtle(path)


def test_a_turtle_file_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "utf16.ttl"
    path.write_bytes(HEADER.encode("utf-16"))

    with pytest.raises(FedsimError, match=re.escape(f"{path}:1: ") + ".*UTF-16.*UTF-8"):
        load_turtle(path)


def test_relative_iris_resolve_against_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "relative.ttl", '<thing> <p> "v" .\n')

    graph = load_turtle(path)

    assert {str(s) for s in graph.subjects()} == {(tmp_path / "thing").as_uri()}


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ttl"

    with pytest.raises(FedsimError, match=re.escape(f"{missing}: cannot read it (No such file")):
        validate_files([missing])


def test_device_file_validates_with_the_catalog(tmp_path: Path) -> None:
    text = 'device:d1 a fedsim:Device ; fedsim:deviceName "d1" ; fedsim:hasProfile dev:pico .\n'
    path = _write(tmp_path, "fleet.ttl", HEADER + text)

    alone, with_catalog = validate_files(path), validate_files(path, with_catalog=True)
    twice = validate_files([path, *CATALOG], with_catalog=True)  # each file read once

    assert [(v.focus, v.path, v.value) for v in alone] == [
        ("device:d1", "fedsim:hasProfile", "dev:pico")
    ]
    assert with_catalog == twice == []


def test_injected_device_name_is_just_a_literal() -> None:
    name = 'x"} ; DROP ALL ; #'
    graph = load_turtle(CATALOG)
    device = DEVICE["injected"]
    graph.add((device, RDF.type, FEDSIM.Device))
    graph.add((device, FEDSIM.deviceName, Literal(name)))
    graph.add((device, FEDSIM.hasProfile, DEV.pico))
    reloaded = Graph().parse(data=graph.serialize(format="turtle"), format="turtle")

    violations = validate(reloaded)

    assert violations == []
    assert [str(n) for n in reloaded.objects(device, FEDSIM.deviceName)] == [name]
    assert len(reloaded) == len(graph)


def synthetic_fleet_graph(n: int, broken: int | None = None) -> Graph:
    """The catalog and ``n`` synthetic devices; device ``broken`` (1-based) gets "256 KB" free."""
    text = synthetic_fleet(n, seed=3)
    graph = load_turtle(CATALOG)
    graph.parse(data=text, format="turtle")
    if broken is not None:
        device = DEVICE[f"synth-{broken:06d}"]
        graph.remove((device, FEDSIM.freeSramBytes, None))
        graph.add((device, FEDSIM.freeSramBytes, Literal("256 KB")))
    return graph


def test_a_broken_device_in_a_fleet_is_the_one_reported() -> None:
    graph = synthetic_fleet_graph(1000, broken=417)

    violations = validate(graph)

    assert [(v.focus, v.path, v.value) for v in violations] == [
        ("device:synth-000417", "fedsim:freeSramBytes", '"256 KB"')
    ]
