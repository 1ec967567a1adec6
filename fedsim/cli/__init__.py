"""The ``fedsim`` command. Bad input prints one located line and exits 2; never a traceback.

One module per command group registers its commands here, in the order ``fedsim --help`` lists
them; ``fedsim.cli.format`` prints for all of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from fedsim.cli import (
    algorithms,
    data,
    deploy,
    devices,
    new,
    pretrain,
    registry,
    report,
    run,
    schema,
    sweep,
)
from fedsim.cli.format import err, print_error
from fedsim.cli.run import summarize
from fedsim.core.errors import EXIT_CODE_HELP, ExitCode, FedsimError

__all__ = ["app", "main", "summarize"]

EXIT_CODES_EPILOG = "Exit codes: " + "; ".join(f"{int(c)} {h}" for c, h in EXIT_CODE_HELP.items())
app = typer.Typer(
    help="fedsim: simulate federated learning on fleets of edge devices, built on Flower.",
    epilog=EXIT_CODES_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for group in (
    new,
    run,
    pretrain,
    sweep,
    report,
    algorithms,
    schema,
    data,
    devices,
    registry,
    deploy,
):
    group.register(app)


def _print_version(value: bool) -> None:
    if value:
        from fedsim import __version__

        print(f"fedsim {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        help="print fedsim's version and exit",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """fedsim: simulate federated learning on fleets of edge devices, built on Flower."""


def _importable_here() -> None:
    """A scenario's ``package.module:Name`` (its own algorithm, model...) is found in the folder
    fedsim runs from, as ``python -m`` would find it, here and in the Ray workers (which inherit
    ``PYTHONPATH``)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """While a command runs, the run's own log lines (a pre-training inside a run: "pre-training
    the extractor: 400/2000 episodes") go to stderr, so long work shows in a terminal, a pipe and
    a CI log alike (the rounds have their progress bar or lines instead). Only while it runs: a
    library caller (``fedsim.run``, a test calling ``main()``) keeps a quiet logger after it."""
    import logging

    logger = logging.getLogger("fedsim.server")
    saved = logger.level, logger.propagate
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call (pytest swaps it)
    handler.setFormatter(logging.Formatter("fedsim: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # Flower or Ray may configure the root logger too: one line each
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def main() -> None:
    """Console entry point: maps user errors to one line and exit code 2."""
    _importable_here()
    with _log_to_stderr():
        _main()


def _main() -> None:
    try:
        code = app(standalone_mode=False)  # a typer.Exit inside comes back as its code
        if isinstance(code, int) and code:
            sys.exit(code)
    except FedsimError as exc:
        for line in exc.lines():
            print_error(line)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt as exc:  # a run adds a note: its folder and how to go on
        notes = getattr(exc, "__notes__", [])
        err.print(
            f"interrupted: {notes[-1]}"
            if notes
            else "interrupted; results written so far are kept (fedsim run --resume RUN_DIR)"
        )
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(int(ExitCode.BAD_INPUT))
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(int(ExitCode.INTERRUPTED))
        raise
