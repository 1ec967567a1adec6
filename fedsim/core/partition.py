"""Split a dataset's training samples among the fleet's devices (IID or Dirichlet over labels).

The splitting itself is Flower Datasets' (``flwr_datasets.partitioner``), applied to a small
in-memory ``datasets.Dataset`` of sample indices and labels; fedsim only maps the result back to
index arrays and turns impossible requests into located errors.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.scenario import DirichletPartition, IidPartition, PartitionSpec
from fedsim.core.seeds import derive_seed

__all__ = ["partition_indices"]


def _index_dataset(labels: NDArray[np.int64], seed: int) -> object:
    from datasets import Dataset

    order = np.random.default_rng(seed).permutation(len(labels))
    return Dataset.from_dict({"index": order.tolist(), "label": labels[order].tolist()})


def _split(spec: PartitionSpec, labels: NDArray[np.int64], n: int, seed: int) -> list[list[int]]:
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    partitioner: IidPartitioner | DirichletPartitioner
    if isinstance(spec, IidPartition):
        partitioner = IidPartitioner(num_partitions=n)
    else:
        partitioner = DirichletPartitioner(
            num_partitions=n,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=spec.min_partition_size,
            self_balancing=False,
            seed=seed,
        )
    partitioner.dataset = _index_dataset(labels, seed)
    with warnings.catch_warnings():  # its retries warn at length; failure is raised and explained
        warnings.simplefilter("ignore", UserWarning)
        return [list(partitioner.load_partition(i)["index"]) for i in range(n)]


@lru_cache(maxsize=16)
def partition_indices(
    dataset: str, seed: int, spec: PartitionSpec, num_devices: int
) -> tuple[NDArray[np.int64], ...]:
    """Training-sample indices of each device, device ``i`` at position ``i``."""
    labels = load_task_data(dataset, seed).y_train
    if num_devices > len(labels):
        raise FedsimError(
            "fleet.groups",
            f"{num_devices} devices but '{dataset}' has only {len(labels)} training samples",
            "use fewer devices or a larger dataset",
        )
    try:
        parts = _split(spec, labels, num_devices, derive_seed(seed, "partition"))
    except ValueError as exc:
        if not isinstance(spec, DirichletPartition):  # IID only fails on n <= 0
            raise
        raise FedsimError(
            "fleet.partition",
            f"Dirichlet(alpha={spec.alpha}) could not give each of {num_devices} devices "
            f"{spec.min_partition_size}+ samples ({exc})",
            "raise alpha, lower min_partition_size, or use fewer devices",
        ) from exc
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
