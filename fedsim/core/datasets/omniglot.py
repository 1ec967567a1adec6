"""Real Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) from a directory, and its one-shot runs.

The directory holds the standard layout, extracted or zipped: ``[<set>/]<Alphabet>/<character>/
<image>_<drawer>.png`` (black ink on white, 105×105), plus optionally ``all_runs.zip`` (or a
``run01/`` … ``run20/`` tree): the 20 official within-alphabet 20-way 1-shot runs. It is
``$FEDSIM_OMNIGLOT`` if set, else the subset shipped in the package (``data/omniglot/``: the two
"background small" sets and ``all_runs.zip``, MIT, see its ``SOURCE.md``). Images become float32
28×28 with ink = 1 (an antialiased box downsampling).
Decoded sets are cached (keyed by the source files' names, sizes and times).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets.base import DatasetSource, TaskData, cached_arrays, character_task
from fedsim.core.errors import FedsimError

__all__ = [
    "DEFAULT_DIR",
    "SOURCE",
    "Characters",
    "OneShotRun",
    "load_characters",
    "load_runs",
    "load_task",
    "omniglot_dir",
    "source_files",
]

DEFAULT_DIR = Path(__file__).resolve().parent / "data" / "omniglot"  # shipped: package data
SIZE = 28
VERSION = 1
TEST_DRAWERS = 4  # of 20: held out for the test split
_IMAGE = re.compile(r"(?:^|/)([^/]+)/([^/]+)/(\d+)_(\d+)\.png$")
LICENCE = "MIT (Lake, Salakhutdinov & Tenenbaum 2015; github.com/brendenlake/omniglot)"


@dataclass(frozen=True)
class Characters:
    images: NDArray[np.float32]  # [characters, drawers, 28, 28], ink = 1
    alphabets: NDArray[np.int64]  # [characters] index into alphabet_names
    alphabet_names: tuple[str, ...]
    names: tuple[str, ...]  # "<Alphabet>/<character>"
    drawers: NDArray[np.int64]  # [drawers] drawer numbers as in the file names


@dataclass(frozen=True)
class OneShotRun:
    """One official run: 20 training images (one per class) and 20 test images to classify."""

    training: NDArray[np.float32]  # [20, 28, 28]
    test: NDArray[np.float32]  # [20, 28, 28]
    answers: NDArray[np.int64]  # [20] index into ``training`` of each test image's class


def omniglot_dir() -> Path:
    return Path(os.environ.get("FEDSIM_OMNIGLOT") or DEFAULT_DIR)


def source_files() -> list[Path]:
    root = omniglot_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _to_array(png: bytes) -> NDArray[np.float32]:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    small = image.resize((SIZE, SIZE), Image.Resampling.BOX)  # area average: thin ink survives
    return 1.0 - np.asarray(small, dtype=np.float32) / 255.0


def _members(root: Path, suffix: str = ".png") -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every ``suffix`` file under ``root``, inside zips too."""
    for path in sorted(root.rglob("*")):
        if path.suffix == suffix:
            yield path.relative_to(root).as_posix(), path.read_bytes()
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for name in sorted(archive.namelist()):
                    if name.endswith(suffix):
                        yield name, archive.read(name)


def _missing(root: Path) -> FedsimError:
    return FedsimError(
        str(root),
        "no Omniglot images found (expected <Alphabet>/<character>/<id>_<drawer>.png, "
        "extracted or in .zip files)",
        "point $FEDSIM_OMNIGLOT at an Omniglot directory",
    )


def _cache_key(root: Path) -> str:
    """Changes whenever a source file is added, removed, resized or touched."""
    stamp = "|".join(
        f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    )
    return hashlib.sha256(f"{VERSION}|{root.resolve()}|{stamp}".encode()).hexdigest()[:16]


def _decode(root: Path) -> Characters:
    found: dict[str, dict[int, NDArray[np.float32]]] = {}
    for name, data in _members(root):
        match = _IMAGE.search(name)
        if match is None or match.group(1).startswith("run"):
            continue  # one-shot runs are read by load_runs
        alphabet, character, _, drawer = match.groups()
        # the "small" background sets overlap (Greek, Latin): the same image counts once
        found.setdefault(f"{alphabet}/{character}", {}).setdefault(int(drawer), _to_array(data))
    if not found:
        raise _missing(root)
    names = tuple(sorted(found))
    drawers = sorted({d for per in found.values() for d in per})
    incomplete = [n for n in names if sorted(found[n]) != drawers]
    if incomplete:
        raise FedsimError(
            str(root),
            f"{len(incomplete)} characters lack some of the {len(drawers)} drawers "
            f"(e.g. {incomplete[0]}: {sorted(found[incomplete[0]])})",
            "restore the missing images or remove the incomplete character folders",
        )
    alphabet_names = tuple(sorted({n.split("/")[0] for n in names}))
    return Characters(
        images=np.stack([np.stack([found[n][d] for d in drawers]) for n in names]),
        alphabets=np.array([alphabet_names.index(n.split("/")[0]) for n in names]),
        alphabet_names=alphabet_names,
        names=names,
        drawers=np.array(drawers, dtype=np.int64),
    )


def load_characters(root: Path | None = None) -> Characters:
    """Every character × drawer image under ``root`` (default: ``omniglot_dir()``), cached."""
    root = root or omniglot_dir()
    if not root.is_dir():
        raise _missing(root)

    def build() -> dict[str, NDArray[np.generic]]:
        chars = _decode(root)
        return {
            "images": chars.images,
            "alphabets": chars.alphabets,
            "alphabet_names": np.array(chars.alphabet_names),
            "names": np.array(chars.names),
            "drawers": chars.drawers,
        }

    f = cached_arrays("omniglot", _cache_key(root), build)
    return Characters(
        f["images"],
        f["alphabets"],
        tuple(str(a) for a in f["alphabet_names"]),
        tuple(str(n) for n in f["names"]),
        f["drawers"],
    )


def load_runs(root: Path | None = None) -> list[OneShotRun]:
    """The official 20-way 1-shot runs (``class_labels.txt`` pairs a test item with its class)."""
    root = root or omniglot_dir()
    labels = {}
    if root.is_dir():
        labels = {n: d for n, d in _members(root, ".txt") if n.endswith("class_labels.txt")}
    files = dict(_members(root)) if labels else {}
    if not labels:
        raise FedsimError(
            str(root),
            "no one-shot runs found (expected all_runs.zip or run01/class_labels.txt ...)",
            "point $FEDSIM_OMNIGLOT at a directory with Omniglot's all_runs",
        )
    runs = []
    for name in sorted(labels):
        base = name.rsplit("class_labels.txt", 1)[0]
        pairs = [line.split() for line in labels[name].decode().splitlines() if line.strip()]
        classes = sorted({train for _, train in pairs})
        runs.append(
            OneShotRun(
                training=np.stack([_to_array(files[base + c.split("/", 1)[1]]) for c in classes]),
                test=np.stack([_to_array(files[base + t.split("/", 1)[1]]) for t, _ in pairs]),
                answers=np.array([classes.index(c) for _, c in pairs], dtype=np.int64),
            )
        )
    return runs


def load_task(seed: int) -> TaskData:
    """Every character is a class; drawers are the natural clients. ``TEST_DRAWERS`` drawers,
    chosen by ``seed``, form the test split, so test images come from unseen hands."""
    chars = load_characters()
    test = np.random.default_rng(seed).permutation(len(chars.drawers))[:TEST_DRAWERS]
    return character_task(
        "omniglot",
        chars.images,
        chars.drawers,
        test,
        licence=LICENCE,
        class_names=chars.names,
        group_kind="drawer",
    )


SOURCE = DatasetSource(
    load_task,
    "real Omniglot handwritten characters (alphabet/character/*.png layout or zips), 28×28",
    "MIT (Lake, Salakhutdinov & Tenenbaum 2015)",
    f"a directory: $FEDSIM_OMNIGLOT, else {DEFAULT_DIR}",
    natural_groups="drawer",
    files=source_files,
    sensors=("Camera",),
)
