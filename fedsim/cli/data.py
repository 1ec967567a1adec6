"""``fedsim data list | info | preview``: the registered datasets, one dataset's facts, and a
grid of its samples."""

from __future__ import annotations

from pathlib import Path

import typer

from fedsim.cli.format import FormatOpt, Records, check_format, out, print_records
from fedsim.core.out_path import check_out

__all__ = ["data_app", "register"]

data_app = typer.Typer(
    help="Datasets: list them, describe one, draw a preview grid.", no_args_is_help=True
)
NameArg = typer.Argument(..., help="a dataset name from `fedsim data list`")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list(fmt: str = FormatOpt) -> None:
    """The registered datasets (nothing is loaded)."""
    from fedsim.core.data import DATASETS, dataset_source

    check_format(fmt)
    rows = [
        {
            "name": name,
            "task": source.task,
            "natural clients": source.natural_groups or "-",
            "description": source.description,
        }
        for name, source in ((n, dataset_source(n, f"dataset {n}")) for n in DATASETS.names())
    ]
    print_records(Records(rows, ["name", "task", "natural clients", "description"]), fmt)
    if fmt == "table":
        out.print("`fedsim data info NAME` for classes, samples, size on disk, licence and source")


@data_app.command("info")
def data_info(
    name: str = NameArg,
    seed: int = typer.Option(0, help="the seed that splits or generates it"),
    fmt: str = FormatOpt,
) -> None:
    """Classes, samples, natural groups, size on disk and licence of one dataset."""
    from fedsim.core.data_info import describe

    check_format(fmt)
    rows = [{"field": key, "value": value} for key, value in describe(name, seed).rows()]
    print_records(Records(rows, ["field", "value"], header=False), fmt)


@data_app.command("preview")
def data_preview(
    name: str = NameArg,
    output: Path = typer.Option(..., "-o", "--output", help="PNG file to write"),
    per_class: int = typer.Option(8, min=1, max=30, help="samples per class"),
    seed: int = typer.Option(0),
) -> None:
    """A grid of test samples, one row per class, as a PNG."""
    from fedsim.core.data import load_task_data
    from fedsim.core.data_info import preview_samples
    from fedsim.plots import plot_samples

    check_out(output, "--output", "file")
    data = load_task_data(name, seed)
    x, y = preview_samples(data, per_class=per_class, seed=seed)
    path = plot_samples(x, y, data.class_names, f"{name}: test samples", output)
    out.print(f"{name}: {len(y)} samples → {path}")
