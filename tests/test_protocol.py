"""The serial-bridge framing (edge/PROTOCOL.md): COBS, CRC, header checks, resync, vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.protocol import (
    MAX_PAYLOAD,
    CrcError,
    Frame,
    FrameError,
    MessageType,
    Status,
    VersionError,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
    split_frames,
)

VECTORS = Path(__file__).resolve().parents[1] / "edge" / "protocol_vectors.json"


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogued check value


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    ],
)
def test_cobs_matches_the_published_examples(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=3000))
def test_cobs_round_trips_and_never_emits_a_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + len(data) // 254 + 1


@given(
    st.sampled_from(list(MessageType)),
    st.integers(0, 0xFFFF),
    st.binary(max_size=MAX_PAYLOAD),
    st.sampled_from(list(Status)),
    st.integers(0, 0xFF),
)
def test_frames_round_trip(
    kind: MessageType, sequence: int, payload: bytes, status: Status, flags: int
) -> None:
    frame = Frame(kind, sequence, payload, status, flags)
    wire = encode_frame(frame)
    assert wire.endswith(b"\x00")
    assert b"\x00" not in wire[:-1]
    assert decode_frame(wire[:-1]) == frame


def test_the_golden_vectors_are_what_the_codec_writes() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors["frames"]) >= 4
    for v in vectors["frames"]:
        frame = Frame(
            MessageType[v["type"]],
            v["sequence"],
            bytes.fromhex(v["payload"]),
            Status[v["status"]],
            v["flags"],
        )
        assert encode_frame(frame).hex() == v["wire"], v["name"]
        assert decode_frame(bytes.fromhex(v["wire"])[:-1]) == frame


def test_a_corrupted_byte_is_caught_and_the_next_frame_still_arrives() -> None:
    first = bytearray(encode_frame(Frame(MessageType.TRAIN, 1, b"abcdef")))
    first[4] ^= 0x10  # noise on the line
    second = encode_frame(Frame(MessageType.EVAL, 2, b"xyz"))
    frames = list(split_frames(b"\x00\x00" + bytes(first) + second))
    assert len(frames) == 2
    with pytest.raises(FrameError):
        decode_frame(frames[0])
    assert decode_frame(frames[1]).sequence == 2


def test_a_bad_crc_is_reported_as_such() -> None:
    wire = bytearray(encode_frame(Frame(MessageType.HELLO, 3, b"hello")))
    raw = bytearray(cobs_decode(bytes(wire[:-1])))
    raw[-1] ^= 0xFF  # the CRC itself
    with pytest.raises(CrcError, match="CRC mismatch"):
        decode_frame(cobs_encode(bytes(raw)))


def test_another_protocol_version_is_a_clear_error() -> None:
    wire = encode_frame(Frame(MessageType.HELLO, 1, version=2))
    with pytest.raises(VersionError, match="protocol version 2, this host speaks 1: update"):
        decode_frame(wire[:-1])


def test_oversized_payloads_must_be_chunked() -> None:
    with pytest.raises(FrameError, match="exceeds 2048: send it in chunks"):
        encode_frame(Frame(MessageType.LOAD_WEIGHTS, 1, bytes(MAX_PAYLOAD + 1)))


def test_truncated_and_mislabelled_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="shorter than a header"):
        decode_frame(cobs_encode(b"\x01\x02\x03"))
    with pytest.raises(FrameError, match="runs past the end"):
        cobs_decode(b"\x05\x11\x22")
