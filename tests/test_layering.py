"""The rooms of fedsim (design §2), checked on the source: who may import what.

Rooms come from the folder layout, not from a list of modules: every top-level package of the
repository is a room, except that ``fedsim/core`` (the ground floor) and the rest of ``fedsim``
(the top floor: CLI, runner, plugins for pytest) are two. A new package must be given a place in
``MAY_IMPORT`` (a test fails until it is), and a new module joins its folder's room by itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache

import pytest

from tests.conftest import ROOT

NOT_CODE = {"tests", "benchmarks", "examples", "scenarios", "results", "build"}
GROUND, TOP = "fedsim.core", "fedsim"

# room → the rooms it may import (itself always). Lower floors never import higher ones.
MAY_IMPORT: dict[str, set[str]] = {
    "edge": set(),  # the real hardware: numpy and pyserial only, its own distribution
    GROUND: {"edge"},  # specs, data, models, algorithms: everyone's ground
    "ontology": {GROUND},  # the registry describes devices; it runs nothing
    "devices": {GROUND, "ontology"},  # the simulated device model
    "clients": {GROUND, "devices", "edge"},  # what devices do in a round (the attached ones too)
    "server": {GROUND, "devices", "ontology"},  # the round loop
    TOP: {GROUND, "ontology", "devices", "clients", "server", "edge"},
}


def _packages() -> list[str]:
    """The repository's top-level Python packages (folders with an ``__init__.py``)."""
    return sorted(
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in NOT_CODE
    )


def room(module: str) -> str | None:
    """The room a project module is in (None: not a project module)."""
    top = module.split(".")[0]
    if top not in _packages():
        return None
    if top == "fedsim":
        return GROUND if module == GROUND or module.startswith(GROUND + ".") else TOP
    return top


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, top_level_only: bool) -> Iterator[str]:
    """Modules imported (absolute names); ``top_level_only``: those run at import time (not in
    functions, not under ``if TYPE_CHECKING``)."""

    def walk(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from (a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.module
                yield from (f"{child.module}.{a.name}" for a in child.names)
            elif (
                top_level_only
                and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            ) or (top_level_only and isinstance(child, ast.If) and _is_type_checking(child)):
                continue
            else:
                yield from walk(child)

    return walk(tree)


@cache
def _sources() -> dict[str, ast.Module]:
    found = {}
    for package in _packages():
        for path in (ROOT / package).rglob("*.py"):
            if "build" in path.relative_to(ROOT).parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    """module → the project modules it imports (names resolved to modules that exist)."""
    modules = _sources()
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        targets = set()
        for imported in _imports(tree, top_level_only):
            while imported and imported not in modules:  # "pkg.mod.Class" → "pkg.mod"
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_every_package_has_a_room() -> None:
    rooms = {room(p) for p in _packages()} | {GROUND}
    assert rooms <= set(MAY_IMPORT), f"give {rooms - set(MAY_IMPORT)} a place in MAY_IMPORT"
    assert {"edge", "fedsim"} <= set(_packages())  # the layout this test reads


@pytest.mark.parametrize("source", sorted(MAY_IMPORT))
def test_each_room_imports_only_the_rooms_below_it(source: str) -> None:
    wrong = []
    for module, imports in _graph(top_level_only=False).items():
        if room(module) != source:
            continue
        for imported in imports:
            target = room(imported)
            if target is not None and target != source and target not in MAY_IMPORT[source]:
                wrong.append(f"{module} imports {imported} ({target})")
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` importing its own modules (re-exports) is not a cycle."""
    return {
        m: {t for t in targets if not t.startswith(m + ".") and not m.startswith(t + ".")}
        for m, targets in graph.items()
    }


def test_no_import_cycles() -> None:
    cycles = _cycles(_without_packages(_graph(top_level_only=False)))
    assert not cycles, "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# -- no module outside the algorithm package asks which algorithm it runs --------------------------

ALGORITHM_PACKAGE = "fedsim.core.algorithms"


@cache
def _algorithm_names() -> tuple[frozenset[str], frozenset[str]]:
    """The built-in kinds and the names of their classes."""
    from fedsim.core.algorithms import ALGORITHMS, Algorithm

    kinds = frozenset(ALGORITHMS.builtins())
    classes = set()
    for kind in kinds:
        cls = ALGORITHMS.get(kind)
        classes |= {c.__name__ for c in cls.__mro__ if issubclass(c, Algorithm)}
    return kinds, frozenset(classes - {"Algorithm"})


@cache
def _package_classes() -> frozenset[str]:
    """Every class the algorithm package defines (learners, partials...): asking whether an
    object is one of them is asking which algorithm runs."""
    names = set()
    for module, tree in _sources().items():
        if module == ALGORITHM_PACKAGE or module.startswith(ALGORITHM_PACKAGE + "."):
            names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    return frozenset(names - {"Algorithm", "Learner"})


def _type_tests(node: ast.AST) -> Iterator[tuple[int, str]]:
    """``isinstance(x, C)``, ``issubclass(x, C)`` and ``type(x) is C`` in ``node``: (line, C)."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("isinstance", "issubclass")
        and len(node.args) == 2
    ):
        for name in ast.walk(node.args[1]):
            if isinstance(name, ast.Name):
                yield node.lineno, name.id
    if isinstance(node, ast.Compare) and any(isinstance(o, ast.Is | ast.IsNot) for o in node.ops):
        for part in node.comparators:
            if isinstance(part, ast.Name):
                yield node.lineno, part.id


def _branches(tree: ast.AST) -> Iterator[str]:
    """What in ``tree`` tells algorithms apart: their classes, or their kinds compared."""
    kinds, classes = _algorithm_names()
    package = _package_classes()
    for node in ast.walk(tree):
        for line, name in _type_tests(node):
            if name in package:
                yield f"line {line}: tests whether an object is a {name}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(ALGORITHM_PACKAGE):
            for alias in node.names:
                if alias.name in classes:
                    yield f"line {node.lineno}: imports {alias.name}"
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in classes:
                yield f"line {node.lineno}: uses {name}"
        elif isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                for const in ast.walk(part):
                    if isinstance(const, ast.Constant) and const.value in kinds:
                        yield f"line {node.lineno}: compares with kind {const.value!r}"
        elif isinstance(node, ast.Match):
            for case in node.cases:
                for const in ast.walk(case.pattern):
                    if isinstance(const, ast.Constant) and const.value in kinds:
                        yield f"line {node.lineno}: matches kind {const.value!r}"


def test_no_module_outside_the_algorithms_branches_on_an_algorithm() -> None:
    found = [
        f"{module} {why}"
        for module, tree in _sources().items()
        if not (module == ALGORITHM_PACKAGE or module.startswith(ALGORITHM_PACKAGE + "."))
        for why in _branches(tree)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "code",
    [
        "from fedsim.core.algorithms.tinyol import TinyOL",
        "ok = isinstance(spec, PrototypesX) or isinstance(spec, Prototypes)",
        "if scenario.algorithm.kind == 'tinyol': pass",
        "if kind in ('fedavg', 'fedprox'): pass",
        "match kind:\n    case 'fedins':\n        pass",
        "if isinstance(learner, LocalSgd): pass",
        "if type(learner) is OnlineHeadLearner: pass",
    ],
)
def test_the_branch_finder_finds_each_form(code: str) -> None:
    assert list(_branches(ast.parse(code)))


def test_the_branch_finder_lets_the_protocol_through() -> None:
    code = "from fedsim.core.algorithms import Algorithm\nx = scenario.algorithm.learner()"
    assert not list(_branches(ast.parse(code)))


# -- the seams that predate the rooms ------------------------------------------------------------


def _importers(prefix: str) -> set[str]:
    return {
        m
        for m, tree in _sources().items()
        if any(i == prefix or i.startswith(prefix + ".") for i in _imports(tree, False))
    }


def test_flower_simulation_is_imported_only_by_the_runner() -> None:
    assert _importers("flwr.simulation") == {"fedsim.runner"}


def test_rdflib_is_imported_only_under_ontology() -> None:
    assert all(m.startswith("ontology") for m in _importers("rdflib"))


def test_the_edge_package_needs_only_numpy_and_pyserial() -> None:
    import sys

    allowed = {"numpy", "serial", "edge"} | set(sys.stdlib_module_names)
    for module, tree in _sources().items():
        if room(module) == "edge":
            outside = {i.split(".")[0] for i in _imports(tree, False)} - allowed
            assert not outside, (module, outside)
