"""N-way few-shot character tasks, one per device: the Omniglot setting of Reptile and TinyReptile.

Each device is a task: ``N_WAY`` characters of the *background* alphabets, drawn from the seed and
its id, labelled 0..N−1 in that order (so a label means nothing across devices: what transfers is
how to learn, which is the point of meta-learning). Its samples are those characters by random
writers. The test split is ``TEST_TASKS`` tasks from the *evaluation* alphabets (never seen in
training), ``TEST_PER_CLASS`` writers per character, each task one held-out group; held-out
evaluation (``evaluation.adapt``) adapts on a few of them per class and scores on the rest.

Works on any ``CharacterSet``: KanjiVG renders (``kanjivg-5way``) and real Omniglot
(``omniglot-5way``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets.base import TaskData, character_task
from fedsim.core.datasets.episodes import CharacterSet, split_alphabets
from fedsim.core.seeds import derive_seed

__all__ = [
    "N_WAY",
    "TEST_PER_CLASS",
    "TEST_TASKS",
    "few_shot_task",
    "split_classes",
    "unseen_classes_task",
    "unseen_pooled_task",
]

N_WAY = 5
TEST_TASKS = 100
TEST_PER_CLASS = 10  # e.g. 5 support + 5 query per character


def _draw(
    chars: CharacterSet,
    classes: NDArray[np.int64],
    per_class: NDArray[np.int64],
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``per_class[j]`` images of ``classes[j]`` by distinct writers (as far as writers go)."""
    writers = chars.images.shape[1]
    xs, ys = [], []
    for label, (c, count) in enumerate(zip(classes.tolist(), per_class.tolist(), strict=True)):
        who = np.concatenate([rng.permutation(writers) for _ in range(-(-count // writers) or 1)])[
            :count
        ]
        xs.append(chars.images[c, who][:, None])
        ys.append(np.full(count, label, dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def few_shot_task(name: str, chars: CharacterSet, seed: int, licence: str) -> TaskData:
    background, evaluation = split_alphabets(chars, seed)

    def generate(
        device_seed: int, n: int, label_probs: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        rng = np.random.default_rng(device_seed)
        classes = rng.choice(background, N_WAY, replace=False)
        per_class = np.full(N_WAY, n // N_WAY, dtype=np.int64)
        per_class[: n % N_WAY] += 1
        x, y = _draw(chars, classes, per_class, rng)
        order = rng.permutation(n)  # a stream, not sorted by class
        return x[order], y[order]

    xs, ys, groups = [], [], []
    for task in range(TEST_TASKS):
        rng = np.random.default_rng(derive_seed(seed, name, "test", task))
        classes = rng.choice(evaluation, N_WAY, replace=False)
        x, y = _draw(chars, classes, np.full(N_WAY, TEST_PER_CLASS, dtype=np.int64), rng)
        xs.append(x)
        ys.append(y)
        groups.append(np.full(len(y), task, dtype=np.int64))
    h, w = chars.images.shape[2:]
    return TaskData(
        name,
        np.zeros((0, 1, h, w), np.float32),
        np.zeros(0, np.int64),
        np.concatenate(xs),
        np.concatenate(ys),
        N_WAY,
        licence,
        generate,
        groups_test=np.concatenate(groups),
        group_kind="task",
        class_names=tuple(f"class {i} of the task" for i in range(N_WAY)),
    )


UNSEEN_TEST_WRITERS = 5


def unseen_classes_task(name: str, chars: CharacterSet, seed: int, licence: str) -> TaskData:
    """Every character of the *evaluation* alphabets a class (none seen by an encoder pre-trained
    on the background alphabets with the same seed: ``fedsim.core.algorithms.pretrain``);
    ``UNSEEN_TEST_WRITERS`` writers, chosen by seed, hold the test drawings, the others the
    training drawings. The classes federated reconnaissance learns incrementally."""
    _, evaluation = split_alphabets(chars, seed)
    writers = chars.images.shape[1]
    test = np.random.default_rng(derive_seed(seed, name, "test-writers")).permutation(writers)
    return character_task(
        name,
        chars.images[evaluation],
        np.arange(writers, dtype=np.int64),
        test[:UNSEEN_TEST_WRITERS].astype(np.int64),
        licence=licence,
        class_names=tuple(str(c) for c in evaluation.tolist()),
        group_kind="writer",
    )


def split_classes(num_classes: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(background, evaluation) classes of a pooled dataset: a seeded half each (background gets
    the odd one). An encoder pre-trained on the background never sees the evaluation classes."""
    order = np.random.default_rng(derive_seed(seed, "class-split")).permutation(num_classes)
    cut = -(-num_classes // 2)
    return np.sort(order[:cut]).astype(np.int64), np.sort(order[cut:]).astype(np.int64)


def unseen_pooled_task(name: str, data: TaskData, seed: int) -> TaskData:
    """``data`` restricted to its evaluation classes (``split_classes``), relabelled 0..m−1, with
    its natural groups and its train/test split kept: the classes a pooled dataset's devices
    reconnoitre after an encoder was pre-trained on the others."""
    _, evaluation = split_classes(data.num_classes, seed)
    relabel = np.full(data.num_classes, -1, dtype=np.int64)
    relabel[evaluation] = np.arange(len(evaluation))
    train, test = np.isin(data.y_train, evaluation), np.isin(data.y_test, evaluation)
    names = data.class_names or tuple(str(c) for c in range(data.num_classes))
    return TaskData(
        name,
        data.x_train[train],
        relabel[data.y_train[train]],
        data.x_test[test],
        relabel[data.y_test[test]],
        len(evaluation),
        data.licence,
        groups_train=None if data.groups_train is None else data.groups_train[train],
        groups_test=None if data.groups_test is None else data.groups_test[test],
        group_kind=data.group_kind,
        class_names=tuple(names[c] for c in evaluation.tolist()),
    )
