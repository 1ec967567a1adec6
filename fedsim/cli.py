"""The ``fedsim`` command. Bad input prints one located line and exits 2; never a traceback."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fedsim.core.errors import EXIT_CODE_HELP, ExitCode, FedsimError
from fedsim.core.out_path import check_out
from fedsim.core.scenario import choose_engine

__all__ = ["app", "main", "summarize"]

EXIT_CODES_EPILOG = "Exit codes: " + "; ".join(f"{int(c)} {h}" for c, h in EXIT_CODE_HELP.items())
app = typer.Typer(
    help="fedsim: simulate federated learning on fleets of edge devices, built on Flower.",
    epilog=EXIT_CODES_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)

ScenarioArg = typer.Argument(..., help="scenario YAML, e.g. scenarios/quickstart.yaml")


def summarize(scenario_path: str | Path) -> str:
    """One line saying what a scenario will run (``fedsim validate``)."""
    from devices.fleet import load_fleet
    from fedsim.parts import check_parts

    scenario, fleet = load_fleet(scenario_path)
    check_parts(scenario.algorithm.kind, f"{scenario_path}: algorithm.kind")
    groups = ", ".join(f"{n} {p}" for p, n in fleet.by_profile().items())
    params = scenario.fleet.partition.model_dump(exclude={"kind"})
    args = ", ".join(f"{k}={v}" for k, v in params.items())
    split = scenario.fleet.partition.kind + (f"({args})" if args else "")
    from devices.clock import FleetCosts
    from fedsim.core.task_model import task_model

    data = fleet.data
    model = task_model(scenario, data.num_features, data.num_outputs, 0)
    lines = FleetCosts(scenario, fleet, model).describe()
    if fleet.topology is not None:
        lines += fleet.topology.describe()
    groups_cost = "".join(f"\n  {line}" for line in lines)
    return (
        f"{scenario_path}: ok: {scenario.name}: {scenario.algorithm.kind} on "
        f"{scenario.task.dataset}/{scenario.task.model}, {len(fleet)} devices ({groups}), "
        f"{scenario.cohort_size} per round x {scenario.rounds} rounds, {split} split, "
        f"{scenario.execution.mode} mode on {choose_engine(scenario)}, seed {scenario.seed}"
        f"{groups_cost}"
    )


@app.command()
def validate(scenario: Path = ScenarioArg) -> None:
    """Check a scenario (schema, names, fleet, data split) and say what it will run."""
    out.print(summarize(scenario))


@app.command()
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

    if engine not in (None, "auto", "ray", "inline"):
        raise FedsimError("--engine", f"unknown engine '{engine}'", "use auto, ray or inline")
    if out_dir is not None:
        check_out(out_dir, "--out", "folder")
    if federation is not None:
        from fedsim.deploy_cli import run_deployed

        run_deployed(scenario, federation, out_dir)
        return
    if (scenario is None) == (resume is None):
        raise FedsimError(
            "fedsim run", "give a scenario, or --resume RUN_DIR (not both)", "see fedsim run --help"
        )
    name = (scenario or resume_target(resume or Path())).stem
    result = run_scenario(
        scenario,
        resume or out_dir,
        overwrite=overwrite,
        engine=engine,  # type: ignore[arg-type]
        observer=ProgressObserver(name, console=err),
        command=shlex.join(["fedsim", *sys.argv[1:]]),
        resume=resume is not None,
    )
    s = result.summary
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
        f"memory, {s['wall_s']:.1f} s → {result.out}"
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


@app.command()
def pretrain(
    dataset: str = typer.Option(
        "kanjivg",
        help="kanjivg or omniglot (Conv-4), kws or har (MLP): its background classes; "
        "fashion-mnist or mnist-5k: the FedIns ViT backbone (supervised, --episodes steps)",
    ),
    episodes: int = typer.Option(2000, min=1, help="training episodes"),
    way: int = typer.Option(5, min=2, help="classes per episode"),
    shot: int = typer.Option(5, min=1, help="support drawings per class"),
    query: int = typer.Option(5, min=1, help="query drawings per class"),
    seed: int = typer.Option(0, help="alphabet split, initialisation and episodes"),
) -> None:
    """Pre-train a prototypical encoder on a dataset's background classes (Conv-4 on character
    sets, an MLP on kws/har; cached by config), then score it on 1-/5-shot episodes of the
    classes it never saw (the evaluation alphabets, or the other half of the classes)."""
    from fedsim.core.data import cache_dir
    from fedsim.core.pretrain import (
        CHARACTER_SETS,
        POOLED,
        PretrainConfig,
        few_shot_accuracy,
        pretrain_encoder,
    )
    from fedsim.progress import training_bar

    if dataset in BACKBONE_DATASETS:  # FedIns: a supervised ViT backbone (episodes = steps)
        _pretrain_backbone(dataset, episodes, seed)
        return
    if dataset not in CHARACTER_SETS + POOLED:
        known = ", ".join(CHARACTER_SETS + POOLED + BACKBONE_DATASETS)
        raise FedsimError("--dataset", f"cannot pre-train on '{dataset}'", f"use one of {known}")
    architecture = "conv4" if dataset in CHARACTER_SETS else "mlp-100"
    config = PretrainConfig(dataset, architecture, episodes, way, shot, query, seed=seed)
    with training_bar("pretrain", "episodes", episodes, err) as progress:
        pretrain_encoder(config, progress)
    out.print(f"encoder: {cache_dir() / f'pretrain-{config.key()}.npz'}")
    for k in (1, 5):
        mean, half = few_shot_accuracy(config, way, k)
        out.print(
            f"{way}-way {k}-shot on unseen classes: {mean:.3f} ± {half:.3f} (95% CI, 200 episodes)"
        )


BACKBONE_DATASETS = ("fashion-mnist", "mnist-5k")


def _pretrain_backbone(dataset: str, steps: int, seed: int) -> None:
    """The FedIns ViT backbone: supervised on ``dataset``, cached; prints its test accuracy."""
    from fedsim.core.backbone import BackboneConfig, backbone_accuracy, pretrain_backbone
    from fedsim.core.data import cache_dir
    from fedsim.progress import training_bar

    config = BackboneConfig(dataset, steps, seed=seed)
    with training_bar("backbone", "steps", steps, err) as progress:
        pretrain_backbone(config, progress)
    out.print(f"backbone: {cache_dir() / f'backbone-{config.key()}.npz'}")
    out.print(f"test accuracy on {dataset}: {backbone_accuracy(config):.4f}")


data_app = typer.Typer(
    help="Datasets: list them, describe one, draw a preview grid.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """The registered datasets (nothing is loaded)."""
    from rich.table import Table

    from fedsim.core.data import DATASETS

    table = Table("name", "task", "natural clients", "description", box=None)
    for name in DATASETS.names():
        source = DATASETS.get(name)
        table.add_row(name, source.task, source.natural_groups or "-", source.description)
    out.print(table)
    out.print("`fedsim data info NAME` for classes, samples, size on disk, licence and source")


@data_app.command("info")
def data_info(
    name: str = typer.Argument(..., help="a dataset name from `fedsim data list`"),
    seed: int = typer.Option(0, help="the seed that splits or generates it"),
) -> None:
    """Classes, samples, natural groups, size on disk and licence of one dataset."""
    from rich.table import Table

    from fedsim.core.data_info import describe

    table = Table(show_header=False, box=None)
    for key, value in describe(name, seed).rows():
        table.add_row(key, value)
    out.print(table)


@data_app.command("preview")
def data_preview(
    name: str = typer.Argument(..., help="a dataset name from `fedsim data list`"),
    output: Path = typer.Option(..., "-o", "--output", help="PNG file to write"),
    per_class: int = typer.Option(8, min=1, max=30, help="samples per class"),
    seed: int = typer.Option(0),
) -> None:
    """A grid of test samples, one row per class, as a PNG."""
    from fedsim.core.data import load_task_data
    from fedsim.core.data_info import preview_samples
    from fedsim.core.plots import plot_samples

    check_out(output, "--output", "file")
    data = load_task_data(name, seed)
    x, y = preview_samples(data, per_class=per_class, seed=seed)
    path = plot_samples(x, y, data.class_names, f"{name}: test samples", output)
    out.print(f"{name}: {len(y)} samples → {path}")


@app.command()
def sweep(
    scenario: Path = ScenarioArg,
    sets: list[str] = typer.Option(
        [], "--set", help="KEY=V1,V2,...: a grid axis (repeat for more), e.g. algorithm.lr=0.01,0.1"
    ),
    seeds: int = typer.Option(1, min=1, help="runs per variant: the scenario's seed, +1, ..."),
    output: Path | None = typer.Option(
        None, "--out", help="sweep folder (default: <output.dir>/<name>-sweep)"
    ),
    engine: str | None = typer.Option(None, help="auto, ray or inline (as for run)"),
) -> None:
    """Run a scenario over a grid of settings and seeds; compare with mean ± 95% CI."""
    from fedsim.core.scenario_load import load_scenario
    from fedsim.sweep import plan_sweep, run_sweep

    if engine not in (None, "auto", "ray", "inline"):
        raise FedsimError("--engine", f"unknown engine '{engine}'", "use auto, ray or inline")
    if output is not None:
        check_out(output, "--out", "folder")
    base = load_scenario(scenario)
    folder = output or Path(base.output.dir) / f"{base.name}-sweep"
    runs = plan_sweep(scenario, sets, seeds, folder)

    def announce(i: int, run: Any, state: str) -> None:
        err.print(f"[{i + 1}/{len(runs)}] {run.variant.name}, seed {run.seed}: {state}")

    page = run_sweep(runs, folder, engine, announce)  # type: ignore[arg-type]
    failed = sum(1 for r in runs if r.error)
    out.print(f"{len(runs)} runs ({failed} failed) → {page} and {page.with_suffix('.csv')}")


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="run folders (a run's --out)"),
    output: Path = typer.Option(
        Path("compare.html"), "--out", "-o", help="where the comparison of several runs goes"
    ),
) -> None:
    """One run: (re)write its report.html. Several: compare them side by side in one page."""
    from fedsim.core.report import compare_report, run_report

    if len(runs) > 1:  # one run's report goes into the run's folder
        check_out(output, "--out", "file")
    path = run_report(runs[0]) if len(runs) == 1 else compare_report(runs, output)
    out.print(f"wrote {path} (opens offline in a browser)")


devices_app = typer.Typer(
    help="Device profiles from the RDF catalog, and real devices on serial ports.",
    no_args_is_help=True,
)
app.add_typer(devices_app, name="devices")


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.0f} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"
    return f"{n} B"


@devices_app.command("profiles")
def devices_profiles(
    model: str | None = typer.Option(None, help="also say whether this model fits, e.g. mlp-100"),
    dataset: str = typer.Option("digits", help="the dataset that fixes the model's input"),
    batch: int = typer.Option(16, min=1, help="training batch size"),
) -> None:
    """Every profile's core, clock, memory, FPU, power (computing / idle), cycles per MAC and
    links, then the link types; with --model, whether training (all layers, or the head only)
    and inference fit in SRAM."""
    from rich.table import Table

    from ontology.registry import default_registry

    def watts(mw: float) -> str:  # 3 significant digits at most, in W from 1 W up
        return f"{mw / 1000:.3g} W" if mw >= 1000 else f"{mw:.3g} mW"

    def rate(bps: float) -> str:
        for unit, size in (("Mbit/s", 1e6), ("kbit/s", 1e3)):
            if bps >= size:
                return f"{bps / size:.3g} {unit}"
        return f"{bps:.3g} bit/s"

    registry = default_registry()
    columns = ["profile", "core", "clock", "SRAM", "flash", "FPU", "power", "cycles/MAC", "links"]
    fits = None
    if model is not None:
        from devices.cost import CyclesPerMac, SramFit, head_sram_bytes
        from devices.footprint import footprint, head_parameters
        from fedsim.core.data import load_task_data
        from fedsim.core.models import build_model

        data = load_task_data(dataset, 0)
        torch_model = build_model(model, data.num_features, data.num_outputs, 0)
        full = footprint(torch_model, data.sample_shape, batch)
        head = footprint(torch_model, data.sample_shape, batch, head_parameters(torch_model))
        fits = (full, head)
        columns += [
            "ms/sample",
            f"train ({_bytes(full.train_bytes)})",
            f"head ({_bytes(head_sram_bytes(head))})",
            f"infer ({_bytes(full.inference_bytes)})",
        ]
    table = Table(*columns, box=None)
    for p in registry.profiles():
        row = [
            p.name,
            f"{p.cores}× {p.core}",
            f"{p.clock_mhz:g} MHz",
            _bytes(p.sram_bytes),
            _bytes(p.flash_bytes),
            "yes" if p.fpu else "no",
            f"{watts(p.active_mw)} / {watts(p.idle_mw)}",
            f"{p.cycles_per_mac:g}",
            ", ".join(p.radios) or "-",
        ]
        if fits is not None:
            full, head = fits
            scope = SramFit().scope(p, full, head, "head-only")
            macs = full.train_macs if scope == "full" else head.train_macs
            row.append("-" if scope == "skip" else f"{CyclesPerMac().seconds(p, macs) * 1e3:.3g}")
            row += [
                "fits" if scope == "full" else "no",
                "fits" if scope in ("full", "head") else "no",
                "fits" if full.inference_bytes <= p.sram_bytes else "no",
            ]
        table.add_row(*row)
    out.print(table)
    if fits is not None:
        out.print(
            "train: all layers (weights, gradients, optimizer state, activations at the batch "
            "size) in SRAM; head: only the last layer trains, the frozen layers stay in flash; "
            "ms/sample: one training step's compute for what fits (cost model: MACs × cycles/MAC "
            "÷ clock)"
        )
    links = Table("link", "throughput", "latency", "MTU", "label", box=None)
    for t in registry.link_types():
        latency = f"{t.latency_s:g} s" if t.latency_s >= 1 else f"{t.latency_s * 1000:g} ms"
        links.add_row(t.kind, rate(t.throughput_bps), latency, f"{t.mtu_bytes} B", t.label)
    out.print()
    out.print(links)


from fedsim.deploy_cli import deploy_app  # noqa: E402 (sub-app, after the main app)
from fedsim.devices_cli import (  # noqa: E402 (sub-commands, after the app)
    attach,
    emulate,
    info,
    scan,
)
from fedsim.registry_cli import registry_app  # noqa: E402 (sub-app, after the main app)

devices_app.command("scan")(scan)
devices_app.command("info")(info)
devices_app.command("attach")(attach)
devices_app.command("emulate")(emulate)

app.add_typer(registry_app, name="registry")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    """Console entry point: maps user errors to one line and exit code 2."""
    try:
        code = app(standalone_mode=False)  # a typer.Exit inside comes back as its code
        if isinstance(code, int) and code:
            sys.exit(code)
    except FedsimError as exc:
        for line in exc.lines():
            err.print(f"error: {line}", markup=False)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        err.print("interrupted; results written so far are kept (fedsim run --resume RUN_DIR)")
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


if __name__ == "__main__":
    main()
