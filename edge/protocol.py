"""The serial-bridge wire format (``edge/PROTOCOL.md``): COBS frames with a checked header.

A frame on the wire is ``COBS(header ‖ payload ‖ crc16) ‖ 0x00``. The header is 8 bytes,
little-endian: version (u8), type (u8), sequence (u16), payload length (u16), status (u8), flags
(u8); the CRC is CRC-16/CCITT-FALSE over header and payload. COBS leaves no 0x00 inside a frame, so
a receiver that loses or corrupts bytes resynchronises at the next 0x00. Payloads are at most
``MAX_PAYLOAD`` bytes; larger tensors travel in chunks with offsets (``PROTOCOL.md``).

This module is the Python half; the C firmware (``edge/firmware``) implements the same bytes,
and both are tested against the golden vectors in ``edge/protocol_vectors.json``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "FLAG_MORE",
    "HEADER",
    "MAX_PAYLOAD",
    "MAX_RAW",
    "MAX_REASON",
    "VERSION",
    "CrcError",
    "Frame",
    "FrameError",
    "MessageType",
    "Status",
    "StatusError",
    "VersionError",
    "cobs_decode",
    "cobs_encode",
    "crc16",
    "decode_frame",
    "encode_frame",
    "split_frames",
]

VERSION = 1
MAX_PAYLOAD = 2048
HEADER = struct.Struct("<BBHHBB")  # version, type, sequence, length, status, flags
MAX_RAW = HEADER.size + MAX_PAYLOAD + 2  # the largest decoded frame: header, payload, CRC
FLAG_MORE = 0x80  # header flags bit 7: more LOAD_WEIGHTS / GET_WEIGHTS chunks follow
MAX_REASON = 96  # an ERROR payload's reason, bytes at most

# These numbers, MessageType and Status are also the C firmware's (firmware/core/fs_wire.h,
# fs_config.h); tests/test_protocol_numbers.py parses those headers and holds both sides equal.


class MessageType(enum.IntEnum):
    HELLO = 1
    LOAD_WEIGHTS = 2
    TRAIN = 3
    GET_WEIGHTS = 4
    EVAL = 5
    RESET = 6
    ERROR = 7


class Status(enum.IntEnum):
    OK = 0
    BAD_REQUEST = 1
    TOO_LARGE = 2
    NO_MODEL = 3
    BUSY = 4
    INTERNAL = 5
    NOT_FINITE = 6  # a loss, weight or input is inf or NaN (training diverged)


_TYPES = frozenset(int(t) for t in MessageType)
_STATUSES = frozenset(int(s) for s in Status)


class FrameError(ValueError):
    """A frame that cannot be read; the message says what was wrong with it."""


class CrcError(FrameError):
    pass


class VersionError(FrameError):
    pass


class StatusError(FrameError):
    """An intact frame whose status byte this host does not know (a newer or broken device):
    what it carried is kept, so the host can report it instead of waiting for another reply."""

    def __init__(self, kind: MessageType, sequence: int, status: int, payload: bytes) -> None:
        super().__init__(f"unknown status {status}")
        self.type, self.sequence, self.status, self.payload = kind, sequence, status, payload


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection, no final xor),
    a byte at a time through a 256-entry table."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: no 0x00 in the output, at most 1 byte per 254 added
    (the canonical form: a full 254-byte block at the very end gets no extra code byte)."""
    out = bytearray([0])
    code_at, code = 0, 1
    for i, byte in enumerate(data):
        if byte:
            out.append(byte)
            code += 1
        if not byte or (code == 0xFF and i + 1 < len(data)):
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """The bytes ``cobs_encode`` was given; ``FrameError`` for anything it could not have made."""
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0:
            raise FrameError("COBS: a zero byte inside a frame")
        block = data[i + 1 : i + code]
        if len(block) != code - 1:
            raise FrameError("COBS: a block runs past the end of the frame")
        if 0 in block:
            raise FrameError("COBS: a zero byte inside a frame")
        out += block
        i += code
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    type: MessageType
    sequence: int
    payload: bytes = b""
    status: Status = Status.OK
    flags: int = 0
    version: int = VERSION


def encode_frame(frame: Frame) -> bytes:
    """The bytes on the wire, the trailing 0x00 delimiter included."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(
            f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}: send it in chunks"
        )
    if not 0 <= frame.sequence <= 0xFFFF or not 0 <= frame.flags <= 0xFF:
        raise FrameError("sequence must fit 16 bits and flags 8 bits")
    header = HEADER.pack(
        frame.version, frame.type, frame.sequence, len(frame.payload), frame.status, frame.flags
    )
    body = header + frame.payload
    return cobs_encode(body + struct.pack("<H", crc16(body))) + b"\x00"


def decode_frame(encoded: bytes, strict_status: bool = True) -> Frame:
    """A frame from its COBS bytes (without the 0x00 delimiter), checked: CRC, length, version,
    type. An unknown status byte is a ``StatusError`` (which keeps the frame's fields);
    ``strict_status=False`` (a device reading requests, whose status it ignores) reads it as OK."""
    raw = cobs_decode(encoded)
    if len(raw) < HEADER.size + 2:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than a header and a CRC")
    body, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
    if crc16(body) != crc:
        raise CrcError(f"CRC mismatch: frame says {crc:#06x}, bytes give {crc16(body):#06x}")
    version, kind, sequence, length, status, flags = HEADER.unpack(body[: HEADER.size])
    if version != VERSION:
        raise VersionError(
            f"protocol version {version}, this host speaks {VERSION}: update the firmware or "
            "fedsim so both speak the same version"
        )
    payload = body[HEADER.size :]
    if len(payload) != length:
        raise FrameError(f"header says {length} payload bytes, the frame has {len(payload)}")
    if length > MAX_PAYLOAD:
        raise FrameError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    if kind not in _TYPES:
        raise FrameError(f"unknown message type {kind}")
    if status not in _STATUSES:
        if strict_status:
            raise StatusError(MessageType(kind), sequence, status, payload)
        status = Status.OK
    return Frame(MessageType(kind), sequence, payload, Status(status), flags, version)


def split_frames(stream: bytes) -> Iterator[bytes]:
    """The COBS-encoded frames in a byte stream (delimiters removed, empty runs skipped): what a
    receiver does to resynchronise after noise."""
    for chunk in stream.split(b"\x00"):
        if chunk:
            yield chunk
