"""``fedsim deploy superlink | supernode | register`` and ``fedsim run --federation``: Flower's
Deployment Engine with TLS and SuperNode authentication (``fedsim/deploy.py`` makes the files and
commands)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import err, out, print_error, print_warning
from fedsim.core.errors import ExitCode, FedsimError

__all__ = ["deploy_app", "register", "run_deployed"]

deploy_app = typer.Typer(
    help="Flower's Deployment Engine: a SuperLink and SuperNodes with TLS and node auth.",
    no_args_is_help=True,
)
DeployDir = typer.Argument(..., help="deployment folder (certificates, keys, Flower's state)")
ControlPort = typer.Option(
    8001, help="the Control API's port (flwr: register keys, submit runs), on --control-host"
)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


def _foreground(command: list[str], env: dict[str, str]) -> None:
    """Run a Flower process until it ends or Ctrl-C; exit with its status."""
    import signal
    import subprocess

    err.print("$ " + shlex.join(command))
    proc = subprocess.Popen(command, env=env)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a kill stops the Flower process too, as Ctrl-C does
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    raise typer.Exit(code)


@deploy_app.command("superlink")
def deploy_superlink(
    folder: Path = DeployDir,
    host: str = typer.Option(
        "127.0.0.1", help="address the SuperNodes reach: the Fleet API only (its cert names it)"
    ),
    port: int = typer.Option(8000, help="the Fleet API's HTTPS port"),
    control_host: str = typer.Option(
        "127.0.0.1", help="address of the Control and ServerAppIo APIs: keep it this host's"
    ),
    control_port: int = ControlPort,
    insecure: bool = typer.Option(False, help="no TLS and no node authentication (tests only)"),
) -> None:
    """Start a SuperLink: certificates made once, TLS, SuperNode authentication, a database;
    SuperNodes reach the Fleet API on --host; node keys are registered and runs submitted on
    --control-host (this host by default)."""
    from fedsim.deploy import Deployment, is_loopback

    deployment = Deployment(folder.resolve(), host, port, insecure, control_port, control_host)
    deployment.prepare()
    if not is_loopback(control_host):
        print_warning(
            f"the Control API on {deployment.control_address} lets anyone who reaches "
            "it with ca.crt register node keys and submit runs: firewall it to operators only"
        )
    err.print(f"flwr CLI: FLWR_HOME={deployment.root / 'flwr-home'} (connection 'fedsim')")
    _foreground(deployment.superlink_command(), deployment.env("homes/superlink"))


@deploy_app.command("supernode")
def deploy_supernode(
    folder: Path = DeployDir,
    scenario: Path = typer.Option(..., help="the scenario this SuperNode takes part in"),
    device: str | None = typer.Option(None, help="the device it is: its id, or registry name"),
    gateway: str | None = typer.Option(
        None, help="or the gateway it plays (topology.gateways[].name; cohort mode)"
    ),
    host: str = typer.Option("127.0.0.1", help="the SuperLink's host"),
    port: int = typer.Option(8000, help="the SuperLink's Fleet API port"),
    control_port: int = ControlPort,
    node_port: int | None = typer.Option(
        None, help="this node's local API port (default 9100 + device id, 9300 + gateway index)"
    ),
    register: bool | None = typer.Option(
        None,
        "--register/--no-register",
        help="register the node's key first (default: if this is the SuperLink's own folder)",
    ),
    insecure: bool = typer.Option(False, help="no TLS and no node authentication (tests only)"),
) -> None:
    """Start the SuperNode that is one device of a scenario, or one of its gateways (its node
    config, and for an attached device its serial port, come from the scenario); its key is made
    first, and registered if the SuperLink runs here (else register keys/NAME.pub on its host)."""
    from fedsim.deploy import Deployment, gateway_config_for, node_config_for

    if (device is None) == (gateway is None):
        raise FedsimError(
            "--device/--gateway", "give exactly one of them", "--device 3, or --gateway floor-1"
        )
    deployment = Deployment(folder.resolve(), host, port, insecure, control_port)
    deployment.connect()
    if device is not None:
        number, config = node_config_for(scenario, device)
        name, default_port = f"device-{number}", 9100 + number
    else:
        assert gateway is not None
        number, config = gateway_config_for(scenario, gateway)
        name, default_port = f"gateway-{gateway}", 9300 + number
    key = None if insecure else deployment.node_key(name)
    if register is None:  # the SuperLink's folder holds its private key; a node's does not
        register = (deployment.root / "certs" / "server.key").exists()
    if key is not None and register:
        deployment.register(Path(f"{key}.pub"))
    elif key is not None:
        err.print(
            f"node key {key}.pub: unless it is registered, copy it to the SuperLink's host and "
            f"run there: fedsim deploy register DEPLOY_DIR {name}.pub"
        )
    command = deployment.supernode_command(key, config, node_port or default_port)
    _foreground(command, deployment.env(f"homes/{name}"))


@deploy_app.command("register")
def deploy_register(
    folder: Path = DeployDir,
    public_key: Path = typer.Argument(..., help="a SuperNode's public key (its keys/NAME.pub)"),
    control_port: int = ControlPort,
) -> None:
    """Register a SuperNode's public key with the SuperLink running on this host (the Control
    API listens on loopback only: a key cannot be registered from the network)."""
    from fedsim.deploy import Deployment

    deployment = Deployment(folder.resolve(), control_port=control_port)
    deployment.connect()
    deployment.register(public_key)
    out.print(f"registered {public_key} with the SuperLink at {deployment.control_address}")


def run_deployed(scenario: Path | None, folder: Path, out_dir: Path | None) -> None:
    """A run on a deployment: submitted with ``flwr run``, followed until it finishes; exit 1
    unless it completed (``flwr run`` itself exits 0 on failure)."""
    from fedsim.core.scenario_load import load_scenario
    from fedsim.parts import check_parts
    from fedsim.runner import stopped_error

    if scenario is None:
        raise FedsimError(
            "--federation", "needs a scenario", "fedsim run SCENARIO --federation DIR"
        )
    deployment = _deployment_of(folder)
    loaded = load_scenario(scenario)
    check_parts(loaded.algorithm.kind, f"{scenario}: algorithm.kind")
    name = loaded.name
    out_dir = out_dir or Path("results") / f"{name}-deployed"
    run_id = deployment.submit(scenario, out_dir)
    err.print(f"run {run_id} on {deployment.control_address}: waiting for it to finish")
    status = deployment.wait(run_id)
    path = out_dir / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if summary and summary.get("status") != "completed":  # it says why (exit 3: diverged, ...)
        raise stopped_error(summary, out_dir)
    if not status.ok:
        print_error(f"run {run_id} ended {status.status}: {status.details}")
        raise typer.Exit(int(ExitCode.RUN_FAILED))
    out.print(
        f"{name}: run {run_id} completed on {deployment.control_address} in "
        f"{status.elapsed_s:.0f} s: "
        f"final accuracy {summary['final_accuracy']}, {summary['failures']} device failures "
        f"→ {out_dir}"
    )


def _deployment_of(folder: Path) -> Any:
    """The deployment whose CLI config is in ``folder`` (the Control API's address, and TLS as
    the SuperLink has)."""
    import tomllib

    from fedsim.deploy import CONNECTION, Deployment

    config = folder / "flwr-home" / "config.toml"
    if not config.exists():
        raise FedsimError(str(folder), "is no deployment folder", "fedsim deploy superlink DIR")
    entry = tomllib.loads(config.read_text())["superlink"][CONNECTION]
    host, _, port = str(entry["address"]).rpartition(":")
    insecure = bool(entry.get("insecure", False))
    return Deployment(
        folder.resolve(), insecure=insecure, control_host=host, control_port=int(port)
    )
