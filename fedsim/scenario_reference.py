"""The scenario reference: every key of the scenario's JSON Schema (``fedsim.schema``) as
Markdown tables, with its type, default, unit, allowed range and meaning. The docs' "Scenario
reference" page is this text, so it cannot drift from what ``fedsim validate`` accepts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SECTIONS", "UNITS", "reference_markdown", "unit_of"]

# Units by name suffix (the project writes units into field names).
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


def reference_markdown(schema: Mapping[str, Any]) -> str:
    """Every key of ``schema`` (``fedsim.schema.scenario_json_schema``) as Markdown tables, a
    section per part of the scenario: dotted key, type, default, unit, allowed range, meaning."""
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
