"""Attached devices in a run: a device on a serial bridge trains in the same federation as
simulated ones (``fleet.groups[].attached``), and one that goes silent drops out of its rounds."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bridge import DeviceResetError, DeviceTimeoutError, SerialBridge
from edge.emulator import EmulatorError, Running, host_firmware, qemu_mcu
from edge.messages import HeadConfig
from edge.online_head import OnlineHead
from fedsim.core.errors import FedsimError
from fedsim.core.results import read_model, read_rounds
from fedsim.core.scenario_load import load_scenario
from fedsim.runner import run
from ontology.registry import CATALOG_DIR
from ontology.validate import load_turtle, validate
from ontology.vocab import FEDSIM
from tests.conftest import tiny_scenario
from tests.test_cli import fedsim

Write = Callable[..., Path]
TINYOL = {"kind": "tinyol", "lr": 0.05, "passes": 1}


def _mixed(port: str | None, **attached: Any) -> dict[str, Any]:
    groups: list[dict[str, Any]] = [
        {"profile": "rpi4", "count": 3},
        {"profile": "pico", "count": 1},
    ]
    last: dict[str, Any] = {"profile": "rpi-zero2w", "count": 1}
    if port is not None:
        last["attached"] = {"port": port, **attached}
    scenario = tiny_scenario(algorithm=TINYOL, rounds=3)
    scenario["fleet"]["groups"] = [*groups, last]
    return scenario


def _devices(out: Path) -> list[dict[str, str]]:
    with (out / "devices.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.serial
@pytest.mark.parametrize("mode", ["cohort", "per-device"])
def test_an_attached_agent_trains_in_the_federation_like_a_simulated_device(
    mode: str, agent_port: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = _mixed(agent_port)
    scenario["execution"]["mode"] = mode
    mixed = run(write_scenario(scenario, "mixed.yaml"), tmp_path / "mixed").out
    simulated = run(write_scenario(_mixed(None), "sim.yaml"), tmp_path / "sim").out

    rows = _devices(mixed)
    attached = [r for r in rows if r["device_id"] == "4"]
    assert [r["status"] for r in attached] == ["ok"] * 3
    assert all(float(r["measured_s"]) > 0 for r in attached)  # the agent times its steps
    assert all(r["measured_mj"] == "" for r in attached)  # ...and cannot measure energy
    assert all(r["measured_s"] == "" for r in rows if r["device_id"] != "4")
    # the agent runs the same float32 steps as a simulated device: the same global model
    for name, value in read_model(simulated).items():
        np.testing.assert_array_equal(read_model(mixed)[name], value, err_msg=name)
    assert [r["accuracy"] for r in read_rounds(mixed)] == [
        r["accuracy"] for r in read_rounds(simulated)
    ]


@pytest.mark.serial
@pytest.mark.parametrize("mode", ["cohort", "per-device"])
def test_a_silent_attached_device_drops_out_and_the_run_goes_on(
    mode: str, pty_pair: tuple[str, str], write_scenario: Write, tmp_path: Path
) -> None:
    host, _ = pty_pair  # nobody answers on the other end
    scenario = _mixed(host, timeout_s=0.05, retries=1)
    scenario["execution"]["mode"] = mode
    out = run(write_scenario(scenario), tmp_path / "silent").out
    rounds = read_rounds(out)
    assert [r["failures"] for r in rounds] == [1, 1, 1]
    assert [r["participants"] for r in rounds] == [4, 4, 4]
    errors = {r["error"] for r in _devices(out) if r["device_id"] == "4"}
    assert len(errors) == 1
    assert f"{host}: no reply to HELLO after 2 attempts" in errors.pop()


def test_attached_devices_need_the_on_device_learner(write_scenario: Write) -> None:
    scenario = _mixed("/dev/ttyACM0")
    scenario["algorithm"] = {"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16}
    with pytest.raises(FedsimError) as exc:
        load_scenario(write_scenario(scenario))
    assert "fleet.groups[2].attached" in str(exc.value)
    assert "set algorithm.kind: tinyol" in str(exc.value)


def test_an_attached_group_is_one_device(write_scenario: Write) -> None:
    scenario = _mixed("/dev/ttyACM0")
    scenario["fleet"]["groups"][2]["count"] = 2
    with pytest.raises(FedsimError, match="set count: 1"):
        load_scenario(write_scenario(scenario))


@pytest.mark.parametrize("mode", ["cohort", "per-device"])
def test_an_absent_port_fails_its_device_with_the_fix(
    mode: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = _mixed("/dev/ttyNOPE")
    scenario["execution"]["mode"] = mode
    out = run(write_scenario(scenario), tmp_path / "absent").out
    errors = {r["error"] for r in _devices(out) if r["device_id"] == "4"}
    assert any("fedsim devices scan" in e for e in errors)
    assert read_rounds(out)[-1]["participants"] == 4


# -- fedsim devices info / attach ---------------------------------------------------------------
@pytest.mark.serial
def test_devices_info_shows_the_self_description(agent_port: str) -> None:
    proc = fedsim("devices", "info", agent_port)
    assert proc.returncode == 0, proc.stderr
    assert "fedsim-agent" in proc.stdout
    assert "softmax, mse" in proc.stdout


@pytest.mark.serial
def test_devices_attach_registers_a_valid_device_once(agent_port: str, tmp_path: Path) -> None:
    ttl = tmp_path / "attached.ttl"
    for _ in range(2):  # attaching again replaces the description
        proc = fedsim(
            "devices", "attach", agent_port, "--name", "lab-pi-9", "--profile", "rpi4",
            "--fleet", "lab", "--out", ttl,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert f"attached: {{port: '{agent_port}'}}" in proc.stdout
    graph = load_turtle([ttl])
    assert not validate(graph + load_turtle(sorted(CATALOG_DIR.glob("*.ttl"))))
    assert len(set(graph.subjects(FEDSIM.serialPort, None))) == 1
    assert len(list(graph.objects(None, FEDSIM.firmwareVersion))) == 1
    inventory = fedsim("registry", "inventory", "--data", ttl)
    assert "rpi4" in inventory.stdout
    assert "lab" in inventory.stdout


@pytest.mark.serial
def test_devices_attach_asks_for_a_profile_for_an_unknown_board(
    agent_port: str, tmp_path: Path
) -> None:
    proc = fedsim("devices", "attach", agent_port, "--name", "x", "--out", tmp_path / "a.ttl")
    assert proc.returncode == 2
    assert "error: --profile: the device reports board 'raspberrypi'" in proc.stderr
    assert not (tmp_path / "a.ttl").exists()


def test_devices_info_on_an_absent_port_says_how_to_find_one() -> None:
    proc = fedsim("devices", "info", "/dev/ttyNOPE")
    assert proc.returncode == 2
    assert "error: /dev/ttyNOPE: cannot open (No such file or directory)" in proc.stderr
    assert "Traceback" not in proc.stderr


@contextmanager
def _agent_as(pty_pair: tuple[str, str], **hello: Any) -> Iterator[str]:
    """The host end of a pty served by the agent, its HELLO changed by ``hello``."""
    import serial

    from edge.agent import Device, pi_hello, serve

    host, device_end = pty_pair
    link = serial.serial_for_url(device_end, timeout=0.02)
    stop = threading.Event()
    device = Device(replace(pi_hello(), **hello))
    thread = threading.Thread(target=serve, args=(link, device, stop), daemon=True)
    thread.start()
    try:
        yield host
    finally:
        stop.set()
        thread.join(5)
        link.close()


@pytest.mark.serial
def test_a_board_name_with_markup_and_escapes_is_printed_as_text(
    pty_pair: tuple[str, str], tmp_path: Path
) -> None:
    board = "\x1b]0;owned\x07[/][bold]raspberrypi\x1b[2J"
    with _agent_as(pty_pair, board=board) as port:
        info = fedsim("devices", "info", port)
        attach = fedsim(
            "devices", "attach", port, "--name", "pi", "--profile", "rpi4", "--out",
            tmp_path / "a.ttl",
        )  # fmt: skip

    for proc in (info, attach):
        assert proc.returncode == 0, proc.stderr
        assert "?]0;owned?[/][bold]raspberrypi?[2J" in proc.stdout
        assert "\x1b" not in proc.stdout + proc.stderr
    graph = load_turtle([tmp_path / "a.ttl"])
    assert [str(b) for b in graph.objects(None, FEDSIM.boardName)] == [
        "?]0;owned?[/][bold]raspberrypi?[2J"
    ]


@pytest.mark.serial
def test_an_implausible_hello_is_not_registered(pty_pair: tuple[str, str], tmp_path: Path) -> None:
    with _agent_as(pty_pair, max_floats=2**32 - 1) as port:
        proc = fedsim(
            "devices", "attach", port, "--name", "pi", "--profile", "rpi4", "--out",
            tmp_path / "a.ttl",
        )  # fmt: skip

    assert proc.returncode == 2
    assert "its HELLO is implausible: a weight buffer of 4294967295 floats" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "a.ttl").exists()


@pytest.mark.serial
def test_attach_into_a_missing_folder_is_one_line_before_the_device_is_asked(
    agent_port: str, tmp_path: Path
) -> None:
    out = tmp_path / "no" / "such" / "a.ttl"
    proc = fedsim(
        "devices", "attach", agent_port, "--name", "pi", "--profile", "rpi4", "--out", out
    )

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --out {out}: its folder {out.parent} does not exist; create it first "
        f"(mkdir -p {out.parent}) or give another path"
    ]
    assert not out.parent.exists()


def test_attach_into_a_folder_is_refused_before_the_port_is_opened(tmp_path: Path) -> None:
    proc = fedsim("devices", "attach", "/dev/ttyNOPE", "--name", "pi", "--out", tmp_path)

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: --out {tmp_path}: is a folder, not a file; give a file path, e.g. out.html"
    )


# -- a gateway node: the ClientApp proxies its device when its node config names a serial port -----
def _train_message(scenario_path: Path, tmp_path: Path) -> tuple[Any, Any]:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    from clients.work import _model
    from fedsim.core.models import get_arrays
    from fedsim.core.records import ARRAYS, CONFIG, SERVER_ROUND

    scenario = load_scenario(scenario_path)
    arrays = get_arrays(_model(scenario))
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({str(i): Array(a) for i, a in enumerate(arrays)}),
            CONFIG: ConfigRecord({SERVER_ROUND: 1}),
        }
    )
    return Message(content, dst_node_id=1, message_type="train"), arrays


@pytest.mark.serial
def test_a_gateway_node_config_trains_its_device_over_the_bridge(
    agent_port: str, write_scenario: Write, tmp_path: Path
) -> None:
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.app import make_client_app
    from fedsim.core.records import ARRAYS, MEASURED_S, METRICS, RunBinding

    path = write_scenario(_mixed(None))
    app = make_client_app(RunBinding(str(path), str(tmp_path / "out")))
    replies = {}
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # as an engine does
    try:
        for name, config in {
            "gateway": {"partition-id": 4, "serial-port": agent_port},
            "simulated": {"partition-id": 4},
        }.items():
            message, _ = _train_message(path, tmp_path)
            message.metadata.__dict__["_message_id"] = name
            context = Context(1, 1, config, RecordDict(), {})  # type: ignore[arg-type]
            replies[name] = app(message, context)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    gateway, simulated = replies["gateway"], replies["simulated"]
    assert not gateway.has_error(), gateway.error
    assert MEASURED_S in gateway.content[METRICS]  # the agent timed it: it ran on the device
    assert MEASURED_S not in simulated.content[METRICS]
    for key, array in simulated.content[ARRAYS].items():
        np.testing.assert_array_equal(gateway.content[ARRAYS][key].numpy(), array.numpy())


# -- the C firmware through the real bridge: on a Cortex-M4F in QEMU, and on a host pty ------------
@pytest.fixture(scope="module")
def mcu() -> Iterator[Running]:
    try:
        with qemu_mcu() as running:
            yield running
    except EmulatorError as exc:
        pytest.skip(str(exc)) if "not found" in str(exc) else pytest.fail(str(exc))


def _head_session(port: str, n: int = 100) -> tuple[Any, Any, Any, Any]:
    rng = np.random.default_rng(3)
    config = HeadConfig(outputs=4, features=16, lr=0.05)
    w = (0.1 * rng.normal(size=(4, 16))).astype(np.float32)
    b = np.zeros(4, np.float32)
    x, y = rng.normal(size=(n, 16)).astype(np.float32), rng.integers(0, 4, n)
    reference = OnlineHead(w.copy(), b.copy(), config.lr)
    for i in range(n):
        reference.step(x[i], y[i])
    with SerialBridge(port) as bridge:
        bridge.hello()
        bridge.load_head(config, w, b)
        report = bridge.train(config, x, y)
        weight, bias = bridge.get_head(config)
    assert report.steps == n
    return weight, bias, reference, bridge


# Float32 on the device vs numpy: the same operations (no FMA: -ffp-contract=off) summed in
# another order, expf vs numpy's exp. Measured: at most 1e-7 apart after 100 steps.
RTOL, ATOL = 1e-5, 1e-6


@pytest.mark.firmware
def test_the_emulated_mcu_trains_100_samples_like_numpy_through_the_bridge(mcu: Running) -> None:
    weight, bias, reference, bridge = _head_session(mcu.port)
    np.testing.assert_allclose(weight, reference.weight, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(bias, reference.bias, rtol=RTOL, atol=ATOL)
    assert bridge.hello_info is not None
    assert (bridge.hello_info.board, bridge.hello_info.core) == ("mps2-an386", "cortex-m4f")
    assert bridge.stats.retries == 0
    assert mcu.boot_s < 10


def _firmware(*flags: str) -> Any:
    try:
        return host_firmware(*flags)
    except EmulatorError as exc:  # pragma: no cover - only without a C compiler
        pytest.skip(str(exc))


@pytest.mark.firmware
def test_the_host_firmware_under_sanitizers_ignores_duplicate_replies() -> None:
    with _firmware("--duplicate-replies") as fw:
        weight, _, reference, bridge = _head_session(fw.port)
    np.testing.assert_allclose(weight, reference.weight, rtol=RTOL, atol=ATOL)
    assert bridge.stats.stale_frames > 0


@pytest.mark.firmware
def test_a_firmware_reset_mid_round_is_a_reset_error() -> None:
    with _firmware("--reset-after-samples", "40") as fw, pytest.raises(DeviceResetError):
        _head_session(fw.port)


@pytest.mark.firmware
def test_firmware_that_goes_silent_times_out() -> None:
    with _firmware("--silent-after", "2") as fw, pytest.raises(DeviceTimeoutError):
        _head_session(fw.port)


@pytest.mark.firmware
@pytest.mark.serial
def test_a_mixed_federation_of_an_emulated_mcu_a_pi_agent_and_simulated_devices(
    mcu: Running, agent_port: str, write_scenario: Write, tmp_path: Path
) -> None:
    scenario = _mixed(agent_port)
    scenario["fleet"]["groups"].append(
        {"profile": "nano33-ble-sense", "count": 1, "attached": {"port": mcu.port}}
    )
    out = run(write_scenario(scenario, "mixed.yaml"), tmp_path / "mixed").out
    twin = tiny_scenario(algorithm=TINYOL, rounds=3)
    twin["fleet"]["groups"] = [
        {k: v for k, v in g.items() if k != "attached"} for g in scenario["fleet"]["groups"]
    ]
    simulated = run(write_scenario(twin, "twin.yaml"), tmp_path / "twin").out

    rounds = read_rounds(out)
    assert [r["participants"] for r in rounds] == [6, 6, 6]
    assert [r["failures"] for r in rounds] == [0, 0, 0]
    rows = _devices(out)
    for device in ("4", "5"):  # the Pi agent, the MCU: each timed its own training
        assert all(float(r["measured_s"]) > 0 for r in rows if r["device_id"] == device)
    for name, value in read_model(simulated).items():
        np.testing.assert_allclose(read_model(out)[name], value, rtol=RTOL, atol=ATOL)


@pytest.mark.firmware
def test_a_device_that_reboots_mid_run_misses_one_round(
    write_scenario: Write, tmp_path: Path
) -> None:
    from devices.fleet import load_fleet

    samples = load_fleet(write_scenario(_mixed(None), "twin.yaml"))[1][4].num_examples
    with _firmware("--reset-after-samples", str(samples + samples // 2)) as fw:  # in round 2
        scenario = _mixed(fw.port)
        out = run(write_scenario(scenario), tmp_path / "reboot").out
    statuses = [r["status"] for r in _devices(out) if r["device_id"] == "4"]
    assert statuses == ["ok", "failed", "ok"]
    errors = [r["error"] for r in _devices(out) if r["status"] == "failed"]
    assert "NO_MODEL" in errors[0]


@pytest.mark.firmware
def test_devices_emulate_serves_the_mcu_until_stopped() -> None:
    import re
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "devices", "emulate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"answers on socket://127\.0\.0\.1:(\d+)", line)
    assert match, line + (proc.stderr.read() if proc.stderr else "")
    with SerialBridge(f"socket://127.0.0.1:{match[1]}") as bridge:
        assert bridge.hello().board == "mps2-an386"
    proc.terminate()
    assert proc.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):  # QEMU went with it
        socket.create_connection(("127.0.0.1", int(match[1])), timeout=1).close()


@pytest.mark.firmware
def test_the_shipped_attached_scenario_runs_against_the_emulated_mcu(
    mcu: Running, write_scenario: Write, tmp_path: Path
) -> None:
    import yaml

    from tests.conftest import SCENARIOS

    scenario = yaml.safe_load((SCENARIOS / "attached-mcu.yaml").read_text())
    scenario["fleet"]["groups"][-1]["attached"]["port"] = mcu.port  # not the README's 5555
    scenario["rounds"] = 2
    out = run(write_scenario(scenario), tmp_path / "shipped").out
    assert [r["failures"] for r in read_rounds(out)] == [0, 0]
    assert {r["status"] for r in _devices(out) if r["device_id"] == "4"} == {"ok"}


def test_a_gateway_node_config_is_refused_in_cohort_mode(
    write_scenario: Write, tmp_path: Path
) -> None:
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.app import make_client_app
    from fedsim.core.cohort import CohortOrder
    from fedsim.core.records import CONFIG, RunBinding

    path = write_scenario(_mixed(None))
    app = make_client_app(RunBinding(str(path), str(tmp_path / "out")))
    context = Context(1, 1, {"partition-id": 0, "serial-port": "/dev/ttyACM0"}, RecordDict(), {})
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    try:
        message, _ = _train_message(path, tmp_path)
        order = CohortOrder(round=1, device_ids=[0, 1], first_position=0, block_size=2)
        message.content[CONFIG] = order.config()
        message.metadata.__dict__["_message_id"] = "cohort"
        with pytest.raises(ValueError, match=r"serial-port='/dev/ttyACM0' needs execution\.mode"):
            app(message, context)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
