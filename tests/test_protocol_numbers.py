"""The serial protocol's numbers are one set: the C firmware's headers and edge/*.py agree.

The message types, statuses and wire constants are written twice, in C (edge/firmware/core) and in
Python (edge/protocol.py, edge/messages.py). These tests read the C headers as text (no compiler
needed) and compare name by name in both directions, so a message, status or flag added on one
side only fails here.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest

from edge import messages, protocol

CORE = Path(__file__).resolve().parents[1] / "edge" / "firmware" / "core"
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_NUMBER = r"(0[xX][0-9a-fA-F]+|\d+)[uU]?"


def _header(name: str) -> str:
    return _COMMENT.sub(" ", (CORE / name).read_text(encoding="utf-8"))


def c_enum(header: str, typedef: str) -> dict[str, int]:
    """``typedef enum { FS_A = 1, FS_B, ... } typedef;`` as {"A": 1, "B": 2}: C's implicit
    numbering (previous + 1) included, the ``FS_`` prefix dropped."""
    found = re.search(r"typedef\s+enum\s*\{([^{}]*)\}\s*" + typedef + r"\s*;", header)
    assert found is not None, f"no `typedef enum {{...}} {typedef};`"
    members: dict[str, int] = {}
    value = -1
    for item in filter(None, (part.strip() for part in found.group(1).split(","))):
        parsed = re.fullmatch(r"FS_(\w+)\s*(?:=\s*" + _NUMBER + r")?", item)
        assert parsed is not None, f"{typedef}: cannot read the member {item!r}"
        value = int(parsed.group(2), 0) if parsed.group(2) else value + 1
        members[parsed.group(1)] = value
    return members


def c_defines(header: str, prefix: str) -> dict[str, int]:
    """Every ``#define FS_<prefix>NAME <number>`` as {"<prefix>NAME": number}."""
    pattern = re.compile(r"^\s*#\s*define\s+FS_(" + prefix + r"\w*)\s+" + _NUMBER + r"\s*$", re.M)
    return {name: int(number, 0) for name, number in pattern.findall(header)}


def _members(enum: type[IntEnum]) -> dict[str, int]:
    return {member.name: int(member) for member in enum}


@pytest.mark.parametrize(
    ("enum", "typedef"), [(protocol.MessageType, "fs_type"), (protocol.Status, "fs_status")]
)
def test_each_message_type_and_status_has_one_name_and_number_in_c_and_python(
    enum: type[IntEnum], typedef: str
) -> None:
    c_side = c_enum(_header("fs_wire.h"), typedef)

    assert c_side == _members(enum), f"fs_wire.h {typedef} vs edge/protocol.py {enum.__name__}"


def test_the_wire_constants_are_the_same_in_c_and_python() -> None:
    wire = c_defines(_header("fs_wire.h"), "")
    config = c_defines(_header("fs_config.h"), "MAX_PAYLOAD")
    port = c_defines(_header("fedsim_port.h"), "NOT_MEASURED")

    assert wire["VERSION"] == protocol.VERSION
    assert wire["HEADER_SIZE"] == protocol.HEADER.size
    assert wire["HEADER_SIZE"] + config["MAX_PAYLOAD"] + wire["CRC_SIZE"] == protocol.MAX_RAW
    assert config["MAX_PAYLOAD"] == protocol.MAX_PAYLOAD
    assert wire["FLAG_MORE"] == protocol.FLAG_MORE
    assert wire["REASON_MAX"] == protocol.MAX_REASON
    assert port["NOT_MEASURED"] == messages.NOT_MEASURED


def test_the_hello_capability_bits_are_the_same_in_c_and_python() -> None:
    # Python spells the sensor bit in the plural; every other name matches after the prefix.
    python = {
        name.removeprefix("CAP_"): getattr(messages, name)
        for name in dir(messages)
        if name.startswith("CAP_")
    }
    python["SENSOR"] = python.pop("SENSORS")

    c_side = c_defines(_header("fedsim_port.h"), "CAP_")

    assert {name.removeprefix("CAP_"): bit for name, bit in c_side.items()} == python


def test_the_loss_codes_are_the_same_in_c_and_python() -> None:
    c_side = c_defines(_header("fs_learner.h"), "LOSS_")

    assert {name.removeprefix("LOSS_").lower(): code for name, code in c_side.items()} == dict(
        messages.LOSS_CODES
    )


def test_the_reader_handles_implicit_numbers_and_comments() -> None:
    header = "typedef enum { FS_A = 3, /* x, y */ FS_B, FS_C = 0x10 } fs_demo;"

    assert c_enum(_COMMENT.sub(" ", header), "fs_demo") == {"A": 3, "B": 4, "C": 16}
