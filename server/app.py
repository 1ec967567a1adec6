"""The Flower ServerApp. ``app`` is the component named in pyproject for ``flwr run .``."""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.core.records import RunBinding
from server.callbacks import RoundCallback
from server.loop import LogObserver, RoundObserver, run_rounds

__all__ = ["app", "make_server_app"]


def make_server_app(
    binding: RunBinding | None = None,
    observer: RoundObserver | None = None,
    callbacks: Sequence[RoundCallback] = (),
) -> ServerApp:
    """A ServerApp bound to one run, or reading the binding from ``context.run_config``;
    ``callbacks`` run after the built-in ones (e.g. the top floor's plots and report)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        bound = binding or RunBinding.from_run_config(dict(context.run_config))
        run_rounds(grid, bound, observer or LogObserver(), callbacks)

    return app


app = make_server_app()
