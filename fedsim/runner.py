"""The runner: the one module that starts Flower's simulation engine.

``run`` validates the scenario and its fleet up front (bad input fails before Ray starts), picks
the results folder, binds the scenario into Flower's ServerApp and ClientApp, and runs them on the
chosen engine: ``ray`` (Flower's simulation engine) or ``inline`` (the same apps in one thread;
see ``fedsim.inline``). The number of Flower nodes follows the execution mode: one per device in
per-device mode, one per worker (Ray actor) in cohort mode.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clients.app import make_client_app
from devices.fleet import load_fleet
from fedsim.apps import check_outputs, output_callbacks
from fedsim.core.checkpoint import load_checkpoint
from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError, RunStoppedError, clip
from fedsim.core.models import get_arrays
from fedsim.core.records import RunBinding
from fedsim.core.results import MANIFEST, SUMMARY
from fedsim.core.scenario import Scenario, choose_engine
from fedsim.core.task_model import task_model
from fedsim.core.textfile import read_text
from fedsim.inline import run_inline
from fedsim.parts import check_parts
from server.app import make_server_app
from server.loop import LogObserver, RoundObserver
from server.outputs import check_resumable

__all__ = [
    "LEAN_RAY_NODE",
    "RunResult",
    "lean_ray_params",
    "out_folder",
    "ray_start",
    "resume_target",
    "run",
]

Engine = Literal["auto", "ray", "inline"]
FLOWER_LOG = "flower.log"


@dataclass(frozen=True)
class RunResult:
    out: Path
    summary: dict[str, Any]


def out_folder(scenario: Scenario, out: str | Path | None, overwrite: bool) -> Path:
    """The run's results folder: ``out`` (refused if it holds a run, unless ``overwrite``), or a
    new ``<output.dir>/<name>[-N]``, made now so that a bad ``output.dir`` fails before any work."""
    if out is not None:
        path = Path(out)
        if (path / MANIFEST).exists() and not overwrite:
            raise FedsimError(
                str(path), "already holds a run", "pass --overwrite or choose another --out"
            )
        return path
    base = Path(scenario.output.dir) / scenario.name
    path, n = base, 1
    try:
        while path.exists() and any(path.iterdir()):  # never overwrite an earlier run by default
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True, exist_ok=True)  # before any work: a bad output.dir fails now
    except OSError as exc:
        raise FedsimError(
            f"output.dir {scenario.output.dir}",
            f"cannot make the run folder {path}: {exc.strerror or exc}",
            "give a writable output.dir in the scenario, or --out",
        ) from None
    return path


@contextmanager
def _flower_log(path: Path) -> Iterator[None]:
    """Send Flower's log (device tracebacks included) to ``path`` instead of the terminal.

    Device failures are counted in the results; the progress bar stays readable.
    """
    logger = logging.getLogger("flwr")
    saved = [(h, h.level) for h in logger.handlers]
    for handler, _ in saved:
        handler.setLevel(logging.CRITICAL)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(to_file)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            yield
        finally:
            logger.removeHandler(to_file)
            to_file.close()
            for handler, level in saved:
                handler.setLevel(level)


# The local Ray node a `ray` run starts: only what a one-machine simulation needs. Measured with
# `python -m benchmarks.ray_startup --skip-break-even` (Ray 2.55.1, 2 idle cores, median of 3;
# stock: ray.init as Flower called it): both actors ready 4.2 s after Ray's start (stock 6.0), the
# first round done at 7.9 s (9.7), the process tree until ready 1,240 MB (1,400), Ray's own
# processes 381 MB (542).
LEAN_RAY_NODE: dict[str, Any] = {
    "num_gpus": 0,
    "include_dashboard": False,  # the API server (always started) keeps its minimal modules only
    "no_monitor": True,  # no autoscaler monitor: one fixed node never scales (~80 MB)
    "include_log_monitor": False,  # no log monitor: actor output is not sent here anyway (~80 MB)
}
# Not in Ray's power to turn off (2.55): the GCS, the raylet, the dashboard's API server, the
# dashboard agent and the runtime-env agent (the raylet starts both agents itself).


def lean_ray_params(cpus: int) -> dict[str, Any]:
    """The ``RayParams`` of the local node for ``cpus`` actors (one CPU each)."""
    return {"num_cpus": cpus, **LEAN_RAY_NODE}


@contextmanager
def _local_ray(cpus: int) -> Iterator[None]:
    """A lean local Ray for this run, stopped at its end; Flower's backend finds it initialised.

    The driver connects without a job ``runtime_env`` (Flower's own ``ray.init`` passes one with
    ``PYTHONPATH``): the workers get it from this process's environment instead, so the actors
    take the workers Ray prestarts rather than starting two more (measured: ready ~1.2 s sooner,
    and no two extra ~80 MB workers at start).
    """
    import ray

    if ray.is_initialized():  # the caller's own Ray (a notebook, a benchmark): Flower uses it
        yield
        return
    before = os.environ.get("PYTHONPATH")
    paths = [*sys.path, *(before or "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    node = None
    try:
        try:
            node = _start_node(cpus)
            if node is None:  # this Ray's internals differ from 2.55's: the public way, less lean
                ray.init(num_cpus=cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=node.address, log_to_driver=False)
        except Exception as exc:  # a port in use, /tmp or shared memory full, ...
            raise FedsimError(
                "execution.engine",
                f"could not start a local Ray: {type(exc).__name__}: {clip(str(exc), 300)}",
                "run with --engine inline (same results), or free the resource Ray names",
            ) from exc
        yield
    finally:
        ray.shutdown()
        if node is not None:
            node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
        if before is None:  # as the caller had it: a second run must not grow it
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def ray_start(cluster: str | None, actors: int) -> AbstractContextManager[None]:
    """Around a ``ray`` run: a lean local Ray for ``actors`` actors, or nothing for a named
    ``cluster`` (connected to already by ``_cluster_cpus``; its settings are its owner's)."""
    return nullcontext() if cluster else _local_ray(actors)


def _start_node(cpus: int) -> Any:
    """Start the lean head node (Ray's ``Node``: ``ray.init`` cannot leave the monitors out);
    None when this Ray's internals have moved (ray is pinned to 2.55.1 through flwr)."""
    try:
        from ray._private.node import Node
        from ray._private.parameter import RayParams

        params = RayParams(**lean_ray_params(cpus))
    except (ImportError, TypeError):
        return None
    try:  # spawn_reaper: a reaper ends the node should this process die without cleaning up
        return Node(
            params, head=True, shutdown_at_exit=False, spawn_reaper=True, ray_init_cluster=True
        )
    except TypeError:  # Node's private signature moved
        return None


def _cluster_cpus(address: str) -> int:
    """Connect to the Ray cluster at ``address``; one actor per CPU it has (Flower's backend
    finds Ray initialised and uses this connection)."""
    import ray

    fix = "start one (ray start --head) or fix the address (host:port of the head's GCS)"
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:  # Ray itself waits a long time for a head that is not there
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise FedsimError(
            "execution.ray_address", f"cannot connect to the Ray cluster at {address}: {exc}", fix
        ) from None
    pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = pythonpath  # the cluster's workers import fedsim from here
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FedsimError(
            "execution.ray_address", f"cannot connect to the Ray cluster at {address}: {exc}", fix
        ) from None
    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]


def _stamp(path: Path) -> tuple[int, int] | None:
    """When and how large ``path`` was last written (None: absent)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _check_resumable(scenario: Scenario, out: Path) -> None:
    """The checks a resumed run's ServerApp makes of its checkpoint, before any engine starts."""
    checkpoint = load_checkpoint(out)
    if checkpoint is None:
        return
    data = load_task_data(scenario.task.dataset, scenario.seed)
    model = task_model(scenario, data.num_features, data.num_outputs, 0)
    check_resumable(scenario, checkpoint, get_arrays(model))


def stopped_error(summary: dict[str, Any], out: Path) -> RunStoppedError:
    """The error a stopped run's ``summary.json`` records (the line it stopped with)."""
    status = str(summary.get("status", "failed"))
    if "what" in summary:
        where = str(summary.get("where") or out)
        return RunStoppedError(status, where, str(summary["what"]), str(summary.get("fix", "")))
    error = str(summary.get("error", "the run stopped"))
    return RunStoppedError(status, str(out), error, f"see {FLOWER_LOG} in the run folder")


def _record(path: Path, key: str) -> str:
    """The string ``key`` of a run's JSON record (``manifest.json``, ``summary.json``); a located
    error when the file is damaged."""
    text = read_text(path, "JSON record", 64 * 1024 * 1024, "a run's record is small")
    try:
        value = json.loads(text)[key]
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
        raise FedsimError(
            str(path),
            f"is damaged: no readable '{key}' ({type(exc).__name__})",
            "restore the file from a copy, or start the run anew",
        ) from None
    if not isinstance(value, str):
        raise FedsimError(str(path), f"is damaged: '{key}' is no string", "restore the file")
    return value


def resume_target(out: str | Path) -> Path:
    """The scenario of the unfinished run in ``out`` (from its manifest); a ``FedsimError`` when
    there is nothing to resume."""
    folder = Path(out)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise FedsimError(str(folder), "holds no run to resume (no manifest.json)", "")
    summary = folder / SUMMARY
    if summary.exists() and _record(summary, "status") == "completed":
        raise FedsimError(str(folder), "this run is complete: nothing to resume", "")
    scenario = Path(_record(manifest, "scenario_path"))
    if not scenario.exists():
        raise FedsimError(
            str(folder), f"its scenario {scenario} is gone", "put the scenario file back"
        )
    return scenario


def run(
    scenario_path: str | Path | None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    engine: Engine | None = None,
    observer: RoundObserver | None = None,
    command: str = "",
    resume: bool = False,
) -> RunResult:
    """Run a scenario end to end and return where its results are. ``resume``: continue the
    unfinished run in ``out`` from its last checkpoint (its scenario comes from its manifest)."""
    if resume:
        if out is None:
            raise FedsimError("--resume", "needs the run folder", "fedsim run --resume RUN_DIR")
        scenario_path = resume_target(out)
    if scenario_path is None:
        raise FedsimError("scenario", "no scenario given", "fedsim run SCENARIO.yaml")
    scenario, fleet = load_fleet(scenario_path)
    check_parts(scenario.algorithm.kind, f"{scenario_path}: algorithm.kind")
    check_outputs(scenario, str(scenario_path))  # a tracker's missing extra, before any round
    chosen = choose_engine(scenario, engine)
    out_dir = Path(out) if resume and out is not None else out_folder(scenario, out, overwrite)
    binding = RunBinding(
        scenario=str(Path(scenario_path).resolve()),
        out=str(out_dir.resolve()),
        command=command or shlex.join(sys.argv),
        resume=resume,
    )
    summary_path = out_dir / SUMMARY
    before = _stamp(summary_path)
    if resume and chosen == "ray":  # the ServerApp's own checks, here: Ray would only log them
        _check_resumable(scenario, out_dir)
    server_app = make_server_app(binding, observer or LogObserver(), output_callbacks())
    client_app = make_client_app(binding)
    actors = scenario.execution.actors
    cluster = scenario.execution.cluster if chosen == "ray" else None
    if chosen == "ray":
        actors = _cluster_cpus(cluster) if cluster else min(actors, os.cpu_count() or 1)
    nodes = actors if scenario.execution.mode == "cohort" else len(fleet)
    if chosen == "inline":
        run_inline(server_app, client_app, nodes)
    else:
        from flwr.simulation import run_simulation

        try:
            with _flower_log(out_dir / FLOWER_LOG), ray_start(cluster, actors):
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=nodes,
                    backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                )
        finally:
            if cluster:
                import ray

                ray.shutdown()  # disconnect; the cluster stays up
    if _stamp(summary_path) == before:  # the ServerApp stopped before it wrote a summary
        raise RunStoppedError(
            "failed",
            str(out_dir),
            "the run stopped before it wrote its summary",
            f"see {FLOWER_LOG} in the run folder",
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary.get("status") != "completed":  # the Ray engine only logs a ServerApp's exception
        raise stopped_error(summary, out_dir)
    summary["engine"] = chosen  # how it ran (results do not depend on it)
    if cluster:
        summary["ray_cluster"] = {"address": cluster, "actors": actors}
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return RunResult(out_dir, summary)
