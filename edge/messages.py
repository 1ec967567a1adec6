"""The serial-bridge message payloads (``edge/PROTOCOL.md``, "Messages"), both directions.

Framing lives in ``edge.protocol``; this module turns each message's payload into typed values
and back. The host (``edge.bridge``), the Raspberry Pi agent (``edge.agent``) and the tests
use it; the C firmware implements the same bytes. Only numpy and the standard library are needed,
so the agent runs on a Pi without torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.protocol import MAX_PAYLOAD, VERSION, FrameError

__all__ = [
    "CAP_ENERGY",
    "CAP_SENSORS",
    "CAP_TIME",
    "LOSS_CODES",
    "MIN_PAYLOAD",
    "NOT_MEASURED",
    "EvalReport",
    "HeadConfig",
    "Hello",
    "TrainReport",
    "decode_chunk",
    "decode_eval",
    "decode_hello",
    "decode_load",
    "decode_samples",
    "decode_train",
    "encode_chunk",
    "encode_eval",
    "encode_hello",
    "encode_load",
    "encode_samples",
    "encode_train",
    "load_chunks",
    "sample_bytes",
    "samples_per_frame",
]

F32 = NDArray[np.float32]

CAP_TIME, CAP_ENERGY, CAP_SENSORS = 1, 2, 4
MIN_PAYLOAD = 128  # the least max_payload a device may announce (fs_config.h's lower bound)
NOT_MEASURED = 0xFFFFFFFF
LOSS_CODES = {"softmax": 0, "mse": 1}

_HELLO = struct.Struct("<BBBBHHHHIIII")  # 28 bytes, then strings
_LOAD = struct.Struct("<HHBBHfI")  # 16 bytes, then float32 values
_TRAIN = struct.Struct("<HHfII")  # steps, reserved, loss_sum, train_us, energy_uj
_EVAL = struct.Struct("<HHf")  # count, correct, loss_sum
_OFFSET = struct.Struct("<I")
_COUNT = struct.Struct("<H")


def _f32(value: float) -> float:
    """``value`` as the float32 the wire carries: beyond float32's range it is ±inf (as a C
    device's float arithmetic gives) instead of ``struct``'s OverflowError."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise FrameError(what)


@dataclass(frozen=True)
class Hello:
    """A device's self-description, as its HELLO reply carries it."""

    board: str
    core: str
    firmware: str
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    max_floats: int
    max_features: int
    max_outputs: int
    max_payload: int = MAX_PAYLOAD
    learners: tuple[str, ...] = ("softmax", "mse")
    slots: int = 1
    caps: int = 0
    sensors: tuple[str, ...] = ()
    protocol: int = 1

    @property
    def measures_time(self) -> bool:
        return bool(self.caps & CAP_TIME)

    @property
    def measures_energy(self) -> bool:
        return bool(self.caps & CAP_ENERGY)

    def implausible(self) -> str | None:
        """Why these figures cannot describe a working device (a broken or hostile firmware),
        or None. Bounds (``PROTOCOL.md``, "HELLO"): max_payload within [128, 2048], the firmware's
        compile-time range (below it a LOAD chunk carries almost nothing, and under 20 bytes none
        at all); at least one slot, output and feature; a weight buffer of at least one 1×1 head
        (2 floats) that fits the RAM the device reports (4 bytes a float), which also refuses
        zero RAM and a max_floats near 2³²: the u32 sram field cannot exceed 4 GiB."""
        if self.protocol != VERSION:
            return f"protocol {self.protocol}, though its frames are version {VERSION}"
        if not MIN_PAYLOAD <= self.max_payload <= MAX_PAYLOAD:
            return f"max_payload {self.max_payload} outside [{MIN_PAYLOAD}, {MAX_PAYLOAD}]"
        if min(self.slots, self.max_outputs, self.max_features) < 1:
            return "a device needs at least one learner slot, output and feature"
        if self.max_floats < 2:
            return f"max_floats {self.max_floats}: the smallest head (1×1, a bias) needs 2"
        if self.sram_bytes < 4 * self.max_floats:
            return (
                f"a weight buffer of {self.max_floats} floats ({4 * self.max_floats} bytes) "
                f"does not fit its {self.sram_bytes} bytes of RAM"
            )
        return None

    def fits(self, config: HeadConfig) -> str | None:
        """Why this device cannot hold ``config``'s head, or None when it can."""
        if config.outputs < 1 or config.features < 1 or not np.isfinite(config.lr):
            return "a head needs outputs ≥ 1, features ≥ 1 and a finite learning rate"
        if config.loss not in self.learners:
            return f"it has no {config.loss} learner (it has {', '.join(self.learners)})"
        if config.features > self.max_features:
            return f"{config.features} features exceed its {self.max_features}"
        if config.outputs > self.max_outputs:
            return f"{config.outputs} outputs exceed its {self.max_outputs}"
        if config.floats > self.max_floats:
            return f"{config.floats} weights exceed its buffer of {self.max_floats} floats"
        if 2 + sample_bytes(config) > self.max_payload:
            return f"one sample of {sample_bytes(config)} bytes does not fit its {self.max_payload}"
        return None


def _str(text: str) -> bytes:
    raw = text.encode()[:255]
    return bytes([len(raw)]) + raw


def encode_hello(hello: Hello) -> bytes:
    learner_bits = sum(1 << i for i, name in enumerate(LOSS_CODES) if name in hello.learners)
    fixed = _HELLO.pack(
        hello.protocol,
        learner_bits,
        hello.slots,
        hello.caps,
        hello.max_payload,
        hello.max_features,
        hello.max_outputs,
        0,
        hello.max_floats,
        hello.clock_hz,
        hello.sram_bytes,
        hello.flash_bytes,
    )
    strings = b"".join(_str(s) for s in (hello.board, hello.core, hello.firmware))
    sensors = bytes([len(hello.sensors)]) + b"".join(_str(s) for s in hello.sensors)
    return fixed + strings + sensors


def decode_hello(payload: bytes) -> Hello:
    _check(len(payload) >= _HELLO.size, f"HELLO reply of {len(payload)} bytes is too short")
    fixed = _HELLO.unpack(payload[: _HELLO.size])
    protocol, learners, slots, caps, max_payload, max_features, max_outputs = fixed[:7]
    max_floats, clock, sram, flash = fixed[8:]
    at = _HELLO.size
    texts: list[str] = []

    def take() -> str:
        nonlocal at
        _check(at < len(payload), "HELLO reply ends inside its strings")
        n = payload[at]
        raw = payload[at + 1 : at + 1 + n]
        _check(len(raw) == n, "HELLO reply ends inside its strings")
        at += 1 + n
        return raw.decode(errors="replace")

    for _ in range(3):
        texts.append(take())
    _check(at < len(payload), "HELLO reply has no sensor count")
    count = payload[at]
    at += 1
    sensors = tuple(take() for _ in range(count))
    return Hello(
        board=texts[0],
        core=texts[1],
        firmware=texts[2],
        clock_hz=clock,
        sram_bytes=sram,
        flash_bytes=flash,
        max_floats=max_floats,
        max_features=max_features,
        max_outputs=max_outputs,
        max_payload=max_payload,
        learners=tuple(name for i, name in enumerate(LOSS_CODES) if learners & (1 << i)),
        slots=slots,
        caps=caps,
        sensors=sensors,
        protocol=protocol,
    )


@dataclass(frozen=True)
class HeadConfig:
    """The on-device learner: an ``outputs × features`` linear head trained by per-sample SGD."""

    outputs: int
    features: int
    lr: float
    loss: str = "softmax"

    @property
    def floats(self) -> int:
        return self.outputs * (self.features + 1)


def encode_load(config: HeadConfig, offset: int, values: F32) -> bytes:
    head = _LOAD.pack(
        config.outputs, config.features, LOSS_CODES[config.loss], 0, 0, _f32(config.lr), offset
    )
    return head + np.asarray(values, "<f4").tobytes()


def decode_load(payload: bytes) -> tuple[HeadConfig, int, F32]:
    _check(len(payload) >= _LOAD.size, "LOAD_WEIGHTS shorter than its 16-byte header")
    _check((len(payload) - _LOAD.size) % 4 == 0, "LOAD_WEIGHTS values are not whole floats")
    outputs, features, loss, _, _, lr, offset = _LOAD.unpack(payload[: _LOAD.size])
    names = {code: name for name, code in LOSS_CODES.items()}
    _check(loss in names, f"unknown loss code {loss}")
    values = np.frombuffer(payload[_LOAD.size :], "<f4").astype(np.float32)
    return HeadConfig(outputs, features, lr, names[loss]), offset, values


def load_chunks(config: HeadConfig, flat: F32, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """LOAD_WEIGHTS payloads covering ``flat`` (weights row-major, then biases), in order."""
    per = (max_payload - _LOAD.size) // 4
    return [
        encode_load(config, start, flat[start : start + per]) for start in range(0, len(flat), per)
    ]


def encode_chunk(offset: int, values: F32) -> bytes:
    """A GET_WEIGHTS reply: the offset, then the values."""
    return _OFFSET.pack(offset) + np.asarray(values, "<f4").tobytes()


def decode_chunk(payload: bytes) -> tuple[int, F32]:
    _check(len(payload) >= 4 and len(payload) % 4 == 0, "GET_WEIGHTS reply is malformed")
    (offset,) = _OFFSET.unpack(payload[:4])
    return offset, np.frombuffer(payload[4:], "<f4").astype(np.float32)


def sample_bytes(config: HeadConfig) -> int:
    target = 4 if config.loss == "softmax" else 4 * config.outputs
    return 4 * config.features + target


def samples_per_frame(config: HeadConfig, max_payload: int = MAX_PAYLOAD) -> int:
    return max(1, (max_payload - _COUNT.size) // sample_bytes(config))


def encode_samples(config: HeadConfig, x: F32, y: NDArray[np.generic]) -> bytes:
    """TRAIN / EVAL request: count, then each sample's features and target."""
    x = np.asarray(x, "<f4").reshape(len(x), config.features)
    if config.loss == "softmax":
        targets = np.asarray(y, "<u4").reshape(len(x), 1).view("<f4")
    else:
        targets = np.asarray(y, "<f4").reshape(len(x), config.outputs)
    rows = np.concatenate([x, targets], axis=1)
    return _COUNT.pack(len(x)) + rows.astype("<f4", copy=False).tobytes()


def decode_samples(config: HeadConfig, payload: bytes) -> tuple[F32, NDArray[np.generic]]:
    _check(len(payload) >= 2, "sample payload has no count")
    (count,) = _COUNT.unpack(payload[:2])
    width = sample_bytes(config)
    _check(
        len(payload) == 2 + count * width,
        f"{count} samples of {width} bytes need {2 + count * width} bytes, got {len(payload)}",
    )
    rows = np.frombuffer(payload[2:], "<f4").reshape(count, width // 4)
    x = rows[:, : config.features].astype(np.float32)
    if config.loss == "softmax":
        return x, rows[:, config.features :].copy().view("<u4").reshape(count).astype(np.int64)
    return x, rows[:, config.features :].astype(np.float32)


@dataclass(frozen=True)
class TrainReport:
    """What a TRAIN reply says: steps taken, summed loss, and the device's own measurements."""

    steps: int
    loss_sum: float
    train_us: int | None = None
    energy_uj: int | None = None

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.steps if self.steps else float("nan")


def encode_train(report: TrainReport) -> bytes:
    return _TRAIN.pack(
        report.steps,
        0,
        _f32(report.loss_sum),
        NOT_MEASURED if report.train_us is None else min(report.train_us, NOT_MEASURED - 1),
        NOT_MEASURED if report.energy_uj is None else min(report.energy_uj, NOT_MEASURED - 1),
    )


def decode_train(payload: bytes) -> TrainReport:
    _check(len(payload) == _TRAIN.size, f"TRAIN reply of {len(payload)} bytes, expected 16")
    steps, _, loss_sum, train_us, energy_uj = _TRAIN.unpack(payload)
    return TrainReport(
        steps,
        loss_sum,
        None if train_us == NOT_MEASURED else train_us,
        None if energy_uj == NOT_MEASURED else energy_uj,
    )


@dataclass(frozen=True)
class EvalReport:
    count: int
    correct: int
    loss_sum: float


def encode_eval(report: EvalReport) -> bytes:
    return _EVAL.pack(report.count, report.correct, _f32(report.loss_sum))


def decode_eval(payload: bytes) -> EvalReport:
    _check(len(payload) == _EVAL.size, f"EVAL reply of {len(payload)} bytes, expected 8")
    return EvalReport(*_EVAL.unpack(payload))
