"""Property: whatever a scenario file holds, loading it gives a valid ``Scenario`` or located error
lines (``file:line: key: what; fix``), never another exception, always within 2 s.

Inputs start from a real scenario (scenarios/quickstart.yaml) and are mutated: any key's value
replaced by a value of the wrong type or size (huge and negative integers, non-finite floats, long
strings, collections), keys dropped or added, values nested deep, lines duplicated, characters
inserted into the text, or the whole file replaced by random bytes. The budget is fixed and the
examples derandomised, so CI sees the same inputs every run.
"""

from __future__ import annotations

import copy
import math
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim.cli import main
from fedsim.core.errors import ExitCode, FedsimError
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import load_scenario
from tests.conftest import SCENARIOS

BASE: dict[str, Any] = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text("utf-8"))
BUDGET = settings(
    max_examples=300,
    deadline=2000,  # ms per example, on top of the 2 s asserted below
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Loc = tuple[str | int, ...]


def _paths(node: Any, loc: Loc = ()) -> Iterator[Loc]:
    """Every key (and list item) of a scenario, as a path from the top."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield (*loc, key)
        if isinstance(value, dict | list):
            yield from _paths(value, (*loc, key))


PATHS = list(_paths(BASE))

EDGE_INTS = [0, -1, 1, 2**31, 2**32, 2**32 - 1, 2**63, -(2**63), 10**8, 10**12, 10**100]
values = st.recursive(
    st.one_of(
        st.sampled_from(EDGE_INTS),
        st.integers(),
        st.floats(),  # nan and ±inf included
        st.text(max_size=40),
        st.text(min_size=256, max_size=2000),
        st.booleans(),
        st.none(),
        st.sampled_from(["digits", "mlp", "fedavg", "dirichlet", "rpi4", "markov", "trace", ".."]),
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _set(data: dict[str, Any], loc: Loc, value: Any) -> None:
    node: Any = data
    for part in loc[:-1]:
        node = node[part]
    node[loc[-1]] = value


def _delete(data: dict[str, Any], loc: Loc) -> None:
    node: Any = data
    for part in loc[:-1]:
        node = node[part]
    del node[loc[-1]]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """YAML text of the base scenario after one to three structural mutations."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        loc = draw(st.sampled_from(list(_paths(data)) or [("name",)]))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add", "nest", "extends"]))
        try:
            if action == "set":
                _set(data, loc, draw(values))
            elif action == "extends":  # a path of any shape: long, odd characters, a folder
                data["extends"] = draw(st.text(max_size=5000) | st.sampled_from([".", "/", "/dev"]))
            elif action == "delete":
                _delete(data, loc)
            elif action == "add":
                _set(data, (*loc[:-1], draw(st.text(min_size=1, max_size=30))), draw(values))
            else:  # the value buried under many levels of lists or mappings
                value: Any = draw(values)
                for _ in range(draw(st.integers(10, 200))):
                    value = [value] if draw(st.booleans()) else {"k": value}
                _set(data, loc, value)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            continue
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))


# YAML's own syntax, inserted anywhere: anchors, aliases, tags, merge keys, documents, flow
SNIPPETS = st.sampled_from(
    [
        "&a ",
        "*a",
        "*a\n",
        "!!python/object:os.system ",
        "!!binary ",
        "!!float ",
        "<<: *a\n",
        "? ",
        "- ",
        "{",
        "[",
        "}",
        "]",
        ": ",
        "\t",
        "'",
        '"',
        "%YAML 1.1\n",
        "---\n",
        "...\n",
        "~",
        "|\n",
    ]
)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """The base scenario's text with lines duplicated or characters inserted, as bytes."""
    text = (SCENARIOS / "quickstart.yaml").read_text("utf-8")
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines.insert(i, lines[i])  # a duplicate key, most of the time
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = (
                lines[i][:at] + draw(SNIPPETS | st.text(min_size=1, max_size=8)) + lines[i][at:]
            )
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]))
    return "".join(lines).encode(encoding, errors="replace")


def _check(content: str | bytes) -> None:
    """Load ``content`` as a scenario file: a Scenario, or one located line per problem."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        start = time.perf_counter()
        try:
            scenario = load_scenario(path)
        except FedsimError as exc:
            lines = exc.lines()
            assert lines
            for line in lines:
                assert line.startswith(str(path)), line
                assert "\n" not in line
                assert "\r" not in line
                assert len(line) < 1000, line
                assert re.match(re.escape(str(path)) + r"(:\d+)?: \S", line), line
        else:
            _assert_sane(scenario)
        assert time.perf_counter() - start < 2.0


def _numbers(value: Any) -> Iterator[int | float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def _assert_sane(scenario: Scenario) -> None:
    """What a valid scenario promises the run: finite numbers, 32-bit seeds, sizes that fit."""
    assert isinstance(scenario, Scenario)
    assert all(math.isfinite(n) for n in _numbers(scenario.model_dump()))
    assert 0 <= scenario.seed < 2**32
    assert scenario.fleet.size <= 1_000_000
    assert scenario.rounds <= 100_000
    assert len(scenario.name.encode()) <= 255
    assert set(scenario.name) != {"."}


@BUDGET
@given(mutated())
def test_any_mutation_of_a_scenario_loads_or_gives_located_lines(text: str) -> None:
    _check(text)


@BUDGET
@given(damaged())
def test_damaged_text_loads_or_gives_located_lines(content: bytes) -> None:
    _check(content)


@settings(BUDGET, max_examples=200)
@given(st.binary(max_size=4096) | st.text(max_size=2000).map(str.encode))
def test_random_bytes_and_text_give_located_lines(content: bytes) -> None:
    _check(content)


@settings(BUDGET, max_examples=40)
@given(st.integers(65, 20_000), st.sampled_from(["[", "{a: "]))
def test_any_nesting_depth_gives_one_located_line(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    _check(f"name: t\ndescription: {opener * depth}1{closer * depth}\n")


@settings(
    BUDGET,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.one_of(mutated().filter(lambda t: "fleet" not in t), st.binary(max_size=512)))
def test_validate_exits_2_with_located_lines_and_no_traceback(
    capsys: pytest.CaptureFixture[str], content: str | bytes
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        capsys.readouterr()  # the fixture is shared by the examples: start each one empty
        saved, sys.argv = sys.argv, ["fedsim", "validate", str(path)]
        try:
            with pytest.raises(SystemExit) as info:
                main()
        finally:
            sys.argv = saved
        err = capsys.readouterr().err

    assert info.value.code == ExitCode.BAD_INPUT  # no fleet: never a valid scenario
    assert "Traceback" not in err
    assert all(line.startswith(f"error: {path}") for line in err.strip().splitlines()), err
