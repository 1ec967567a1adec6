"""The Python agent and the C firmware are twins: the same requests, good and bad, get the same
replies (type, status, sequence, flags; payloads byte for byte where they carry no measurement
or free text)."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge.agent import Device
from edge.emulator import EmulatorError, host_firmware
from edge.messages import HeadConfig, encode_samples, load_chunks
from edge.protocol import HEADER, Frame, MessageType, cobs_encode, crc16, decode_frame
from edge.protocol import encode_frame as _encode

pytestmark = pytest.mark.firmware

CONFIG = HeadConfig(outputs=6, features=100, lr=0.05)  # 606 floats: two LOAD chunks
MORE = 0x80


def _raw(version: int, kind: int, sequence: int, payload: bytes = b"", status: int = 0) -> bytes:
    body = HEADER.pack(version, kind, sequence, len(payload), status, 0) + payload
    return cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"


def _load_header(outputs: int, features: int, loss: int, lr: float) -> bytes:
    return struct.pack("<HHBBHfI", outputs, features, loss, 0, 0, lr, 0)


def _requests() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(5)
    flat = (0.1 * rng.normal(size=CONFIG.floats)).astype(np.float32)
    first, second = load_chunks(CONFIG, flat)
    x = rng.normal(size=(4, CONFIG.features)).astype(np.float32)
    y = rng.integers(0, 6, 4)
    samples = encode_samples(CONFIG, x, y)
    small = HeadConfig(2, 4, 0.1)
    nan_lr = _load_header(2, 4, 0, float("nan")) + b"\x00" * 40
    wide = _load_header(8, 510, 1, 0.1)  # mse: 510 + 8 floats a sample, 2,074 bytes
    short_last = load_chunks(small, np.ones(small.floats, np.float32))[0][:-8]
    bad_label = encode_samples(CONFIG, x[:2], np.array([0, 7]))

    def frame(kind: MessageType, payload: bytes = b"", flags: int = 0) -> bytes:
        frame.sequence += 1  # type: ignore[attr-defined]
        return _encode(Frame(kind, frame.sequence, payload, flags=flags))  # type: ignore[attr-defined]

    frame.sequence = 100  # type: ignore[attr-defined]
    return [
        ("train before any head", frame(MessageType.TRAIN, encode_samples(CONFIG, x, y))),
        ("get before any head", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 0))),
        ("second chunk first", frame(MessageType.LOAD_WEIGHTS, second)),
        ("first chunk", frame(MessageType.LOAD_WEIGHTS, first, MORE)),
        ("first chunk again (restart)", frame(MessageType.LOAD_WEIGHTS, first, MORE)),
        ("second chunk", frame(MessageType.LOAD_WEIGHTS, second)),
        ("train", frame(MessageType.TRAIN, samples)),
        ("get weights", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 0))),
        ("get the rest", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 511))),
        ("get past the end", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 606))),
        ("a short last chunk", frame(MessageType.LOAD_WEIGHTS, short_last)),
        ("a label out of range", frame(MessageType.TRAIN, bad_label)),
        ("a length that does not add up", frame(MessageType.TRAIN, samples[:-4])),
        ("eval", frame(MessageType.EVAL, encode_samples(CONFIG, x, y))),
        ("hello with a payload", frame(MessageType.HELLO, b"\x01")),
        ("reset with a payload", frame(MessageType.RESET, b"\x01")),
        ("an error sent to the device", frame(MessageType.ERROR)),
        ("unknown type 42", _raw(1, 42, 900)),
        ("unknown type 42 again (replayed)", _raw(1, 42, 900)),
        ("protocol version 2", _raw(2, 1, 901)),
        ("a status byte no request uses", _raw(1, MessageType.HELLO, 902, status=9)),
        ("a payload over 2048 bytes", _raw(1, MessageType.TRAIN, 903, b"\x01" * 2100)),
        ("zero outputs", frame(MessageType.LOAD_WEIGHTS, _load_header(0, 4, 0, 0.1))),
        ("a learning rate that is not a number", frame(MessageType.LOAD_WEIGHTS, nan_lr)),
        ("a head whose sample cannot fit a frame", frame(MessageType.LOAD_WEIGHTS, wide, MORE)),
        ("weights after the refusals", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 0))),
        ("reset", frame(MessageType.RESET)),
        ("weights after reset", frame(MessageType.GET_WEIGHTS, struct.pack("<I", 0))),
    ]  # fmt: skip


def _c_replies(requests: list[tuple[str, bytes]]) -> list[Frame | None]:
    import serial

    try:
        context = host_firmware()
        fw = context.__enter__()
    except EmulatorError as exc:
        pytest.skip(str(exc))
    try:
        link = serial.serial_for_url(fw.port, timeout=0.01)
        replies: list[Frame | None] = []
        for _, wire in requests:
            link.write(wire)
            replies.append(_read_reply(link.read))
        link.close()
    finally:
        context.__exit__(None, None, None)
    return replies


def _read_reply(read: Callable[[int], bytes], wait: float = 1.0) -> Frame | None:
    buffer, deadline = b"", time.monotonic() + wait
    while b"\x00" not in buffer and time.monotonic() < deadline:
        buffer += read(4096)
    return decode_frame(buffer.split(b"\x00")[0]) if b"\x00" in buffer else None


def test_the_agent_and_the_firmware_answer_alike() -> None:
    requests = _requests()
    device = Device()
    python = [
        decode_frame(reply[:-1]) if (reply := device.feed(wire)) else None for _, wire in requests
    ]
    c = _c_replies(requests)
    answered = {(f.type, f.status) for f in python if f is not None}
    assert len(answered) == 9  # every request type answered OK, and refusals of three kinds
    for (name, _), mine, theirs in zip(requests, python, c, strict=True):
        assert (mine is None) == (theirs is None), name
        if mine is None or theirs is None:
            continue
        shape = (mine.type, mine.status, mine.sequence, mine.flags)
        assert shape == (theirs.type, theirs.status, theirs.sequence, theirs.flags), name
        if mine.type in (MessageType.LOAD_WEIGHTS, MessageType.RESET):
            assert mine.payload == theirs.payload == b"", name
        if mine.type == MessageType.GET_WEIGHTS:
            assert mine.payload[:4] == theirs.payload[:4], name  # the offset
            np.testing.assert_allclose(  # trained: float32 in another order (tests/test_attached)
                np.frombuffer(mine.payload[4:], "<f4"),
                np.frombuffer(theirs.payload[4:], "<f4"),
                rtol=1e-5,
                atol=1e-6,
                err_msg=name,
            )
        if mine.type == MessageType.TRAIN:  # steps and loss; not the time each one took
            steps, _, loss, _, _ = struct.unpack("<HHfII", mine.payload)
            c_steps, _, c_loss, _, _ = struct.unpack("<HHfII", theirs.payload)
            assert steps == c_steps == 4, name
            assert loss == pytest.approx(c_loss, rel=1e-5), name
        if mine.type == MessageType.EVAL:
            count, correct, loss = struct.unpack("<HHf", mine.payload)
            c_count, c_correct, c_loss = struct.unpack("<HHf", theirs.payload)
            assert (count, correct) == (c_count, c_correct), name
            assert loss == pytest.approx(c_loss, rel=1e-5), name
