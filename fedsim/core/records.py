"""What crosses the Flower boundary (record keys) and what a run records (rounds, devices).

Keys that travel in Flower records are kebab-case and defined here once; nothing else in the
project spells them as string literals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from fedsim.core.errors import FedsimError

__all__ = [
    "ARRAYS",
    "CONFIG",
    "DEVICE_ID",
    "METRICS",
    "NUM_EXAMPLES",
    "SERVER_ROUND",
    "TRAIN_LOSS",
    "DeviceRecord",
    "DeviceStatus",
    "RoundRecord",
    "RunBinding",
]

# RecordDict entries
ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
# ConfigRecord / MetricRecord keys
SERVER_ROUND = "server-round"
DEVICE_ID = "device-id"
NUM_EXAMPLES = "num-examples"  # the key Flower's own strategies expect, too
TRAIN_LOSS = "train-loss"
MEASURED_S = "measured-s"  # what an attached device measured itself (NaN: not measured)
MEASURED_MJ = "measured-mj"
# cohort mode: the work order (ConfigRecord) and the per-device lists of the reply (MetricRecord)
DEVICE_IDS = "device-ids"
FIRST_POSITION = "first-position"
BLOCK_SIZE = "block-size"
STATUS = "status"
ERRORS = "errors"
HEAD_ONLY = "head-only"  # devices (cohort) or this device (per-device) train only the head
LOCAL_ROUND = "local-round"  # behind a gateway: which of its local rounds (1..local_rounds)
GATEWAYS = "gateways"  # cohort mode: the gateways a worker plays, their device counts, devices
GATEWAY_SIZES = "gateway-sizes"
GATEWAY_DEVICES = "gateway-devices"
# run_config / node_config keys
RUN_SCENARIO = "scenario"
RUN_OUT = "out"
RUN_COMMAND = "command"
RUN_RESUME = "resume"  # continue the run in `out` from its last checkpoint
NODE_PARTITION = "partition-id"  # set by Flower's simulation engine for each virtual node
# a gateway SuperNode proxying a device on a serial bridge:
#   flower-supernode --node-config "partition-id=3 serial-port='/dev/ttyACM0'"
NODE_SERIAL_PORT = "serial-port"
# a gateway SuperNode (cohort mode with a topology): it plays the named gateway of the scenario,
# its devices' work is sent to it (and its attached devices are on its serial ports)
#   flower-supernode --node-config "partition-id=0 gateway='floor-1'"
NODE_GATEWAY = "gateway"

# ok/failed/no-reply: the device trained (or tried); the others were never sent work: their
# update could not have counted (design §5; devices/clock.py). gateway-down: its gateway was
# offline when the round started; gateway-lost: it trained, but its gateway's partial missed the
# deadline (devices/topology.py).
DeviceStatus = Literal[
    "ok",
    "failed",
    "no-reply",
    "memory-skip",
    "straggler",
    "dropout",
    "gateway-down",
    "gateway-lost",
]


@dataclass(frozen=True)
class RunBinding:
    """The scalars that tie a Flower app to one fedsim run.

    Under ``run_simulation`` (empty ``run_config``) the runner binds them into the app objects;
    under ``flwr run`` they come from the run config (``[tool.flwr.app.config]``).
    """

    scenario: str
    out: str
    command: str = "flwr run"
    resume: bool = False  # continue the run in ``out`` from its last checkpoint

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunBinding:
        missing = [k for k in (RUN_SCENARIO, RUN_OUT) if k not in run_config]
        if missing:
            raise FedsimError(
                "run config",
                f"missing {', '.join(missing)}",
                "set [tool.flwr.app.config] scenario and out, or --run-config 'scenario=\"...\"'",
            )
        command = str(run_config.get(RUN_COMMAND, "flwr run"))
        resume = bool(run_config.get(RUN_RESUME, False))
        return cls(str(run_config[RUN_SCENARIO]), str(run_config[RUN_OUT]), command, resume)


@dataclass(frozen=True)
class DeviceRecord:
    """One device in one round: a row of ``devices.csv``. Deterministic for a given scenario."""

    round: int
    device_id: int
    profile: str
    status: DeviceStatus
    num_examples: int
    train_loss: float | None
    bytes_down: int
    bytes_up: int
    error: str = ""
    scope: str = ""  # full | head (what it trained) | skip
    busy_s: float = 0.0  # simulated seconds downloading, computing and uploading
    energy_mj: float = 0.0
    # an attached device's own measurements of its training (beside the estimates above);
    # empty for simulated devices and for devices that do not measure
    measured_s: float | None = None
    measured_mj: float | None = None

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoundRecord:
    """One round: a line of ``rounds.jsonl``. No wall-clock values, so reruns are identical."""

    round: int
    selected: int
    participants: int
    failures: int
    accuracy: float | None
    loss: float | None
    train_loss: float | None
    bytes_down: int
    bytes_up: int
    # the simulated clock (devices/clock.py): none of these depend on wall time
    round_s: float = 0.0
    sim_time_s: float = 0.0  # at the end of this round, since the run started
    energy_mj: float = 0.0  # all selected devices, this round
    offline: int = 0  # fleet devices offline when the round started
    memory_skips: int = 0
    head_only: int = 0
    stragglers: int = 0
    dropouts: int = 0
    # class-incremental runs: accuracy on the classes first seen (what the server retains); the
    # accuracy above is then over every class reconnoitred so far
    base_accuracy: float | None = None
    # evaluation.adapt: held-out devices' score after adapting θ (accuracy, or MSE for regression)
    adapted: float | None = None
    adapted_ci95: float | None = None  # half-width of its 95% confidence interval
    # topology (devices/topology.py), all zero or none in a star: gateways offline at the start,
    # partials lost (the gateway's uplink missed the deadline), partials late but in time, devices
    # cut off with their gateway, the gateways' energy, and bytes and time per tier
    gateways_down: int = 0
    gateways_lost: int = 0
    gateways_late: int = 0
    gateway_cut: int = 0
    gateway_energy_mj: float = 0.0
    tiers: list[dict[str, Any]] | None = None
    # an asynchronous run (scenario.asynchrony): each applied update's staleness τ, in arrival
    # order; absent from the rounds of a synchronous run
    staleness: list[int] | None = None
    # ... and the devices still training at this update: how many, the bytes they have downloaded
    # and the energy they have drawn so far (their rows in devices.csv come when they finish)
    in_flight: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("staleness", "in_flight"):  # asynchronous runs only
            if record[key] is None:
                del record[key]
        return record
