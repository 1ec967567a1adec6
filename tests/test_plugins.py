"""Users' models, datasets and cost models by the two routes a scenario can name them (a dotted
path to a module on the path, an installed entry point), run as the built-ins are; wrong ones fail
with one located line. And a device profile of the scenario's own Turtle (``registry.data``)."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.cost import COST_MODELS
from devices.fleet import load_fleet
from fedsim.core.data import DATASETS
from fedsim.core.errors import FedsimError
from fedsim.core.models import MODELS
from fedsim.core.plugins import Plugins
from tests.conftest import tiny_scenario

Write = Callable[..., Path]
HERE = Path(__file__).parent / "data" / "plugins"
USER = "user_plugins"  # tests/data/plugins/user_plugins.py, put on the path by `on_path`
TABLES: dict[str, tuple[Plugins[Any], str]] = {  # where the name goes → its table, entry group
    "task.model": (MODELS, "fedsim.models"),
    "task.dataset": (DATASETS, "fedsim.datasets"),
    "fleet.cost_model": (COST_MODELS, "fedsim.cost_models"),
}
GOOD = {
    "task.model": f"{USER}:tiny_mlp",
    "task.dataset": f"{USER}:TWO_BLOBS",
    "fleet.cost_model": f"{USER}:MIXED_COSTS",
}


@pytest.fixture(autouse=True)
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(HERE))
    yield
    for table, _ in TABLES.values():  # a resolved name is kept per process: forget the users'
        for name in [n for n in table._loaded if n not in table.builtins()]:
            del table._loaded[name]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str, str], None]:
    """Pretend a package installed entry point ``name = value`` in ``group``."""
    extra: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        found = real(**params)
        if "group" not in params:
            return found
        return [*found, *(e for e in extra if e.group == params["group"])]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return lambda group, name, value: extra.append(
        importlib.metadata.EntryPoint(name, value, group)
    )


def _scenario(key: str, name: str, **more: Any) -> dict[str, Any]:
    """The tiny scenario with ``task.model``, ``task.dataset`` or ``fleet.cost_model`` = name."""
    section, field = key.split(".")
    data = tiny_scenario(**more)
    data[section] = {**data[section], field: name}
    if key == "task.dataset":  # a 4-feature dataset: the default mlp takes any width
        data["fleet"]["partition"] = {"kind": "iid"}
    return data


def _one_line(path: Path) -> str:
    with pytest.raises(FedsimError) as info:
        load_fleet(path)
    lines = info.value.lines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("key", list(GOOD))
def test_a_dotted_path_runs_a_scenario(write_scenario: Write, tmp_path: Path, key: str) -> None:
    from fedsim.runner import run

    path = write_scenario(_scenario(key, GOOD[key], rounds=2))

    result = run(path, tmp_path / "out", engine="inline")

    assert (tmp_path / "out" / "model.npz").is_file()
    assert result.summary["rounds"] == 2


@pytest.mark.parametrize("key", list(GOOD))
def test_an_installed_entry_point_is_a_name_like_the_built_ins(
    write_scenario: Write, installed: Callable[[str, str, str], None], key: str
) -> None:
    table, group = TABLES[key]
    installed(group, "theirs", GOOD[key])

    scenario, fleet = load_fleet(write_scenario(_scenario(key, "theirs")))

    assert "theirs" in table.names()
    assert len(fleet) == scenario.fleet.size
    if key == "task.dataset":
        assert fleet.data.name == "two-blobs"


def test_what_a_users_plugin_makes_is_used(write_scenario: Write) -> None:
    from fedsim.core.task_model import task_model

    scenario, fleet = load_fleet(write_scenario(_scenario("task.model", GOOD["task.model"])))
    model = task_model(scenario, fleet.data.num_features, fleet.data.num_outputs, 0)

    assert [p.shape[0] for p in model.parameters()] == [8, 8, 10, 10]  # its hidden layer of 8


@pytest.mark.parametrize("key", list(GOOD))
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no_such_module_here:thing", r"cannot import module 'no_such_module_here' for "),
        (f"{USER}:missing", rf"module '{USER}' has no 'missing' "),
        (f"{USER}:NOT_A_THING", r"'user_plugins:NOT_A_THING' is a int, not a "),
    ],
)
def test_a_bad_dotted_path_is_one_located_line(
    write_scenario: Write, key: str, target: str, expected: str
) -> None:
    path = write_scenario(_scenario(key, target), "s.yaml")

    line = _one_line(path)

    assert line.startswith(f"{path}:")
    assert f": {key}: " in line
    assert re.search(expected, line), line


def test_an_incomplete_cost_model_names_what_it_lacks(write_scenario: Write) -> None:
    path = write_scenario(_scenario("fleet.cost_model", f"{USER}:INCOMPLETE_COSTS"), "s.yaml")

    line = _one_line(path)

    assert line.startswith(f"{path}:")
    assert (
        "fleet.cost_model: cost model 'user_plugins:INCOMPLETE_COSTS' is incomplete: it has "
        "no energy.millijoules"
    ) in line


def test_a_builder_that_returns_no_module_fails_validate(write_scenario: Write) -> None:
    from fedsim.cli.run import summarize

    path = write_scenario(_scenario("task.model", f"{USER}:no_module"), "s.yaml")

    with pytest.raises(FedsimError) as info:
        summarize(path)

    assert info.value.line().startswith(f"{path}:")
    assert "task.model: model 'user_plugins:no_module' built a list, not a torch.nn.Module" in (
        info.value.line()
    )


def test_an_entry_point_that_does_not_load_is_located(
    write_scenario: Write, installed: Callable[[str, str, str], None]
) -> None:
    installed("fedsim.models", "broken", "no_such_module_here:build")
    path = write_scenario(_scenario("task.model", "broken"), "s.yaml")

    line = _one_line(path)

    assert line.startswith(f"{path}:")
    assert "task.model: the installed model 'broken'" in line


# --- a device profile of the scenario's own Turtle -------------------------------------------


def _with_board(write_scenario: Write, profile: str) -> Path:
    (write_scenario("", "s.yaml").parent / "my-board.ttl").write_text(
        (HERE / "my-board.ttl").read_text(encoding="utf-8"), encoding="utf-8"
    )
    groups = [{"profile": "rpi4", "count": 3}, {"profile": profile, "count": 2}]
    data = tiny_scenario(registry={"data": ["my-board.ttl"]})
    data["fleet"] = {**data["fleet"], "groups": groups}
    return write_scenario(data, "s.yaml")


def test_a_profile_in_registry_data_is_a_groups_profile(write_scenario: Write) -> None:
    _, fleet = load_fleet(_with_board(write_scenario, "my-board"))

    board = fleet[3].profile
    assert fleet.by_profile() == {"rpi4": 3, "my-board": 2}
    assert (board.clock_mhz, board.sram_bytes, board.cycles_per_mac) == (100.0, 262144, 5.0)
    assert fleet[3].link is not None
    assert fleet[3].link.kind == "ble"


def test_a_profile_in_neither_is_still_unknown(write_scenario: Write) -> None:
    path = _with_board(write_scenario, "my-bored")

    line = _one_line(path)

    assert line.startswith(f"{path}:")
    assert "fleet.groups[1].profile: unknown profile 'my-bored'; known: " in line
    assert "my-board" in line
    assert "(did you mean 'my-board'?)" in line


def test_a_profile_in_registry_data_needs_the_file(write_scenario: Write) -> None:
    data = tiny_scenario(registry={"data": ["my-board.ttl"]})
    data["fleet"] = {**data["fleet"], "groups": [{"profile": "my-board", "count": 5}]}
    path = write_scenario(data, "s.yaml")

    line = _one_line(path)

    assert "registry.data[0]: no file " in line


# --- the tables name their entries, the entries never import the tables ----------------------


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("fedsim/core/datasets/*.py", "fedsim.core.data"),
        ("fedsim/core/data.py", "fedsim.core.datasets"),  # but .base: the types both share
        ("devices/topology.py", "devices.fleet"),
    ],
)
def test_no_import_cycle(importer: str, imported: str) -> None:
    root = Path(__file__).parents[1]
    for path in root.glob(importer):
        found = {m for m in _imports(path) if m == imported or m.startswith(f"{imported}.")}
        assert found <= {"fedsim.core.datasets.base"}, (path, found)


def test_naming_a_dataset_imports_only_its_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from fedsim.core.data import dataset_source; dataset_source('sine'); "
        "print(sorted(m for m in sys.modules if m.startswith('fedsim.core.datasets.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.split() == ["['fedsim.core.datasets.base',", "'fedsim.core.datasets.sine']"]
