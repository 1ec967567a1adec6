"""The Flower apps as fedsim ships them: the server's round loop with the top floor's outputs
(plots, report, trackers), and the devices' ClientApp. ``server_app`` and ``client_app`` are the
components pyproject names for ``flwr run .`` and ``fedsim run --federation``, so a deployed run
writes the same files as a simulated one."""

from __future__ import annotations

from typing import Any

from clients.app import app as client_app
from fedsim.core.scenario import Scenario
from fedsim.plots import (
    plot_accuracy,
    plot_adaptation,
    plot_asynchrony,
    plot_fleet,
    plot_tiers,
)
from fedsim.report import run_report
from fedsim.trackers import Trackers, check_trackers
from server.app import make_server_app
from server.callbacks import RoundCallback, RunState

__all__ = [
    "PlotFiles",
    "ReportFile",
    "check_outputs",
    "client_app",
    "output_callbacks",
    "server_app",
]


class PlotFiles(RoundCallback):
    """``plots/``: accuracy, fleet, tiers (runs through gateways), asynchrony (asynchronous
    runs) and adaptation (runs with ``evaluation.adapt``), from the run's files, once every round
    is done."""

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        plot_accuracy(run.out, run.title)
        plot_fleet(run.out, run.title)
        plot_tiers(run.out, run.title)
        plot_asynchrony(run.out, run.title)
        if run.ctx.adaptation is not None:
            plot_adaptation(run.out, run.title)


class ReportFile(RoundCallback):
    """``report.html``, from the run's files once ``summary.json`` is written."""

    def on_summary(self, run: RunState, summary: dict[str, Any]) -> None:
        run_report(run.out)


def output_callbacks() -> list[RoundCallback]:
    """What the top floor adds to every run: its plots, its report, and the experiment trackers
    the scenario names (last: they take the plots and report as artifacts)."""
    return [PlotFiles(), ReportFile(), Trackers()]


def check_outputs(scenario: Scenario, source: str) -> None:
    """Refuse, located in ``source`` (the scenario file), outputs that cannot be made (a tracker
    whose extra is not installed), before any round runs: ``fedsim validate`` and the runner."""
    check_trackers(scenario, f"{source}: output.trackers")


server_app = make_server_app(callbacks=output_callbacks())
