"""The scenario's JSON Schema and its Markdown reference, both generated from the pydantic models
(``fedsim.core.scenario``), so neither can drift from what ``fedsim validate`` accepts.

The schema is what editors use to complete and check a scenario as it is typed (VS Code's YAML
extension reads the ``# yaml-language-server: $schema=...`` first line of the shipped scenarios);
``fedsim schema`` prints it and ``fedsim/scenario.schema.json`` is its committed copy. What the
schema cannot say (cross-field checks: a profile that exists, a fleet larger than
``clients_per_round``) stays with ``fedsim validate``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from fedsim.core.algorithms import ALGORITHMS, Algorithm, algorithm_class
from fedsim.core.scenario import Scenario

__all__ = [
    "KIND_PATTERN",
    "SCHEMA_FILE",
    "SCHEMA_ID",
    "allow_kinds",
    "scenario_json_schema",
    "scenario_reference_markdown",
    "schema_comment",
    "schema_text",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:fedsim:scenario"
SCHEMA_FILE = Path(__file__).with_name("scenario.schema.json")  # built-in kinds only
# a user's own algorithm, ``package.module:ClassName`` (fedsim.core.plugins.is_dotted)
KIND_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
EXTENDS = {
    "type": "string",
    "minLength": 1,
    "description": "a scenario file this one extends (relative to this file): its keys are "
    "merged under this file's, mappings key by key, lists replaced whole",
}
_BOUND_KEYWORDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
}


def _algorithm_classes(plugins: bool | Collection[str]) -> dict[str, type[Algorithm]]:
    """Kind → class: the built-ins, and with ``plugins`` the installed entry points (all of them,
    or the named ones: a plugin's own schema holds its kinds whatever else is installed)."""
    if isinstance(plugins, bool):
        names = ALGORITHMS.names() if plugins else ALGORITHMS.builtins()
    else:
        names = [*ALGORITHMS.builtins(), *(n for n in ALGORITHMS.names() if n in plugins)]
    return {name: algorithm_class(name) for name in names}


def _standard_bounds(node: Any) -> None:
    """pydantic writes ``Field(ge=1)`` on an optional field as a bare ``ge`` keyword inside the
    union (ignored by validators and editors): make it the JSON Schema keyword, in place."""
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for short, keyword in _BOUND_KEYWORDS.items():
                if short in node:
                    node.setdefault(keyword, node.pop(short))
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


def _algorithm_schema(kinds: Mapping[str, str], description: str) -> dict[str, Any]:
    """``algorithm:``: ``kind`` picks the parameters (kind → the ``$defs`` name of its class);
    any ``package.module:Class`` kind is accepted with any keys (its class is not known here)."""
    return {
        "type": "object",
        "description": description,
        "required": ["kind"],
        "properties": {
            "kind": {
                "description": "the algorithm: a built-in (fedsim algorithms lists them), an "
                "installed plugin, or your own class as package.module:ClassName",
                "anyOf": [
                    {"enum": sorted(kinds)},
                    {"type": "string", "pattern": KIND_PATTERN},
                ],
            }
        },
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{name}"},
            }
            for kind, name in sorted(kinds.items())
        ],
    }


def _partial(node: Any) -> Any:
    """A copy for a file that ``extends`` another: no key is required (the base may give it)
    and a tagged union may omit its ``kind`` (merged from the base); ``if`` tests stay whole."""
    if isinstance(node, list):
        return [_partial(value) for value in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", "#/$defs/Partial")
        elif (key == "required" and isinstance(value, list)) or key == "discriminator":
            continue
        elif key == "if":
            out[key] = copy.deepcopy(value)
        else:
            out["anyOf" if key == "oneOf" else key] = _partial(value)
    return out


def scenario_json_schema(plugins: bool | Collection[str] = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario YAML file: every key, its type, default,
    bounds and meaning; ``algorithm`` by kind (the built-ins, and with ``plugins`` the installed
    ones, or those of them named). A file with ``extends`` may leave out what its base gives."""
    kinds = _algorithm_classes(plugins)
    classes = list(dict.fromkeys(kinds.values()))
    refs, top = models_json_schema(
        [(Scenario, "validation"), *((cls, "validation") for cls in classes)],
        ref_template="#/$defs/{model}",
    )
    defs: dict[str, Any] = top["$defs"]
    defs.pop("Algorithm", None)  # the open base; replaced by the kinds below
    names = {kind: refs[(cls, "validation")]["$ref"].split("/")[-1] for kind, cls in kinds.items()}
    scenario = defs["Scenario"]
    algorithm = scenario["properties"]["algorithm"]
    scenario["properties"]["algorithm"] = _algorithm_schema(names, algorithm["description"])
    scenario["properties"]["extends"] = EXTENDS
    scenario["title"] = "Scenario"
    scenario["description"] = " ".join((Scenario.__doc__ or "").split())
    _standard_bounds(defs)
    defs.update({f"Partial{name}": _partial(value) for name, value in list(defs.items())})
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "fedsim scenario",
        "description": "A fedsim scenario (YAML): the fleet, the task, the algorithm and how the "
        "run is executed. Generated from fedsim's models by `fedsim schema`.",
        "type": "object",
        "if": {"required": ["extends"]},
        "then": {"$ref": "#/$defs/PartialScenario"},
        "else": {"$ref": "#/$defs/Scenario"},
        "$defs": dict(sorted(defs.items())),
    }


def allow_kinds(schema: dict[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    """``schema`` also accepting ``kinds`` (any keys): an algorithm not installed yet, such as
    the one ``fedsim new algorithm`` writes (``fedsim schema --plugins`` knows its keys)."""
    for name in ("Scenario", "PartialScenario"):
        kind = schema["$defs"][name]["properties"]["algorithm"]["properties"]["kind"]
        kind["anyOf"][0]["enum"] = sorted({*kind["anyOf"][0]["enum"], *kinds})
    return schema


def schema_text(plugins: bool = False) -> str:
    """The schema as the committed ``scenario.schema.json`` holds it (stable key order)."""
    return json.dumps(scenario_json_schema(plugins), indent=2, ensure_ascii=False) + "\n"


def schema_comment(schema: str) -> str:
    """The first line of a scenario that points editors (yaml-language-server) at ``schema``."""
    return f"# yaml-language-server: $schema={schema}"


def scenario_reference_markdown(plugins: bool = False) -> str:
    """Every scenario key as Markdown tables (``fedsim.scenario_reference``): dotted key, type,
    default, unit, allowed range and meaning, a section per part of the scenario."""
    from fedsim.scenario_reference import reference_markdown

    return reference_markdown(scenario_json_schema(plugins))
