"""A clone stands alone: no code or test reads the folder beside the repository, the third-party
data it needs ships inside it (licence, source, unmodified), and TDs never touch the network."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from rdflib import Graph, Literal
from rdflib.namespace import RDF

from fedsim.core.datasets import omniglot
from fedsim.core.errors import FedsimError
from ontology import td
from ontology.vocab import DEV, DEVICE, FEDSIM
from tests.conftest import ROOT

# The folder beside the checkout, named in pieces so that this file does not match itself:
# "../<it>", "/<it>" as a path component, and a Path join "/ '<it>'".
_BESIDE = "sha" + "red"
BESIDE_REFERENCE = re.compile(
    r"\.\./" + _BESIDE + r"|/" + _BESIDE + r"\b" + r"""|/\s*["']""" + _BESIDE + r"""["']"""
)
CHECKED = ["*.py", "Makefile", "pyproject.toml", ".ci/run"]
SHIPPED = {
    omniglot.DEFAULT_DIR: [
        "all_runs.zip",
        "images_background_small1.zip",
        "images_background_small2.zip",
    ],
    td.STANDARDS: [
        "td-context-1.1.jsonld",
        "td-json-schema-validation.json",
        "td-validation.ttl",
    ],
}
NOTES = {omniglot.DEFAULT_DIR: "LICENSE", td.STANDARDS: "LICENSE.md"}  # + README.md, SOURCE.md
EVERY_FILE = [
    folder / name
    for folder, names in SHIPPED.items()
    for name in [*names, NOTES[folder], "README.md", "SOURCE.md"]
]


def _checked_files() -> list[Path]:
    """The tracked files of ``CHECKED`` (a tree without git: every such file outside .venv)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *CHECKED],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        found = {p for pattern in CHECKED for p in ROOT.rglob(pattern) if p.is_file()}
        return sorted(p for p in found if ".venv" not in p.relative_to(ROOT).parts)


def test_no_code_or_test_reads_the_folder_beside_the_repository() -> None:
    files = _checked_files()

    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.is_file()  # listed but deleted in the working tree
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BESIDE_REFERENCE.search(line)
    ]

    assert any(path.name == "omniglot.py" for path in files)  # the check sees the code
    assert hits == []


@pytest.mark.parametrize(
    "line", [f"../{_BESIDE}/x", f"/work/{_BESIDE}", f'ROOT.parent / "{_BESIDE}"']
)
def test_the_reference_pattern_finds_each_form(line: str) -> None:
    assert BESIDE_REFERENCE.search(line)


@pytest.mark.parametrize("folder", list(SHIPPED), ids=lambda folder: folder.name)
def test_shipped_data_lies_in_the_package_with_licence_and_source(folder: Path) -> None:
    source = (folder / "SOURCE.md").read_text(encoding="utf-8")
    licence = (folder / NOTES[folder]).read_text(encoding="utf-8")

    assert folder.is_relative_to(ROOT)  # inside the repository, read from there
    assert "License" in licence
    assert "https://github.com/" in source
    for name in SHIPPED[folder]:  # unmodified: the digest SOURCE.md records
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(name)}` {digest}\b", source), name


@pytest.mark.parametrize("path", EVERY_FILE, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_package_data_installs_every_shipped_file(path: Path) -> None:
    """pyproject's package-data globs (as setuptools expands them) include the file."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]

    covered = {
        match
        for package, patterns in package_data.items()
        for pattern in patterns
        for match in (ROOT / package.replace(".", "/")).glob(pattern)
    }

    assert path in covered


def test_omniglot_defaults_to_the_shipped_subset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FEDSIM_OMNIGLOT", raising=False)
    default = omniglot.omniglot_dir()
    files = {path.name for path in omniglot.source_files()}
    monkeypatch.setenv("FEDSIM_OMNIGLOT", str(tmp_path))

    assert default == omniglot.DEFAULT_DIR
    assert set(SHIPPED[omniglot.DEFAULT_DIR]) <= files
    assert omniglot.omniglot_dir() == tmp_path  # the variable still overrides


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name lookup or connection attempt is recorded and fails."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[:2]!r}")
            raise OSError(f"test: no network ({what})")

        return call

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


def _device() -> Graph:
    graph = Graph()
    kitchen = DEVICE["kitchen-nano-3"]
    graph.add((kitchen, RDF.type, FEDSIM.Device))
    graph.add((kitchen, FEDSIM.deviceName, Literal("kitchen-nano-3")))
    graph.add((kitchen, FEDSIM.hasProfile, DEV["nano33-ble-sense"]))
    return graph


def test_td_export_import_and_check_make_no_network_request(no_network: list[str]) -> None:
    graph = _device()

    document = td.export_td(graph, "device:kitchen-nano-3")
    imported = td.import_td(document)
    problems = td.check_td(document)

    assert document["@context"][0] == td.TD_CONTEXT  # the remote URL, resolved locally
    assert len(imported) == len(graph)
    assert problems == []
    assert no_network == []


def test_a_foreign_remote_context_is_refused_without_a_request(no_network: list[str]) -> None:
    document = {"@context": "http://127.0.0.1:9/context.jsonld", "id": "urn:x", "title": "x"}

    with pytest.raises(FedsimError, match=r"/@context: cannot resolve context .* offline"):
        td.td_to_rdf(document)
    assert no_network == []
