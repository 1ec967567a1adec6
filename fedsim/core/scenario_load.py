"""Load a scenario YAML: ``extends`` chains, validation, and errors located by file, line and key.

Every problem becomes one ``FedsimError`` line such as
``scenarios/x.yaml:12: algorithm.lr: expected a number, got 'fast' (str); write a number``.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedsim.core.algorithms import Algorithm, algorithm_class
from fedsim.core.errors import FedsimError, clip, did_you_mean, shown
from fedsim.core.safe_yaml import dotted, load_yaml
from fedsim.core.scenario import Scenario
from fedsim.core.textfile import read_text

__all__ = [
    "ScenarioError",
    "anchor_paths",
    "load_scenario",
    "locate",
    "merged_data",
    "with_changes",
]

Loc = tuple[str | int, ...]


class ScenarioError(FedsimError):
    """All problems found in one scenario, one line each."""

    def __init__(self, errors: Sequence[FedsimError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.where, first.what, first.fix)

    def lines(self) -> list[str]:
        return [e.line() for e in self.errors]


# A scenario is a few KB (the largest shipped one is 3 KB); reading stops past this, before
# parsing: pure-Python YAML parses ~200 KB/s, and a wrong path can name a large file.
MAX_SCENARIO_BYTES = 128 * 1024
MAX_EXTENDS = 16  # files in one extends chain (the shipped ones use 2)
MAX_ERRORS = 20  # problems listed one per line; the rest are counted
_KEYS = frozenset(Scenario.model_fields) | {"extends"}


@dataclass
class _Source:
    """One YAML file of an ``extends`` chain: its parsed data and node tree (for line numbers)."""

    path: Path
    data: dict[str, Any]
    node: yaml.Node | None
    _index: dict[int, dict[Any, tuple[int, yaml.Node]]] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """1-based line of the deepest YAML node along ``loc`` (its key when it is a mapping
        key). Mappings are indexed once, so locating N errors costs N lookups, not N scans."""
        node, line = self.node, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                keys = self._index.get(id(node))
                if keys is None:
                    keys = self._index[id(node)] = {}
                    for k, v in node.value:
                        if isinstance(k, yaml.ScalarNode):
                            keys.setdefault(k.value, (k.start_mark.line + 1, v))
                if str(part) not in keys:
                    break
                line, node = keys[str(part)]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or ``None``."""
    try:
        if path.is_file():
            return None
        return "not a file" if path.exists() else "no such file"
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        return f"not a usable path ({clip(str(getattr(exc, 'strerror', None) or exc))})"


def _read(path: Path) -> _Source:
    what = _not_a_file(path)
    if what is not None:
        raise FedsimError(
            clip(str(path), 200), what, "check the path (scenarios live in scenarios/)"
        )
    why = f"a scenario is a few KB (the limit is {MAX_SCENARIO_BYTES // 1024} KB)"
    text = read_text(path, "a scenario (YAML)", MAX_SCENARIO_BYTES, why)
    data, node = load_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FedsimError(
            f"{path}:{node.start_mark.line + 1 if node is not None else 1}",
            f"expected a scenario: a mapping of keys, got {type(data).__name__}",
            "see scenarios/quickstart.yaml",
        )
    return _Source(path, data, node)


def _not_a_scenario(source: _Source) -> str | None:
    """Why a parsed mapping is not a scenario (none of its top-level keys is a scenario's), or
    ``None``. Such a file (a key file, a config of another tool) is refused as a whole: listing
    its keys as unknown would print its contents."""
    if not source.data or any(isinstance(k, str) and k in _KEYS for k in source.data):
        return None
    return (
        f"{source.path} is not a scenario: none of its {len(source.data)} top-level keys is a "
        "scenario key"
    )


def _merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; the child wins, lists are replaced whole."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _chain(path: Path) -> list[_Source]:
    """The file and the files it extends, child first."""
    chain: list[_Source] = []
    seen: set[Path] = set()
    while True:
        source = _read(path)
        why = _not_a_scenario(source)
        if why is not None and chain:  # say where the wrong file was named
            raise FedsimError(
                f"{chain[-1].path}:{chain[-1].line(('extends',)) or 1}: extends",
                why,
                "extends must name a scenario YAML (with name, fleet, algorithm, rounds...)",
            )
        if why is not None:
            raise FedsimError(
                f"{path}:{source.line((next(iter(source.data)),)) or 1}",
                why,
                "a scenario has name, fleet, algorithm and rounds; see scenarios/quickstart.yaml",
            )
        seen.add(_resolved(path))
        if chain:  # a base: its relative paths mean relative to it, not to the child
            anchor_paths(source.data, path.parent)
        chain.append(source)
        parent = source.data.pop("extends", None)
        if parent is None:
            return chain
        where = f"{path}:{source.line(('extends',)) or 1}: extends"
        if not isinstance(parent, str) or not parent:
            raise FedsimError(
                where, f"expected a file path, got {shown(parent)}", "e.g. extends: base.yaml"
            )
        path = path.parent / parent
        what = _not_a_file(path)
        if what is not None:
            raise FedsimError(
                where,
                f"{clip(str(path), 200)}: {what}",
                "give the path of a scenario YAML, relative to this file",
            )
        if _resolved(path) in seen:
            raise FedsimError(where, f"cycle back to {clip(str(path), 200)}", "remove it")
        if len(chain) >= MAX_EXTENDS:
            raise FedsimError(
                where,
                f"a chain of more than {MAX_EXTENDS} files extending each other",
                "extend a scenario that extends less (or copy its keys)",
            )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL: the path must do
        return path.absolute()


def _anchor(value: Any, folder: Path) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str((folder / value).resolve())
    return value


def anchor_paths(data: dict[str, Any], folder: Path) -> None:
    """Make a base scenario's file paths absolute: ``registry.data``, ``registry.db``, trace
    files (availability, capacity), and ``.rq`` query files of fleet groups (named queries stay
    names)."""
    registry = data.get("registry")
    if isinstance(registry, dict):
        if isinstance(registry.get("data"), list):
            registry["data"] = [_anchor(v, folder) for v in registry["data"]]
        if "db" in registry:
            registry["db"] = _anchor(registry["db"], folder)
    fleet = data.get("fleet")
    groups = fleet.get("groups") if isinstance(fleet, dict) else None
    for group in groups if isinstance(groups, list) else []:
        if not isinstance(group, dict):
            continue
        for key in ("availability", "capacity"):  # trace files (a CSV, FedScale's traces)
            spec = group.get(key)
            if isinstance(spec, dict) and "file" in spec:
                spec["file"] = _anchor(spec["file"], folder)
        query = group.get("query")
        if isinstance(query, str) and query.endswith(".rq"):
            group["query"] = _anchor(query, folder)


def _field_model(annotation: Any, data: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation resolves to for ``data`` (unions by their ``kind``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _field_model(typing.get_args(annotation)[0], data)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _field_model(arg, data)
            kind = model.model_fields.get("kind") if model else None
            if model is not None and (
                kind is None or data.get("kind") in typing.get_args(kind.annotation)
            ):
                return model
        return None
    if isinstance(annotation, type) and issubclass(annotation, Algorithm):
        try:  # an open kind: the class it names (its keys are the algorithm's)
            return algorithm_class(str(data.get("kind")))
        except FedsimError:
            return annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _drop_tags(loc: Loc, data: Any) -> Loc:
    """Drop the union-tag steps pydantic inserts into a location (``algorithm.fedavg.lr``)."""
    clean: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part not in data and part == data.get("kind"):
            continue
        clean.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(clean)


def _model_at(loc: Loc, data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (``None`` if not a model)."""
    model: type[BaseModel] | None = Scenario
    for part in loc:
        if isinstance(part, int):  # a list item: the model was resolved from the item type
            data = data[part] if isinstance(data, list) and part < len(data) else {}
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        data = data.get(part) if isinstance(data, dict) else None
        annotation = field.annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        model = _field_model(annotation, data if isinstance(data, dict) else {})
    return model


_EXPECTED = {
    "int": ("an integer", "write a whole number, e.g. 10"),
    "float": ("a number", "write a number, e.g. 0.1"),
    "bool": ("true or false", "write true or false"),
    "string": ("a string", "quote the value"),
    "list": ("a list", "write a YAML list (- item)"),
    "dict": ("a mapping", "write nested keys"),
    "model": ("a mapping", "write nested keys"),
}


_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _describe(err: Mapping[str, Any], model: type[BaseModel] | None, key: str) -> tuple[str, str]:
    """(what, fix) for one pydantic error; what the user wrote is shown bounded (``shown``)."""
    kind, value = err["type"], err.get("input")
    got = f"got {shown(value)}"
    if kind == "extra_forbidden":
        known = sorted(model.model_fields) if model else []
        return (
            f"unknown key '{clip(key)}'{did_you_mean(key, known)}",
            f"known keys: {', '.join(known)}",
        )
    if kind == "missing":
        return "required key is missing", f"add '{key}'"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t.strip(" '") for t in str(err.get("ctx", {}).get("expected_tags", "")).split(",")]
        tag = clip(str(err.get("ctx", {}).get("tag", "")))
        what = f"unknown kind '{tag}'{did_you_mean(tag, tags)}" if tag else "'kind' missing"
        return what, f"known kinds: {', '.join(tags)}"
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        if not isinstance(value, str):
            return f"{got}, not one of the allowed values", f"use {expected}"
        return f"{clip(value)!r} is not allowed{did_you_mean(value, options)}", f"use {expected}"
    if kind == "value_error":
        what, _, fix = str(err["msg"]).removeprefix("Value error, ").partition("; ")
        return what, fix
    if kind == "finite_number":
        return (
            f"must be a finite number, {got}",
            "write an ordinary number: .inf or .nan would make every loss, model and cost NaN",
        )
    if kind in _BOUNDS:
        limit = err.get("ctx", {}).get(_BOUNDS[kind][1])
        return (
            f"must be {_BOUNDS[kind][0]} {limit}, {got}",
            f"use a value {_BOUNDS[kind][0]} {limit}",
        )
    for stem, (expected, fix) in _EXPECTED.items():
        if kind.startswith(stem):
            return f"expected {expected}, {got}", fix
    message = clip(str(err["msg"]).replace("Input should be", "must be"), 160)
    return f"{message[0].lower()}{message[1:]}, {got}", "see the scenario reference in README.md"


def _located(sources: list[_Source], loc: Loc, what: str, fix: str) -> FedsimError:
    where = str(sources[0].path)
    for source in sources:  # the child first: its keys override the bases'
        line = source.line(loc)
        if line is not None:
            where = f"{source.path}:{line}"
            break
    path = dotted(loc)
    return FedsimError(f"{where}: {path}" if path else where, what, fix)


def _parse_dotted(text: str) -> Loc:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


def locate(path: str | Path, error: FedsimError) -> FedsimError:
    """Add the file (and line) to an error found after validation, whose ``where`` is a path
    into the scenario such as ``fleet.groups[2].profile``. An error that already names another
    file (a trace, a Turtle file: ``data.ttl:3``) is returned as it is."""
    loc = _parse_dotted(error.where)
    if not loc or loc[0] not in _KEYS:
        return error
    try:
        sources = _chain(Path(path))
    except FedsimError:
        return FedsimError(f"{path}: {error.where}", error.what, error.fix)
    return _located(sources, loc, error.what, error.fix)


def load_scenario(path: str | Path) -> Scenario:
    """Read, merge (``extends``) and validate a scenario; raise ``ScenarioError`` if invalid."""
    sources = _chain(Path(path))
    data: dict[str, Any] = {}
    for source in reversed(sources):
        data = _merge(data, source.data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False)[:MAX_ERRORS]:
            loc = _drop_tags(tuple(err["loc"]), data)
            model = _model_at(loc[:-1], data) if err["type"] == "extra_forbidden" else None
            what, fix = _describe(err, model, str(loc[-1]) if loc else "")
            errors.append(_located(sources, loc, what, fix))
        if exc.error_count() > MAX_ERRORS:
            more = exc.error_count() - MAX_ERRORS
            errors.append(FedsimError(str(path), f"{more} more problems", "fix these first"))
        raise ScenarioError(errors) from None
    problems = scenario.consistency_problems()
    if problems:
        raise ScenarioError([_located(sources, _parse_dotted(p), w, f) for p, w, f in problems])
    return scenario


def merged_data(path: str | Path) -> dict[str, Any]:
    """The scenario as one mapping, before validation: its ``extends`` chain merged and every
    file path in it absolute, so the mapping can be written anywhere and mean the same."""
    sources = _chain(Path(path))
    anchor_paths(sources[0].data, Path(path).parent)
    data: dict[str, Any] = {}
    for source in reversed(sources):
        data = _merge(data, source.data)
    return data


def with_changes(data: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted keys set (``"algorithm.lr"``; ``__`` works too)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for name, value in changes.items():
        keys = name.replace("__", ".").split(".")
        node = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise KeyError(f"{name}: '{key}' is not a mapping in this scenario")
            node = child
        node[keys[-1]] = value
    return out
