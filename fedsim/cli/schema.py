"""``fedsim schema``: the scenario's JSON Schema, for editors (completion and checks as a scenario
is typed) and other tools; ``fedsim/scenario.schema.json`` is the same for the built-in kinds."""

from __future__ import annotations

from pathlib import Path

import typer

from fedsim.cli.format import write_text

__all__ = ["register", "schema"]


def register(app: typer.Typer) -> None:
    app.command()(schema)


def schema(
    output: Path | None = typer.Option(None, "-o", "--output", help="write here, not stdout"),
    plugins: bool = typer.Option(
        False,
        "--plugins",
        help="also the algorithm kinds of installed plugins (fedsim algorithms), with their keys",
    ),
) -> None:
    """The JSON Schema (draft 2020-12) of a scenario YAML file. Point an editor at it with a
    first line '# yaml-language-server: $schema=PATH' (VS Code: the YAML extension)."""
    from fedsim.schema import schema_text

    write_text(schema_text(plugins), output)
