"""The serial bridge end to end: payload codecs, the host's retries against the Python device
(``edge.agent.Device``) through a link that injects faults, the agent on a real pty pair
(socat), and a fuzz run of both decoders."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.agent import Device
from edge.bridge import (
    BridgeError,
    DeviceError,
    DeviceResetError,
    DeviceTimeoutError,
    ImplausibleHelloError,
    PortError,
    SerialBridge,
    VersionMismatchError,
)
from edge.messages import (
    EvalReport,
    HeadConfig,
    Hello,
    TrainReport,
    decode_chunk,
    decode_eval,
    decode_hello,
    decode_load,
    decode_samples,
    decode_train,
    encode_chunk,
    encode_eval,
    encode_hello,
    encode_samples,
    encode_train,
    load_chunks,
)
from edge.online_head import OnlineHead
from edge.protocol import (
    HEADER,
    MAX_PAYLOAD,
    Frame,
    FrameError,
    MessageType,
    Status,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
    split_frames,
)

CONFIG = HeadConfig(outputs=10, features=64, lr=0.05)  # 650 floats: two LOAD chunks


def _data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (0.1 * rng.normal(size=(CONFIG.outputs, CONFIG.features))).astype(np.float32)
    b = np.zeros(CONFIG.outputs, np.float32)
    x = rng.normal(size=(n, CONFIG.features)).astype(np.float32)
    y = rng.integers(0, CONFIG.outputs, n)
    return w, b, x, y


def _reference(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> OnlineHead:
    head = OnlineHead(w.copy(), b.copy(), CONFIG.lr)
    for i in range(len(x)):
        head.step(x[i], y[i])
    return head


# -- payload codecs -------------------------------------------------------------------------------
def test_hello_round_trips() -> None:
    hello = Hello("nano33ble", "cortex-m4f", "fw 1", 64_000_000, 262_144, 1 << 20, 4096, 128, 16,
                  caps=5, sensors=("imu", "microphone"))  # fmt: skip
    assert decode_hello(encode_hello(hello)) == hello
    assert hello.measures_time
    assert not hello.measures_energy


def test_head_too_large_for_a_device_is_explained() -> None:
    hello = Hello("b", "c", "f", 1, 1, 1, max_floats=100, max_features=64, max_outputs=16)
    assert "exceed its buffer of 100 floats" in (hello.fits(CONFIG) or "")
    assert hello.fits(HeadConfig(2, 8, 0.1)) is None
    roomy = Hello("b", "c", "f", 1, 1, 1, max_floats=10**6, max_features=4096, max_outputs=64)
    assert "one sample of 2404 bytes does not fit" in (roomy.fits(HeadConfig(2, 600, 0.1)) or "")
    assert "finite learning rate" in (roomy.fits(HeadConfig(2, 6, float("nan"))) or "")


def test_load_chunks_cover_the_head_in_order() -> None:
    flat = np.arange(CONFIG.floats, dtype=np.float32)
    chunks = load_chunks(CONFIG, flat)
    assert [len(c) for c in chunks] == [16 + 508 * 4, 16 + 142 * 4]
    parts = [decode_load(c) for c in chunks]
    assert [offset for _, offset, _ in parts] == [0, 508]
    assert parts[0][0] == HeadConfig(10, 64, float(np.float32(0.05)))  # lr travels as float32
    np.testing.assert_array_equal(np.concatenate([v for *_, v in parts]), flat)


@pytest.mark.parametrize("loss", ["softmax", "mse"])
def test_samples_round_trip(loss: str) -> None:
    config = HeadConfig(3, 5, 0.1, loss)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    y = rng.integers(0, 3, 7) if loss == "softmax" else rng.normal(size=(7, 3)).astype(np.float32)
    got_x, got_y = decode_samples(config, encode_samples(config, x, y))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_reply_codecs_round_trip_and_refuse_bad_lengths() -> None:
    assert decode_train(encode_train(TrainReport(3, 1.5, 120, None))) == TrainReport(3, 1.5, 120)
    assert decode_eval(encode_eval(EvalReport(4, 2, 0.5))) == EvalReport(4, 2, 0.5)
    offset, values = decode_chunk(encode_chunk(8, np.ones(3, np.float32)))
    assert offset == 8
    assert values.tolist() == [1, 1, 1]
    for bad in (lambda: decode_train(b"\x01"), lambda: decode_hello(b"\x01" * 29)):
        with pytest.raises(FrameError):
            bad()
    with pytest.raises(FrameError, match="need"):
        decode_samples(CONFIG, b"\x02\x00" + b"\x00" * 10)


# -- the bridge against the Python device, through a link that can misbehave -----------------------
@dataclass
class FakeLink:
    """A pyserial stand-in wired to a ``Device``: bytes written are fed to it, its replies are
    read back. ``on_request`` / ``on_reply`` may rewrite (or drop) what crosses the line."""

    device: Device
    on_request: Callable[[bytes], bytes] = lambda b: b
    on_reply: Callable[[bytes], bytes] = lambda b: b
    timeout: float | None = 0.0
    _inbox: bytearray = field(default_factory=bytearray)
    written: list[bytes] = field(default_factory=list)

    @property
    def in_waiting(self) -> int:
        return len(self._inbox)

    def write(self, data: bytes, /) -> int:
        self.written.append(data)
        self._inbox += self.on_reply(self.device.feed(self.on_request(data)))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self._inbox:
            time.sleep(0.001)
        out = bytes(self._inbox[:size])
        del self._inbox[:size]
        return out

    def reset_input_buffer(self) -> None:
        self._inbox.clear()

    def close(self) -> None:
        pass


def _bridge(link: FakeLink, **kw: float) -> SerialBridge:
    return SerialBridge("fake0", link=link, timeout=kw.pop("timeout", 0.05), **kw)  # type: ignore[arg-type]


def _session(bridge: SerialBridge, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    w, b, x, y = _data(n)
    bridge.hello()
    bridge.load_head(CONFIG, w, b)
    report = bridge.train(CONFIG, x, y)
    assert report.steps == n
    return bridge.get_head(CONFIG)


def test_a_session_trains_exactly_like_the_reference() -> None:
    device = Device()
    bridge = _bridge(FakeLink(device))
    weight, bias = _session(bridge)
    ref = _reference(*_data())
    np.testing.assert_array_equal(weight, ref.weight)
    np.testing.assert_array_equal(bias, ref.bias)
    assert device.head is not None
    assert device.head.seen == 100
    assert bridge.stats.retries == 0
    assert bridge.stats.efficiency > 0.95


def _once(
    change: Callable[[bytes], bytes], when: Callable[[bytes], bool]
) -> Callable[[bytes], bytes]:
    """Apply ``change`` to the first frame ``when`` selects, pass everything else."""
    done = [False]

    def rewrite(data: bytes) -> bytes:
        if done[0] or not data or not when(data):
            return data
        done[0] = True
        return change(data)

    return rewrite


def _is(kind: MessageType) -> Callable[[bytes], bool]:
    def check(wire: bytes) -> bool:
        try:
            return decode_frame(wire[:-1]).type == kind
        except FrameError:
            return False

    return check


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x10 or 1]) + data[i + 1 :]


FAULTS = {
    "corrupted byte": _flip,
    "dropped bytes": lambda d: d[:5] + d[9:],
    "truncated frame": lambda d: d[: len(d) // 2] + b"\x00",
    "lost entirely": lambda d: b"",
    "lost its delimiter": lambda d: d[:-1],  # the next frame would be glued onto it
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("direction", ["request", "reply"])
def test_a_damaged_train_frame_is_retried_and_never_trains_twice(
    fault: str, direction: str
) -> None:
    device = Device()
    damage = _once(FAULTS[fault], _is(MessageType.TRAIN))
    link = FakeLink(device, **{f"on_{direction}": damage})  # type: ignore[arg-type]
    bridge = _bridge(link)
    weight, _ = _session(bridge)
    np.testing.assert_array_equal(weight, _reference(*_data()).weight)
    assert bridge.stats.retries == 1
    assert device.head is not None
    assert device.head.seen == 100  # a replay, not a second step
    # the retry's leading 0x00 completes a request that lost only its delimiter: it is served,
    # and the retried copy is a replay
    assert device.replays == (1 if direction == "reply" or fault == "lost its delimiter" else 0)


def test_a_wrong_crc_is_dropped_by_both_sides() -> None:
    frame = Frame(MessageType.HELLO, 9)
    body = HEADER.pack(1, MessageType.HELLO, 9, 0, 0, 0)
    bad = cobs_encode(body + (crc16(body) ^ 1).to_bytes(2, "little")) + b"\x00"
    device = Device()
    assert device.feed(bad) == b""
    assert device.dropped == 1
    assert device.feed(encode_frame(frame)) != b""  # in sync again right after
    with pytest.raises(FrameError, match="CRC"):
        decode_frame(bad[:-1])


def test_an_oversize_frame_is_dropped_and_the_next_one_served() -> None:
    device = Device()
    assert device.feed(b"\x01" * (3 * MAX_PAYLOAD)) == b""  # no delimiter: never buffered whole
    assert device.feed(b"\x00") == b""
    assert device.dropped == 1
    assert len(device._buffer) == 0
    assert decode_frame(device.feed(encode_frame(Frame(MessageType.HELLO, 1)))[:-1]).sequence == 1


def test_a_length_field_that_lies_is_dropped() -> None:
    body = HEADER.pack(1, MessageType.RESET, 3, 4000, 0, 0)  # says 4000 payload bytes, has none
    wire = cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"
    with pytest.raises(FrameError, match="payload bytes"):
        decode_frame(wire[:-1])
    assert Device().feed(wire) == b""


def test_an_unknown_message_type_gets_a_clear_refusal() -> None:
    body = HEADER.pack(1, 42, 5, 0, 0, 0)
    reply = Device().feed(cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00")
    frame = decode_frame(reply[:-1])
    assert (frame.type, frame.status, frame.sequence) == (MessageType.ERROR, Status.BAD_REQUEST, 5)
    assert b"unknown message type 42" in frame.payload


def test_a_host_of_another_version_is_told_so_by_the_device() -> None:
    body = HEADER.pack(2, MessageType.HELLO, 5, 0, 0, 0)
    reply = Device().feed(cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00")
    assert b"protocol version 2 not supported" in decode_frame(reply[:-1]).payload


def test_a_device_of_another_version_is_a_version_mismatch() -> None:
    def as_version_2(wire: bytes) -> bytes:
        from edge.protocol import cobs_decode

        body = bytearray(cobs_decode(wire[:-1])[:-2])
        body[0] = 2
        return cobs_encode(bytes(body) + crc16(bytes(body)).to_bytes(2, "little")) + b"\x00"

    bridge = _bridge(FakeLink(Device(), on_reply=as_version_2))
    with pytest.raises(
        VersionMismatchError, match=r"fake0: protocol version 2.*update the firmware"
    ):
        bridge.hello()


def test_a_silent_device_times_out_naming_the_port() -> None:
    bridge = _bridge(FakeLink(Device(), on_reply=lambda _: b""), timeout=0.01, retries=2)
    with pytest.raises(DeviceTimeoutError, match=r"fake0: no reply to HELLO after 3 attempts"):
        bridge.hello()
    assert bridge.stats.retries == 2


def test_a_device_reset_mid_round_is_reported_as_a_reset() -> None:
    device = Device()
    w, b, x, y = _data()

    def reboot(data: bytes) -> bytes:
        if _is(MessageType.TRAIN)(data):
            device.head = device.config = None  # power glitch: the head is gone
        return data

    bridge = _bridge(FakeLink(device, on_request=reboot))
    bridge.hello()
    bridge.load_head(CONFIG, w, b)
    with pytest.raises(DeviceResetError, match="TRAIN refused with NO_MODEL"):
        bridge.train(CONFIG, x, y)


def test_duplicate_replies_are_dropped_as_stale() -> None:
    device = Device()
    bridge = _bridge(FakeLink(device, on_reply=lambda d: d + d))
    weight, _ = _session(bridge)
    np.testing.assert_array_equal(weight, _reference(*_data()).weight)
    assert bridge.stats.stale_frames > 0
    assert device.head is not None
    assert device.head.seen == 100


def test_device_refusals_become_device_errors() -> None:
    small = Hello("tiny", "m0", "f", 1, 65536, 1, max_floats=64, max_features=64, max_outputs=16)
    bridge = _bridge(FakeLink(Device(small)))
    bridge.hello()
    w, b, x, y = _data()
    with pytest.raises(DeviceError, match="TOO_LARGE: 650 weights exceed its buffer of 64"):
        bridge.load_head(CONFIG, w, b)
    with pytest.raises(DeviceError, match="NO_MODEL"):
        bridge.evaluate(CONFIG, x, y)


def test_evaluate_counts_correct_predictions() -> None:
    bridge = _bridge(FakeLink(Device()))
    weight, bias = _session(bridge)
    _, _, x, y = _data(100)
    report = bridge.evaluate(CONFIG, x, y)
    expected = int(np.sum(np.argmax(x @ weight.T + bias, axis=1) == y))
    assert (report.count, report.correct) == (100, expected)


def test_an_absent_port_says_how_to_find_the_right_one() -> None:
    with pytest.raises(
        PortError,
        match=r"/dev/ttyNOPE: cannot open \(No such file or directory\): `fedsim devices scan`",
    ):
        SerialBridge("/dev/ttyNOPE").open()


# -- fuzz: random and mutated frames at both decoders ----------------------------------------------
def _valid_frames() -> list[bytes]:
    w, b, x, y = _data(20)
    payloads = [
        (MessageType.HELLO, b""),
        *[
            (MessageType.LOAD_WEIGHTS, c)
            for c in load_chunks(CONFIG, np.concatenate([w.ravel(), b]))
        ],
        (MessageType.TRAIN, encode_samples(CONFIG, x[:5], y[:5])),
        (MessageType.EVAL, encode_samples(CONFIG, x[:3], y[:3])),
        (MessageType.GET_WEIGHTS, (0).to_bytes(4, "little")),
        (MessageType.RESET, b""),
    ]
    return [encode_frame(Frame(kind, i, p)) for i, (kind, p) in enumerate(payloads)]


def _mutations(rng: random.Random, frames: list[bytes], n: int) -> Iterator[bytes]:
    for _ in range(n):
        frame = bytearray(rng.choice(frames))
        move = rng.randrange(6)
        if move == 0:  # random bytes
            frame = bytearray(rng.randbytes(rng.randrange(1, 64)))
        elif move == 1:  # flip bits
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        elif move == 2:  # truncate
            frame = frame[: rng.randrange(len(frame))]
        elif move == 3:  # drop a run of bytes
            i = rng.randrange(len(frame))
            del frame[i : i + rng.randrange(1, 8)]
        elif move == 4:  # insert random bytes
            i = rng.randrange(len(frame))
            frame[i:i] = rng.randbytes(rng.randrange(1, 8))
        else:  # a valid header that lies (length, version, type), re-checksummed
            fields = (rng.randrange(3), rng.randrange(256), rng.randrange(65536))
            body = bytearray(HEADER.pack(*fields, rng.randrange(65536), 0, 0))
            body += rng.randbytes(rng.randrange(0, 32))
            frame = bytearray(cobs_encode(bytes(body) + crc16(bytes(body)).to_bytes(2, "little")))
        yield bytes(frame)


def test_fuzzing_both_python_decoders_never_crashes() -> None:
    rng = random.Random(10)
    frames = _valid_frames()
    device = Device()
    device.feed(frames[0] + frames[1] + frames[2])  # a head is loaded: TRAIN/EVAL/GET run too
    outcomes = {"decoded": 0, "refused": 0}
    for mutated in _mutations(rng, frames, 100_000):
        for raw in split_frames(mutated):
            try:
                decode_frame(raw)
                outcomes["decoded"] += 1
            except FrameError:
                outcomes["refused"] += 1
        for reply in split_frames(device.feed(mutated)):
            decode_frame(reply)  # whatever the device says is a well-formed frame
    assert outcomes["refused"] > 50_000
    assert outcomes["decoded"] > 1_000
    assert decode_frame(device.feed(frames[0])[:-1]).type == MessageType.HELLO  # still serving


# -- the agent on a real pty pair ------------------------------------------------------------------
@pytest.mark.serial
def test_the_agent_serves_a_session_over_a_socat_pty_pair(agent_port: str) -> None:
    with SerialBridge(agent_port) as bridge:
        weight, bias = _session(bridge)
    ref = _reference(*_data())
    np.testing.assert_array_equal(weight, ref.weight)
    np.testing.assert_array_equal(bias, ref.bias)


@pytest.mark.serial
def test_the_agent_command_runs_without_torch(pty_pair: tuple[str, str]) -> None:
    host, device_end = pty_pair
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['flwr'] = None\n"
        "from edge.agent import main; raise SystemExit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", device_end, "--board", "pi-test"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "serving pi-test" in proc.stdout.readline()
        with SerialBridge(host) as bridge:
            assert bridge.hello().board == "pi-test"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_a_loopback_port_echoes_the_request_which_is_no_hello_reply() -> None:
    with SerialBridge("loop://", timeout=0.05) as bridge, pytest.raises(DeviceError) as exc:
        bridge.hello()
    assert "loop://: HELLO refused with INTERNAL: malformed reply: HELLO reply of 0 bytes" in str(
        exc.value
    )


def test_a_reply_that_does_not_parse_is_the_devices_error() -> None:
    def truncate_hello(wire: bytes) -> bytes:
        frame = decode_frame(wire[:-1])
        if frame.type != MessageType.HELLO:
            return wire
        return encode_frame(Frame(frame.type, frame.sequence, frame.payload[:30]))

    bridge = _bridge(FakeLink(Device(), on_reply=truncate_hello))
    with pytest.raises(DeviceError, match="malformed reply: HELLO reply ends inside its strings"):
        bridge.hello()


def test_a_request_too_large_to_frame_is_a_bridge_error() -> None:
    bridge = _bridge(FakeLink(Device()))
    with pytest.raises(BridgeError, match="fake0: cannot send TRAIN: payload of 3000 bytes"):
        bridge.request(MessageType.TRAIN, b"x" * 3000)


# -- hardening: non-finite numbers, unknown statuses, lying frames, hostile HELLOs ---------------
MSE = HeadConfig(outputs=2, features=4, lr=0.01, loss="mse")


def _ask(device: Device, kind: MessageType, sequence: int, payload: bytes = b"") -> Frame:
    return decode_frame(device.feed(encode_frame(Frame(kind, sequence, payload)))[:-1])


def _load_mse(device: Device, sequence: int, values: np.ndarray | None = None) -> Frame:
    flat = np.zeros(MSE.floats, np.float32) if values is None else values
    (chunk,) = load_chunks(MSE, flat)
    return _ask(device, MessageType.LOAD_WEIGHTS, sequence, chunk)


def _mse_samples(target: float, n: int = 4, feature: float = 1.0) -> bytes:
    x = np.full((n, MSE.features), feature, np.float32)
    return encode_samples(MSE, x, np.full((n, MSE.outputs), target, np.float32))


def test_the_agent_answers_non_finite_frames_and_keeps_serving() -> None:
    device = Device()
    assert _load_mse(device, 1).status == Status.OK

    nan_sample = _ask(device, MessageType.TRAIN, 2, _mse_samples(1.0, feature=float("nan")))
    overflow_eval = _ask(device, MessageType.EVAL, 3, _mse_samples(1e19))  # 4 × 1e38 > f32 max
    kept = device.head is not None and device.head.seen == 0
    overflow_train = _ask(device, MessageType.TRAIN, 4, _mse_samples(1e19))
    after = _ask(device, MessageType.TRAIN, 5, _mse_samples(1.0))
    inf_weight = _load_mse(device, 6, np.array([0, 0, np.inf, 0, 0, 0, 0, 0, 0, 0], np.float32))
    hello = _ask(device, MessageType.HELLO, 7)

    assert (nan_sample.type, nan_sample.status) == (MessageType.ERROR, Status.NOT_FINITE)
    assert nan_sample.payload == b"sample 0 has a number that is not finite"
    assert overflow_eval.status == Status.NOT_FINITE
    assert kept  # refused inputs and an EVAL leave the head as it was
    assert overflow_train.status == Status.NOT_FINITE
    assert overflow_train.payload.startswith(b"training diverged")
    assert after.status == Status.NO_MODEL  # a diverged head is forgotten
    assert (inf_weight.status, inf_weight.payload) == (
        Status.NOT_FINITE,
        b"weight 2 is not a finite number",
    )
    assert (hello.type, hello.status) == (MessageType.HELLO, Status.OK)


def test_a_diverged_device_update_is_a_device_error_never_a_success() -> None:
    bridge = _bridge(FakeLink(Device()))
    bridge.hello()
    bridge.load_head(MSE, np.zeros((2, 4), np.float32), np.zeros(2, np.float32))
    x = np.ones((4, MSE.features), np.float32)
    with pytest.raises(
        DeviceError, match="fake0: TRAIN refused with NOT_FINITE: training diverged"
    ):
        bridge.train(MSE, x, np.full((4, 2), 1e19, np.float32))


def test_an_ok_reply_with_a_non_finite_loss_is_a_device_error() -> None:
    def as_old_firmware(wire: bytes) -> bytes:  # one that answers inf instead of NOT_FINITE
        frame = decode_frame(wire[:-1])
        if frame.type != MessageType.TRAIN:
            return wire
        payload = encode_train(TrainReport(decode_train(frame.payload).steps, float("inf")))
        return encode_frame(Frame(frame.type, frame.sequence, payload))

    bridge = _bridge(FakeLink(Device(), on_reply=as_old_firmware))
    w, b, x, y = _data(10)
    bridge.hello()
    bridge.load_head(CONFIG, w, b)
    with pytest.raises(DeviceError, match=r"TRAIN refused with NOT_FINITE: .* a loss sum of inf"):
        bridge.train(CONFIG, x, y)


def test_an_unknown_status_is_reported_as_such_not_as_silence() -> None:
    def status_9(wire: bytes) -> bytes:
        frame = decode_frame(wire[:-1])
        body = HEADER.pack(1, MessageType.ERROR, frame.sequence, 7, 9, 0) + b"melted!"
        return cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"

    bridge = _bridge(FakeLink(Device(), on_reply=status_9))
    with pytest.raises(DeviceError, match=r"fake0: HELLO refused with unknown status 9: melted!"):
        bridge.hello()
    assert bridge.stats.retries == 0


def _raw(version: int, kind: int, sequence: int, length: int, payload: bytes) -> bytes:
    body = HEADER.pack(version, kind, sequence, length, 0, 0) + payload
    return cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"


@pytest.mark.parametrize(
    ("version", "kind", "length", "size"),
    [
        (1, 42, 3, 4),  # an unknown type whose length field lies
        (1, 42, 0, 0),  # the same, intact: the one of these that is answered
        (1, 42, MAX_PAYLOAD + 1, MAX_PAYLOAD + 1),  # oversize, unknown type
        (2, MessageType.HELLO, MAX_PAYLOAD + 2, MAX_PAYLOAD + 2),  # oversize, another version
        (1, MessageType.TRAIN, 0, 5),  # a known type whose length field lies
    ],
)
def test_the_agent_drops_lying_and_oversize_frames_as_the_firmware_does(
    version: int, kind: int, length: int, size: int
) -> None:
    device = Device()
    reply = device.feed(_raw(version, kind, 77, length, bytes(size)))  # zeros: the least COBS
    assert (reply != b"") == (length == size == 0)  # only the intact one is answered
    assert _ask(device, MessageType.HELLO, 78).status == Status.OK  # still serving


HOSTILE = "\x1b[2J\x1b]0;owned\x07[/]board\u202e\n"


def test_hello_strings_reach_the_host_printable() -> None:
    device = Device(Hello(HOSTILE, "c\x1b[31m", "f\r", 0, 1 << 20, 0, 4096, 64, 16))
    hello = _bridge(FakeLink(device)).hello()
    assert hello.board == "?[2J?]0;owned?[/]board??"  # markup is the printer's to escape
    assert (hello.core, hello.firmware) == ("c?[31m", "f?")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"max_floats": 2**32 - 1}, r"4294967295 floats \(17179869180 bytes\) does not fit"),
        ({"sram_bytes": 0}, "does not fit its 0 bytes of RAM"),
        ({"max_payload": 16}, r"max_payload 16 outside \[128, 2048\]"),
        ({"max_outputs": 0}, "at least one learner slot, output and feature"),
        ({"max_floats": 1}, "the smallest head"),
        ({"protocol": 7}, "protocol 7, though its frames are version 1"),
    ],
)
def test_an_implausible_hello_is_refused_not_registered(change: dict[str, int], why: str) -> None:
    good = Hello("b", "c", "f", 0, 1 << 20, 0, max_floats=4096, max_features=64, max_outputs=16)
    bridge = _bridge(FakeLink(Device(replace(good, **change))))  # type: ignore[arg-type]
    with pytest.raises(ImplausibleHelloError, match=f"fake0: its HELLO is implausible: .*{why}"):
        bridge.hello()
    assert bridge.hello_info is None
    assert good.implausible() is None


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([MessageType.TRAIN, MessageType.EVAL]),
    st.lists(st.integers(0, 2**32 - 1), min_size=6, max_size=6 * 8).map(
        lambda bits: np.array(bits[: len(bits) // 6 * 6], np.uint32).view(np.float32)
    ),
    st.floats(0, 2.0**100, width=32),
)
def test_any_numbers_get_one_answer_and_the_agent_serves_on(
    kind: MessageType, numbers: np.ndarray, lr: float
) -> None:
    config = replace(MSE, lr=lr)  # features and targets of any float32 bits, inf and NaN too
    rows = numbers.reshape(-1, 6)
    device = Device()
    (chunk,) = load_chunks(config, np.full(config.floats, 0.5, np.float32))
    assert _ask(device, MessageType.LOAD_WEIGHTS, 1, chunk).status == Status.OK

    reply = _ask(device, kind, 2, encode_samples(config, rows[:, :4], rows[:, 4:]))
    hello = _ask(device, MessageType.HELLO, 3)

    assert reply.status in (Status.OK, Status.NOT_FINITE)
    if reply.status == Status.OK:
        loss = (decode_train if kind == MessageType.TRAIN else decode_eval)(reply.payload).loss_sum
        assert np.isfinite(loss)
        assert device.head is not None
        assert np.isfinite(device.head.weight).all()
    assert hello.status == Status.OK
