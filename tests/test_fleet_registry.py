"""The registry as the fleet's source of truth: vocabulary, model catalog, named queries, fleets
selected by query, runs writing their participation back, and the ``fedsim registry`` CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rdflib import Graph, URIRef
from rdflib.compare import isomorphic

from devices.fleet import load_fleet
from devices.model_catalog import all_model_figures
from fedsim.core.errors import FedsimError
from fedsim.core.results import read_rounds
from fedsim.runner import run
from ontology.fleet_registry import FleetRegistry
from ontology.models import MODELS_FILE, model_graph
from ontology.registry import DATA_DIR, QUERY_DIR
from ontology.vocab import FEDSIM
from tests.conftest import ROOT, tiny_scenario
from tests.test_cli import fedsim

FLEET = ROOT / "tests" / "data" / "fleet.ttl"
STORES = ["memory", "oxigraph"]
Write = Callable[..., Path]


@pytest.fixture(params=STORES)
def registry(request: pytest.FixtureRequest) -> Iterator[FleetRegistry]:
    with FleetRegistry.open([FLEET], request.param) as opened:
        yield opened


def test_the_python_vocabulary_is_the_turtle_vocabulary() -> None:
    graph = Graph().parse(DATA_DIR / "fedsim.ttl")
    ns = str(FEDSIM._NS)
    declared = {str(s)[len(ns) :] for s in graph.subjects() if str(s).startswith(ns)} - {""}

    assert declared == set(FEDSIM.__annotations__)
    with pytest.raises(AttributeError, match="clockMhz"):
        _ = FEDSIM.clockMhz  # a typo is an error, not a new IRI


def test_the_model_catalog_is_what_the_torch_models_give_today() -> None:
    committed = Graph().parse(MODELS_FILE)

    assert isomorphic(committed, model_graph(all_model_figures())), (
        "run `fedsim registry catalog-models` and commit ontology/catalog/models.ttl"
    )


def test_model_devices_checks_sensors_memory_and_says_what_can_train(
    registry: FleetRegistry,
) -> None:
    found = {m.name: m for m in registry.devices_for("mlp-100.kws")}

    # nano-1: microphone built in, ~1.7 MB to train: head only; nano-2: 4 KB free, too little to
    # run; pi-1: no microphone; pi-2, esp-1, zero-1: microphone attached
    assert set(found) == {"nano-1", "pi-2", "esp-1", "zero-1"}
    assert found["nano-1"].train == "head"
    assert found["pi-2"].train == "full"
    assert found["esp-1"].train == "head"  # 512 KB
    assert found["nano-1"].fleet == "home"


def test_profiles_for_a_model_say_whether_sensors_must_be_attached(
    registry: FleetRegistry,
) -> None:
    found = {p.profile: p for p in registry.profiles_for("mlp.har")}

    assert found["nano33-ble-sense"].sensors == "built-in"  # it has an IMU
    assert found["rpi4"].sensors == "attach"
    assert found["rpi4"].train == "full"


def test_models_for_a_device_or_a_profile(registry: FleetRegistry) -> None:
    device = {m.model: m.train for m in registry.models_for("zero-2")}  # a camera, 512 MB
    profile = {m.model for m in registry.models_for("nano33-ble-sense")}

    assert device["mlp-100.fashion-mnist"] == "full"
    assert "mlp.kws" not in device  # no microphone
    assert "mlp.kws" in profile  # built-in microphone


def test_inventory_counts_by_profile_and_fleet(registry: FleetRegistry) -> None:
    rows = {(r.profile, r.fleet): r.devices for r in registry.inventory()}

    assert rows == {
        ("esp32-s3", ""): 1,
        ("nano33-ble-sense", "home"): 2,
        ("rpi-zero2w", ""): 2,
        ("rpi4", "lab"): 2,
    }


def test_unknown_names_suggest_the_closest(registry: FleetRegistry) -> None:
    with pytest.raises(FedsimError, match=r"unknown model 'mlp.kwz'.*did you mean 'mlp.kws'"):
        registry.devices_for("mlp.kwz")
    with pytest.raises(FedsimError, match=r"unknown device or profile 'nano-9'"):
        registry.models_for("nano-9")


def test_an_injected_name_is_only_a_literal(registry: FleetRegistry) -> None:
    before = registry.store.triples_count()
    evil = 'x" } ; DROP ALL ; #'

    rows = registry.query("model-devices", {"modelName": evil})

    assert rows == []
    assert registry.store.triples_count() == before


@pytest.mark.parametrize("store", STORES)
def test_every_named_query_parses_and_runs(store: str) -> None:
    samples = {
        "modelName": "mlp.kws",
        "deviceName": "nano-1",
        "profileName": "pico",
        "runId": "nothing-yet",
    }
    with FleetRegistry.open([FLEET], store) as registry:  # type: ignore[arg-type]
        for path in sorted(QUERY_DIR.glob("*.rq")):
            text = path.read_text()
            bindings = {k: v for k, v in samples.items() if f"?{k}" in text}
            registry.query(path, bindings)  # raises on a parse error


# --- fleets selected by a query; runs writing back ------------------------------------------


def _registry_scenario(**group: Any) -> dict[str, Any]:
    return tiny_scenario(
        task={"dataset": "kws", "model": "mlp"},
        fleet={
            "groups": [
                {"query": "trainable-devices", "bind": {"modelName": "mlp.kws"}, **group},
                {"profile": "rpi4", "count": 2},
            ],
            "memory_policy": "head-only",
        },
        registry={"data": [str(FLEET)]},
        rounds=2,
    )


def test_a_group_selects_registry_devices_by_query(write_scenario: Write) -> None:
    _, fleet = load_fleet(write_scenario(_registry_scenario(count=3)))

    named = [d for d in fleet.devices if d.group == 0]
    # can train mlp.kws (microphone, enough RAM for the head): nano-1, pi-2, esp-1, zero-1
    assert {d.name for d in named} <= {"nano-1", "pi-2", "esp-1", "zero-1"}
    assert len({d.name for d in named}) == 3
    assert all(d.iri and d.iri.endswith(f"/device/{d.name}") for d in named)
    assert {d.profile.name for d in fleet.devices if d.group == 1} == {"rpi4"}


def test_a_group_asking_for_more_devices_than_match_is_a_located_error(
    write_scenario: Write,
) -> None:
    path = write_scenario(_registry_scenario(count=9))

    with pytest.raises(
        FedsimError, match=rf"{path.name}:\d+: fleet.groups\[0\].query: .* selects 4 registry"
    ):
        load_fleet(path)


def test_a_group_binding_a_variable_its_query_lacks_is_a_located_error(
    write_scenario: Write,
) -> None:
    path = write_scenario(_registry_scenario(count=2, bind={"modelNme": "mlp.kws"}))

    with pytest.raises(
        FedsimError,
        match=rf"{path.name}:\d+: fleet.groups\[0\].bind.modelNme: trainable-devices.rq has no "
        r"variable \?modelNme \(did you mean 'modelName'\?\)",
    ):
        load_fleet(path)


def test_a_group_with_both_profile_and_query_is_refused(write_scenario: Write) -> None:
    path = write_scenario(_registry_scenario(count=2, profile="rpi4"))

    with pytest.raises(FedsimError, match=r"either profile .* or query"):
        load_fleet(path)


def test_a_run_writes_its_participation_back(write_scenario: Write, tmp_path: Path) -> None:
    result = run(write_scenario(_registry_scenario(count=3)), tmp_path / "out")

    participation = result.out / "participation.ttl"
    assert participation.is_file()
    with FleetRegistry.open([FLEET, participation]) as registry:
        seen = {d.device: d for d in registry.run_devices("out")}
    named = [n for n in seen if not n.startswith("out-")]
    assert len(named) == 3  # the queried devices, under their registry names
    assert len(seen) == 5  # plus the two simulated Pis
    rounds = read_rounds(result.out)
    assert sum(d.rounds for d in seen.values()) == sum(r["selected"] for r in rounds)
    assert sum(d.delivered for d in seen.values()) == sum(r["participants"] for r in rounds)


def test_a_persistent_registry_accumulates_history(write_scenario: Write, tmp_path: Path) -> None:
    scenario = _registry_scenario(count=2)
    scenario["registry"] |= {"store": "oxigraph", "db": str(tmp_path / "db")}
    path = write_scenario(scenario)

    run(path, tmp_path / "first")
    run(path, tmp_path / "second")

    with FleetRegistry.open([], "oxigraph", tmp_path / "db") as registry:
        assert len(registry.run_devices("first")) == 4
        assert len(registry.run_devices("second")) == 4
        assert {r.profile for r in registry.inventory()} >= {"rpi4", "nano33-ble-sense"}


# --- CLI ------------------------------------------------------------------------------------


def test_cli_match_lists_profiles_and_devices() -> None:
    proc = fedsim("registry", "match", "--model", "mlp.kws", "--data", str(FLEET))

    assert proc.returncode == 0, proc.stderr
    assert "nano33-ble-sense" in proc.stdout
    assert "registered devices that can run mlp.kws: 4" in proc.stdout


def test_cli_query_binds_typed_values_and_prints_json() -> None:
    proc = fedsim(
        "registry",
        "query",
        "trainable-devices",
        "--bind",
        "modelName=mlp.kws",
        "--data",
        str(FLEET),
        "--format",
        "json",
    )

    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["name"] for r in rows} == {"nano-1", "pi-2", "esp-1", "zero-1"}


def test_cli_inventory_as_csv() -> None:
    proc = fedsim("registry", "inventory", "--data", str(FLEET), "--format", "csv")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "profile,fleet,devices"
    assert "rpi4,lab,2" in proc.stdout


def test_cli_unknown_model_exits_2_with_a_suggestion() -> None:
    proc = fedsim("registry", "match", "--model", "mlp.kwz")

    assert proc.returncode == 2
    assert "did you mean 'mlp.kws'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_validate_reports_each_violation_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text(
        FLEET.read_text().replace("fedsim:freeSramBytes 4000", 'fedsim:freeSramBytes "4 KB"')
    )

    good = fedsim("registry", "validate", str(FLEET))
    proc = fedsim("registry", "validate", str(bad))

    assert good.returncode == 0, good.stdout + good.stderr
    assert proc.returncode == 2
    assert 'device:nano-2 fedsim:freeSramBytes = "4 KB"' in proc.stdout
    assert "1 violations" in proc.stderr


def test_cli_export_and_import_a_thing_description(tmp_path: Path) -> None:
    td = tmp_path / "nano-1.td.json"

    exported = fedsim("registry", "export-td", "nano-1", "--data", str(FLEET), "-o", str(td))
    imported = fedsim("registry", "import-td", str(td))

    assert exported.returncode == 0, exported.stderr
    assert json.loads(td.read_text())["id"] == "https://w3id.org/fedsim/device/nano-1"
    assert imported.returncode == 0, imported.stderr
    back = Graph().parse(data=imported.stdout, format="turtle")
    original = Graph().parse(FLEET)
    assert set(back.predicate_objects(URIRef("https://w3id.org/fedsim/device/nano-1"))) == set(
        original.predicate_objects(URIRef("https://w3id.org/fedsim/device/nano-1"))
    )


def test_cli_serve_answers_sparql_and_refuses_updates() -> None:
    command = [sys.executable, "-m", "fedsim.cli", "registry", "serve", "--port", "0"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "200"}
    server = subprocess.Popen(
        [*command, "--data", str(FLEET)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[2]
        query = (
            "SELECT (COUNT(?d) AS ?n) WHERE { ?d <https://w3id.org/fedsim/vocab#deviceName> ?x }"
        )
        request = urllib.request.Request(
            url + "?" + urllib.parse.urlencode({"query": query}),
            headers={"Accept": "application/sparql-results+json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert answer["results"]["bindings"][0]["n"]["value"] == "7"
        update = urllib.parse.urlencode({"update": "DROP ALL"}).encode()
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(urllib.request.Request(url, data=update), timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_query_file_that_is_not_utf8_is_a_located_error(
    registry: FleetRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.rq"
    path.write_bytes('SELECT ?x WHERE { ?x ?p "café" }'.encode("latin-1"))

    with pytest.raises(FedsimError, match=re.escape(f"{path}:1: ") + ".*UTF-8"):
        registry.query(path)
