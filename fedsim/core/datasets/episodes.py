"""Views of a handwritten character set for few-shot and class-incremental learning.

Any set of ``images [characters, hands, h, w]`` with an ``alphabets [characters]`` index works:
the KanjiVG renders (``kanjivg.Characters``) and real Omniglot (``omniglot.Characters``) alike.
Background/evaluation splits are by alphabet (no alphabet on both sides); episodes keep support
and query hands apart; missions bring new classes only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedsim.core.seeds import derive_seed

__all__ = ["CharacterSet", "class_incremental_stream", "episode", "split_alphabets"]


class CharacterSet(Protocol):
    @property
    def images(self) -> NDArray[np.float32]: ...  # [characters, hands, h, w], ink = 1
    @property
    def alphabets(self) -> NDArray[np.int64]: ...  # [characters]


def split_alphabets(
    chars: CharacterSet, seed: int, evaluation_fraction: float = 0.2
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(background, evaluation) character indices; every alphabet lies wholly in one of them."""
    present = np.unique(chars.alphabets)
    if not 0 < evaluation_fraction < 1 or len(present) < 2:
        raise ValueError(
            f"split_alphabets: need 0 < evaluation_fraction < 1 and ≥ 2 alphabets, got "
            f"{evaluation_fraction} and {len(present)}"
        )
    order = np.random.default_rng(derive_seed(seed, "alphabet-split")).permutation(present)
    count = min(max(1, round(evaluation_fraction * len(present))), len(present) - 1)
    evaluation = np.isin(chars.alphabets, order[:count])
    return np.flatnonzero(~evaluation).astype(np.int64), np.flatnonzero(evaluation).astype(np.int64)


def _stack(
    chars: CharacterSet, cls: NDArray[np.int64], who: NDArray[np.int64]
) -> NDArray[np.float32]:
    return chars.images[cls, who][:, None]  # [n, 1, 28, 28]


def episode(
    chars: CharacterSet,
    classes: NDArray[np.int64],
    n_way: int,
    k_shot: int,
    q_queries: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """An N-way K-shot episode from ``classes`` (character indices): support and query images
    ``[n, 1, 28, 28]`` class by class, labels 0..n_way-1. The episode's writers are split into a
    support pool and a query pool, so no writer appears on both sides."""
    writers = chars.images.shape[1]
    if (
        not 1 <= n_way <= len(classes)
        or k_shot < 1
        or q_queries < 1
        or k_shot + q_queries > writers
    ):
        raise ValueError(
            f"episode: need 1 ≤ n_way ≤ {len(classes)} classes and k_shot, q_queries ≥ 1 with "
            f"k_shot + q_queries ≤ {writers} writers, got {n_way}, {k_shot}, {q_queries}"
        )
    picked = rng.choice(np.asarray(classes, dtype=np.int64), n_way, replace=False)
    order = rng.permutation(writers)
    spare = writers - k_shot - q_queries
    pool = k_shot + spare * k_shot // (k_shot + q_queries)  # the pools share the spare writers
    support_w = np.concatenate([rng.choice(order[:pool], k_shot, replace=False) for _ in picked])
    query_w = np.concatenate([rng.choice(order[pool:], q_queries, replace=False) for _ in picked])
    labels = np.arange(n_way, dtype=np.int64)
    return (
        _stack(chars, np.repeat(picked, k_shot), support_w),
        np.repeat(labels, k_shot),
        _stack(chars, np.repeat(picked, q_queries), query_w),
        np.repeat(labels, q_queries),
    )


def class_incremental_stream(
    chars: CharacterSet,
    classes: NDArray[np.int64],
    classes_per_mission: int,
    samples_per_class: int,
    rng: np.random.Generator,
) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
    """Missions of ``classes_per_mission`` new classes each (the last may have fewer), every
    class in exactly one mission; images ``[n, 1, 28, 28]`` shuffled within a mission, from
    distinct writers per class; labels are the global character indices."""
    writers = chars.images.shape[1]
    if classes_per_mission < 1 or not 1 <= samples_per_class <= writers:
        raise ValueError(
            f"class_incremental_stream: need classes_per_mission ≥ 1 and 1 ≤ samples_per_class "
            f"≤ {writers} writers, got {classes_per_mission}, {samples_per_class}"
        )
    shuffled = rng.permutation(np.asarray(classes, dtype=np.int64))
    for start in range(0, len(shuffled), classes_per_mission):
        mission = np.repeat(shuffled[start : start + classes_per_mission], samples_per_class)
        who = np.concatenate(
            [
                rng.choice(writers, samples_per_class, replace=False)
                for _ in range(len(mission) // samples_per_class)
            ]
        )
        order = rng.permutation(len(mission))
        yield _stack(chars, mission[order], who[order]), mission[order]
