"""fedsim.cli.format: the one printer every command's records, text and errors go through."""

from __future__ import annotations

import json

import pytest

from fedsim.cli.format import Records, print_records, size_text
from fedsim.core.errors import FedsimError

ROWS = [{"name": "[bold]x[/bold]\x1b[2J", "ram": 0.123456, "fleet": None}]
COLUMNS = ["name", "ram", "fleet"]


def test_a_table_prints_values_as_written_never_as_markup_or_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_records(Records(ROWS, COLUMNS, title="[red]t"), "table")

    printed = capsys.readouterr().out
    assert "[red]t" in printed
    assert "[bold]x[/bold]?[2J" in printed
    assert "\x1b" not in printed
    assert "0.1235" in printed


def test_several_tables_are_one_json_document_keyed_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_records([Records(ROWS, COLUMNS, "a"), Records([], ["n"], "b")], "json")

    assert json.loads(capsys.readouterr().out) == {"a": ROWS, "b": []}


def test_csv_has_a_header_and_plain_line_ends(capsys: pytest.CaptureFixture[str]) -> None:
    print_records(Records([{"a": 1, "b": "x,y"}], ["a", "b"]), "csv")

    assert capsys.readouterr().out == 'a,b\n1,"x,y"\n'


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(FedsimError, match="unknown format 'xml'; use table, csv or json"):
        print_records(Records([], ["a"]), "xml")


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (512, "512 B"),
        (264 << 10, "264 KB"),
        (1000 << 10, "1000 KB"),
        (699_085, "683 KB"),
        (3 << 19, "1.5 MB"),
        (4 << 30, "4 GB"),
    ],
)
def test_sizes_have_three_significant_digits_and_no_exponent(n: int, text: str) -> None:
    assert size_text(n) == text


def test_a_table_not_on_a_terminal_is_as_wide_as_its_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "a-device-profile-name-" * 8  # far wider than the 80 columns rich assumes in a pipe
    print_records(Records([{"name": name, "ram": 1}], ["name", "ram"]), "table")

    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [name, "1"]
    assert all(line == line.rstrip() for line in lines)
