"""Flower's Deployment Engine for fedsim: a SuperLink and SuperNodes with TLS and SuperNode
authentication, set up from a scenario (``fedsim deploy superlink | supernode``,
``fedsim run --federation DIR``).

A deployment folder holds everything: ``certs/`` (a CA made here, and the SuperLink's certificate
for its host), ``keys/`` (one ECDSA P-384 key per SuperNode, OpenSSH format, registered with the
SuperLink before the node starts), ``flwr-home/config.toml`` (the ``flwr`` CLI's connection
``fedsim``), ``superlink.db`` (registrations and runs survive a restart) and ``homes/`` (one
``FLWR_HOME`` per process: Flower installs the app there). This module writes the files and the
command lines; Flower does the rest (``flower-superlink`` through ``fedsim.deploy_superlink``,
``flower-supernode``, ``flwr``).

Two addresses: SuperNodes reach the Fleet API on ``host:port``; the Control and ServerAppIo APIs
(register node keys, submit runs) listen on ``control_host:control_port``, loopback by default,
so holding ``ca.crt`` is not enough to enroll a node. Private keys, ``keys/``, ``certs/`` and the
database are the owner's only (0600 files, 0700 folders) from the moment they exist.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.core.errors import FedsimError, known_names
from fedsim.deploy_files import PRIVATE_DIR, certificates, private_dir, private_file, ssh_key

if TYPE_CHECKING:
    from devices.fleet import Fleet

__all__ = [
    "CONNECTION",
    "Deployment",
    "RunStatus",
    "app_dir",
    "is_loopback",
    "node_config_for",
]

CONNECTION = "fedsim"  # the flwr CLI's name for the deployment's SuperLink
FINISHED = "finished:"
LEGACY_GRPC = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")


def app_dir() -> Path:
    """The folder ``flwr run`` packages: this checkout (pyproject.toml with ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise FedsimError(
            "deployment",
            "fedsim is not installed from a checkout, and `flwr run` needs the app's source",
            "install it with pip install -e from a clone of the repository",
        )
    return root


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    status: str  # pending, starting, running, finished:completed|failed|stopped
    details: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


@dataclass(frozen=True)
class Deployment:
    root: Path
    host: str = "127.0.0.1"  # the Fleet API: the address SuperNodes reach
    port: int = 8000
    insecure: bool = False  # no TLS (and then no SuperNode authentication): never the default
    control_port: int = 8001  # the Control and ServerAppIo APIs (flwr, the ServerApp) ...
    control_host: str = "127.0.0.1"  # ... on this host only, unless the operator says otherwise

    @property
    def address(self) -> str:
        """The Fleet API's address (what ``flower-supernode --superlink`` dials)."""
        return f"{self.host}:{self.port}"

    @property
    def control_address(self) -> str:
        """The Control API's address (what the ``flwr`` CLI dials)."""
        return f"{self.control_host}:{self.control_port}"

    @property
    def ca(self) -> Path:
        return self.root / "certs" / "ca.crt"

    def env(self, home: str = "flwr-home") -> dict[str, str]:
        """The environment of a Flower process of this deployment (its own ``FLWR_HOME``)."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        inherited = {k: v for k, v in os.environ.items() if k not in LEGACY_GRPC}
        return {
            **inherited,
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_HOME": str(self.root / home),
            "PATH": path,
        }

    # -- files ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The SuperLink's side: certificates (unless insecure), made once; a private database;
        the CLI's connection."""
        if (self.host, self.port) == (self.control_host, self.control_port):
            raise FedsimError(
                "--control-port",
                f"the Control API cannot share the Fleet API's address {self.address}",
                "give it another port (default 8001)",
            )
        self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)  # a user's folder: kept
        if not self.insecure and not self.ca.exists():
            certificates(self.root / "certs", [self.host, self.control_host])
        private_file(self.root / "superlink.db", b"", exist_ok=True)  # sqlite takes it empty
        self.connect()

    def connect(self) -> None:
        """A node's (or a user's) side: the ``flwr`` CLI's connection to this SuperLink; with TLS
        the deployment's CA must be here (copied from the SuperLink's folder)."""
        if not self.insecure and not self.ca.exists():
            raise FedsimError(
                str(self.ca),
                "the deployment's CA certificate is missing",
                "copy certs/ca.crt from the SuperLink's deployment folder",
            )
        home = self.root / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        tls = "insecure = true" if self.insecure else f'root-certificates = "{self.ca}"'
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.control_address}"\n{tls}\n',
            encoding="utf-8",
        )

    def node_key(self, name: str) -> Path:
        """The SuperNode ``name``'s private key (its ``.pub`` beside it), made once."""
        key = self.root / "keys" / name
        private_dir(key.parent)
        if not key.exists():
            ssh_key(key, comment=name)
        return key

    # -- commands ---------------------------------------------------------------------------------
    def superlink_command(self) -> list[str]:
        """Flower's SuperLink, every API on the control address, the Fleet API alone on the
        public one (``fedsim/deploy_superlink.py``)."""
        command = [sys.executable, "-m", "fedsim.deploy_superlink"]
        command += ["--fleet-host", self.host, "--fleet-port", str(self.port)]
        command += ["--host", self.control_host, "--port", str(self.control_port)]
        command += ["--database", str(self.root / "superlink.db")]
        command += ["--disable-runtime-dependency-installation"]  # fedsim's venv has them
        if self.insecure:
            return [*command, "--insecure"]
        certs = self.root / "certs"
        return [
            *command,
            "--ssl-ca-certfile",
            str(self.ca),
            "--ssl-certfile",
            str(certs / "server.pem"),
            "--ssl-keyfile",
            str(certs / "server.key"),
            "--enable-supernode-auth",
        ]

    def supernode_command(
        self, key: Path | None, node_config: dict[str, Any], port: int
    ) -> list[str]:
        config = " ".join(f"{k}={_toml(v)}" for k, v in node_config.items())
        command = ["flower-supernode", "--superlink", self.address]
        command += ["--host", "127.0.0.1", "--port", str(port)]  # its ClientApp API: local only
        command += ["--node-config", config]
        if self.insecure:
            return [*command, "--insecure"]
        command += ["--root-certificates", str(self.ca)]
        return [*command, "--auth-supernode-private-key", str(key)] if key else command

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The ``flwr`` CLI against this deployment."""
        return subprocess.run(
            ["flwr", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ready(self) -> bool:
        """Whether the SuperLink answers (a TLS-verified call; the JSON format would exit 0)."""
        return self.flwr("supernode", "ls", timeout=60).returncode == 0

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key (``keys/NAME.pub``; again: harmless), through the
        Control API: on the SuperLink's host."""
        if not public_key.is_file() or not public_key.read_bytes().startswith(b"ecdsa-sha2-"):
            raise FedsimError(
                str(public_key),
                "is not a SuperNode public key (an OpenSSH ecdsa-sha2-nistp384 line)",
                "give the node's keys/NAME.pub",
            )
        done = self.flwr("supernode", "register", str(public_key), "--format", "json")
        reply = _json(done.stdout)
        if not reply.get("success") and "already in use" not in str(reply.get("error-message")):
            raise FedsimError(
                str(public_key),
                f"the SuperLink's Control API at {self.control_address} did not register this "
                f"SuperNode: {reply.get('error-message') or done.stderr.strip()[-300:]}",
                "register it on the SuperLink's host (fedsim deploy register DIR KEY.pub), "
                "with the SuperLink running",
            )

    def submit(self, scenario: Path, out: Path) -> str:
        """Start a fedsim run of ``scenario`` writing into ``out``; its run id."""
        config = f"scenario={_toml(str(scenario.resolve()))} out={_toml(str(out.resolve()))}"
        done = self.flwr(
            "run", str(app_dir()), CONNECTION, "--run-config", config, "--format", "json"
        )
        reply = _json(done.stdout)
        if not reply.get("success") or "run-id" not in reply:
            raise FedsimError(
                "--federation",
                f"the SuperLink at {self.control_address} did not start the run: "
                f"{reply.get('error-message') or done.stderr.strip()[-500:]}",
                "is it running (fedsim deploy superlink), and are SuperNodes connected?",
            )
        return str(reply["run-id"])

    def status(self, run_id: str) -> RunStatus:
        reply = _json(self.flwr("ls", "--run-id", run_id, "--format", "json").stdout)
        runs = reply.get("runs") or [{}]
        run = runs[0]
        return RunStatus(
            run_id,
            str(run.get("status", "unknown")),
            str(run.get("status-details", "")),
            float(run.get("elapsed", 0.0) or 0.0),
        )

    def wait(self, run_id: str, timeout_s: float = 3600, poll_s: float = 2.0) -> RunStatus:
        """The run's final status (``flwr run`` exits 0 even when a run fails: ask the
        SuperLink)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(run_id)
            if status.status.startswith(FINISHED) or time.monotonic() > deadline:
                return status
            time.sleep(poll_s)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fleet_in_mode(scenario_path: Path, mode: str, what: str, fix: str) -> Fleet:
    """The scenario's fleet, if the scenario runs in execution ``mode`` (else ``what``, ``fix``)."""
    from devices.fleet import load_fleet

    scenario, fleet = load_fleet(scenario_path)
    if scenario.execution.mode != mode:
        raise FedsimError(str(scenario_path), what, fix)
    return fleet


def node_config_for(scenario_path: Path, device: str) -> tuple[int, dict[str, Any]]:
    """The node config of the SuperNode that is device ``device`` (an id, or a registry name) of
    the scenario: its ``partition-id``, and for an attached device its ``serial-port``."""
    fleet = _fleet_in_mode(
        scenario_path,
        "per-device",
        "a SuperNode per device needs execution.mode: per-device",
        "set execution.mode: per-device in the scenario you deploy",
    )
    names = {d.name: d.device_id for d in fleet.devices if d.name}
    if device.isdigit() and int(device) < len(fleet):
        device_id = int(device)
    elif device in names:
        device_id = names[device]
    else:
        raise FedsimError(
            "--device",
            f"'{device}' is neither a device id (0..{len(fleet) - 1}) nor a registry device name",
            "give the device's id or its registry name",
        )
    config: dict[str, Any] = {"partition-id": device_id}
    attached = fleet[device_id].attached
    if attached is not None:
        config["serial-port"] = attached.port
    return device_id, config


def gateway_config_for(scenario_path: Path, gateway: str) -> tuple[int, dict[str, Any]]:
    """The node config of the SuperNode that plays gateway ``gateway`` of the scenario's topology
    (cohort mode: it is a worker that gets that gateway's devices, and drives those attached to
    it on its serial ports): its index, and ``partition-id`` and ``gateway``."""
    fleet = _fleet_in_mode(
        scenario_path,
        "cohort",
        "a gateway SuperNode runs its devices as a cohort: it needs execution.mode: cohort",
        "set execution.mode: cohort, or start one SuperNode per device (--device)",
    )
    leaves = (
        {g.name: g.index for g in fleet.topology.gateways if g.devices} if fleet.topology else {}
    )
    if gateway not in leaves:
        raise FedsimError("--gateway", known_names("gateway with devices", gateway, leaves))
    return leaves[gateway], {"partition-id": leaves[gateway], "gateway": gateway}


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)
