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
from collections.abc import Iterator, Mapping, Sequence
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


def _algorithm_classes(plugins: bool) -> dict[str, type[Algorithm]]:
    """Kind → class: the built-ins, and with ``plugins`` the installed entry points."""
    names = ALGORITHMS.names() if plugins else ALGORITHMS.builtins()
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


def scenario_json_schema(plugins: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario YAML file: every key, its type, default,
    bounds and meaning; ``algorithm`` by kind (the built-ins, and with ``plugins`` the installed
    ones). A file with ``extends`` may leave out what its base gives."""
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


# -- the Markdown reference ---------------------------------------------------------------------

# Units by name suffix (the project writes units into field names: DESIGN/STYLE "Config").
UNITS = {
    "_s": "s",
    "_ms": "ms",
    "_mhz": "MHz",
    "_kb": "KB",
    "_mw": "mW",
    "_mj": "mJ",
    "_bps": "bit/s",
    "_bytes": "bytes",
    "baudrate": "bit/s",
}
SECTIONS = (
    "task",
    "fleet",
    "algorithm",
    "evaluation",
    "execution",
    "registry",
    "topology",
    "output",
    "asynchrony",
)


def unit_of(key: str) -> str:
    """The unit a key's name says (``deadline_s``: seconds), or ``""``."""
    for suffix, unit in UNITS.items():
        if key.endswith(suffix):
            return unit
    return ""


def _cell(text: str) -> str:
    """Table-cell text: one line, ``|`` escaped, ``<`` not taken for HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _ref_name(node: Mapping[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(node.get("anyOf") or node.get("oneOf") or [node])


def _number(value: Any) -> str:
    if isinstance(value, int | float) and value == int(value) and abs(value) >= 10_000:
        return f"{int(value):,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind_of(node: Mapping[str, Any], defs: Mapping[str, Any]) -> str | None:
    """The ``kind`` a ``$ref`` to a tagged model fixes, or None."""
    name = _ref_name(node)
    kind = defs[name].get("properties", {}).get("kind", {}) if name else {}
    return str(kind["const"]) if "const" in kind else None


def _type(node: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if _ref_name(node) is not None:
        kind = _kind_of(node, defs)
        return f"mapping with kind `{kind}`" if kind else "mapping"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " or ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kinds = [_kind_of(b, defs) for b in _branches(node)]
    if len(kinds) > 1 and all(kinds):
        return "mapping with kind " + " or ".join(f"`{k}`" for k in kinds)
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(dict.fromkeys(_type(b, defs) for b in _branches(node)))
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"mapping of names to {_type(node['additionalProperties'], defs)}"
    return {"null": "none", "object": "mapping"}.get(str(kind), str(kind))


def _range(node: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for branch in _branches(node):
        for keyword, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        ):
            if keyword in branch:
                parts.append(f"{sign} {_number(branch[keyword])}")
        if "minLength" in branch:
            parts.append(f"at least {branch['minLength']} character(s)")
        if "minItems" in branch:
            parts.append(f"at least {branch['minItems']} item(s)")
        if "pattern" in branch:
            parts.append(f"matches `{branch['pattern']}`")
    return ", ".join(dict.fromkeys(parts)).replace("<", "&lt;")


def _default(node: Mapping[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" in node:
        return f"`{json.dumps(node['default'], ensure_ascii=False)}`"
    kind = node.get("type")
    return "`[]`" if kind == "array" else "`{}`" if kind == "object" else ""


Row = tuple[str, str, str, str, str, str]


def _rows(path: str, model: Mapping[str, Any], defs: Mapping[str, Any], tag: str) -> Iterator[Row]:
    """One row per key of ``model`` (a ``$defs`` entry) at ``path``, then its nested keys."""
    required = set(model.get("required", []))
    for key, node in model.get("properties", {}).items():
        dotted = f"{path}.{key}" if path else key
        shown = f"`{dotted}`" + (f" ({tag})" if tag else "")
        yield (
            shown,
            _cell(_type(node, defs)),
            _cell(_default(node, key in required)),
            unit_of(key),
            _range(node),
            _cell(str(node.get("description", ""))),
        )
        yield from _nested(dotted, node, defs)


def _nested(path: str, node: Mapping[str, Any], defs: Mapping[str, Any]) -> Iterator[Row]:
    """The keys of the mappings a key holds: a model, a list of models, a union tagged by kind."""
    branches = _branches(node)
    if len(branches) == 1 and branches[0].get("type") == "array":
        yield from _nested(f"{path}[]", branches[0].get("items", {}), defs)
        return
    for branch in branches:
        name = _ref_name(branch)
        if name is None:
            continue
        kind = _kind_of(branch, defs)
        yield from _rows(path, defs[name], defs, f"kind `{kind}`" if kind else "")


def _table(rows: Iterator[Row]) -> list[str]:
    lines = [
        "| Key | Type | Default | Unit | Range | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _prose(text: str | None) -> list[str]:
    body = " ".join((text or "").split())
    return [body.replace("<", "&lt;"), ""] if body else []


def scenario_reference_markdown(plugins: bool = False) -> str:
    """Every scenario key as Markdown tables, a section per part of the scenario: dotted key,
    type, default, unit, allowed range and meaning; generated from ``scenario_json_schema``."""
    schema = scenario_json_schema(plugins)
    defs = schema["$defs"]
    scenario = defs["Scenario"]
    properties = scenario["properties"]
    top = {
        **scenario,
        "properties": {k: v for k, v in properties.items() if k not in SECTIONS},
    }
    lines = [
        "# Scenario reference",
        "",
        "Every key a scenario YAML file may hold, generated from fedsim's own models (so it is "
        "what `fedsim validate` accepts). `fedsim schema` writes the same as a JSON Schema, "
        "which editors use to complete and check keys as you type. A key `a.b[].c` is key `c` "
        "of each item of list `b` in mapping `a`; a key marked with a kind applies when the "
        "mapping's `kind` is that one.",
        "",
        "## Top level",
        "",
        *_table(_rows("", top, defs, "")),
    ]
    required = set(scenario.get("required", []))
    for section in SECTIONS:
        node = properties[section]
        lines += [f"## {section}", "", *_prose(node.get("description"))]
        if section == "algorithm":
            lines += _algorithm_sections(node, defs)
            continue
        rows = [
            (
                f"`{section}`",
                _cell(_type(node, defs)),
                _cell(_default(node, section in required)),
                "",
                "",
                _cell(str(node.get("description", ""))),
            )
        ]
        for branch in _branches(node):
            name = _ref_name(branch)
            if name is not None:
                lines += _prose(defs[name].get("description"))
        lines += _table(iter([*rows, *_nested(section, node, defs)]))
    return "\n".join(lines).rstrip() + "\n"


def _algorithm_sections(node: Mapping[str, Any], defs: Mapping[str, Any]) -> list[str]:
    lines = [
        "`algorithm.kind` names the algorithm; its other keys are that algorithm's, listed per "
        "kind below. A kind written `package.module:ClassName` is your own class (keys checked "
        "by `fedsim validate`, not by the schema).",
        "",
        *_table(_rows("algorithm", {**node, "allOf": []}, defs, "")),
    ]
    for branch in node["allOf"]:
        kind = branch["if"]["properties"]["kind"]["const"]
        name = _ref_name(branch["then"])
        assert name is not None  # built by _algorithm_schema
        model = dict(defs[name])
        model["properties"] = {k: v for k, v in model["properties"].items() if k != "kind"}
        lines += [f"### {kind}", "", *_prose(model.get("description"))]
        lines += _table(_rows("algorithm", model, defs, ""))
    return lines
