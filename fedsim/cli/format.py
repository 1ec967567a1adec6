"""How every ``fedsim`` command prints: records as a table, CSV or JSON (``--format``), text as
written, and one-line errors and warnings on stderr.

Everything a command prints goes through here, so that no value (a device's board name, a Turtle
literal, a file name like ``lab:x:.yaml``) is ever read as rich markup or an emoji, and so that
the three formats say the same thing about the same records. In a pipe (stdout not a terminal) a
table is as wide as its longest row, so ``fedsim devices profiles | grep nano`` sees whole names;
in a terminal a cell too wide wraps, and is never cut short. ``NO_COLOR`` is honoured by rich.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fedsim.core.errors import FedsimError

__all__ = [
    "FORMATS",
    "FormatOpt",
    "Records",
    "check_format",
    "err",
    "out",
    "print_error",
    "print_json",
    "print_records",
    "print_text",
    "print_warning",
    "size_text",
    "write_text",
]

# Never markup, emoji or highlighting: what is printed is what the values say.
out = Console(markup=False, highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True, emoji=False)
PIPE_WIDTH = 100_000  # a table's width when stdout is not a terminal: as wide as its rows

FORMATS = ("table", "csv", "json")
FormatOpt = typer.Option("table", "--format", help="table, csv or json")


@dataclass(frozen=True)
class Records:
    """One table of a command's answer: ``name`` keys it in JSON when a command prints several,
    ``title`` heads it in a table; ``header=False`` hides the column names of a key/value table
    (a table only)."""

    rows: Sequence[Mapping[str, Any]]
    columns: Sequence[str]
    name: str = "rows"
    title: str | None = None
    header: bool = True


def check_format(fmt: str) -> None:
    """Refuse an unknown ``--format`` before any work is done."""
    if fmt not in FORMATS:
        raise FedsimError("--format", f"unknown format '{fmt}'", "use table, csv or json")


def print_records(tables: Records | Sequence[Records], fmt: str) -> None:
    """Tables in ``fmt``: rich tables (a blank line between two), CSV blocks (likewise), or JSON:
    one table's rows as a list, several as an object of lists keyed by their names."""
    check_format(fmt)
    tables = [tables] if isinstance(tables, Records) else list(tables)
    if fmt == "json":
        lists = {t.name: [{c: r.get(c) for c in t.columns} for r in t.rows] for t in tables}
        print_json(lists if len(tables) > 1 else next(iter(lists.values()), []))
        return
    for i, records in enumerate(tables):
        if i:
            out.print()
        if fmt == "csv":
            print_text(_csv(records))
        else:
            _print_table(_table(records))


def _print_table(table: Table) -> None:
    """A table on stdout: fitted to a terminal, or at its natural width in a pipe (rich would
    otherwise size it to 80 columns and cut names short), without trailing blanks."""
    if out.is_terminal:
        out.print(table)
        return
    width = out.width
    out.width = PIPE_WIDTH
    try:
        with out.capture() as captured:
            out.print(table)
    finally:
        out.width = width
    print_text("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _csv(records: Records) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records.columns), extrasaction="ignore")
    writer.writeheader()  # a key/value table too: CSV and JSON always name the columns
    writer.writerows(records.rows)
    return buffer.getvalue()


def _table(records: Records) -> Table:
    title = None if records.title is None else Text(records.title, style="table.title")
    table = Table(
        title=title,
        title_justify="left",
        show_header=records.header,
        box=None,
    )
    for column in records.columns:  # too wide for a terminal: wrapped, never cut to "…"
        table.add_column(column, overflow="fold")
    for row in records.rows:
        table.add_row(*(_cell(row.get(c)) for c in records.columns))
    return table


def _cell(value: Any) -> Text:
    """A value as a table cell: floats to 4 significant digits, nothing for None, never markup,
    control characters (terminal escapes, from a device or a Turtle file) replaced by '?'."""
    if value is None:
        return Text("")
    if isinstance(value, Text):
        return value
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return Text("".join("?" if _is_control(c) else c for c in text))


def _is_control(c: str) -> bool:
    import unicodedata

    return unicodedata.category(c)[0] == "C"


def print_json(value: Any) -> None:
    """``value`` as indented JSON, non-ASCII kept as written."""
    print_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def print_text(text: str) -> None:
    """``text`` on stdout exactly as written (no markup, no added newline)."""
    out.print(text, end="")


def write_text(text: str, output: Path | None) -> None:
    """``text`` to stdout, or to the file ``output`` (``-o/--output``), saying so."""
    if output is None:
        print_text(text)
        return
    from fedsim.core.out_path import check_out

    check_out(output, "--output", "file")
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output}")


def print_error(line: str) -> None:
    """One ``error: ...`` line on stderr (a FedsimError's line, or a failed run's)."""
    err.print(f"error: {line}")


def print_warning(line: str) -> None:
    err.print(f"warning: {line}")


def size_text(n: int) -> str:
    """Bytes in the largest binary unit, 3 significant digits (never an exponent): 512 KB,
    1.5 MB, 683 KB."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{n} B"
