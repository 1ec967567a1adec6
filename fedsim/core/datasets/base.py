"""What a dataset is: ``TaskData`` (the samples a task trains and tests on), ``DatasetSource``
(how to load one, and what ``fedsim data list`` shows), and the cache both built-in and users'
datasets keep generated arrays in.

The dataset modules beside this one and ``fedsim.core.data`` (the name table) both import it;
neither imports the other, so the table can name its entries as lazy dotted paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DatasetSource",
    "Loader",
    "LocalGenerator",
    "TaskData",
    "cache_dir",
    "cached_arrays",
    "character_task",
]


class LocalGenerator(Protocol):
    def __call__(
        self, device_seed: int, n: int, label_probs: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float32], NDArray[Any]]:
        """``n`` samples of one device; labels drawn from ``label_probs`` (None: uniform).

        Classification targets are int64 class indices; regression targets float32.
        """
        ...


@dataclass(frozen=True)
class TaskData:
    """Samples as float32 ``[N, *sample_shape]`` (e.g. ``[N, 784]``, ``[N, 1, 28, 28]``,
    ``[N, 49, 40]``), labels as int64 ``[N]``.

    ``groups_train`` / ``groups_test`` give each sample's *natural group* (the writer, speaker,
    subject or room it comes from; ``group_kind`` names it), the natural federated client.
    A generated dataset has an empty training pool and a ``generate`` function instead.
    """

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[Any]  # int64 class indices; float32 targets for regression
    x_test: NDArray[np.float32]
    y_test: NDArray[Any]
    num_classes: int
    licence: str
    generate: LocalGenerator | None = None
    groups_train: NDArray[np.int64] | None = None
    groups_test: NDArray[np.int64] | None = None
    group_kind: str | None = None  # "writer", "speaker", "subject", "room", ...
    class_names: tuple[str, ...] = ()

    @property
    def generated(self) -> bool:
        return self.generate is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_test.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Outputs of a model for this task: the classes, or the regression target's width."""
        if self.num_classes:
            return self.num_classes
        return int(np.prod(self.y_test.shape[1:])) or 1

    @property
    def num_features(self) -> int:
        """Values per sample (what a flattening model's first layer takes)."""
        return int(np.prod(self.sample_shape))


Loader = Callable[[int], TaskData]


def character_task(
    name: str,
    images: NDArray[np.float32],
    hands: NDArray[np.int64],
    test: NDArray[np.int64],
    *,
    licence: str,
    class_names: tuple[str, ...],
    group_kind: str,
) -> TaskData:
    """Classes × hands images (``[C, H, h, w]``; a hand is a writer or drawer, with id
    ``hands[j]``) as a task: every character a class, hands at positions ``test`` held out for
    the test split (unseen hands), the others the natural clients of the training split."""
    count, total = images.shape[:2]
    train = np.setdiff1d(np.arange(total), test)

    def take(
        which: NDArray[np.int64],
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
        x = images[:, which].reshape(-1, 1, *images.shape[2:])
        y = np.repeat(np.arange(count, dtype=np.int64), len(which))
        return x, y, np.tile(hands[which], count).astype(np.int64)

    x_tr, y_tr, g_tr = take(train)
    x_te, y_te, g_te = take(np.sort(test))
    return TaskData(
        name,
        x_tr,
        y_tr,
        x_te,
        y_te,
        count,
        licence,
        groups_train=g_tr,
        groups_test=g_te,
        group_kind=group_kind,
        class_names=class_names,
    )


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: how to load it (by seed), and what ``fedsim data list`` shows."""

    load: Loader
    description: str
    licence: str
    source: str  # where the data comes from
    task: Literal["classification", "regression"] = "classification"
    natural_groups: str | None = None  # what a natural client is: "writer", "speaker", ...
    requires: str = ""  # how to install what it needs, e.g. "apt-get install ..."
    files: Callable[[], list[Path]] = list  # its files on disk (source or cache), for the size
    # the sensors its input comes from (fedsim vocabulary classes, e.g. "Microphone"): a device
    # must host them all to run a model of this dataset (ontology/models.py)
    sensors: tuple[str, ...] = ()


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$FEDSIM_CACHE``, else ``$XDG_CACHE_HOME/fedsim``,
    else ``~/.cache/fedsim``."""
    if os.environ.get("FEDSIM_CACHE"):
        return Path(os.environ["FEDSIM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedsim"


def cached_arrays(
    name: str, key: str, build: Callable[[], dict[str, NDArray[Any]]]
) -> dict[str, NDArray[Any]]:
    """``build()``'s arrays, kept in ``cache_dir()/<name>-<key>.npz``; built once per key.

    Written atomically (a crash never leaves half a file); an unreadable file is rebuilt.
    ``key`` must change whenever the arrays would (generator version, seed, parameters).
    """
    path = cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError, EOFError):
            path.unlink(missing_ok=True)
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return arrays
