"""The C firmware (edge/firmware): its codec against the golden vectors and the Python codec,
its fuzz harness under ASan/UBSan, the host port behind a pty and the QEMU mps2-an386 board over
TCP, both driven with edge/protocol.py and their weights held against a numpy float32 replica
(edge.online_head.OnlineHead). Builds once per session with `make -C edge/firmware`."""

from __future__ import annotations

import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edge.emulator import make_firmware
from edge.online_head import OnlineHead
from edge.protocol import (
    CrcError,
    Frame,
    FrameError,
    MessageType,
    Status,
    VersionError,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
)

pytestmark = pytest.mark.firmware

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "edge" / "firmware"
BUILD = FIRMWARE / "build"
VECTORS = ROOT / "edge" / "protocol_vectors.json"
QEMU_ELF = BUILD / "qemu" / "fedsim-mps2-an386.elf"
MAX_PAYLOAD = 2048
QEMU = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none"]
# Device weights vs the numpy replica after 100 SGD steps: the sums differ in order (BLAS) and
# expf differs from numpy's exp by an ulp, so equality is to a tolerance.
RTOL, ATOL = 1e-5, 1e-6
LOSS_RTOL = 1e-4  # loss_sum is accumulated in float32 on the device, in float64 here


def _need(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (see edge/firmware/README.md)")


def _make(*targets: str) -> str:
    done = make_firmware(*targets, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def host_build() -> Path:
    """The host port (strict warnings as errors, plain and ASan/UBSan) and the tools."""
    _need("make", "cc")
    _make("host", "host-asan", "tools")
    return BUILD


@pytest.fixture(scope="session")
def qemu_build() -> Path:
    _need("make", "arm-none-eabi-gcc", "qemu-system-arm")
    _make("qemu")
    return BUILD / "qemu"


# ---- a frame link over a pty or a socket -------------------------------------------------------


class Link:
    """Requests out, replies in: frames over any byte stream (pty file descriptor, socket)."""

    def __init__(self, write: Callable[[bytes], None], read: Callable[[float], bytes]) -> None:
        self._write, self._read, self._buffer = write, read, b""

    def send(self, kind: int, sequence: int, payload: bytes = b"", flags: int = 0) -> None:
        self._write(encode_frame(Frame(MessageType(kind), sequence, payload, flags=flags)))

    def send_raw(self, wire: bytes) -> None:
        self._write(wire)

    def receive(self, timeout: float = 5.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        while b"\x00" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._buffer += self._read(left)
        wire, _, self._buffer = self._buffer.partition(b"\x00")
        return decode_frame(wire)

    def ask(self, kind: int, sequence: int, payload: bytes = b"", flags: int = 0) -> Frame:
        self.send(kind, sequence, payload, flags)
        reply = self.receive()
        assert reply is not None, f"no reply to {MessageType(kind).name} {sequence}"
        assert reply.sequence == sequence
        return reply


def _fd_link(fd: int) -> Link:
    def read(timeout: float) -> bytes:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 65536) if ready else b""

    def write(data: bytes) -> None:
        while data:
            data = data[os.write(fd, data) :]

    return Link(write, read)


def _socket_link(sock: socket.socket) -> Link:
    def read(timeout: float) -> bytes:
        sock.settimeout(timeout)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""

    return Link(sock.sendall, read)


@contextmanager
def host_device(build: Path, *flags: str) -> Iterator[Link]:
    """The ASan/UBSan host firmware on a fresh pty; on exit SIGTERM must end it cleanly."""
    proc = subprocess.Popen(
        [str(build / "host-asan" / "fs_host"), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PTY /dev/"), f"no PTY line: {line!r}, {proc.stderr}"
    fd = os.open(line.split()[1], os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    try:
        yield _fd_link(fd)
    finally:
        os.close(fd)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Sanitizer" not in err, err
        assert "runtime error" not in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def qemu_device(elf: Path) -> Iterator[tuple[Link, float]]:
    """The mps2-an386 image in QEMU, UART0 on a TCP socket; yields the link and the seconds from
    starting QEMU to the first HELLO reply."""
    port = _free_port()
    started = time.monotonic()
    serial = f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"
    proc = subprocess.Popen(
        [*QEMU, "-kernel", str(elf), "-serial", serial],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sock = _connect(port, proc)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _socket_link(sock)
        link.ask(MessageType.HELLO, 1)
        yield link, time.monotonic() - started
        sock.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _connect(port: int, proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ---- payloads ----------------------------------------------------------------------------------

HELLO_FIXED = struct.Struct("<BBBBHHHHIIII")


def parse_hello(payload: bytes) -> dict[str, object]:
    names = "protocol learner slots caps max_payload max_features max_outputs reserved"
    fields: dict[str, object] = dict(
        zip(
            (*names.split(), "max_floats", "clock_hz", "sram_bytes", "flash_bytes"),
            HELLO_FIXED.unpack_from(payload),
            strict=True,
        )
    )
    at = HELLO_FIXED.size
    strings = []
    for _ in range(3):
        n = payload[at]
        strings.append(payload[at + 1 : at + 1 + n].decode())
        at += 1 + n
    fields["board"], fields["core"], fields["firmware"] = strings
    fields["sensors"] = payload[at]
    return fields


def load_chunks(
    weights: NDArray[np.float32], outputs: int, features: int, lr: float, loss: int
) -> Iterator[tuple[bytes, int]]:
    """LOAD_WEIGHTS payloads and flags: 16-byte configuration, offset, at most 508 floats each."""
    per = (MAX_PAYLOAD - 16) // 4
    for offset in range(0, len(weights), per):
        values = weights[offset : offset + per]
        more = 0x80 if offset + per < len(weights) else 0
        head = struct.pack("<HHBBHfI", outputs, features, loss, 0, 0, lr, offset)
        yield head + values.astype("<f4").tobytes(), more


def sample_payloads(x: NDArray[np.float32], targets: list[bytes]) -> Iterator[bytes]:
    """TRAIN / EVAL payloads: as many samples per frame as fit."""
    size = 4 * x.shape[1] + len(targets[0])
    per = (MAX_PAYLOAD - 2) // size
    for start in range(0, len(x), per):
        rows = range(start, min(start + per, len(x)))
        body = b"".join(x[i].astype("<f4").tobytes() + targets[i] for i in rows)
        yield struct.pack("<H", len(rows)) + body


def read_weights(link: Link, sequence: int) -> tuple[NDArray[np.float32], int]:
    """GET_WEIGHTS chunk by chunk; returns the weights and the next sequence number."""
    values: list[NDArray[np.float32]] = []
    more, offset = True, 0
    while more:
        reply = link.ask(MessageType.GET_WEIGHTS, sequence, struct.pack("<I", offset))
        assert reply.type == MessageType.GET_WEIGHTS, reply.payload
        assert struct.unpack_from("<I", reply.payload)[0] == offset
        values.append(np.frombuffer(reply.payload[4:], "<f4").astype(np.float32))
        offset += len(values[-1])
        more, sequence = bool(reply.flags & 0x80), sequence + 1
    return np.concatenate(values).astype(np.float32), sequence


def train_and_compare(link: Link, loss: str, outputs: int, features: int) -> None:
    """LOAD a head, TRAIN 100 samples, GET it back: equal to OnlineHead taking the same steps."""
    rng = np.random.default_rng(7)
    lr = float(np.float32(0.05))
    weights = (rng.normal(size=outputs * (features + 1)) * 0.1).astype(np.float32)
    x = rng.normal(size=(100, features)).astype(np.float32)
    if loss == "softmax":
        labels = rng.integers(0, outputs, 100)
        targets: list[bytes] = [struct.pack("<I", int(label)) for label in labels]
    else:
        y = rng.normal(size=(100, outputs)).astype(np.float32)
        targets = [row.astype("<f4").tobytes() for row in y]
    seq = 10
    for payload, flags in load_chunks(weights, outputs, features, lr, loss == "mse"):
        reply = link.ask(MessageType.LOAD_WEIGHTS, seq, payload, flags)
        assert reply.type == MessageType.LOAD_WEIGHTS, reply.payload
        seq += 1
    steps, loss_sum = 0, 0.0
    for payload in sample_payloads(x, targets):
        reply = link.ask(MessageType.TRAIN, seq, payload)
        assert reply.type == MessageType.TRAIN, reply.payload
        n, _, part, train_us, energy_uj = struct.unpack("<HHfII", reply.payload)
        steps, loss_sum, seq = steps + n, loss_sum + part, seq + 1
        assert train_us != 0xFFFFFFFF  # measured
        assert energy_uj == 0xFFFFFFFF  # not measured
    got, _ = read_weights(link, seq)

    head = OnlineHead(
        weights[: outputs * features].reshape(outputs, features).copy(),
        weights[outputs * features :].copy(),
        lr,
        "softmax" if loss == "softmax" else "mse",
    )
    expected_loss = sum(
        head.step(x[i], int(labels[i]) if loss == "softmax" else y[i]) for i in range(100)
    )
    assert steps == 100
    np.testing.assert_allclose(
        got, np.concatenate([head.weight.ravel(), head.bias]), rtol=RTOL, atol=ATOL
    )
    assert loss_sum == pytest.approx(expected_loss, rel=LOSS_RTOL)


def _load_small_head(link: Link, sequence: int) -> None:
    weights = np.linspace(-0.1, 0.1, 4 * 17).astype(np.float32)
    for payload, flags in load_chunks(weights, 4, 16, 0.05, 0):
        assert link.ask(MessageType.LOAD_WEIGHTS, sequence, payload, flags).status == Status.OK


def _train_payload(count: int, label: int = 1) -> bytes:
    x = np.ones((count, 16), np.float32)
    return next(sample_payloads(x, [struct.pack("<I", label)] * count))


# ---- the codec ---------------------------------------------------------------------------------


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match[1])


def _c_decode(build: Path, wires: list[bytes]) -> list[str]:
    done = subprocess.run(
        [str(build / "tools" / "fs_vectors"), "decode"],
        input="".join(w.hex() + "\n" for w in wires),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_c_codec_matches_every_golden_vector(host_build: Path) -> None:
    frames = json.loads(VECTORS.read_text())["frames"]

    decoded = _c_decode(host_build, [bytes.fromhex(f["wire"]) for f in frames])
    encoded = subprocess.run(
        [str(host_build / "tools" / "fs_vectors"), "encode"],
        input="".join(
            f"{MessageType[f['type']]} {f['sequence']} {Status[f['status']]} {f['flags']} "
            f"{f['payload'] or '-'}\n"
            for f in frames
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    for frame, line, wire in zip(frames, decoded, encoded, strict=True):
        fields = f"{MessageType[frame['type']]} {frame['sequence']} {Status[frame['status']]}"
        assert line == f"ok {fields} {frame['flags']} {frame['payload'] or '-'}", frame["name"]
        assert wire == frame["wire"], frame["name"]


def _python_class(body: bytes) -> str:
    try:
        decode_frame(body)
    except (CrcError, VersionError) as exc:
        return type(exc).__name__
    except FrameError:
        return "FrameError"
    return "ok"


C_CLASSES = {"crc": "CrcError", "version": "VersionError", "ok": "ok"}


def test_c_codec_accepts_and_refuses_what_python_does(host_build: Path) -> None:
    rng = random.Random(3)
    bodies = []
    for _ in range(600):
        kind = rng.randint(0, 9)  # 0, 8, 9: not message types
        payload = rng.randbytes(rng.choice([0, 1, 5, 300, 700]))
        header = struct.pack("<BBHHBB", 1, kind, rng.getrandbits(16), len(payload), 0, 0)
        raw = bytearray(header + payload + struct.pack("<H", crc16(header + payload)))
        mutation = rng.randint(0, 4)
        if mutation == 1:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif mutation == 2:
            raw[0] = rng.randint(2, 255)
            raw[-2:] = struct.pack("<H", crc16(bytes(raw[:-2])))
        wire = bytearray(cobs_encode(bytes(raw)))
        if mutation == 3:
            del wire[rng.randrange(len(wire)) :]
        elif mutation == 4:
            wire[rng.randrange(len(wire))] = rng.randint(1, 255)
        bodies.append(bytes(wire))

    lines = _c_decode(host_build, [b + b"\x00" for b in bodies])

    for body, line in zip(bodies, lines, strict=True):
        c_class = C_CLASSES.get(line.split()[1] if line.startswith("error") else "ok", "FrameError")
        assert c_class == _python_class(body), (body.hex(), line)
        if c_class == "ok":
            frame = decode_frame(body)
            assert line == (
                f"ok {frame.type} {frame.sequence} {frame.status} {frame.flags} "
                f"{frame.payload.hex() or '-'}"
            )


def test_c_unit_tests_pass(host_build: Path) -> None:
    done = subprocess.run([str(host_build / "tools" / "fs_unit")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ", 0 failed" in done.stdout


# ---- fuzzing -----------------------------------------------------------------------------------


def test_fuzz_harness_survives_100k_frames_under_sanitizers(host_build: Path) -> None:
    done = subprocess.run(
        [str(host_build / "tools" / "fs_fuzz"), "--seed", "1", "--frames", "100000"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "100000 frames" in done.stdout
    for status in ("ok", "bad_request", "too_large", "no_model", "not_finite"):
        assert _number(rf"{status} (\d+)", done.stdout) > 0, done.stdout
    assert _number(r"(\d+) replays", done.stdout) > 0


def test_fuzz_harness_takes_python_mutations_on_stdin(host_build: Path) -> None:
    rng = random.Random(11)
    stream = bytearray()
    for sequence in range(3000):
        payload = rng.randbytes(rng.choice([0, 2, 4, 16, 20, 70, 300, 2100]))
        version, kind = rng.choice([1, 1, 1, 2]), rng.choice([1, 2, 3, 4, 5, 6, 7, 0, 200])
        header = struct.pack("<BBHHBB", version, kind, sequence, len(payload), 0, 0x80)
        wire = bytearray(cobs_encode(header + payload + struct.pack("<H", crc16(header + payload))))
        if rng.random() < 0.3:
            wire[rng.randrange(len(wire))] = rng.randint(0, 255)
        stream += wire + b"\x00"
    stream += bytes(rng.randint(1, 255) for _ in range(5000)) + b"\x00"  # an oversize run

    done = subprocess.run(
        [str(host_build / "tools" / "fs_fuzz"), "--stdin"],
        input=bytes(stream),
        capture_output=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert _number(r"(\d+) replies", done.stdout.decode()) > 1000


# ---- the host port behind a pty ----------------------------------------------------------------


def test_host_port_says_hello(host_build: Path) -> None:
    with host_device(host_build) as link:
        reply = link.ask(MessageType.HELLO, 1)

    hello = parse_hello(reply.payload)
    assert (hello["board"], hello["firmware"]) == ("host-pty", "fedsim-fw 0.1.0")
    assert (hello["protocol"], hello["learner"], hello["slots"], hello["caps"]) == (1, 3, 1, 1)
    assert (hello["max_payload"], hello["max_floats"]) == (MAX_PAYLOAD, 4096)


@pytest.mark.parametrize(("loss", "outputs", "features"), [("softmax", 10, 64), ("mse", 3, 20)])
def test_host_port_trains_like_the_numpy_head(
    host_build: Path, loss: str, outputs: int, features: int
) -> None:
    with host_device(host_build) as link:
        link.ask(MessageType.HELLO, 1)
        train_and_compare(link, loss, outputs, features)


def _small_head_after(steps: int) -> NDArray[np.float32]:
    """The weights of _load_small_head after `steps` steps on _train_payload's sample."""
    weights = np.linspace(-0.1, 0.1, 4 * 17).astype(np.float32)
    head = OnlineHead(weights[:64].reshape(4, 16).copy(), weights[64:].copy(), 0.05)
    for _ in range(steps):
        head.step(np.ones(16, np.float32), 1)
    return np.concatenate([head.weight.ravel(), head.bias])


def test_a_retried_train_is_answered_from_memory_not_trained_again(host_build: Path) -> None:
    with host_device(host_build) as link:
        _load_small_head(link, 2)
        first = link.ask(MessageType.TRAIN, 3, _train_payload(5))
        retry = link.ask(MessageType.TRAIN, 3, _train_payload(5))  # the last one answered
        after_retry, _ = read_weights(link, 4)
        other_type = link.ask(MessageType.TRAIN, 4, _train_payload(5))  # GET was 4: runs
        link.ask(MessageType.TRAIN, 6, _train_payload(5))
        link.ask(MessageType.HELLO, 7)  # clears the replay memory (and is not kept in it)
        after_hello = link.ask(MessageType.TRAIN, 6, _train_payload(5))  # so this trains
        final, _ = read_weights(link, 8)

    assert retry == first
    assert struct.unpack_from("<H", retry.payload)[0] == 5
    np.testing.assert_allclose(after_retry, _small_head_after(5), rtol=RTOL, atol=ATOL)
    assert other_type.type == after_hello.type == MessageType.TRAIN
    np.testing.assert_allclose(final, _small_head_after(20), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("request_", "status", "reason"),
    [
        ((MessageType.TRAIN, _train_payload(1)), Status.NO_MODEL, "no head loaded"),
        ((MessageType.GET_WEIGHTS, struct.pack("<I", 0)), Status.NO_MODEL, "LOAD_WEIGHTS"),
        (
            (MessageType.LOAD_WEIGHTS, struct.pack("<HHBBHfI", 4, 600, 0, 0, 0, 0.1, 0)),
            Status.TOO_LARGE,
            r"features 600 > max_features",
        ),
        (
            (MessageType.LOAD_WEIGHTS, struct.pack("<HHBBHfI", 4, 16, 7, 0, 0, 0.1, 0)),
            Status.BAD_REQUEST,
            "loss code 7: 0 is softmax, 1 is mse",
        ),
        (
            (MessageType.LOAD_WEIGHTS, struct.pack("<HHBBHfI", 4, 16, 0, 0, 0, 0.1, 8)),
            Status.BAD_REQUEST,
            "offset 8 but no load under way",
        ),
        ((MessageType.ERROR, b""), Status.BAD_REQUEST, "message type 7 is not a request"),
        ((MessageType.HELLO, b"x"), Status.BAD_REQUEST, "HELLO takes no payload, got 1 bytes"),
    ],
)
def test_host_port_refuses_bad_requests_with_a_reason(
    host_build: Path, request_: tuple[int, bytes], status: Status, reason: str
) -> None:
    with host_device(host_build) as link:
        reply = link.ask(request_[0], 9, request_[1])

    assert (reply.type, reply.status) == (MessageType.ERROR, status)
    assert re.search(reason, reply.payload.decode()), reply.payload


def test_host_port_refuses_labels_and_lengths_that_do_not_fit_the_head(host_build: Path) -> None:
    with host_device(host_build) as link:
        _load_small_head(link, 2)
        label = link.ask(MessageType.TRAIN, 3, _train_payload(2, label=4))
        length = link.ask(MessageType.TRAIN, 4, _train_payload(2)[:-1])
        version = Frame(MessageType.HELLO, 5, version=2)
        link.send_raw(encode_frame(version))
        other = link.receive()

    assert label.status == Status.BAD_REQUEST
    assert label.payload == b"label 4 in sample 0 is not below the head's outputs, 4"
    assert length.payload == b"TRAIN payload of 137 bytes; count and head need 138"
    assert other is not None
    assert other.status == Status.BAD_REQUEST
    assert other.payload == b"protocol version 2, this device speaks 1"


def test_reset_after_samples_loses_the_reply_then_answers_no_model(host_build: Path) -> None:
    with host_device(host_build, "--reset-after-samples", "8") as link:
        _load_small_head(link, 2)
        before = link.ask(MessageType.TRAIN, 3, _train_payload(5))
        link.send(MessageType.TRAIN, 4, _train_payload(5))  # reaches 8: the device reboots
        lost = link.receive(timeout=0.5)
        retry = link.ask(MessageType.TRAIN, 4, _train_payload(5))

    assert before.type == MessageType.TRAIN
    assert lost is None
    assert retry.status == Status.NO_MODEL


def test_silent_after_and_duplicate_replies(host_build: Path) -> None:
    with host_device(host_build, "--silent-after", "2") as link:
        answered = [link.ask(MessageType.HELLO, s) for s in (1, 2)]
        link.send(MessageType.HELLO, 3)
        silent = link.receive(timeout=0.3)
    with host_device(host_build, "--duplicate-replies") as link:
        first = link.ask(MessageType.HELLO, 1)
        second = link.receive()

    assert len(answered) == 2
    assert silent is None
    assert second == first


# ---- the QEMU board -----------------------------------------------------------------------------


def test_qemu_board_boots_says_hello_and_trains_like_numpy(qemu_build: Path) -> None:
    with qemu_device(qemu_build / "fedsim-mps2-an386.elf") as (link, boot_s):
        hello = parse_hello(link.ask(MessageType.HELLO, 2).payload)
        train_and_compare(link, "softmax", 4, 16)

    assert boot_s < 5
    assert (hello["board"], hello["core"], hello["clock_hz"]) == ("mps2-an386", "cortex-m4f", 25e6)
    assert hello["sram_bytes"] == hello["flash_bytes"] == 4 * 1024 * 1024


def test_qemu_board_serves_a_pty_too(qemu_build: Path) -> None:
    proc = subprocess.Popen(
        [*QEMU, "-kernel", str(qemu_build / "fedsim-mps2-an386.elf"), "-serial", "pty"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"char device redirected to (/dev/pts/\d+)", proc.stdout.readline())
        assert match, "QEMU did not say which pty it opened"
        fd = os.open(match[1], os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        reply = _fd_link(fd).ask(MessageType.HELLO, 1)
        os.close(fd)
    finally:
        proc.terminate()
        proc.wait(10)

    assert parse_hello(reply.payload)["board"] == "mps2-an386"


def test_qemu_counts_instructions_per_sgd_step_deterministically(qemu_build: Path) -> None:
    command = [*QEMU, "-icount", "shift=0,align=off,sleep=off", "-semihosting-config"]
    command += ["enable=on,target=native", "-kernel", str(qemu_build / "bench.elf")]

    runs = [subprocess.run(command, capture_output=True, text=True, timeout=30) for _ in range(2)]

    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    per_step = _number(r"instructions_per_step=([\d.]+)", runs[0].stdout)
    assert 1000 < per_step < 2000  # 1491.46 at -Os (README); design §9 measured ~1,374


# ---- the Arduino port ---------------------------------------------------------------------------


def test_arduino_port_compiles_for_both_cpus() -> None:
    _need("make", "arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-size")

    report = _make("arduino-check")

    for board in ("nano33ble", "pico"):
        assert f"== {board}: core + Arduino port objects" in report
        assert f"build/arduino/{board}/main.o" in report
    assert report.count("(TOTALS)") == 2


# ---- the firmware and the Python agent answer the same frames the same way ----------------------


def _raw_frame(version: int, kind: int, sequence: int, length: int, payload: bytes) -> bytes:
    body = struct.pack("<BBHHBB", version, kind, sequence, length, 0, 0) + payload
    return cobs_encode(body + struct.pack("<H", crc16(body))) + b"\x00"


def _agreement_stream() -> list[bytes]:
    """Frames that lie about their length, oversize ones, other versions and unknown types, then
    non-finite numbers, each request with its own sequence number; HELLOs between them show the
    device still serves. Payloads are zeros: COBS adds least to them, so an oversize frame is
    still short enough on the wire for the agent's receive buffer to take it whole."""
    frames: list[bytes] = []

    def add(version: int, kind: int, length: int, payload: bytes) -> None:
        frames.append(_raw_frame(version, kind, 100 + len(frames), length, payload))

    for kind in (*range(0, 9), 42, 255):
        add(1, kind, 3, bytes(4))  # length lies: dropped by both
        add(1, kind, 4000, b"")
        add(1, kind, MAX_PAYLOAD + 1, bytes(MAX_PAYLOAD + 1))  # oversize: dropped by both
        add(1, MessageType.HELLO, 0, b"")
    add(1, 42, 0, b"")  # intact unknown type: BAD_REQUEST from both
    add(2, MessageType.HELLO, 5, b"")  # another version: answered, whatever its length says
    add(2, MessageType.HELLO, MAX_PAYLOAD + 3, bytes(MAX_PAYLOAD + 3))  # too long to answer
    mse = struct.pack("<HHBBHfI", 2, 4, 1, 0, 0, 0.01, 0)
    add(1, MessageType.LOAD_WEIGHTS, 56, mse + struct.pack("<10f", 0, 0, math.inf, *[0] * 7))
    add(1, MessageType.LOAD_WEIGHTS, 56, mse + bytes(40))
    row = struct.pack("<4f", 1, 1, 1, 1)
    add(1, MessageType.TRAIN, 26, b"\x01\x00" + struct.pack("<4f", 1, math.nan, 1, 1) + row[:8])
    big = b"\x04\x00" + (row + struct.pack("<2f", 1e19, 1e19)) * 4  # loss sum 4e38 > f32 max
    add(1, MessageType.EVAL, len(big), big)
    add(1, MessageType.TRAIN, len(big), big)
    add(1, MessageType.TRAIN, len(big), big)  # the head was forgotten: NO_MODEL
    add(1, MessageType.HELLO, 0, b"")
    return frames


def _answers(wire: bytes) -> list[tuple[int, int, int]]:
    """(sequence, type, status) of every reply in a byte stream."""
    replies = [decode_frame(raw) for raw in wire.split(b"\x00") if raw]
    return [(r.sequence, int(r.type), int(r.status)) for r in replies]


def test_the_agent_and_the_firmware_answer_the_same_frames_alike(host_build: Path) -> None:
    from edge.agent import Device

    frames = _agreement_stream()
    firmware = subprocess.run(
        [str(host_build / "host-asan" / "fs_host"), "--stdio"],
        input=b"".join(frames),
        capture_output=True,
        timeout=30,
    )
    agent = Device()
    agent_wire = b"".join(agent.feed(frame) for frame in frames)

    assert firmware.returncode == 0, firmware.stderr.decode()[-2000:]
    assert _answers(agent_wire) == _answers(firmware.stdout)
    statuses = [status for _, _, status in _answers(agent_wire)]
    assert statuses.count(Status.NOT_FINITE) == 4  # inf weight, NaN sample, EVAL and TRAIN
    assert statuses[-2:] == [Status.NO_MODEL, Status.OK]
    assert statuses.count(Status.OK) == 11 + 1 + 1  # HELLOs, the load, the last HELLO
    assert statuses.count(Status.BAD_REQUEST) == 2  # the intact unknown type, version 2
