"""The Raspberry Pi agent: a device that speaks the serial-bridge protocol, learning with numpy.

It is the Python twin of the C firmware (``edge/firmware``): same frames, same messages, same
learner (``edge.online_head.OnlineHead``, one SGD step per sample), same idempotent replay. The
``edge`` package imports only numpy and pyserial and is its own distribution, so a Pi installs it
without torch or Flower:

    pip install ./edge                              # from a checkout: fedsim-edge, numpy, pyserial
    fedsim-agent --port /dev/serial0                # or /dev/ttyGS0 (USB gadget), socket://…

``Device`` is the transport-free state machine (bytes in, bytes out); ``serve`` runs it on a port.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.messages import (
    CAP_TIME,
    EvalReport,
    HeadConfig,
    Hello,
    TrainReport,
    decode_load,
    decode_samples,
    encode_chunk,
    encode_eval,
    encode_hello,
    encode_train,
)
from edge.online_head import OnlineHead
from edge.protocol import (
    FLAG_MORE,
    HEADER,
    MAX_PAYLOAD,
    MAX_RAW,
    MAX_REASON,
    VERSION,
    Frame,
    FrameError,
    MessageType,
    Status,
    cobs_decode,
    crc16,
    decode_frame,
    encode_frame,
)

__all__ = ["AGENT_VERSION", "Device", "main", "pi_hello", "serve"]

AGENT_VERSION = "fedsim-agent 0.1.0"
MAX_FRAME = MAX_PAYLOAD + HEADER.size + 2 + (MAX_PAYLOAD + 10) // 254 + 2  # COBS-encoded bound


class _RefusalError(Exception):
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def pi_hello() -> Hello:
    """This machine's self-description (a Raspberry Pi, or whatever runs the agent)."""
    model = "raspberrypi"
    try:
        with open("/proc/device-tree/model", encoding="utf-8", errors="replace") as f:
            model = f.read().strip("\x00\n ") or model
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    ram = pages * os.sysconf("SC_PAGE_SIZE") if pages else 0
    return Hello(
        board=model[:60],
        core=platform.machine() or "unknown",
        firmware=AGENT_VERSION,
        clock_hz=0,
        sram_bytes=min(ram, 0xFFFFFFFF),
        flash_bytes=0,
        max_floats=1 << 20,
        max_features=(MAX_PAYLOAD - 6) // 4,  # one mse sample with one output fits a frame
        max_outputs=1024,
        caps=CAP_TIME,
    )


@dataclass
class Device:
    """The protocol state machine: ``feed`` bytes from the host, get the bytes to send back."""

    hello: Hello = field(default_factory=pi_hello)
    clock_ns: Callable[[], int] = time.perf_counter_ns
    head: OnlineHead | None = None
    config: HeadConfig | None = None
    _loading: tuple[HeadConfig, np.ndarray, int] | None = None  # config, buffer, next offset
    _last: tuple[int, int, bytes] | None = None  # sequence, type, reply wire
    _buffer: bytearray = field(default_factory=bytearray)
    _overflow: bool = False
    replays: int = 0
    dropped: int = 0

    def feed(self, data: bytes) -> bytes:
        """Consume bytes from the line; return the replies to every frame they completed."""
        out = bytearray()
        start = 0  # frames may straddle reads: the unfinished one waits in ``_buffer``
        while True:
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buffer += piece
                if len(self._buffer) > MAX_FRAME:
                    self._buffer.clear()
                    self._overflow = True  # drop everything up to the next delimiter
            if end < 0:
                return bytes(out)
            if self._buffer and not self._overflow:
                out += self.handle(bytes(self._buffer))
            elif self._overflow:
                self.dropped += 1
            self._buffer.clear()
            self._overflow = False
            start = end + 1

    def handle(self, raw: bytes) -> bytes:
        """One COBS frame (no delimiter) → the reply's bytes on the wire (empty: dropped)."""
        try:
            request = decode_frame(raw, strict_status=False)  # a request's status is ignored
        except FrameError:
            return self._refusal(raw)
        if request.type == MessageType.HELLO:
            self._last = None
        elif self._last is not None and self._last[:2] == (request.sequence, request.type):
            self.replays += 1
            return self._last[2]
        try:
            payload, flags = self._dispatch(request)
        except _RefusalError as refusal:
            reply = _error(request.sequence, refusal.status, str(refusal))
        except FrameError as exc:
            reply = _error(request.sequence, Status.BAD_REQUEST, str(exc))
        except Exception as exc:  # a bug must cost one request, not the agent
            traceback.print_exc(file=sys.stderr)
            reason = f"agent bug ({type(exc).__name__}); see its log"
            reply = _error(request.sequence, Status.INTERNAL, reason)
        else:
            reply = Frame(request.type, request.sequence, payload, flags=flags)
        wire = encode_frame(reply)
        self._last = (request.sequence, request.type, wire)
        return wire

    def _refusal(self, raw: bytes) -> bytes:
        """A frame ``decode_frame`` refused, treated as the firmware treats it (``fs_device.c``,
        ``on_frame``): one longer than the largest frame, or whose COBS, size or CRC do not
        check, is dropped (the host's retry recovers it); an intact one of another protocol
        version is answered ERROR/BAD_REQUEST whatever its length field says, so the host can
        tell the user; one whose length field lies is dropped; an intact one of an unknown type
        is answered ERROR/BAD_REQUEST."""
        self.dropped += 1
        try:
            body = cobs_decode(raw)
        except FrameError:
            return b""
        if not HEADER.size + 2 <= len(body) <= MAX_RAW:
            return b""
        if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
            return b""
        version, kind, sequence, length, _, _ = HEADER.unpack(body[: HEADER.size])
        if version != VERSION:  # answered, but its reply is not remembered for replay
            reason = f"protocol version {version} not supported; this device speaks {VERSION}"
            return encode_frame(_error(sequence, Status.BAD_REQUEST, reason))
        if length != len(body) - HEADER.size - 2 or kind in MessageType.__members__.values():
            return b""
        wire = encode_frame(_error(sequence, Status.BAD_REQUEST, f"unknown message type {kind}"))
        self._last = (sequence, kind, wire)  # as any request's reply (the firmware does too)
        return wire

    def _dispatch(self, request: Frame) -> tuple[bytes, int]:
        kind, payload = request.type, request.payload
        if kind in (MessageType.HELLO, MessageType.RESET) and payload:
            raise _RefusalError(Status.BAD_REQUEST, f"{kind.name} takes no payload")
        if kind == MessageType.GET_WEIGHTS:
            return self._get(payload)
        if kind == MessageType.LOAD_WEIGHTS:
            return self._load(payload, bool(request.flags & FLAG_MORE)), 0
        handler: Callable[[bytes], bytes] | None = {
            MessageType.HELLO: lambda _: encode_hello(self.hello),
            MessageType.TRAIN: self._train,
            MessageType.EVAL: self._eval,
            MessageType.RESET: self._reset,
        }.get(kind)
        if handler is None:
            raise _RefusalError(Status.BAD_REQUEST, f"message type {kind} is not a request")
        return handler(payload), 0

    def _reset(self, payload: bytes) -> bytes:
        self.head = self.config = self._loading = None
        return b""

    def _load(self, payload: bytes, more: bool) -> bytes:
        """A chunk is checked whole before anything changes: a refused one leaves the loaded head
        (and a load in progress) as they were."""
        config, offset, values = decode_load(payload)
        why = self.hello.fits(config)
        if why is not None:  # a malformed head is a bad request; one too big for it, too large
            malformed = config.outputs < 1 or config.features < 1 or not np.isfinite(config.lr)
            raise _RefusalError(Status.BAD_REQUEST if malformed else Status.TOO_LARGE, why)
        if offset == 0:
            loading = (config, np.zeros(config.floats, np.float32), 0)
        elif self._loading is not None and self._loading[0] == config:
            loading = self._loading
        else:
            raise _RefusalError(Status.BAD_REQUEST, f"chunk at offset {offset} starts no head")
        buffer, end = loading[1], offset + len(values)
        if offset != loading[2]:
            raise _RefusalError(Status.BAD_REQUEST, f"chunk at offset {offset} is out of order")
        if end > config.floats:
            raise _RefusalError(Status.BAD_REQUEST, f"values run past the head's {config.floats}")
        if not more and end < config.floats:
            reason = f"last chunk ends at {end} of {config.floats} floats"
            raise _RefusalError(Status.BAD_REQUEST, reason)
        if not np.isfinite(values).all():
            at = offset + int(np.argmin(np.isfinite(values)))
            raise _RefusalError(Status.NOT_FINITE, f"weight {at} is not a finite number")
        buffer[offset:end] = values
        self._loading = (config, buffer, end)
        if offset == 0:
            self.head = self.config = None  # a new head is on its way
        if end == config.floats:
            cut = config.outputs * config.features
            weight = buffer[:cut].reshape(config.outputs, config.features).copy()
            loss: Literal["softmax", "mse"] = "mse" if config.loss == "mse" else "softmax"
            self.head = OnlineHead(weight, buffer[cut:].copy(), config.lr, loss)
            self.config, self._loading = config, None
        return b""

    def _loaded(self) -> tuple[OnlineHead, HeadConfig]:
        if self.head is None or self.config is None:
            raise _RefusalError(Status.NO_MODEL, "no head loaded (send LOAD_WEIGHTS first)")
        return self.head, self.config

    def _samples(self, payload: bytes) -> tuple[np.ndarray, np.ndarray]:
        _, config = self._loaded()
        if payload == b"\x00\x00":
            raise _RefusalError(Status.BAD_REQUEST, "this device has no sensor data: send samples")
        x, y = decode_samples(config, payload)
        if config.loss == "softmax" and len(y) and int(y.max()) >= config.outputs:
            raise _RefusalError(
                Status.BAD_REQUEST, f"label {int(y.max())} ≥ {config.outputs} outputs"
            )
        finite = np.isfinite(x).all(axis=1)
        if config.loss == "mse":
            finite &= np.isfinite(y).all(axis=1)
        if not finite.all():  # refused before any step: the head stays as it was
            reason = f"sample {int(finite.argmin())} has a number that is not finite"
            raise _RefusalError(Status.NOT_FINITE, reason)
        return x, y

    def _train(self, payload: bytes) -> bytes:
        """The steps, then a check: a loss sum beyond float32 or a weight that is inf or NaN is
        answered NOT_FINITE and the head is forgotten (NO_MODEL until the next load), as the
        firmware does; the host counts the device's update as failed."""
        x, y = self._samples(payload)
        head, _ = self._loaded()
        start = self.clock_ns()
        with np.errstate(all="ignore"):  # overflow becomes inf or NaN, checked below
            loss = np.float32(sum(head.step(x[i], y[i]) for i in range(len(x))))
        micros = (self.clock_ns() - start) // 1000
        if not (
            np.isfinite(loss) and np.isfinite(head.weight).all() and np.isfinite(head.bias).all()
        ):
            self.head = self.config = None
            raise _RefusalError(Status.NOT_FINITE, _DIVERGED)
        return encode_train(TrainReport(len(x), float(loss), micros, None))

    def _eval(self, payload: bytes) -> bytes:
        x, y = self._samples(payload)
        head, config = self._loaded()
        correct, loss = 0, 0.0
        with np.errstate(all="ignore"):
            for i in range(len(x)):
                p = head.predict(x[i])
                if config.loss == "softmax":
                    correct += int(np.argmax(p) == y[i])
                    label_p = float(p[int(y[i])])  # NaN is floored too, as in the firmware
                    loss -= float(np.log(label_p if label_p > 1e-12 else 1e-12))
                else:
                    d = p - y[i]
                    loss += 0.5 * float(d @ d)
            loss32 = np.float32(loss)
        if not np.isfinite(loss32):
            raise _RefusalError(
                Status.NOT_FINITE, "EVAL loss sum is not finite (inputs too large?)"
            )
        return encode_eval(EvalReport(len(x), correct, float(loss32)))

    def _get(self, payload: bytes) -> tuple[bytes, int]:
        head, config = self._loaded()
        if len(payload) != 4:
            raise _RefusalError(Status.BAD_REQUEST, "GET_WEIGHTS takes a u32 offset")
        offset = int.from_bytes(payload, "little")
        if offset >= config.floats:
            raise _RefusalError(Status.BAD_REQUEST, f"offset {offset} ≥ {config.floats} floats")
        flat = np.concatenate([head.weight.ravel(), head.bias]).astype(np.float32)
        per = (min(self.hello.max_payload, MAX_PAYLOAD) - 4) // 4
        values = flat[offset : offset + per]
        more = FLAG_MORE if offset + len(values) < config.floats else 0
        return encode_chunk(offset, values), more


_DIVERGED = "training diverged (a loss or weight is not finite): head forgotten, load it again"


def _error(sequence: int, status: Status, reason: str) -> Frame:
    return Frame(MessageType.ERROR, sequence, reason.encode()[:MAX_REASON], status)


def serve(link, device: Device, stop: threading.Event | None = None) -> None:  # type: ignore[no-untyped-def]
    """Answer requests on ``link`` (a pyserial port) until ``stop`` is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        data = link.read(max(1, link.in_waiting))
        if data:
            reply = device.feed(data)
            if reply:
                link.write(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedsim-agent",
        description="Serve the fedsim serial-bridge protocol on a port (a Raspberry Pi device).",
    )
    parser.add_argument("--port", required=True, help="/dev/serial0, /dev/ttyGS0, socket://…")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--board", help="board name to report (default: the device tree's)")
    args = parser.parse_args(argv)
    import serial

    try:
        link = serial.serial_for_url(args.port, baudrate=args.baud, timeout=0.05)
    except (serial.SerialException, ValueError, OSError) as exc:
        print(f"fedsim-agent: cannot open {args.port}: {exc}", file=sys.stderr)
        return 2
    hello = pi_hello()
    if args.board:
        from dataclasses import replace

        hello = replace(hello, board=args.board)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"fedsim-agent: serving {hello.board} on {args.port}", flush=True)
    try:
        serve(link, Device(hello), stop)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
