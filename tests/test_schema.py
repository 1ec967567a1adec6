"""The scenario's JSON Schema and Markdown reference (fedsim.schema): generated from the models,
committed as fedsim/scenario.schema.json, pointed at by every shipped scenario, and agreeing with
what fedsim validate accepts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from fedsim.core.algorithms import ALGORITHMS
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import merged_data
from fedsim.core.specs import at_most
from fedsim.schema import (
    KIND_PATTERN,
    SCHEMA_FILE,
    scenario_json_schema,
    scenario_reference_markdown,
    schema_comment,
    schema_text,
)
from tests.conftest import SCENARIOS

SHIPPED = sorted(SCENARIOS.rglob("*.yaml"))
REGENERATE = ".venv/bin/fedsim schema -o fedsim/scenario.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return scenario_json_schema()


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text("utf-8") == schema_text(), (
        f"fedsim/scenario.schema.json is stale: regenerate it with `{REGENERATE}`"
    )


def test_the_schema_is_draft_2020_12_with_an_id(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(SCENARIOS)))
def test_every_shipped_scenario_points_at_the_schema_and_validates_against_it(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    first = path.read_text("utf-8").splitlines()[0]
    assert first == schema_comment(os.path.relpath(SCHEMA_FILE, path.parent))
    assert (path.parent / first.split("=", 1)[1]).resolve() == SCHEMA_FILE
    # as written (what an editor sees: a file that extends another may leave keys to its base)
    assert _errors(validator, yaml.safe_load(path.read_text("utf-8"))) == []
    # and as fedsim reads it, its extends chain merged
    assert _errors(validator, merged_data(path)) == []


def _quickstart() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text("utf-8"))
    return data


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["fleet"]["groups"][0].update(cout=4), "fleet.groups.0"),
        (lambda d: d["algorithm"].update(lrr=0.1), "algorithm"),
        (lambda d: d.update(round=3), ""),
        (lambda d: d["algorithm"].update(kind="fedvag"), "algorithm.kind"),
        (lambda d: d["fleet"]["partition"].update(alpha="0.5"), "fleet.partition"),
        (lambda d: d.update(rounds=100_001), "rounds"),  # at_most's bound, in the schema
        (lambda d: d["fleet"].update(samples_per_device=0), "fleet.samples_per_device"),
        (lambda d: d.pop("fleet"), ""),
        (lambda d: d["execution"].update(engine="rya"), "execution.engine"),
    ],
)
def test_a_typo_or_a_value_out_of_range_fails(
    validator: jsonschema.Draft202012Validator, change: Any, where: str
) -> None:
    data = _quickstart()
    change(data)

    errors = _errors(validator, data)

    assert errors, "the schema accepted it"
    assert any(e.startswith(f"{where}:") for e in errors), errors
    with pytest.raises(ValidationError):  # and fedsim refuses it too
        Scenario.model_validate(data)


def test_a_file_that_extends_may_leave_out_what_its_base_gives(
    validator: jsonschema.Draft202012Validator,
) -> None:
    partial = {"extends": "quickstart.yaml", "algorithm": {"lr": 0.05}, "fleet": {"partition": {}}}
    assert _errors(validator, partial) == []
    assert _errors(validator, {**partial, "algorithm": {"lrr": 0.05, "kind": "fedavg"}})
    assert _errors(validator, {"algorithm": {"lr": 0.05}})  # no extends: name, fleet... missing


@pytest.mark.parametrize(
    ("kind", "ok"),
    [("fedavg", True), ("my_pkg.algos:MyAlgo", True), ("fedvag", False), ("pkg:", False)],
)
def test_an_algorithm_kind_is_a_known_one_or_package_module_class(
    validator: jsonschema.Draft202012Validator, kind: str, ok: bool
) -> None:
    data = _quickstart()
    data["algorithm"] = {"kind": kind, "anything": 1} if ":" in kind else {"kind": kind}
    assert (_errors(validator, data) == []) is ok
    assert bool(re.fullmatch(KIND_PATTERN, kind)) is (":" in kind and ok)


def test_each_built_in_kind_has_its_own_keys(schema: dict[str, Any]) -> None:
    algorithm = schema["$defs"]["Scenario"]["properties"]["algorithm"]
    branches = {
        b["if"]["properties"]["kind"]["const"]: b["then"]["$ref"] for b in algorithm["allOf"]
    }
    assert sorted(branches) == ALGORITHMS.builtins()
    for kind, ref in branches.items():
        keys = set(schema["$defs"][ref.rsplit("/", 1)[-1]]["properties"])
        assert keys == set(ALGORITHMS.get(kind).model_fields), kind


def _models(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, model in schema["$defs"].items():
        if not name.startswith("Partial"):
            yield name, model


def test_every_model_forbids_unknown_keys(schema: dict[str, Any]) -> None:
    for name, model in _models(schema):
        assert model.get("additionalProperties") is False, name


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    missing = [
        f"{name}.{key}"
        for name, model in _models(schema)
        for key, field in model.get("properties", {}).items()
        if not str(field.get("description", "")).strip()
    ]
    assert missing == [], "add Field(description=...) to: " + ", ".join(missing)


def test_at_most_is_a_maximum_and_keeps_its_message() -> None:
    class Bounded(BaseModel):
        n: Annotated[int, at_most(5, "why")] | None = None

    assert Bounded.model_json_schema()["properties"]["n"]["anyOf"][0]["maximum"] == 5
    with pytest.raises(
        ValidationError, match=r"must be at most 5, got 6 \(int\): why; use at most 5"
    ):
        Bounded(n=6)


def test_the_reference_lists_every_key_with_unit_range_and_meaning() -> None:
    text = scenario_reference_markdown()

    headings = re.findall(r"^## (\S+)", text, flags=re.MULTILINE)
    assert headings == [
        "Top", "task", "fleet", "algorithm", "evaluation", "execution", "registry", "topology",
        "output", "asynchrony",
    ]  # fmt: skip
    assert re.findall(r"^### (\S+)", text, flags=re.MULTILINE) == ALGORITHMS.builtins()
    row = next(line for line in text.splitlines() if line.startswith("| `deadline_s`"))
    assert row.split(" | ")[3:5] == ["s", "> 0"]
    row = next(line for line in text.splitlines() if line.startswith("| `rounds`"))
    assert "≤ 100,000" in row
    assert "required" in row
    assert "| `fleet.groups[].availability.mean_on_s` (kind `markov`) |" in text
    assert "| `algorithm.mu` |" in text
    for line in text.splitlines():  # every table row has its 6 cells: no stray '|'
        if line.startswith("| "):
            assert len(re.findall(r"(?<!\\)\|", line)) == 7, line


def test_the_reference_escapes_pipes() -> None:
    text = scenario_reference_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| `algorithm.mu`"))
    assert "\\|\\|w - w_t\\|\\|" in row


def test_plugins_add_their_kinds() -> None:
    schema = scenario_json_schema(plugins=True)
    kinds = schema["$defs"]["Scenario"]["properties"]["algorithm"]["properties"]["kind"]
    assert sorted(kinds["anyOf"][0]["enum"]) == ALGORITHMS.names()


def test_fedsim_schema_prints_it_and_writes_it(tmp_path: Path) -> None:
    from tests.test_cli import fedsim

    printed = fedsim("schema")
    written = fedsim("schema", "-o", tmp_path / "s.json")
    refused = fedsim("schema", "-o", tmp_path / "no" / "s.json")

    assert printed.returncode == 0
    assert printed.stdout == SCHEMA_FILE.read_text("utf-8")
    assert written.returncode == 0
    assert (tmp_path / "s.json").read_text() == printed.stdout
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: --output {tmp_path / 'no' / 's.json'}: ")


# What editors understand: VS Code's YAML extension (yaml-language-server) implements draft-07,
# so the schema keeps to keywords draft-07 shares with 2020-12 ($defs are reached by plain
# JSON pointers, which draft-07 tools resolve too).
EDITOR_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "type", "properties",
    "additionalProperties", "required", "items", "enum", "const", "default", "anyOf", "oneOf",
    "allOf", "if", "then", "else", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "minItems", "pattern", "discriminator",
}  # fmt: skip


def _keywords(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key in ("properties", "$defs"):  # names, not keywords
                for child in value.values():
                    yield from _keywords(child)
            elif key not in ("default", "discriminator", "enum", "const"):  # values
                yield from _keywords(value)


def test_the_schema_keeps_to_keywords_editors_implement(schema: dict[str, Any]) -> None:
    used = set(_keywords(schema))
    assert {"if", "$ref", "maximum", "additionalProperties"} <= used
    assert used - EDITOR_KEYWORDS == set()
