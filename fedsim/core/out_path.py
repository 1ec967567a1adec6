"""Check an output path (``--out``, ``-o``) before any work starts: a run that trains for an hour
must not fail at its first write because its folder is a file, missing or read-only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from fedsim.core.errors import FedsimError, clip

__all__ = ["check_out"]


def _writable(folder: Path) -> str | None:
    """Why nothing can be created in ``folder``, or ``None``. Tried, not inferred from mode bits
    (root passes every ``os.access`` test, yet cannot write in /proc or a read-only mount)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".fedsim-write-test-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(handle)
    os.unlink(name)
    return None


def check_out(path: Path, option: str, kind: Literal["folder", "file"]) -> None:
    """Raise a located ``FedsimError`` unless ``path`` can be written as a ``kind``: a folder
    (new, its missing parents made now, or an existing folder) or a file (new, or an existing
    file to replace), in a writable folder (which must exist for a file)."""
    where = f"{option} {clip(str(path), 200)}"
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise FedsimError(where, f"not a usable path ({exc})", "give another path") from None
    if exists and kind == "folder" and not is_dir:
        raise FedsimError(where, "is a file, not a folder", "give a folder path (new or existing)")
    if exists and kind == "file" and is_dir:
        raise FedsimError(where, "is a folder, not a file", "give a file path, e.g. out.html")
    parent = path if exists and is_dir else path.parent
    if kind == "folder" and not parent.exists():
        # a run or sweep folder is made with its parents, as the default results/<name> is: in
        # a fresh clone `fedsim run ... --out results/x` must not fail for want of results/
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FedsimError(
                where,
                f"cannot make its folder {clip(str(parent), 200)} ({exc.strerror or exc})",
                "give a path in a folder you can write to",
            ) from None
    if parent.exists() and not parent.is_dir():
        raise FedsimError(
            where,
            f"its folder {clip(str(parent), 200)} is a file",
            "give a path in a folder, not under a file",
        )
    if not parent.is_dir():
        raise FedsimError(
            where,
            f"its folder {clip(str(parent), 200)} does not exist",
            f"create it first (mkdir -p {clip(str(parent), 200)}) or give another path",
        )
    why = _writable(parent)
    if why is not None:
        raise FedsimError(
            where,
            f"cannot write in {clip(str(parent), 200)} ({why})",
            "give a path in a folder you can write to",
        )
