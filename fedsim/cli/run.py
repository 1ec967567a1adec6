"""``fedsim validate`` and ``fedsim run``: check a scenario and say what it will run; run it
(here, resumed, or on a deployment) and say how it ended."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fedsim.cli.format import err, out, print_warning
from fedsim.core.errors import ExitCode, FedsimError
from fedsim.core.out_path import check_out
from fedsim.core.scenario import Scenario, choose_engine

if TYPE_CHECKING:
    from devices.clock import DevicePlan, FleetCosts

__all__ = [
    "ScenarioArg",
    "check",
    "check_engine",
    "fleet_warnings",
    "register",
    "run",
    "summarize",
    "validate",
]

ScenarioArg = typer.Argument(..., help="scenario YAML, e.g. scenarios/quickstart.yaml")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(run)


def check_engine(engine: str | None) -> None:
    """Refuse an unknown ``--engine`` (run, sweep) before any work is done."""
    if engine not in (None, "auto", "ray", "inline"):
        raise FedsimError("--engine", f"unknown engine '{engine}'", "use auto, ray or inline")


def summarize(scenario_path: str | Path) -> str:
    """What a scenario will run, a line and one per device group (``fedsim validate``)."""
    return check(scenario_path)[0]


def check(scenario_path: str | Path) -> tuple[str, list[str]]:
    """What a scenario will run (``summarize``), and warnings: what it will silently not do."""
    from devices.fleet import load_fleet
    from fedsim.apps import check_outputs
    from fedsim.parts import check_parts

    scenario, fleet = load_fleet(scenario_path)
    check_parts(scenario.algorithm.kind, f"{scenario_path}: algorithm.kind")
    check_outputs(scenario, str(scenario_path))  # a tracker whose extra is not installed
    groups = ", ".join(f"{n} {p}" for p, n in fleet.by_profile().items())
    params = scenario.fleet.partition.model_dump(exclude={"kind"})
    args = ", ".join(f"{k}={v}" for k, v in params.items())
    split = scenario.fleet.partition.kind + (f"({args})" if args else "")
    from devices.clock import FleetCosts
    from fedsim.core.scenario_load import locate
    from fedsim.core.task_model import task_model

    data = fleet.data
    try:  # builds the model: a user's builder that returns no nn.Module fails here, located
        model = task_model(scenario, data.num_features, data.num_outputs, 0)
    except FedsimError as exc:
        raise locate(scenario_path, exc) from None
    costs = FleetCosts(scenario, fleet, model)
    lines = costs.describe()
    if fleet.topology is not None:
        lines += fleet.topology.describe()
    if scenario.asynchrony is not None:
        lines += async_lines(scenario)
    groups_cost = "".join(f"\n  {line}" for line in lines)
    pace = (
        f"{scenario.cohort_size} per round x {scenario.rounds} rounds"
        if scenario.asynchrony is None
        else f"{scenario.asynchrony.concurrency} at once x {scenario.rounds} server updates"
    )
    summary = (
        f"{scenario_path}: ok: {scenario.name}: {scenario.algorithm.kind} on "
        f"{scenario.task.dataset}/{scenario.task.model}, {len(fleet)} devices ({groups}), "
        f"{pace}, {split} split, "
        f"{scenario.execution.mode} mode on {choose_engine(scenario)}, seed {scenario.seed}"
        f"{groups_cost}"
    )
    return summary, fleet_warnings(costs, str(scenario_path))


def fleet_warnings(costs: FleetCosts, where: str) -> list[str]:
    """Device groups that will never train (their memory cannot hold the model's training
    footprint) or whose every round is cut (a round takes them past the deadline): a run
    completes all the same, so ``validate`` says so loudly."""
    fleet, deadline = costs.fleet, costs.scenario.deadline_s
    kinds: dict[tuple[int, str], list[tuple[DevicePlan, int]]] = {}
    for device, count in costs.alike():  # a template group of a million is one plan
        plan = costs.nominal(device.device_id)
        kinds.setdefault((device.group, device.profile.name), []).append((plan, count))
    warnings = []
    for (group, name), counted in kinds.items():
        at = f"{where}: fleet.groups[{group}] ({name})"
        never = sum(count for plan, count in counted if plan.fate == "memory-skip")
        if never:
            need = costs.full.train_bytes
            warnings.append(
                f"{at}: {never} of {len(fleet)} devices will never train: their memory cannot "
                f"hold the model's training footprint ({need / 1024:.0f} KB); use a smaller "
                "model, more memory, or fleet.memory_policy: head-only"
            )
        late = [(p, n) for p, n in counted if deadline is not None and p.busy_s > deadline]
        if late and deadline is not None:
            slowest = max(p.busy_s for p, _ in late)
            cut = sum(n for _, n in late)
            warnings.append(
                f"{at}: {cut} of {len(fleet)} devices are always cut: a round takes them "
                f"~{slowest:.3g} s, past the deadline ({deadline:g} s), so no update of theirs "
                "ever counts; raise deadline_s, or drop the group"
            )
    return warnings


def async_lines(scenario: Scenario) -> list[str]:
    """What an asynchronous scenario's settings mean, in words (``fedsim validate``)."""
    spec = scenario.asynchrony
    assert spec is not None
    w = spec.staleness
    weighting = {
        "constant": "every update counts fully, however stale",
        "polynomial": f"an update tau server updates stale counts (1+tau)^-{w.a:g}",
        "hinge": f"an update counts fully up to {w.b} updates stale, then 1/({w.a:g}(tau-{w.b})+1)",
    }[w.kind]
    if spec.strategy == "fedbuff":
        how = (
            f"asynchronous FedBuff: up to {spec.concurrency} devices train at once, each from "
            f"the model current when it starts; every {spec.buffer_size} arrivals the server "
            f"applies their weighted mean change x {spec.server_lr:g}"
        )
    else:
        how = (
            f"asynchronous FedAsync: up to {spec.concurrency} devices train at once; each "
            f"arrival is mixed in at once with alpha {spec.server_lr:g} x its staleness weight"
        )
    return [
        how,
        f"staleness: {weighting}; a round in rounds.jsonl is one server update",
        "fast devices arrive more often: devices.csv counts each device's updates",
    ]


def validate(
    scenario: Path = ScenarioArg,
    strict: bool = typer.Option(
        False, "--strict", help="exit 2 when there is any warning (e.g. a group that never trains)"
    ),
) -> None:
    """Check a scenario (schema, names, fleet, data split) and say what it will run; warn
    (stderr) about device groups that will never train or whose every round is cut."""
    summary, warnings = check(scenario)
    out.print(summary)
    for line in warnings:
        print_warning(line)
    if strict and warnings:
        raise typer.Exit(int(ExitCode.BAD_INPUT))


def run(
    scenario: Path | None = typer.Argument(
        None, help="scenario YAML, e.g. scenarios/quickstart.yaml (not with --resume)"
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help="results folder (default: <output.dir>/<name>, never overwritten)"
    ),
    overwrite: bool = typer.Option(False, help="reuse --out even if it holds a run"),
    engine: str | None = typer.Option(
        None,
        help="auto (inline for small runs, else ray), ray (Flower's simulation engine) "
        "or inline (one thread, no Ray)",
    ),
    resume: Path | None = typer.Option(
        None, help="continue the stopped run in this folder from its last checkpoint"
    ),
    federation: Path | None = typer.Option(
        None, help="run on a deployment (its folder, from fedsim deploy superlink) instead"
    ),
) -> None:
    """Run a scenario: a Flower simulation that writes metrics, plots and a report."""
    from fedsim.progress import ProgressObserver
    from fedsim.runner import resume_target
    from fedsim.runner import run as run_scenario

    check_engine(engine)
    if out_dir is not None:
        check_out(out_dir, "--out", "folder")
    if federation is not None:
        from fedsim.cli.deploy import run_deployed

        run_deployed(scenario, federation, out_dir)
        return
    if (scenario is None) == (resume is None):
        raise FedsimError(
            "fedsim run", "give a scenario, or --resume RUN_DIR (not both)", "see fedsim run --help"
        )
    name = (scenario or resume_target(resume or Path())).stem
    try:
        result = run_scenario(
            scenario,
            resume or out_dir,
            overwrite=overwrite,
            engine=engine,  # type: ignore[arg-type]
            observer=ProgressObserver(name, console=err),
            command=shlex.join(["fedsim", *sys.argv[1:]]),
            resume=resume is not None,
        )
    except KeyboardInterrupt as exc:  # typer turns it into exit 130 and says nothing
        notes = getattr(exc, "__notes__", None)  # the round loop's: the folder, how to go on
        hint = "results written so far are kept (fedsim run --resume RUN_DIR)"
        err.print(f"interrupted: {notes[-1] if notes else hint}")
        raise
    _print_outcome(name, result.summary, result.out)


def _print_outcome(name: str, s: dict[str, Any], folder: Path) -> None:
    """The run's score, costs and failures in a line (two with a topology)."""
    if "adapted" in s:
        a = s["adapted"]
        score = f"after adaptation {a['metric']} {a['mean']:.4g} ± {a['ci95']:.2g} (95% CI)"
    elif s["final_accuracy"] is not None:
        score = f"final accuracy {s['final_accuracy']:.4f}"
    else:
        score = f"final loss {s['final_loss']:.4g}"
    out.print(
        f"{name}: {score} after {s['rounds']} rounds "
        f"({s['sim_time_s']:.0f} simulated s, {s['energy_j']:.3g} J), {s['failures']} device "
        f"failures, {s['stragglers'] + s['dropouts']} cut, {s['memory_skips']} skipped for "
        f"memory, {s['wall_s']:.1f} s → {folder}"
    )
    if "topology" in s:
        t = s["topology"]
        versus = f" ({t['backhaul_vs_star']:.0%} of a star's" if t["backhaul_vs_star"] else ""
        versus += " for the same device rounds)" if versus else ""
        out.print(
            f"  {len(t['gateways'])} gateways: {t['backhaul_bytes'] / 1e6:.3g} MB over the "
            f"backhaul{versus}, {s['gateway_energy_j']:.3g} J; {t['gateways_down']} down, "
            f"{t['gateways_late']} late, {t['gateways_lost']} partials lost, "
            f"devices cut off with their gateway {t['gateway_cut']} times"
        )
