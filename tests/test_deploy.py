"""fedsim on Flower's Deployment Engine, on loopback: a SuperLink with TLS and SuperNode
authentication, three SuperNodes (one the gateway of an emulated MCU), a scenario run to
completion; an unregistered SuperNode refused; a failed run reported as failed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from devices.emulator import EmulatorError, qemu_mcu
from fedsim.deploy import Deployment, node_config_for
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
    port = _free_port()
    procs = []
    try:
        link = ["deploy", "superlink", str(root), "--port", str(port)]
        procs.append(_start(link, root / "superlink.log"))
        dep = Deployment(root, port=port)
        deadline = time.monotonic() + 60
        while not (dep.ca.exists() and dep.ready()):
            assert procs[0].poll() is None, (root / "superlink.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the SuperLink did not come up"
            time.sleep(0.5)
        for device in range(3):
            node = ["deploy", "supernode", str(root), "--scenario", str(scenario)]
            node += ["--device", str(device), "--port", str(port)]
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
    node += ["--gateway", "floor-1", "--port", dep.address.rsplit(":", 1)[1]]
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
    deployment: tuple[Deployment, Path], tmp_path: Path
) -> None:
    dep, scenario = deployment
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the results folder should go")
    done = _run_on(dep, scenario, blocked)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ended finished:failed" in done.stderr


def test_a_node_without_the_deployments_ca_is_told_to_copy_it(tmp_path: Path) -> None:
    from fedsim.core.errors import FedsimError

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
    assert 'address = "192.168.1.10:8000"' in config
    key = Deployment(tmp_path).node_key("device-3")
    assert (tmp_path / "keys" / "device-3.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert key.stat().st_mode & 0o077 == 0  # private


def test_node_configs_need_per_device_mode_and_a_known_device(
    write_scenario: Callable[..., Path],
) -> None:
    from fedsim.core.errors import FedsimError
    from tests.conftest import tiny_scenario

    with pytest.raises(FedsimError, match=r"needs execution\.mode: per-device"):
        node_config_for(write_scenario(tiny_scenario()), "0")
    scenario = tiny_scenario()
    scenario["execution"]["mode"] = "per-device"
    path = write_scenario(scenario, "per-device.yaml")
    assert node_config_for(path, "4") == (4, {"partition-id": 4})
    with pytest.raises(FedsimError, match="'9' is neither a device id"):
        node_config_for(path, "9")
