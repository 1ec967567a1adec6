"""Experiment trackers (``output.trackers``): a run's rounds in TensorBoard or MLflow, offline.

Both log every round's numbers (``RoundRecord``: accuracy, loss, failures, stragglers, energy,
bytes, ... and running totals) at step = round, and the simulated clock as a second axis:
TensorBoard repeats each metric under ``sim_time_ms/`` at step = simulated milliseconds (its own
run, ``tensorboard/sim_time``); MLflow logs ``sim_time_s`` at every step, which its charts can
take as the x axis. The validated scenario goes in as parameters (flattened dotted keys, and its
digest) or as text, and the plots and report.html as artifacts (images in TensorBoard).

TensorBoard writes event files into ``<run>/tensorboard``; MLflow logs to ``$MLFLOW_TRACKING_URI``
or else to a file store ``<output.dir>/mlruns`` (one experiment per scenario name, one run per
run folder). ``<run>/trackers.json`` says where each went; a resumed run appends to the same
TensorBoard folder and the same MLflow run. A tracker that fails mid-run is dropped with a
warning: the run's own files never depend on it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

import yaml

from fedsim.core.errors import FedsimError
from fedsim.core.records import DeviceRecord, RoundRecord
from fedsim.core.scenario import Scenario
from server.callbacks import RoundCallback, RunState

__all__ = [
    "TRACKERS_FILE",
    "Trackers",
    "check_trackers",
    "round_metrics",
    "scenario_params",
    "tracking_uri",
]

log = logging.getLogger(__name__)

TRACKERS_FILE = "trackers.json"  # where each tracker logged this run (and MLflow's run id)
TENSORBOARD_DIR = "tensorboard"
SIM_TIME_DIR = "sim_time"  # a second TensorBoard run: the same metrics at simulated milliseconds
INSTALL = "pip install 'fedsim[trackers]'"
# the module each tracker needs (from the `trackers` extra)
MODULES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow"}
MLFLOW_BATCH = 100  # MLflow takes at most this many params per log_batch
MLFLOW_VALUE_CHARS = 6000  # ... and param values up to this long


def _import(module: str) -> Any:
    return importlib.import_module(module)


def check_trackers(scenario: Scenario, where: str = "output.trackers") -> None:
    """A located ``FedsimError`` when a tracker the scenario names is not installed: called before
    any round runs (and again when the trackers start)."""
    for name in scenario.output.trackers:
        try:
            _import(MODULES[name])
        except ImportError as exc:
            raise FedsimError(
                where,
                f"{name} is not installed ({exc})",
                f"{INSTALL}, or remove {name} from output.trackers",
            ) from None


def round_metrics(record: RoundRecord, records: Iterable[RoundRecord]) -> dict[str, float]:
    """A round's numbers by name (what was not measured this round is left out), and the run's
    totals so far (``records``: every round up to this one)."""
    values: dict[str, float] = {}
    star = record.tiers is None  # no gateways: their counts are always zero, left out
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name == "round" or (star and f.name.startswith("gateway")):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[f.name] = float(value)
    if record.in_flight:  # an asynchronous run: the devices still training at this update
        values |= {f"in_flight_{k}": float(v) for k, v in record.in_flight.items()}
    done = list(records)
    values["total_energy_mj"] = sum(r.energy_mj + r.gateway_energy_mj for r in done)
    values["total_bytes"] = float(sum(r.bytes_down + r.bytes_up for r in done))
    values["total_failures"] = float(sum(r.failures for r in done))
    values["total_cut"] = float(sum(r.stragglers + r.dropouts for r in done))
    return values


def scenario_params(scenario: Scenario) -> dict[str, str]:
    """The validated scenario (defaults included) as flat dotted keys (list items by index:
    ``fleet.groups.0.profile``), and its digest as ``scenario_sha256``."""
    params = dict(_flatten(scenario.model_dump(mode="json"), ""))
    params["scenario_sha256"] = scenario.digest()
    return params


def _flatten(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from _flatten(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _flatten(v, f"{key}.{i}")
    else:
        yield key, json.dumps(value) if not isinstance(value, str) else value


def tracking_uri(scenario: Scenario) -> str:
    """Where MLflow logs: ``$MLFLOW_TRACKING_URI``, else a file store ``<output.dir>/mlruns``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or (Path(scenario.output.dir) / "mlruns").resolve().as_uri()
    )


class _Tracker(Protocol):
    where: dict[str, str]  # what trackers.json says of it

    def log(self, step: int, sim_time_s: float, values: dict[str, float]) -> None: ...
    def finish(self, out: Path) -> None: ...


class _TensorBoard:
    """Event files: ``<run>/tensorboard`` (step = round) and ``<run>/tensorboard/sim_time``
    (step = simulated ms); the scenario as text, the plots as images."""

    def __init__(self, run: RunState, first_round: int) -> None:
        tensorboard = _import(MODULES["tensorboard"])
        root = Path(run.out) / TENSORBOARD_DIR
        # a resumed run: anything logged past the checkpoint is discarded by TensorBoard
        before = run.records[-2].sim_time_s if len(run.records) > 1 else -1.0
        purge = first_round if first_round > 1 else None
        purge_ms = _ms(before) + 1 if first_round > 1 else None
        self.rounds = tensorboard.SummaryWriter(str(root), purge_step=purge)
        self.sim = tensorboard.SummaryWriter(str(root / SIM_TIME_DIR), purge_step=purge_ms)
        if first_round == 1:
            text = yaml.safe_dump(run.scenario.model_dump(mode="json"), sort_keys=False)
            block = "\n".join("    " + line for line in text.splitlines())
            self.rounds.add_text("scenario", f"sha256 {run.scenario.digest()}\n\n{block}", 0)
        self.where = {"log_dir": str(root)}

    def log(self, step: int, sim_time_s: float, values: dict[str, float]) -> None:
        ms = _ms(sim_time_s)
        for name, value in values.items():
            self.rounds.add_scalar(name, value, step)
            self.sim.add_scalar(f"sim_time_ms/{name}", value, ms)
        self.rounds.flush()
        self.sim.flush()

    def finish(self, out: Path) -> None:
        from matplotlib.image import imread

        for png in sorted((out / "plots").glob("*.png")):
            self.rounds.add_image(f"plots/{png.stem}", imread(png), 0, dataformats="HWC")
        self.rounds.close()
        self.sim.close()


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class _Mlflow:
    """One MLflow run per run folder, in the experiment named after the scenario."""

    def __init__(self, run: RunState, first_round: int) -> None:
        mlflow = _import(MODULES["mlflow"])
        uri = tracking_uri(run.scenario)
        if uri.startswith("file:") or "://" not in uri:  # mlflow 3 refuses it unless told
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        self.client = mlflow.tracking.MlflowClient(uri)
        earlier = _recorded(Path(run.out)).get("mlflow", {})
        if first_round > 1 and earlier.get("tracking_uri") == uri and earlier.get("run_id"):
            self.run_id = str(earlier["run_id"])  # a resumed run goes on in the same MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._create(run)
        self.where = {"tracking_uri": uri, "run_id": self.run_id}

    def _create(self, run: RunState) -> str:
        name = run.scenario.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        tags = {
            "fedsim.run_dir": str(Path(run.out).resolve()),
            "fedsim.command": run.binding.command,
        }
        created = self.client.create_run(experiment_id, run_name=Path(run.out).name, tags=tags)
        run_id = str(created.info.run_id)
        from mlflow.entities import Param

        params = [
            Param(k, v[:MLFLOW_VALUE_CHARS]) for k, v in scenario_params(run.scenario).items()
        ]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(run_id, params=params[i : i + MLFLOW_BATCH])
        return run_id

    def log(self, step: int, sim_time_s: float, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        from mlflow.entities import Metric

        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        if "sim_time_s" not in values:
            metrics.append(Metric("sim_time_s", sim_time_s, now, step))
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, out: Path) -> None:
        if (out / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(out / "plots"), "plots")
        for name in ("report.html", "summary.json", "manifest.json"):
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))
        self.client.set_terminated(self.run_id, "FINISHED")


OPENERS: dict[str, Callable[[RunState, int], _Tracker]] = {
    "tensorboard": _TensorBoard,
    "mlflow": _Mlflow,
}


def _recorded(out: Path) -> dict[str, Any]:
    try:
        found = json.loads((out / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


class Trackers(RoundCallback):
    """The trackers a scenario names (``output.trackers``), fed round by round; the artifacts
    go in once ``report.html`` is written (so this comes after the report's callback)."""

    def __init__(self) -> None:
        self._out: str | None = None  # the run the trackers below are open for
        self._open: dict[str, _Tracker] = {}

    def on_round(self, run: RunState, record: RoundRecord, devices: list[DeviceRecord]) -> None:
        if not run.scenario.output.trackers:
            return
        if self._out != run.out:
            self._start(run, record.round)
        values = round_metrics(record, run.records)
        self._each("log", lambda t: t.log(record.round, record.sim_time_s, values))

    def on_summary(self, run: RunState, summary: dict[str, Any]) -> None:
        if self._out == run.out:
            self._each("finish", lambda t: t.finish(Path(run.out)))
            self._out, self._open = None, {}

    def _start(self, run: RunState, first_round: int) -> None:
        check_trackers(run.scenario, f"{run.binding.scenario}: output.trackers")
        self._out, self._open = run.out, {}
        where: dict[str, Any] = {}
        for name in run.scenario.output.trackers:
            try:
                tracker = OPENERS[name](run, first_round)
            except Exception as exc:  # a tracker that cannot start is no reason to stop the run
                log.warning(
                    "output.trackers: %s could not start (%s); the run goes on without it",
                    name,
                    _why(exc),
                )
                continue
            self._open[name] = tracker
            where[name] = tracker.where
        path = Path(run.out) / TRACKERS_FILE
        path.write_text(json.dumps(where, indent=2) + "\n", encoding="utf-8")

    def _each(self, what: str, call: Callable[[_Tracker], None]) -> None:
        for name, tracker in list(self._open.items()):
            try:
                call(tracker)
            except Exception as exc:  # the run's own files are written already: keep going
                log.warning(
                    "output.trackers: %s failed to %s (%s); dropped for the rest of the run",
                    name,
                    what,
                    _why(exc),
                )
                del self._open[name]


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
