"""fedsim on Flower's Deployment Engine, on loopback: a SuperLink with TLS and SuperNode
authentication, three SuperNodes (one the gateway of an emulated MCU), a scenario run to
completion; an unregistered SuperNode refused; a failed run reported as failed; and the doors a
holder of the public ca.crt must find shut (the Control API off the SuperNodes' address, keys and
database private)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from edge.emulator import EmulatorError, qemu_mcu
from fedsim.core.errors import FedsimError
from fedsim.deploy import Deployment, node_config_for
from fedsim.deploy_superlink import FleetOnly, fleet_paths
from fedsim.pytest_plugin import FedsimRun
from tests.conftest import ROOT

FEDSIM = [sys.executable, "-m", "fedsim.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [*FEDSIM, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it started
        )  # fmt: skip


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _run_on(dep: Deployment, scenario: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [*FEDSIM, "run", str(scenario), "--federation", str(dep.root), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _until_ready(dep: Deployment, link: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not (dep.ca.exists() and dep.ready()):
        assert link.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the SuperLink did not come up"
        time.sleep(0.5)


def _superlink(root: Path) -> tuple[Deployment, subprocess.Popen[bytes]]:
    """``fedsim deploy superlink`` on two free loopback ports (Fleet, Control), ready."""
    dep = Deployment(root, port=_free_port(), control_port=_free_port())
    link = ["deploy", "superlink", str(root), "--port", str(dep.port)]
    link += ["--control-port", str(dep.control_port)]
    proc = _start(link, root / "superlink.log")
    try:
        _until_ready(dep, proc, root / "superlink.log")
    except BaseException:
        _stop([proc])
        raise
    return dep, proc


def _online(deployment: Deployment, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = deployment.flwr("supernode", "ls", "--format", "json").stdout
        if listing.count('"online"') >= count:
            return
        time.sleep(1)
    raise AssertionError(f"{count} SuperNodes did not come online: {listing}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    """A SuperLink (TLS, node auth) and 3 SuperNodes, device 2 behind a serial bridge to QEMU."""
    root = tmp_path_factory.mktemp("deployment")
    try:
        mcu_context = qemu_mcu()
        mcu = mcu_context.__enter__()
    except EmulatorError as exc:
        pytest.skip(str(exc))
    scenario = root / "deployed.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "deployed",
                "seed": 7,
                "task": {"dataset": "digits", "model": "mlp"},
                "fleet": {
                    "groups": [
                        {"profile": "rpi4", "count": 2},
                        {"profile": "nano33-ble-sense", "count": 1, "attached": {"port": mcu.port}},
                    ],
                    "partition": {"kind": "iid"},
                },
                "algorithm": {"kind": "tinyol", "lr": 0.05, "passes": 1},
                "rounds": 2,
                "execution": {"mode": "per-device"},
            }
        ),
        encoding="utf-8",
    )
    procs = []
    try:
        dep, link = _superlink(root)
        procs.append(link)
        for device in range(3):
            node = ["deploy", "supernode", str(root), "--scenario", str(scenario)]
            node += ["--device", str(device), "--port", str(dep.port)]
            node += ["--control-port", str(dep.control_port)]
            node += ["--node-port", str(_free_port())]
            procs.append(_start(node, root / f"device-{device}.log"))
        _online(dep, 3)
        yield dep, scenario
    finally:
        _stop(procs)
        mcu_context.__exit__(None, None, None)


@pytest.mark.slow
def test_the_gateways_node_config_comes_from_the_scenario(
    deployment: tuple[Deployment, Path],
) -> None:
    _, scenario = deployment
    device, config = node_config_for(scenario, "2")
    assert device == 2
    assert config["partition-id"] == 2
    assert config["serial-port"].startswith("socket://127.0.0.1:")
    assert "serial-port" not in node_config_for(scenario, "0")[1]


@pytest.mark.slow
def test_a_scenario_runs_to_completion_over_tls_with_authenticated_nodes(
    deployment: tuple[Deployment, Path], tmp_path: Path
) -> None:
    dep, scenario = deployment
    out = tmp_path / "out"
    done = _run_on(dep, scenario, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed on 127.0.0.1" in done.stdout
    run = FedsimRun.read(out)
    assert [r["failures"] for r in run.rounds] == [0, 0]
    assert [r["participants"] for r in run.rounds] == [3, 3]
    assert all(float(r["measured_s"]) > 0 for r in run.device_rows(2))  # the MCU timed itself
    assert all(r["measured_s"] == "" for r in run.device_rows(0))
    # the deployed ServerApp (fedsim.apps) writes the plots and report a simulated run writes
    assert (out / "report.html").exists()
    assert (out / "plots" / "accuracy.png").exists()


@pytest.mark.slow
def test_a_gateway_supernode_runs_its_floor_and_drives_the_attached_mcu(
    deployment: tuple[Deployment, Path], tmp_path: Path
) -> None:
    """One design for simulation and deployment: a SuperNode started as gateway floor-1 gets
    the floor's work (cohort mode) and trains the MCU behind it over the serial bridge."""
    dep, per_device = deployment
    data = yaml.safe_load(per_device.read_text(encoding="utf-8"))
    data.update(
        name="deployed-gateway",
        execution={"mode": "cohort"},
        topology={"gateways": [{"name": "floor-1", "link": "ethernet", "devices": {"count": 3}}]},
    )
    scenario = tmp_path / "gateway.yaml"
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    node = ["deploy", "supernode", str(dep.root), "--scenario", str(scenario)]
    node += ["--gateway", "floor-1", "--port", str(dep.port)]
    node += ["--control-port", str(dep.control_port)]
    node += ["--node-port", str(_free_port())]
    gateway = _start(node, tmp_path / "gateway.log")
    before = [_trains(dep.root / f"device-{d}.log") for d in range(3)]
    try:
        _online(dep, 4)
        out = tmp_path / "out"
        done = _run_on(dep, scenario, out)
    finally:
        _stop([gateway])
    assert done.returncode == 0, done.stdout + done.stderr
    run = FedsimRun.read(out)
    assert [r["participants"] for r in run.rounds] == [3, 3]
    assert [r["tiers"][1]["tier"] for r in run.rounds] == ["gateway", "gateway"]
    assert all(float(r["measured_s"]) > 0 for r in run.device_rows(2))  # the MCU, via floor-1
    assert _trains(tmp_path / "gateway.log") == 2  # one order a round, to the gateway's node
    assert [_trains(dep.root / f"device-{d}.log") for d in range(3)] == before  # none elsewhere


def _trains(log: Path) -> int:
    """Train messages a SuperNode's log says it received."""
    return log.read_text(errors="replace").count("Receiving: train message")


@pytest.mark.slow
def test_an_unregistered_supernode_is_refused(
    deployment: tuple[Deployment, Path], tmp_path: Path
) -> None:
    dep, _ = deployment
    key = Deployment(tmp_path).node_key("rogue")  # a key the SuperLink has never seen
    command = dep.supernode_command(key, {"partition-id": 1}, _free_port())
    log = tmp_path / "rogue.log"
    with log.open("wb") as out:  # a file: the node's helper process may outlive it, pipe open
        node = subprocess.Popen(
            command, env=dep.env("homes/rogue"), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        assert node.wait(120) != 0
    finally:
        _stop([node])
    assert "Failed to activate SuperNode" in log.read_text()


@pytest.mark.slow
def test_a_run_that_fails_on_the_superlink_exits_non_zero(
    deployment: tuple[Deployment, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from fedsim.cli.deploy import run_deployed

    dep, scenario = deployment
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the results folder should go")
    # `fedsim run` refuses such an --out itself (exit 2); past that check, the ServerApp fails
    with pytest.raises(typer.Exit) as ended:
        run_deployed(scenario, dep.root, blocked)
    assert ended.value.exit_code == 1
    assert "ended finished:failed" in capsys.readouterr().err


def test_a_node_without_the_deployments_ca_is_told_to_copy_it(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match=r"ca\.crt: the deployment's CA certificate is missing"):
        Deployment(tmp_path).connect()
    Deployment(tmp_path, insecure=True).connect()  # no TLS: nothing to trust
    assert "insecure = true" in (tmp_path / "flwr-home" / "config.toml").read_text()


def test_a_superlink_folder_gets_a_ca_and_a_certificate_for_its_host(tmp_path: Path) -> None:
    from cryptography import x509

    Deployment(tmp_path, host="192.168.1.10").prepare()
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.168.1.10" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    config = (tmp_path / "flwr-home" / "config.toml").read_text()
    assert 'address = "127.0.0.1:8001"' in config  # flwr dials the Control API, on loopback
    key = Deployment(tmp_path).node_key("device-3")
    assert (tmp_path / "keys" / "device-3.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert key.stat().st_mode & 0o077 == 0  # private


def test_node_configs_need_per_device_mode_and_a_known_device(
    write_scenario: Callable[..., Path],
) -> None:
    from tests.conftest import tiny_scenario

    with pytest.raises(FedsimError, match=r"needs execution\.mode: per-device"):
        node_config_for(write_scenario(tiny_scenario()), "0")
    scenario = tiny_scenario()
    scenario["execution"]["mode"] = "per-device"
    path = write_scenario(scenario, "per-device.yaml")
    assert node_config_for(path, "4") == (4, {"partition-id": 4})
    with pytest.raises(FedsimError, match="'9' is neither a device id"):
        node_config_for(path, "9")


# -- what a holder of the public ca.crt can and cannot do ------------------------------------------
@pytest.fixture(scope="module")
def superlink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A SuperLink alone (TLS, node auth): Fleet API and Control API on two loopback ports."""
    dep, proc = _superlink(tmp_path_factory.mktemp("superlink"))
    try:
        yield dep
    finally:
        _stop([proc])


def _status(dep: Deployment, port: int, path: str) -> int:
    """The HTTP status of an empty POST to ``path`` (TLS, verified against the deployment's CA)."""
    context = ssl.create_default_context(cafile=str(dep.ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", path, body=b"")
        return connection.getresponse().status
    finally:
        connection.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_ca_crt_holder_cannot_register_a_key_through_the_superlinks_public_address(
    superlink: Deployment, tmp_path: Path
) -> None:
    # an outsider who copied ca.crt and points the flwr CLI at the address SuperNodes use
    outsider = Deployment(tmp_path, control_port=superlink.port)
    (tmp_path / "certs").mkdir()
    shutil.copy(superlink.ca, outsider.ca)
    outsider.connect()
    rogue = outsider.node_key("rogue")
    with pytest.raises(FedsimError, match=r"did not register this SuperNode: .*404 Not Found"):
        outsider.register(Path(f"{rogue}.pub"))
    for path in ["/v1/control/register-node", "/v1/control/unregister-node",
                 "/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/get-nodes",
                 "/v1/fleet/../control/list-runs", "/openapi.json"]:  # fmt: skip
        assert _status(superlink, superlink.port, path) == 404, path
    assert _status(superlink, superlink.port, "/v1/fleet/activate-node") == 415  # served
    # on the SuperLink's host, the operator registers keys: the rogue key is not among them
    operator_key = Deployment(tmp_path / "operator").node_key("device-0")
    superlink.register(Path(f"{operator_key}.pub"))
    listing = superlink.flwr("supernode", "ls", "--format", "json").stdout
    assert listing.count('"node-id"') == 1, listing


def test_the_superlinks_database_and_homes_are_private(superlink: Deployment) -> None:
    files = sorted(superlink.root.glob("superlink.db*"))
    assert len(files) >= 2  # the database and its write-ahead log
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert _mode(superlink.root / "homes" / "superlink") == 0o700


def test_private_files_are_private_from_their_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_chmod(*_: object, **__: object) -> None:
        raise AssertionError("chmod after writing: the file was readable in between")

    monkeypatch.setattr(os, "chmod", no_chmod)
    umask = os.umask(0o022)  # the usual one: files 0644 unless made otherwise
    try:
        dep = Deployment(tmp_path / "deploy")
        dep.prepare()
        key = dep.node_key("device-0")
    finally:
        os.umask(umask)
    assert _mode(key) == 0o600
    assert _mode(dep.root / "certs" / "server.key") == 0o600
    assert _mode(dep.root / "superlink.db") == 0o600
    assert _mode(dep.root / "keys") == _mode(dep.root / "certs") == _mode(dep.root) == 0o700
    assert _mode(Path(f"{key}.pub")) == 0o644  # the public half stays public


def test_a_key_file_is_never_written_through_an_existing_file(tmp_path: Path) -> None:
    from fedsim.deploy_files import private_file

    planted = tmp_path / "planted"
    planted.write_text("someone else's")
    (tmp_path / "link").symlink_to(planted)
    with pytest.raises(FileExistsError):
        private_file(tmp_path / "link", b"secret")
    assert planted.read_text() == "someone else's"


def test_the_commands_keep_the_control_api_on_loopback(tmp_path: Path) -> None:
    dep = Deployment(tmp_path, host="192.168.1.10")
    command = dep.superlink_command()

    def flag(name: str, argv: list[str] = command) -> str:
        return argv[argv.index(name) + 1]

    assert (flag("--host"), flag("--port")) == ("127.0.0.1", "8001")  # Control, ServerAppIo
    assert (flag("--fleet-host"), flag("--fleet-port")) == ("192.168.1.10", "8000")
    assert "--enable-supernode-auth" in command
    node = dep.supernode_command(tmp_path / "key", {"partition-id": 0}, 9100)
    assert (flag("--superlink", node), flag("--host", node)) == ("192.168.1.10:8000", "127.0.0.1")
    dep.prepare()
    assert 'address = "127.0.0.1:8001"' in (tmp_path / "flwr-home" / "config.toml").read_text()
    with pytest.raises(FedsimError, match="cannot share the Fleet API's address"):
        Deployment(tmp_path, control_port=8000).prepare()


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/v1/fleet/pull-messages", True),
        ("/v1/fleet/activate-node", True),
        ("/v1/control/register-node", False),
        ("/v1/fleet/../control/register-node", False),
        ("/v1/fleet", False),
        ("/v1/runtime/get-nodes", False),
        ("/docs", False),
    ],
)
def test_the_public_address_passes_on_the_fleet_api_only(path: str, served: bool) -> None:
    import asyncio

    reached, sent = [], []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        reached.append(scope["path"])

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    asyncio.run(FleetOnly(app, fleet_paths())({"type": "http", "path": path}, receive, send))
    assert reached == ([path] if served else [])
    assert [m["status"] for m in sent if "status" in m] == ([] if served else [404])


def test_the_fleet_paths_are_flowers_fleet_api() -> None:
    paths = fleet_paths()
    assert {"/v1/fleet/activate-node", "/v1/fleet/pull-messages", "/v1/fleet/get-fab"} <= paths
    assert all(p.startswith("/v1/fleet/") for p in paths)


def test_registering_something_that_is_no_public_key_is_a_located_error(tmp_path: Path) -> None:
    junk = tmp_path / "node.pub"
    junk.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(FedsimError, match=r"node\.pub: is not a SuperNode public key"):
        Deployment(tmp_path, insecure=True).register(junk)
