"""What ``fedsim data info`` and ``fedsim data preview`` say about a registered dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.core.data import TaskData, dataset_source, load_task_data

__all__ = ["DatasetFacts", "describe", "preview_samples"]


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    description: str
    task: str
    classes: str
    train_samples: str
    test_samples: str
    sample_shape: str
    natural_groups: str
    size_on_disk: str
    licence: str
    source: str
    requires: str

    def rows(self) -> list[tuple[str, str]]:
        return [(k.replace("_", " "), str(v)) for k, v in vars(self).items()]


def _size(paths: list[Path]) -> str:
    total = sum(p.stat().st_size for p in paths if p.is_file())
    return f"{total / 1e6:.1f} MB in {len(paths)} files" if paths else "nothing on disk"


def _classes(data: TaskData) -> str:
    if data.num_classes == 0:
        return "regression (no classes)"
    names = data.class_names or tuple(str(c) for c in range(data.num_classes))
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"{data.num_classes}: {shown}"


def _groups(data: TaskData, kind: str | None) -> str:
    groups = data.groups_train
    if data.generated:
        return f"each device is its own {kind or 'source'} (generated per device)"
    if groups is None:
        return "none (use iid, dirichlet or shards partitions)"
    counts = np.bincount(np.unique(groups, return_inverse=True)[1])
    return (
        f"{len(counts)} {data.group_kind or kind or 'group'}s, "
        f"{counts.min()}–{counts.max()} training samples each (partition kind: natural)"
    )


def describe(name: str, seed: int = 0) -> DatasetFacts:
    """Load ``name`` (by ``seed``) and summarise it; raises the loader's located errors."""
    source = dataset_source(name, "dataset")
    data = load_task_data(name, seed)
    train = "generated per device" if data.generated else f"{len(data.y_train):,}"
    return DatasetFacts(
        name=name,
        description=source.description,
        task=source.task,
        classes=_classes(data),
        train_samples=train,
        test_samples=f"{len(data.y_test):,}",
        sample_shape="×".join(str(d) for d in data.sample_shape) + f" {data.x_test.dtype}",
        natural_groups=_groups(data, source.natural_groups),
        size_on_disk=_size(source.files()),
        licence=source.licence,
        source=source.source,
        requires=source.requires or "nothing beyond `make test`'s set-up",
    )


def preview_samples(
    data: TaskData, per_class: int = 8, max_classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` test samples of each of the first ``max_classes`` classes (for
    regression: the first test samples), as ``(x, y)``."""
    rng = np.random.default_rng(seed)
    if data.num_classes == 0:
        shown = per_class * max_classes * 10
        return data.x_test[:shown], data.y_test[:shown]
    picks: list[int] = []
    for c in range(min(data.num_classes, max_classes)):
        members = np.flatnonzero(data.y_test == c)
        picks.extend(rng.choice(members, size=min(per_class, len(members)), replace=False))
    index = np.array(picks, dtype=np.int64)
    return data.x_test[index], data.y_test[index]
