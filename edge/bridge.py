"""The host side of the serial bridge: requests to a device, replies back, with retries.

``SerialBridge`` opens a port through pyserial (a device path such as ``/dev/ttyACM0``, or a URL:
``socket://host:port`` for an emulated MCU, ``loop://`` for a loopback) and speaks
``edge/PROTOCOL.md``: each request gets a fresh sequence number, a reply with another one (a
late duplicate) or a frame that does not decode (noise, a dropped byte) is dropped, and after the
request's timeout the *same* frame is sent again; the device answers a repeated sequence number
by replaying its last reply, so a retry never trains twice. Every failure raises a
``BridgeError`` subclass whose message names the port and what to do.
"""

from __future__ import annotations

import math
import os
import random
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge.messages import (
    EvalReport,
    HeadConfig,
    Hello,
    TrainReport,
    decode_chunk,
    decode_eval,
    decode_hello,
    decode_train,
    encode_samples,
    load_chunks,
    samples_per_frame,
)
from edge.protocol import (
    FLAG_MORE,
    HEADER,
    MAX_PAYLOAD,
    Frame,
    FrameError,
    MessageType,
    Status,
    StatusError,
    VersionError,
    decode_frame,
    encode_frame,
)

__all__ = [
    "BridgeError",
    "BridgeStats",
    "DeviceError",
    "DeviceResetError",
    "DeviceTimeoutError",
    "ImplausibleHelloError",
    "Link",
    "PortError",
    "SerialBridge",
    "VersionMismatchError",
    "open_link",
    "printable",
]

F32 = NDArray[np.float32]
T = TypeVar("T")
MAX_FRAME = MAX_PAYLOAD + HEADER.size + 2 + (MAX_PAYLOAD + 10) // 254 + 2  # COBS + delimiter


class BridgeError(RuntimeError):
    """A serial-bridge failure; ``port`` says which device."""

    def __init__(self, port: str, message: str) -> None:
        super().__init__(f"{port}: {message}")
        self.port = port


class PortError(BridgeError):
    """The port cannot be opened."""


class DeviceTimeoutError(BridgeError):
    """No valid reply within the timeout, after every retry."""


class VersionMismatchError(BridgeError):
    """The device speaks another protocol version."""


class DeviceError(BridgeError):
    """The device answered with an error status (an int: one this host does not know)."""

    def __init__(self, port: str, status: Status | int, reason: str, request: MessageType) -> None:
        name = status.name if isinstance(status, Status) else f"unknown status {status}"
        super().__init__(port, f"{request.name} refused with {name}: {reason}")
        self.status = status
        self.reason = reason


class DeviceResetError(DeviceError):
    """The device lost its head in the middle of a round: it rebooted."""


class ImplausibleHelloError(BridgeError):
    """The device's HELLO has figures no working device has (``Hello.implausible``)."""


def printable(text: str) -> str:
    """``text`` with every control, format or unassigned character (terminal escapes, bidi
    overrides, newlines) replaced by '?': what a device says must not drive the terminal, nor
    break a one-line error. Rich markup is the printer's to escape."""
    return "".join("?" if unicodedata.category(c)[0] == "C" else c for c in text)


class Link(Protocol):
    """The part of ``serial.Serial`` the bridge uses (tests pass in-process fakes)."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def open_link(port: str, baudrate: int = 115200) -> Link:
    """A pyserial port for a device path or URL; ``PortError`` with the fix when it cannot open."""
    import serial  # pyserial; imported here so the codec modules stay dependency-free

    try:
        link: Link = serial.serial_for_url(port, baudrate=baudrate, timeout=0.02, write_timeout=10)
    except (serial.SerialException, ValueError, OSError) as exc:
        errno = getattr(exc, "errno", None)
        reason = os.strerror(errno) if isinstance(errno, int) else str(exc)
        raise PortError(
            port,
            f"cannot open ({reason}): `fedsim devices scan` lists the ports; is it plugged in? "
            "(Linux: /dev/tty* needs the dialout group)",
        ) from None
    return link


@dataclass
class BridgeStats:
    """Traffic on one bridge: what framing and retries cost (``benchmarks/serial.py``)."""

    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    bad_frames: int = 0  # did not decode: noise, CRC, truncation
    stale_frames: int = 0  # a reply to another sequence (a late duplicate)

    @property
    def efficiency(self) -> float:
        """Payload bytes over bytes on the wire, both directions."""
        wire = self.bytes_sent + self.bytes_received
        return (self.payload_sent + self.payload_received) / wire if wire else math.nan


@dataclass
class SerialBridge:
    """One device behind a port. ``timeout`` is the base wait per request (a TRAIN waits longer:
    ``per_sample_s`` per sample, plus the line time at ``baudrate``); ``retries`` extra attempts."""

    port: str
    baudrate: int = 115200
    timeout: float = 1.0
    retries: int = 3
    per_sample_s: float = 0.005
    link: Link | None = None
    stats: BridgeStats = field(default_factory=BridgeStats)
    hello_info: Hello | None = None
    _sequence: int = field(default_factory=lambda: random.SystemRandom().randrange(1 << 16))
    _pending: bytearray = field(default_factory=bytearray)
    _flush_device: bool = True

    def __enter__(self) -> SerialBridge:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.link is None:
            self.link = open_link(self.port, self.baudrate)
        self._io(self.link.reset_input_buffer)
        self._pending.clear()
        self._flush_device = True  # the device may hold half a frame from an earlier session

    def _io(self, operation: Callable[..., T], *args: object) -> T:
        """A pyserial call; its failures (unplugged, a stuck USB endpoint) as ``PortError``."""
        try:
            return operation(*args)
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            reason = f"the port failed ({exc}); is the device still attached?"
            raise PortError(self.port, reason) from None

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    # -- one request, one reply ----------------------------------------------------------------
    def request(
        self, kind: MessageType, payload: bytes = b"", flags: int = 0, wait: float | None = None
    ) -> Frame:
        """Send ``kind`` and return the device's reply (OK status), retrying on silence."""
        if self.link is None:
            self.open()
        assert self.link is not None
        self._sequence = (self._sequence + 1) & 0xFFFF
        try:
            wire = encode_frame(Frame(kind, self._sequence, payload, flags=flags))
        except FrameError as exc:
            raise BridgeError(self.port, f"cannot send {kind.name}: {exc}") from None
        wait = self.timeout if wait is None else wait
        # both frames' time on the line (8N1: 10 bits a byte); the reply at most a full payload
        wait += 10 * (len(wire) + MAX_FRAME) / self.baudrate
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            # a lone 0x00 first ends any half frame the device holds (a lost delimiter), so the
            # retry is not glued onto it; and what arrived half of is dropped here too
            send = b"\x00" + wire if attempt or self._flush_device else wire
            self._flush_device = False
            if attempt:
                self._pending.clear()
            self._io(self.link.write, send)
            self.stats.bytes_sent += len(send)
            self.stats.payload_sent += len(payload)
            reply = self._await(kind, self._sequence, time.monotonic() + wait)
            if reply is not None:
                return self._checked(kind, reply)
        raise DeviceTimeoutError(
            self.port,
            f"no reply to {kind.name} after {self.retries + 1} attempts of {wait:.2f} s. Is the "
            "firmware running and the baud rate right? A device that stays silent is counted as "
            "dropped for the round",
        )

    def _await(self, kind: MessageType, sequence: int, deadline: float) -> Frame | None:
        link = self.link
        assert link is not None
        while time.monotonic() < deadline:
            end = self._pending.find(0)
            if end < 0:
                chunk = self._io(link.read, max(1, self._io(lambda: link.in_waiting)))
                self.stats.bytes_received += len(chunk)
                self._pending += chunk
                continue
            raw = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if not raw:
                continue
            try:
                frame = decode_frame(raw)
            except VersionError as exc:
                raise VersionMismatchError(self.port, str(exc)) from None
            except StatusError as exc:  # intact, but a status this host does not know
                if exc.sequence != sequence:
                    self.stats.stale_frames += 1
                    continue
                raise DeviceError(self.port, exc.status, _reason(exc.payload), kind) from None
            except FrameError:
                self.stats.bad_frames += 1
                continue
            if frame.sequence != sequence:
                self.stats.stale_frames += 1
                continue
            self.stats.payload_received += len(frame.payload)
            return frame
        return None

    def _checked(self, kind: MessageType, reply: Frame) -> Frame:
        if reply.status == Status.OK and reply.type == kind:
            return reply
        reason = _reason(reply.payload)
        if reply.status == Status.NO_MODEL and kind in (MessageType.TRAIN, MessageType.GET_WEIGHTS):
            raise DeviceResetError(self.port, reply.status, reason, kind)
        if reply.status == Status.OK:  # OK, but to another request type
            raise DeviceError(self.port, Status.INTERNAL, f"reply of type {reply.type}", kind)
        raise DeviceError(self.port, reply.status, reason, kind)

    def _diverged(self, kind: MessageType, what: str) -> DeviceError:
        """A non-finite number in a reply that the device sent as OK (a firmware from before
        NOT_FINITE): the same failure as the device's own NOT_FINITE."""
        return DeviceError(self.port, Status.NOT_FINITE, f"the device reports {what}", kind)

    def _decode(
        self,
        kind: MessageType,
        decode: Callable[[bytes], T],
        payload: bytes = b"",
        wait: float | None = None,
    ) -> T:
        """The reply to ``kind`` decoded; a payload that does not parse is the device's error."""
        reply = self.request(kind, payload, wait=wait)
        try:
            return decode(reply.payload)
        except FrameError as exc:
            raise DeviceError(self.port, Status.INTERNAL, f"malformed reply: {exc}", kind) from None

    # -- the messages ----------------------------------------------------------------------------
    def hello(self) -> Hello:
        """The device's self-description (and the start of a session: it clears its replay
        memory)."""
        hello = self._decode(MessageType.HELLO, decode_hello)
        why = hello.implausible()
        if why is not None:
            raise ImplausibleHelloError(
                self.port,
                f"its HELLO is implausible: {why}. Is it running fedsim firmware, and the "
                "build intact? (PROTOCOL.md, HELLO)",
            )
        self.hello_info = replace(
            hello,
            board=printable(hello.board),
            core=printable(hello.core),
            firmware=printable(hello.firmware),
            sensors=tuple(printable(s) for s in hello.sensors),
        )
        return self.hello_info

    def _max_payload(self) -> int:
        return min(self.hello_info.max_payload, MAX_PAYLOAD) if self.hello_info else MAX_PAYLOAD

    def load_head(self, config: HeadConfig, weight: F32, bias: F32) -> None:
        """Send an ``outputs × features`` head (LOAD_WEIGHTS chunks)."""
        flat = np.concatenate([np.asarray(weight, np.float32).ravel(), np.asarray(bias)])
        if len(flat) != config.floats:
            raise ValueError(f"head has {len(flat)} floats, the config needs {config.floats}")
        chunks = load_chunks(config, flat.astype(np.float32), self._max_payload())
        for i, chunk in enumerate(chunks):
            more = FLAG_MORE if i + 1 < len(chunks) else 0
            self.request(MessageType.LOAD_WEIGHTS, chunk, flags=more)

    def _batches(self, config: HeadConfig, x: F32, y: NDArray[np.generic]) -> list[bytes]:
        per = samples_per_frame(config, self._max_payload())
        return [
            encode_samples(config, x[i : i + per], y[i : i + per]) for i in range(0, len(x), per)
        ]

    def train(self, config: HeadConfig, x: F32, y: NDArray[np.generic]) -> TrainReport:
        """One SGD step per sample, in order, on the device; the reports of all frames summed."""
        steps, loss, micros, energy = 0, 0.0, 0, 0
        timed = metered = True
        per = samples_per_frame(config, self._max_payload())
        for payload in self._batches(config, x, y):
            wait = self.timeout + per * self.per_sample_s
            report = self._decode(MessageType.TRAIN, decode_train, payload, wait=wait)
            if not math.isfinite(report.loss_sum):
                raise self._diverged(MessageType.TRAIN, f"a loss sum of {report.loss_sum}")
            steps += report.steps
            loss += report.loss_sum
            timed &= report.train_us is not None
            metered &= report.energy_uj is not None
            micros += report.train_us or 0
            energy += report.energy_uj or 0
        return TrainReport(steps, loss, micros if timed else None, energy if metered else None)

    def get_head(self, config: HeadConfig) -> tuple[F32, F32]:
        """Read the head back (GET_WEIGHTS chunks)."""
        flat = np.empty(config.floats, np.float32)
        offset = 0
        while offset < config.floats:
            request = offset.to_bytes(4, "little")
            at, values = self._decode(MessageType.GET_WEIGHTS, decode_chunk, request)
            if at != offset or not len(values) or offset + len(values) > config.floats:
                reason = f"asked for floats from {offset}, got {len(values)} from {at}"
                raise DeviceError(self.port, Status.INTERNAL, reason, MessageType.GET_WEIGHTS)
            flat[offset : offset + len(values)] = values
            offset += len(values)
        if not np.isfinite(flat).all():
            raise self._diverged(MessageType.GET_WEIGHTS, "non-finite weights")
        cut = config.outputs * config.features
        return flat[:cut].reshape(config.outputs, config.features), flat[cut:]

    def evaluate(self, config: HeadConfig, x: F32, y: NDArray[np.generic]) -> EvalReport:
        count, correct, loss = 0, 0, 0.0
        for payload in self._batches(config, x, y):
            report = self._decode(MessageType.EVAL, decode_eval, payload)
            if not math.isfinite(report.loss_sum):
                raise self._diverged(MessageType.EVAL, f"a loss sum of {report.loss_sum}")
            count, correct, loss = (
                count + report.count,
                correct + report.correct,
                loss + report.loss_sum,
            )
        return EvalReport(count, correct, loss)

    def reset(self) -> None:
        self.request(MessageType.RESET)


def _reason(payload: bytes) -> str:
    """An ERROR reply's reason, safe to print."""
    return printable(payload.decode(errors="replace")) or "no reason given"
