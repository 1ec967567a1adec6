"""Parse YAML with limits checked before any Python object is built.

PyYAML's safe loader takes a duplicate key silently (the last wins), composes nested collections
recursively (20,000 ``[`` raise ``RecursionError``), and expands aliases by sharing: a 300-byte
"billion laughs" document is a list of 10⁹ shared items, harmless until something walks it (a
validator, an error message). ``load_yaml`` refuses all three with a located line: it checks the
nesting depth on the event stream (no recursion), then, on the composed node graph and before
construction, duplicate keys, alias cycles, and the size and depth the aliases expand to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from fedsim.core.errors import FedsimError, clip

__all__ = ["MAX_DEPTH", "MAX_VALUES", "dotted", "load_yaml"]

MAX_DEPTH = 64  # a scenario nests 5 levels; anything deeper is an accident or an attack
MAX_VALUES = 100_000  # values after alias expansion; a scenario has a few hundred

# libyaml when it is there (10x faster); the checks below hold for both
_Parser: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
Loc = Sequence[str | int]


def dotted(loc: Loc) -> str:
    """``fleet.groups[1].profile``; long or odd keys clipped."""
    parts = (f"[{p}]" if isinstance(p, int) else f".{clip(str(p))}" for p in loc)
    return clip("".join(parts).lstrip("."), 120)


class _Loader(_Parser):  # type: ignore[misc,valid-type]
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """As the safe constructor does, but a value Python cannot build (a 5,000-digit integer,
        a 13th month) is a located YAML error, not a ``ValueError``."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            what = clip(str(exc).partition(";")[0], 100)
            mark = node.start_mark
            raise ConstructorError(None, None, f"cannot read this value: {what}", mark) from None


def _at(where: str, mark: Any) -> str:
    return f"{where}:{mark.line + 1}" if mark is not None else where


def _check_depth(text: str, where: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH``, from parser events (a loop, no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Parser):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise FedsimError(
                    _at(where, event.start_mark),
                    f"YAML nested more than {MAX_DEPTH} levels deep",
                    "a scenario nests a few levels; close the brackets or indent less",
                )
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        return [(str(k.value) if isinstance(k, yaml.ScalarNode) else "?", v) for k, v in node.value]
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _check_keys(node: yaml.MappingNode, loc: tuple[str | int, ...], where: str) -> None:
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        ident, line = (key.tag, key.value), key.start_mark.line + 1
        if ident in first:
            raise FedsimError(
                f"{where}:{line}: {dotted((*loc, key.value))}",
                f"duplicate key '{clip(key.value)}' (first at line {first[ident]})",
                "keep one: YAML would silently take the last",
            )
        first[ident] = line


def _graph_error(node: yaml.Node, loc: tuple[str | int, ...], where: str, what: str) -> FedsimError:
    return FedsimError(
        f"{_at(where, node.start_mark)}: {dotted(loc)}".rstrip(": "),
        what,
        "a scenario holds a few hundred values; remove the aliases (*name) that repeat collections",
    )


def _check_graph(root: yaml.Node, where: str) -> None:
    """Duplicate keys, alias cycles, and the size and depth aliases expand to: one post-order
    walk of the node graph, each shared node once (sizes are memoised, so a bomb costs its
    text, not its expansion)."""
    size: dict[int, int] = {}  # collections only: a scalar is 1 value, 1 level
    depth: dict[int, int] = {}
    open_: set[int] = set()  # collections whose subtree is being walked: the current path
    stack: list[tuple[yaml.Node, tuple[str | int, ...], bool]] = [(root, (), False)]
    while stack:
        node, loc, done = stack.pop()
        if done:
            open_.discard(id(node))
            kids = [id(kid) for _, kid in _children(node)]
            size[id(node)] = 1 + sum(size.get(k, 1) for k in kids)
            depth[id(node)] = 1 + max((depth.get(k, 1) for k in kids), default=0)
            if size[id(node)] > MAX_VALUES:
                what = f"this value expands (aliases included) to over {MAX_VALUES:,} values"
                raise _graph_error(node, loc, where, what)
            if depth[id(node)] > MAX_DEPTH:
                what = f"this value nests (aliases included) over {MAX_DEPTH} levels deep"
                raise _graph_error(node, loc, where, what)
            continue
        if not isinstance(node, yaml.CollectionNode) or id(node) in size:
            continue
        if id(node) in open_:
            raise FedsimError(
                f"{_at(where, node.start_mark)}: {dotted(loc)}".rstrip(": "),
                "an alias refers to a collection that contains it (an endless value)",
                "remove the alias (*name) inside its own anchor (&name)",
            )
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, loc, where)
        open_.add(id(node))
        stack.append((node, loc, True))
        # reversed: the first child is walked first, so a shared node is named by its anchor
        stack.extend(
            (kid, (*loc, part), False)
            for part, kid in reversed(_children(node))
            if isinstance(kid, yaml.CollectionNode) and id(kid) not in size
        )


def _quiet(problem: str) -> str:
    """A parser's message without long quotes of the file (it may not be a scenario at all)."""
    return re.sub(r"'[^']{13,}'|\"[^\"]{13,}\"", "'…'", problem)


def _yaml_error(exc: yaml.YAMLError, text: str, where: str) -> FedsimError:
    mark = getattr(exc, "problem_mark", None)
    at = _at(where, mark)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        at = f"{where}:{text.count(chr(10), 0, exc.position) + 1}"
        problem = f"character #x{exc.character:04x} is not allowed in YAML"
    else:
        problem = str(getattr(exc, "problem", None) or str(exc).splitlines()[0])
        context = getattr(exc, "context", None)
        problem = f"{problem} ({context})" if context else problem
    return FedsimError(
        at, f"invalid YAML: {clip(_quiet(problem), 160)}", "fix the syntax at that line"
    )


def load_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The data of a one-document YAML text and its node tree (for line numbers); ``where``
    (the file) starts every error's location."""
    try:
        _check_depth(text, where)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, None
            _check_graph(node, where)
            return loader.construct_document(node), node
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, where) from None
