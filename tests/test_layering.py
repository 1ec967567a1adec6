"""The seams of DESIGN.md §2, checked on the source: who may import what."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

TOP_FLOOR = {
    "fedsim.cli",
    "fedsim.registry_cli",
    "fedsim.runner",
    "fedsim.inline",
    "fedsim.progress",
    "fedsim.devices_cli",
    "fedsim.pytest_plugin",
    "fedsim.sweep",
    "fedsim.deploy",
    "fedsim.deploy_cli",
    "fedsim.parts",
}
PACKAGES = ("fedsim", "clients", "server", "ontology", "devices")


def _modules() -> dict[str, set[str]]:
    """module name → the modules it imports (absolute names)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            imports: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imports |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imports.add(node.module)
            found[name] = imports
    return found


MODULES = _modules()


def _importers(prefix: str) -> set[str]:
    return {
        m
        for m, imps in MODULES.items()
        if any(i == prefix or i.startswith(prefix + ".") for i in imps)
    }


def test_flower_simulation_is_imported_only_by_the_runner() -> None:
    assert _importers("flwr.simulation") == {"fedsim.runner"}


def test_rdflib_is_imported_only_under_ontology() -> None:
    assert all(m.startswith("ontology") for m in _importers("rdflib"))


def test_clients_and_server_never_import_each_other() -> None:
    assert not {m for m in _importers("server") if m.startswith("clients")}
    assert not {m for m in _importers("clients") if m.startswith("server")}


@pytest.mark.parametrize("floor", ["fedsim.core", "ontology", "devices", "clients", "server"])
def test_lower_floors_never_import_the_top_floor(floor: str) -> None:
    lower = {m for m in MODULES if m.startswith(floor)}
    for module in lower:
        assert not MODULES[module] & TOP_FLOOR, module


def test_the_ground_floor_imports_only_itself_among_project_packages() -> None:
    for module, imports in MODULES.items():
        if module.startswith("fedsim.core"):
            project = {i for i in imports if i.split(".")[0] in PACKAGES}
            assert all(i.startswith("fedsim.core") for i in project), (module, project)


def test_the_registry_never_imports_the_simulation() -> None:
    """ontology/ describes devices; devices/, clients/ and server/ use it, not the other way."""
    for module, imports in MODULES.items():
        if module.startswith("ontology"):
            project = {i.split(".")[0] for i in imports if i.split(".")[0] in PACKAGES}
            assert project <= {"ontology", "fedsim"}, (module, project)
            assert not {i for i in imports if i.startswith("fedsim.") and "core" not in i}
