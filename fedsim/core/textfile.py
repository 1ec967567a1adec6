"""Read a user's text file (scenario, trace, Turtle) as UTF-8, or fail with one located line.

Every text file fedsim reads from a user goes through ``read_text``: an explicit encoding, a size
limit read before the contents, and errors that say where the bad byte is and how to fix the
file without quoting it (the file may not be what it was meant to be: a key file, a binary).
"""

from __future__ import annotations

from pathlib import Path

from fedsim.core.errors import FedsimError

__all__ = ["read_text"]

_UTF8_BOM = b"\xef\xbb\xbf"
# longest first: a UTF-32 LE mark starts with the UTF-16 LE one
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_RESAVE = "re-save it as UTF-8 text"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(data: bytes, path: Path, kind: str) -> str:
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise FedsimError(
                f"{path}:1",
                f"expected {kind} in UTF-8; the file starts with a {name} byte order mark",
                _RESAVE,
            )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise FedsimError(
            f"{path}:{_line_of(data, nul)}",
            f"expected {kind} in UTF-8, found a NUL byte (binary data, or UTF-16 without a byte "
            "order mark)",
            _RESAVE,
        )
    try:
        return data.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start + (len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0)
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise FedsimError(
            f"{path}:{_line_of(data, start)}",
            f"expected {kind} in UTF-8; byte 0x{data[start]:02x} at column {column} is not UTF-8 "
            "(Latin-1 or Windows-1252?)",
            _RESAVE,
        ) from None


def read_text(path: Path, kind: str, max_bytes: int, why: str) -> str:
    """The UTF-8 text of ``path`` (a UTF-8 byte order mark dropped). ``kind`` names what the file
    should hold (``a scenario``); ``why`` says why ``max_bytes`` is enough for one. Raises a
    located ``FedsimError`` for a file too large, unreadable, or not UTF-8."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FedsimError(str(path), f"cannot read it ({exc.strerror})", "check the path") from None
    if len(data) > max_bytes:
        raise FedsimError(
            str(path),
            f"{kind} file is over {max_bytes:,} bytes: {why}",
            "check that the path names the right file",
        )
    return _decode(data, path, kind)
