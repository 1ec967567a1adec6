"""What a run does around its rounds, as callbacks: the round loop (``server.loop``) computes
rounds; everything it keeps or tells is a ``RoundCallback``.

The built-in ones, in the order the loop calls them: ``ResultsFiles`` (rounds.jsonl, devices.csv,
model.npz), ``Checkpoints`` (``fedsim run --resume``), ``RegistryWriteBack`` (who took part, as
RDF) and ``AdaptationFile`` (adaptation.json). The top floor adds its own after them (plots and
report.html: ``fedsim.runner``). ``summary.json`` is the loop's: it says how the run ended, so it
is written when the run stops or once every ``on_end`` has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from devices.fleet import Fleet
from fedsim.core.models import set_arrays
from fedsim.core.records import DeviceRecord, RoundRecord, RunBinding
from fedsim.core.results import RunWriter
from fedsim.core.scenario import Scenario
from server.dispatch import RoundContext
from server.outputs import Usage, save_round, write_adaptation, write_back

__all__ = [
    "AdaptationFile",
    "Checkpoints",
    "RegistryWriteBack",
    "ResultsFiles",
    "RoundCallback",
    "RunState",
    "builtin_callbacks",
]


@dataclass
class RunState:
    """One run as callbacks see it: its folder, scenario, fleet, the loop's context (model, clock,
    server state) and what the rounds so far added up to."""

    binding: RunBinding
    scenario: Scenario
    fleet: Fleet
    ctx: RoundContext
    usage: Usage
    records: list[RoundRecord] = field(default_factory=list)  # resumed ones included
    first_error: str = ""  # the first device error of the run, for a run that learned nothing

    @property
    def out(self) -> str:
        return self.binding.out

    @property
    def title(self) -> str:
        """How plots and pages name the run."""
        s = self.scenario
        return f"{s.name} ({s.algorithm.kind}, seed {s.seed})"

    def add(self, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        self.records.append(record)
        self.usage.add(devices, self.ctx.topology, self.scenario.algorithm.samples_processed)
        self.first_error = self.first_error or next((d.error for d in devices if d.error), "")


class RoundCallback(Protocol):
    """A hook into the run. Subclass it and override what you need: the rest does nothing.

    An exception from any hook stops the run: ``summary.json`` then says why (from ``on_round``)
    or is not written (from ``on_end``), as for a failed round."""

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        """Round ``record.round`` is done; ``run`` has added it up."""
        return None

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        """Every round is done; ``summary`` is not on disk yet and may be added to."""
        return None

    def on_summary(self, run: RunState, summary: dict[str, Any]) -> None:
        """``summary.json`` is written: the run is complete."""
        return None


class ResultsFiles(RoundCallback):
    """rounds.jsonl and devices.csv, a round's rows as it ends; model.npz at the end."""

    def __init__(self, writer: RunWriter, done: int = 0) -> None:
        self.writer = writer
        self.written = done  # rounds whose rows are on disk (a resumed run's first ones too)

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        self.writer.round(record, devices)
        self.written += 1

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        model, arrays = run.ctx.model, run.ctx.global_arrays
        set_arrays(model, arrays)
        self.writer.model(dict(zip(model.state_dict(), arrays, strict=True)))


class Checkpoints(RoundCallback):
    """What the loop carries from round to round, after each round (``output.checkpoint``)."""

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        save_round(run.out, run.ctx, record.round, run.usage)


class RegistryWriteBack(RoundCallback):
    """Who took part, as RDF in the run folder and the registry (``registry.write_back``)."""

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        write_back(run.scenario, run.fleet, run.binding)


class AdaptationFile(RoundCallback):
    """adaptation.json: the last held-out adaptation (``evaluation.adapt``), and its summary."""

    def on_end(self, run: RunState, summary: dict[str, Any]) -> None:
        if run.ctx.adaptation is not None:
            summary["adapted"] = write_adaptation(run.out, run.ctx.adaptation)


def builtin_callbacks(scenario: Scenario, results: ResultsFiles) -> list[RoundCallback]:
    """The callbacks every run has, as its scenario asks for them."""
    callbacks: list[RoundCallback] = [results]
    if scenario.output.checkpoint and scenario.asynchrony is None:  # async runs do not resume
        callbacks.append(Checkpoints())
    if scenario.registry is not None and scenario.registry.write_back:
        callbacks.append(RegistryWriteBack())
    if scenario.evaluation.adapt is not None:
        callbacks.append(AdaptationFile())
    return callbacks
