"""Split a dataset's training samples among the fleet's devices.

IID, Dirichlet over labels and label shards are Flower Datasets' partitioners
(``flwr_datasets.partitioner``), applied to a small in-memory ``datasets.Dataset`` of sample
indices and labels; *natural* (one writer/speaker/subject/room per device, chosen by seed) is a
direct selection by group id. fedsim maps the result back to index arrays and turns
impossible requests into located errors. Class-incremental missions and online streams, which
order a device's own samples, live in ``fedsim.core.streams``.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fedsim.core.data import load_task_data
from fedsim.core.errors import FedsimError
from fedsim.core.scenario import (
    DirichletPartition,
    IidPartition,
    NaturalPartition,
    PartitionSpec,
    ShardPartition,
)
from fedsim.core.seeds import derive_seed

__all__ = ["partition_indices"]


def _index_dataset(labels: NDArray[np.int64], seed: int) -> object:
    from datasets import Dataset

    order = np.random.default_rng(seed).permutation(len(labels))
    return Dataset.from_dict({"index": order.tolist(), "label": labels[order].tolist()})


def _split(
    spec: PartitionSpec,
    labels: NDArray[np.int64],
    groups: NDArray[np.int64] | None,
    n: int,
    seed: int,
) -> list[list[int]]:
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        Partitioner,
        ShardPartitioner,
    )

    partitioner: Partitioner
    if isinstance(spec, IidPartition):
        partitioner = IidPartitioner(num_partitions=n)
    elif isinstance(spec, DirichletPartition):
        partitioner = DirichletPartitioner(
            num_partitions=n,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=spec.min_partition_size,
            self_balancing=False,
            seed=seed,
        )
    elif isinstance(spec, ShardPartition):
        partitioner = ShardPartitioner(
            num_partitions=n,
            partition_by="label",
            num_shards_per_partition=spec.shards_per_device,
            seed=seed,
        )
    else:
        assert groups is not None  # natural: device d owns the samples of group d
        return [np.flatnonzero(groups == d).tolist() for d in range(n)]
    partitioner.dataset = _index_dataset(labels, seed)
    with warnings.catch_warnings():  # its retries warn at length; failure is raised and explained
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)  # pyarrow, inside ShardPartitioner
        return [list(partitioner.load_partition(i)["index"]) for i in range(n)]


def _natural_groups(
    dataset: str,
    groups: NDArray[np.int64] | None,
    kind: str | None,
    num_devices: int,
    seed: int,
) -> NDArray[np.int64]:
    """Group ids for the natural split: ``num_devices`` groups, chosen by seed, as 0..n-1 (other
    groups' samples get -1 and belong to no device)."""
    if groups is None:
        raise FedsimError(
            "fleet.partition",
            f"'{dataset}' has no natural groups (no writer, speaker, subject or room per sample)",
            "use kind: iid, dirichlet or shards",
        )
    unique = np.unique(groups)
    if num_devices > len(unique):
        raise FedsimError(
            "fleet.groups",
            f"{num_devices} devices but '{dataset}' has only {len(unique)} {kind or 'group'}s",
            f"use at most {len(unique)} devices with kind: natural",
        )
    chosen = np.random.default_rng(derive_seed(seed, "natural")).permutation(unique)[:num_devices]
    device_of = {int(g): d for d, g in enumerate(sorted(int(c) for c in chosen))}
    return np.array([device_of.get(int(g), -1) for g in groups], dtype=np.int64)


@lru_cache(maxsize=16)
def partition_indices(
    dataset: str, seed: int, spec: PartitionSpec, num_devices: int
) -> tuple[NDArray[np.int64], ...]:
    """Training-sample indices of each device, device ``i`` at position ``i``."""
    data = load_task_data(dataset, seed)
    labels = data.y_train
    groups = None
    if isinstance(spec, NaturalPartition):
        groups = _natural_groups(dataset, data.groups_train, data.group_kind, num_devices, seed)
    if num_devices > len(labels):
        raise FedsimError(
            "fleet.groups",
            f"{num_devices} devices but '{dataset}' has only {len(labels)} training samples",
            "use fewer devices or a larger dataset",
        )
    try:
        parts = _split(spec, labels, groups, num_devices, derive_seed(seed, "partition"))
    except (ValueError, ZeroDivisionError) as exc:  # shards smaller than a sample: 0 / 0
        if isinstance(spec, ShardPartition):
            raise FedsimError(
                "fleet.partition",
                f"cannot deal {spec.shards_per_device} label shards to each of {num_devices} "
                f"devices ({exc})",
                "lower shards_per_device or use fewer devices",
            ) from exc
        if not isinstance(spec, DirichletPartition):  # IID only fails on n <= 0
            raise
        raise FedsimError(
            "fleet.partition",
            f"Dirichlet(alpha={spec.alpha}) could not give each of {num_devices} devices "
            f"{spec.min_partition_size}+ samples ({exc})",
            "raise alpha, lower min_partition_size, or use fewer devices",
        ) from exc
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
