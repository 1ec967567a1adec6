"""Scenario loading: every shipped scenario validates; bad input gives pinned, located messages."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from devices.fleet import load_fleet as plan
from fedsim.core.algorithms.fedprox import FedProx
from fedsim.core.errors import FedsimError
from fedsim.core.scenario import DirichletPartition
from fedsim.core.scenario_load import ScenarioError, load_scenario
from tests.conftest import SCENARIOS, tiny_scenario

Write = Callable[..., Path]


@pytest.mark.parametrize("path", sorted(SCENARIOS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    scenario, fleet = plan(path)

    assert len(fleet) == scenario.fleet.size > 0
    assert all(d.num_examples > 0 for d in fleet.devices)


def test_extends_merges_child_over_base() -> None:
    scenario = load_scenario(SCENARIOS / "quickstart-fedprox.yaml")
    base = load_scenario(SCENARIOS / "quickstart.yaml")

    assert isinstance(scenario.algorithm, FedProx)
    assert scenario.algorithm.mu == 0.05
    assert scenario.algorithm.lr == base.algorithm.lr  # inherited
    assert scenario.fleet == base.fleet
    assert scenario.digest() != base.digest()


def test_digest_ignores_key_order_and_defaults(write_scenario: Write) -> None:
    data = tiny_scenario()
    reordered = dict(reversed(list(data.items())))
    explicit = tiny_scenario(evaluation={"every": 1})

    digests = {
        load_scenario(write_scenario(d, f"{i}.yaml")).digest()
        for i, d in enumerate((data, reordered, explicit))
    }

    assert len(digests) == 1


def _error_lines(path: Path) -> list[str]:
    with pytest.raises(FedsimError) as info:
        plan(path)
    return info.value.lines()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"roundz": 3},
            r"s\.yaml:\d+: roundz: unknown key 'roundz' \(did you mean 'rounds'\?\); known keys: "
            r"algorithm, asynchrony, clients_per_round, .*rounds, seed, task, topology$",
        ),
        (
            {"algorithm": {"kind": "fedavg", "lrr": 0.1}},
            r"s\.yaml:\d+: algorithm\.lrr: unknown key 'lrr' \(did you mean 'lr'\?\); "
            r"known keys: batch_size, kind, local_epochs, lr$",
        ),
        (
            {"rounds": "ten"},
            r"s\.yaml:\d+: rounds: expected an integer, got 'ten' \(str\); write a whole number",
        ),
        (
            {"rounds": "3"},  # strict: a quoted number is a string, not silently an int
            r"rounds: expected an integer, got '3' \(str\)",
        ),
        (
            {"algorithm": {"kind": "fedavgg"}},
            # (installed plugins join the list: the example package adds fedavgm and scaffold)
            r"algorithm\.kind: unknown algorithm 'fedavgg' \(did you mean 'fedavg'\?\); use one "
            r"of fedavg, (\S+, )*fedins, fedprox, prototypes, (\S+, )*tinymetafed, tinyol, "
            r"tinyreptile, or package\.module:Name for your own$",
        ),
        (
            {"task": {"dataset": "digit"}},
            r"task\.dataset: unknown dataset 'digit'; known: (\S+, )*digits, (\S+, )*\S+ "
            r"\(did you mean 'digits'\?\)$",
        ),
        (
            {"task": {"model": "mpl"}},
            r"task\.model: unknown model 'mpl'; known: conv4, conv4-proto, logreg, mlp, mlp-100, "
            r"mlp-proto, mlperf-ad, mlperf-ic, mlperf-kws, mlperf-vww, ssf-vit, tanh-64x2 "
            r"\(did you mean 'mlp'\?\)$",
        ),
        (
            {
                "fleet": {
                    "groups": [{"profile": "rpi4", "count": 2}, {"profile": "esp32-s4", "count": 1}]
                }
            },
            r"s\.yaml:\d+: fleet\.groups\[1\]\.profile: unknown profile 'esp32-s4'; "
            r"known: b-u585i-iot02a, .*esp32-s3, .*\(did you mean 'esp32-s3'\?\)$",
        ),
        (
            {"fleet": {"groups": [{"profile": "rpi4", "count": 0}]}},
            r"fleet\.groups\[0\]\.count: must be at least 1, got 0 \(int\); "
            r"use a value at least 1$",
        ),
        (
            {"clients_per_round": 50},
            r"s\.yaml:\d+: clients_per_round: 50 devices per round, but the fleet has only 5; "
            r"set it to at most 5",
        ),
        (
            {"execution": {"engine": "rai"}},
            r"execution\.engine: 'rai' is not allowed \(did you mean 'ray'\?\); "
            r"use 'auto', 'ray' or 'inline'$",
        ),
        (
            {
                "fleet": {
                    "groups": [{"profile": "rpi4", "count": 5}],
                    "partition": {"kind": "dirichlet", "alpha": -1},
                }
            },
            r"fleet\.partition\.alpha: must be greater than 0\.0, got -1 \(int\)",
        ),
    ],
)
def test_bad_input_is_one_located_line(write_scenario: Write, change: dict, expected: str) -> None:
    path = write_scenario(tiny_scenario(**change), "s.yaml")

    lines = _error_lines(path)

    assert len(lines) == 1, lines
    assert lines[0].startswith(str(path))
    assert re.search(expected, lines[0]), lines[0]


def test_line_numbers_point_at_the_key(write_scenario: Write) -> None:
    path = write_scenario(
        "name: t\nfleet:\n  groups:\n    - profile: rpi4\n      count: x\n"
        "algorithm: {kind: fedavg}\nrounds: 1\n"
    )

    lines = _error_lines(path)

    assert lines == [
        f"{path}:5: fleet.groups[0].count: expected an integer, got 'x' (str); "
        "write a whole number, e.g. 10"
    ]


def test_several_problems_are_all_reported(write_scenario: Write) -> None:
    data = tiny_scenario(seed="x")
    del data["rounds"]
    path = write_scenario(data)

    lines = _error_lines(path)

    assert len(lines) == 2
    assert any("rounds: required key is missing; add 'rounds'" in line for line in lines)
    assert any("seed: expected an integer, got 'x'" in line for line in lines)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match=r"nope\.yaml: no such file; check the path"):
        plan(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(write_scenario: Write) -> None:
    path = write_scenario("name: x\nfleet: [\n")

    with pytest.raises(FedsimError, match=rf"{path}:3: invalid YAML: .*; fix the syntax"):
        load_scenario(path)


def test_top_level_must_be_a_mapping(write_scenario: Write) -> None:
    with pytest.raises(
        FedsimError, match=r"scenario\.yaml:1: expected a scenario: a mapping of keys, got list"
    ):
        load_scenario(write_scenario("- 1\n"))


def test_extends_cycle_is_an_error(write_scenario: Write) -> None:
    write_scenario("extends: b.yaml\n", "a.yaml")
    path = write_scenario("extends: a.yaml\n", "b.yaml")

    with pytest.raises(FedsimError, match=r"extends: cycle back to"):
        load_scenario(path)


def test_extends_reports_errors_in_the_base_file(write_scenario: Write) -> None:
    write_scenario(tiny_scenario(rounds="many"), "base.yaml")
    child = write_scenario({"extends": "base.yaml", "name": "child"}, "child.yaml")

    with pytest.raises(ScenarioError, match=r"base\.yaml:\d+: rounds: expected an integer"):
        load_scenario(child)


def test_impossible_dirichlet_split_is_explained(write_scenario: Write) -> None:
    fleet = {
        "groups": [{"profile": "pico", "count": 100}],
        "partition": {"kind": "dirichlet", "alpha": 0.01, "min_partition_size": 10},
    }
    path = write_scenario(tiny_scenario(fleet=fleet))

    with pytest.raises(FedsimError, match=r"fleet\.partition: Dirichlet\(alpha=0\.01\) could not"):
        plan(path)


def test_partition_spec_is_typed(write_scenario: Write) -> None:
    scenario = load_scenario(write_scenario(tiny_scenario()))

    assert isinstance(scenario.fleet.partition, DirichletPartition)
    assert scenario.fleet.partition.alpha == 1.0


# --- bad input, by class (issue 21): one located line each, quickly, never quoting a foreign file


def _one_line(path: Path, pattern: str, load: Callable[[Path], object] = load_scenario) -> str:
    """The single error line loading ``path`` gives, checked against ``pattern``, in < 2 s."""
    start = time.perf_counter()
    with pytest.raises(FedsimError) as info:
        load(path)
    assert time.perf_counter() - start < 2.0
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Resolve one valid fleet first: the 2 s bound is for checking, not for importing torch and
    loading the dataset on the first call."""
    path = tmp_path_factory.mktemp("warm") / "warm.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario()), encoding="utf-8")
    plan(path)


def _yaml(**changes: object) -> str:
    return yaml.safe_dump(tiny_scenario(**changes), sort_keys=False)


def test_duplicate_keys_name_both_lines(write_scenario: Write) -> None:
    top = write_scenario(_yaml() + "rounds: 9\n", "top.yaml")
    nested = write_scenario(
        "name: t\nrounds: 1\nfleet: {groups: [{profile: rpi4, count: 1}]}\n"
        "algorithm:\n  kind: fedavg\n  lr: 0.1\n  lr: 5.0\n",
        "nested.yaml",
    )

    _one_line(top, r"top\.yaml:\d+: rounds: duplicate key 'rounds' \(first at line \d+\); keep one")
    _one_line(nested, r"nested\.yaml:7: algorithm\.lr: duplicate key 'lr' \(first at line 6\)")


@pytest.mark.parametrize(
    "value",
    ["[" * 20_000 + "]" * 20_000, "{a: " * 20_000 + "1" + "}" * 20_000],
    ids=["lists", "mappings"],
)
def test_deep_nesting_is_refused_without_recursion(write_scenario: Write, value: str) -> None:
    path = write_scenario(f"name: t\ndescription: {value}\n")

    _one_line(
        path,
        r"scenario\.yaml:2: (YAML nested more than 64 levels deep|invalid YAML: exceeded maximum "
        r"nesting depth)",
    )


BOMB = "".join(  # 10⁹ strings in 400 bytes of YAML
    [
        "x: &a [l, l, l, l, l, l, l, l, l, l]\n",
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def test_an_alias_bomb_is_refused_before_it_is_expanded(write_scenario: Write) -> None:
    path = write_scenario("name: t\nbomb:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))

    _one_line(
        path,
        r"scenario\.yaml:7: bomb\.e: this value expands \(aliases included\) to over 100,000 "
        r"values; a scenario holds a few hundred values; remove the aliases",
    )


def test_an_alias_inside_its_own_anchor_is_refused(write_scenario: Write) -> None:
    path = write_scenario(_yaml(name="t") + "description: &d [*d]\n")

    _one_line(path, r"description\[0\]: an alias refers to a collection that contains it")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rounds: " + "9" * 5000, r":9: invalid YAML: cannot read this value: Exceeds the limit"),
        ("rounds: 2001-13-45", r":9: invalid YAML: cannot read this value: month must be in"),
        ("rounds: 2001-12-14", r":9: rounds: expected an integer, got a date; write a whole"),
    ],
    ids=["5000-digits", "13th-month", "date"],
)
def test_values_python_cannot_build_are_located(
    write_scenario: Write, line: str, expected: str
) -> None:
    head = "name: t\nfleet: {groups: [{profile: rpi4, count: 1}]}\nalgorithm: {kind: fedavg}\n"
    path = write_scenario(head + "\n" * 5 + line + "\n")  # on line 9

    _one_line(path, expected)


def test_error_messages_print_values_bounded(write_scenario: Write) -> None:
    long = write_scenario(_yaml(rounds="r" * 10_000), "long.yaml")
    tens = ["&a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abc", "bcd", strict=True)
    ]  # the last is 10 lists of 10 lists of 10 strings
    listed = write_scenario(f"{_yaml()}description: [{', '.join(tens)}]\n", "listed.yaml")

    line = _one_line(long, r"rounds: expected an integer, got 'r{59}…' \(str\); write a whole")
    assert len(line) < 300
    _one_line(listed, r"description: expected a string, got a list of 4 items; quote the value$")


def test_many_unknown_keys_are_listed_up_to_twenty_in_linear_time(write_scenario: Write) -> None:
    data = tiny_scenario(**{f"unknown_{i}": i for i in range(4000)})
    path = write_scenario(data)

    start = time.perf_counter()
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)

    assert time.perf_counter() - start < 2.0  # was 2.3 s, and 4,000 lines: quadratic location
    lines = info.value.lines()
    assert len(lines) == 21
    assert re.fullmatch(
        r".*scenario\.yaml:\d+: unknown_19: unknown key 'unknown_19'; .*", lines[19]
    )
    assert lines[20] == f"{path}: 3980 more problems; fix these first"


def test_extends_chains_are_capped(write_scenario: Write) -> None:
    write_scenario(tiny_scenario(), "c0.yaml")
    for i in range(1, 20):
        write_scenario({"extends": f"c{i - 1}.yaml", "description": f"level {i}"}, f"c{i}.yaml")

    _one_line(
        write_scenario({"extends": "c19.yaml"}, "top.yaml"),
        r"c5\.yaml:1: extends: a chain of more than 16 files extending each other",
    )
    assert load_scenario(write_scenario({"extends": "c14.yaml"}, "ok.yaml")).rounds == 3


def test_extends_cycle_names_the_line(write_scenario: Write) -> None:
    write_scenario("name: a\nextends: b.yaml\n", "a.yaml")
    path = write_scenario("# b\nextends: a.yaml\n", "b.yaml")

    _one_line(path, r"a\.yaml:2: extends: cycle back to .*b\.yaml; remove it")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seed": -1}, r"seed: must be from 0 to 4,294,967,295, got -1 \(int\): numpy"),
        ({"seed": 2**32}, r"seed: must be from 0 to 4,294,967,295, got 4294967296 \(int\)"),
        ({"rounds": 10**12}, r"rounds: must be at most 100,000, got 1000000000000 \(int\): every"),
        (
            {"fleet": {"groups": [{"profile": "rpi4", "count": 10**9}]}},
            r"fleet\.groups\[0\]\.count: must be at most 1,000,000, got 1000000000 \(int\): every "
            r"device is simulated in this process",
        ),
        (
            {"fleet": {"groups": [{"profile": "rpi4", "count": 600_000}] * 2}},
            r"fleet\.groups: 1,200,000 devices in all: every device is simulated",
        ),
        (
            {"algorithm": {"kind": "fedavg", "batch_size": 10**12}},
            r"algorithm\.batch_size: must be at most 65,536, got 1000000000000 \(int\): a batch",
        ),
        (
            {"algorithm": {"kind": "fedavg", "local_epochs": 10**10}},
            r"algorithm\.local_epochs: must be at most 1,000, got 10000000000 \(int\)",
        ),
        (
            {"algorithm": {"kind": "tinyreptile", "steps": 10**11}},
            r"algorithm\.steps: must be at most 1,000,000, got 100000000000 \(int\)",
        ),
        ({"name": "n" * 256}, r"name: is 256 bytes long: it becomes a file or folder name"),
        ({"name": ".."}, r"name: '\.\.' names a folder, not a run"),
        ({"output": {"dir": "a\x00b"}}, r"output\.dir: a path cannot hold a NUL character"),
        (
            {"registry": {"data": ["x/" + "a" * 300 + ".ttl"]}},
            r"registry\.data\[0\]: names a file or folder 304 bytes long: a name holds at most 255",
        ),
        (
            {"algorithm": {"kind": "fedavg", "lr": float("inf")}},
            r"algorithm\.lr: must be a finite number, got inf \(float\); write an ordinary number",
        ),
        (
            {"algorithm": {"kind": "fedavg", "lr": float("nan")}},
            r"algorithm\.lr: must be a finite number, got nan \(float\)",
        ),
        (
            {
                "fleet": {
                    "groups": [{"profile": "rpi4", "count": 2}],
                    "partition": {"kind": "dirichlet", "alpha": float("inf")},
                }
            },
            r"fleet\.partition\.alpha: must be a finite number, got inf",
        ),
        (
            {
                "fleet": {
                    "groups": [
                        {
                            "profile": "rpi4",
                            "count": 2,
                            "availability": {"kind": "markov", "mean_on_s": 1e-9, "mean_off_s": 5},
                        }
                    ]
                }
            },
            r"fleet\.groups\[0\]\.availability\.mean_on_s: must be at least 1, got 1e-09 "
            r"\(float\): spells are simulated one by one, .*; use at least 1$",
        ),
    ],
)
def test_values_that_would_exhaust_memory_or_time_are_refused_with_the_reason(
    write_scenario: Write, change: dict, expected: str
) -> None:
    _one_line(write_scenario(tiny_scenario(**change), "s.yaml"), r"s\.yaml:\d+: " + expected)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            _yaml().encode("utf-16"),
            r":1: expected a scenario \(YAML\) in UTF-8; the file starts "
            r"with a UTF-16 byte order mark; re-save it as UTF-8 text$",
        ),
        (_yaml().encode("utf-16-le"), r":1: expected a scenario \(YAML\) in UTF-8, found a NUL"),
        (
            ("# caf\u00e9\n" + _yaml()).encode("latin-1"),
            r":1: expected a scenario \(YAML\) in "
            r"UTF-8; byte 0xe9 at column 6 is not UTF-8",
        ),
        (b"x" * (200 * 1024), r"scenario\.yaml: a scenario \(YAML\) file is over 131,072 bytes"),
    ],
    ids=["utf-16", "utf-16-no-bom", "latin-1", "too-large"],
)
def test_scenarios_must_be_utf8_text(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(content)

    _one_line(path, expected)


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + _yaml().encode())

    assert load_scenario(path).name == "tiny"


SECRET = "API_TOKEN: hunter2\nDB_PASSWORD: s3cr3t\n"


def test_extends_of_a_file_that_is_no_scenario_does_not_quote_it(write_scenario: Write) -> None:
    write_scenario(SECRET, "secret.env")
    path = write_scenario({"extends": "secret.env", "name": "x"}, "s.yaml")

    line = _one_line(
        path,
        r"s\.yaml:1: extends: .*secret\.env is not a scenario: none of its 2 top-level keys is a "
        r"scenario key; extends must name a scenario YAML",
    )
    assert "hunter2" not in line
    assert "API_TOKEN" not in line


def test_a_scenario_path_to_another_kind_of_file_does_not_quote_it(write_scenario: Write) -> None:
    mapping = write_scenario(SECRET, "secret.yaml")
    text = write_scenario("root:x:0:0:root:/root:/bin/bash\n", "passwd.yaml")

    for path, expected in (
        (mapping, r"secret\.yaml:1: .*is not a scenario: none of its 2 top-level keys"),
        (text, r"passwd\.yaml:1: expected a scenario: a mapping of keys, got str"),
    ):
        line = _one_line(path, expected)
        assert "hunter2" not in line
        assert "root:" not in line.removeprefix(str(path))


def _with_trace(write_scenario: Write, trace: Path) -> Path:
    fleet = {
        "groups": [
            {"profile": "rpi4", "count": 5, "availability": {"kind": "trace", "file": str(trace)}}
        ]
    }
    return write_scenario(tiny_scenario(fleet=fleet), "s.yaml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SECRET.encode(), r"trace\.csv:1: expected a trace: a CSV whose first line is device,"),
        (
            "device,start,end\n0,0,1\n".encode("utf-16"),
            r"trace\.csv:1: expected a trace \(CSV\) "
            r"in UTF-8; the file starts with a UTF-16 byte order mark",
        ),
        (
            b"device,start,end\n0,0,1\xe9\n",
            r"trace\.csv:2: expected a trace \(CSV\) in UTF-8; "
            r"byte 0xe9",
        ),
        (
            b"device,start,end\n0,0," + b"1" * 200_000 + b"\n",
            r"trace\.csv:2: not a line of CSV "
            r"\(field larger than field limit \(131072\)\)",
        ),
        (
            b"device,start,end\n0,0\n",
            r"trace\.csv:2: expected 3 columns \(device,start,end\), got 2",
        ),
    ],
    ids=["not-a-trace", "utf-16", "latin-1", "field-limit", "columns"],
)
def test_bad_traces_are_located_and_not_quoted(
    warm: None, write_scenario: Write, tmp_path: Path, content: bytes, expected: str
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(content)

    line = _one_line(_with_trace(write_scenario, trace), expected, plan)
    assert "hunter2" not in line
    assert "API_TOKEN" not in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"@prefix : <http://x/> .\n:a :b\n", r"data\.ttl:\d+: Turtle syntax error"),
        ("@prefix : <http://x/> .\n".encode("utf-16"), r"data\.ttl:1: expected Turtle in UTF-8"),
        (None, r"s\.yaml:\d+: registry\.data\[0\]: no file .*data\.ttl; give a Turtle file's path"),
    ],
    ids=["syntax", "utf-16", "missing"],
)
def test_registry_data_the_fleet_does_not_use_is_still_checked(
    warm: None, write_scenario: Write, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "data.ttl").write_bytes(content)
    path = write_scenario(tiny_scenario(registry={"data": ["data.ttl"]}), "s.yaml")

    _one_line(path, expected, plan)


@pytest.mark.parametrize(
    ("extends", "expected"),
    [
        ("a" * 5000, r"s\.yaml:1: extends: .*/a{20,}…: not a usable path \(File name too long\)"),
        ("a\x00b", r"s\.yaml:1: extends: .*/a\\x00b: no such file; give the path of a scenario"),
        (".", r"s\.yaml:1: extends: .*: not a file; give the path of a scenario YAML"),
        ("/dev/zero", r"s\.yaml:1: extends: /dev/zero: not a file"),
        (["a.yaml"], r"s\.yaml:1: extends: expected a file path, got a list of 1 items"),
    ],
    ids=["long", "nul", "folder", "device", "list"],
)
def test_extends_of_a_path_that_is_no_file(
    write_scenario: Write, extends: object, expected: str
) -> None:
    path = write_scenario({"extends": extends, "name": "x"}, "s.yaml")

    _one_line(path, expected)


def test_more_shards_than_samples_is_explained(warm: None, write_scenario: Write) -> None:
    fleet = {
        "groups": [{"profile": "rpi4", "count": 10}],
        "partition": {"kind": "shards", "shards_per_device": 200},
    }
    path = write_scenario(tiny_scenario(fleet=fleet), "s.yaml")

    _one_line(
        path,
        r"s\.yaml:\d+: fleet\.partition: cannot deal 200 label shards to each of 10 devices "
        r"\(.*\); lower shards_per_device",
        plan,
    )
