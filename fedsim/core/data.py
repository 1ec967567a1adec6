"""Named datasets, all available offline, and the table that finds one by name.

Two kinds: *pooled* datasets (a training pool that the fleet's partition divides among devices,
and a test split, both fixed by the scenario's seed) and *generated* datasets, whose devices each
draw their own local samples from the seed and their device id when they need them, so a fleet of
100,000 devices costs nothing until a device trains.

Each built-in is a ``DatasetSource`` in its module under ``fedsim.core.datasets``, named here by a
dotted path and imported on first use. A user's dataset is a ``DatasetSource`` too: listed by an
installed package under the entry-point group ``fedsim.datasets``, or named in a scenario as
``task.dataset: "package.module:SOURCE"``.
"""

from __future__ import annotations

from functools import lru_cache

from fedsim.core.datasets.base import (
    DatasetSource,
    LocalGenerator,
    TaskData,
    cache_dir,
    cached_arrays,
    character_task,
)
from fedsim.core.errors import FedsimError, clip
from fedsim.core.plugins import Plugins

__all__ = [
    "DATASETS",
    "DatasetSource",
    "LocalGenerator",
    "TaskData",
    "cache_dir",
    "cached_arrays",
    "character_task",
    "dataset_source",
    "load_task_data",
]

DATASETS: Plugins[DatasetSource] = Plugins("dataset", group="fedsim.datasets")
DATASETS.lazy("digits", "fedsim.core.datasets.images:DIGITS_SOURCE")
DATASETS.lazy("mnist-5k", "fedsim.core.datasets.images:MNIST_5K_SOURCE")
DATASETS.lazy("fashion-mnist", "fedsim.core.datasets.images:FASHION_MNIST_SOURCE")
DATASETS.lazy("omniglot", "fedsim.core.datasets.omniglot:SOURCE")
DATASETS.lazy("kanjivg", "fedsim.core.datasets.kanjivg:SOURCE")
DATASETS.lazy("kws", "fedsim.core.datasets.kws:SOURCE")
DATASETS.lazy("kws-mfcc", "fedsim.core.datasets.kws_mfcc:SOURCE")
DATASETS.lazy("har", "fedsim.core.datasets.har:SOURCE")
DATASETS.lazy("presence", "fedsim.core.datasets.presence:SOURCE")
DATASETS.lazy("sine", "fedsim.core.datasets.sine:SOURCE")
DATASETS.lazy("blobs-784", "fedsim.core.datasets.blobs:SOURCE")
DATASETS.lazy("presence-rooms", "fedsim.core.datasets.derived:PRESENCE_ROOMS_SOURCE")
DATASETS.lazy("presence-building", "fedsim.core.datasets.derived:PRESENCE_BUILDING_SOURCE")
DATASETS.lazy("kanjivg-5way", "fedsim.core.datasets.derived:KANJIVG_5WAY_SOURCE")
DATASETS.lazy("omniglot-5way", "fedsim.core.datasets.derived:OMNIGLOT_5WAY_SOURCE")
DATASETS.lazy("kanjivg-unseen", "fedsim.core.datasets.derived:KANJIVG_UNSEEN_SOURCE")
DATASETS.lazy("omniglot-unseen", "fedsim.core.datasets.derived:OMNIGLOT_UNSEEN_SOURCE")
DATASETS.lazy("kws-unseen", "fedsim.core.datasets.derived:KWS_UNSEEN_SOURCE")
DATASETS.lazy("har-unseen", "fedsim.core.datasets.derived:HAR_UNSEEN_SOURCE")
DATASETS.lazy("mnist-mixed", "fedsim.core.datasets.derived:MNIST_MIXED_SOURCE")
DATASETS.lazy("fashion-mixed", "fedsim.core.datasets.derived:FASHION_MIXED_SOURCE")


def dataset_source(name: str, where: str = "task.dataset") -> DatasetSource:
    """The ``DatasetSource`` that ``name`` stands for (a built-in, an installed entry point, or
    ``package.module:SOURCE``); a located error if it does not resolve or is something else."""
    source = DATASETS.get(name, where)
    if not isinstance(source, DatasetSource):
        raise FedsimError(
            where,
            f"'{clip(name)}' is a {type(source).__name__}, not a dataset: a dataset is a "
            "fedsim.core.data.DatasetSource",
            "point it at a DatasetSource(load, description, licence, source) whose load(seed) "
            "returns a TaskData",
        )
    return source


@lru_cache(maxsize=8)
def load_task_data(name: str, seed: int) -> TaskData:
    """The dataset ``name`` split by ``seed``; cached per process (clients share it)."""
    return dataset_source(name).load(seed)
