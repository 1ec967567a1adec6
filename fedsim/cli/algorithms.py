"""``fedsim algorithms``: every algorithm a scenario can name by kind, where it comes from, and
whether it is complete (each is loaded and checked against the protocol: a plugin that lacks a
method is named here, before any scenario uses it)."""

from __future__ import annotations

import importlib.metadata

import typer

from fedsim.cli.format import FormatOpt, Records, check_format, out, print_records
from fedsim.core.errors import ExitCode, clip

__all__ = ["algorithms", "register"]


def register(app: typer.Typer) -> None:
    app.command()(algorithms)


def _source(name: str, builtins: list[str]) -> str:
    if name in builtins:
        return "built-in"
    for ep in importlib.metadata.entry_points(group="fedsim.algorithms"):
        if ep.name == name:
            return ep.dist.name if ep.dist is not None else ep.value
    return "?"


def algorithms(fmt: str = FormatOpt) -> None:
    """The algorithms fedsim knows by name (built-in and installed plugins), each checked
    complete; exit 2 if one is not. A scenario may also name its own: kind: package.module:Class."""
    from fedsim.core.algorithms import ALGORITHMS
    from fedsim.parts import missing_parts

    check_format(fmt)
    builtins = ALGORITHMS.builtins()
    rows = []
    for name in ALGORITHMS.names():
        missing = missing_parts(name)
        doc = ""
        if not missing:
            cls = ALGORITHMS.get(name)
            module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()
            text = " ".join((cls.__doc__ or module_doc).split())
            doc = clip(text.split(": ")[0].split(". ")[0], 60)
        rows.append(
            {
                "kind": name,
                "from": _source(name, builtins),
                "complete": "yes" if not missing else "no: lacks " + ", ".join(missing),
                "about": doc,
            }
        )
    print_records(Records(rows, ["kind", "from", "complete", "about"]), fmt)
    if any(row["complete"] != "yes" for row in rows):
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    if fmt == "table":
        out.print("docs/algorithms.md: the protocol, and how to add your own")
