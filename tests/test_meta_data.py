"""The datasets of online federated meta-learning: few-shot character tasks, held-out rooms, and
the stratified support samples of held-out devices."""

from __future__ import annotations

import numpy as np

from fedsim.core.data import load_task_data
from fedsim.core.datasets.episodes import split_alphabets
from fedsim.core.datasets.fewshot import few_shot_task
from fedsim.core.scenario import AdaptSpec
from server.adapt import held_out_devices


class _Marked:
    """A character set whose every image is filled with its character's index: x names its class."""

    def __init__(self, characters: int = 40, writers: int = 12, alphabets: int = 8) -> None:
        self.images = np.broadcast_to(
            np.arange(characters, dtype=np.float32)[:, None, None, None],
            (characters, writers, 4, 4),
        ).copy()
        self.alphabets = np.arange(characters, dtype=np.int64) % alphabets


def test_few_shot_devices_are_tasks_of_background_characters_and_tests_unseen_alphabets() -> None:
    chars = _Marked()
    data = few_shot_task("marked", chars, seed=1, licence="test")
    background, evaluation = split_alphabets(chars, 1)
    assert data.generate is not None
    x, y = data.generate(123, 23, None)
    again, _ = data.generate(123, 23, None)
    assert np.array_equal(x, again)
    assert np.bincount(y).tolist() == [5, 5, 5, 4, 4]  # balanced, 5 ways
    classes = x[:, 0, 0, 0].astype(np.int64)
    assert set(classes) <= set(background.tolist())
    assert all(len(set(classes[y == label])) == 1 for label in range(5))  # a label = one class
    assert data.groups_test is not None
    assert len(np.unique(data.groups_test)) == 100
    assert set(data.x_test[:, 0, 0, 0].astype(np.int64)) <= set(evaluation.tolist())
    first = data.groups_test == 0
    assert np.bincount(data.y_test[first]).tolist() == [10] * 5


def test_presence_rooms_holds_out_other_rooms() -> None:
    data = load_task_data("presence-rooms", 0)
    assert data.groups_train is not None
    assert data.groups_test is not None
    assert not set(np.unique(data.groups_train)) & set(np.unique(data.groups_test))
    assert len(np.unique(data.groups_test)) == 8


def test_classification_support_covers_the_classes_evenly() -> None:
    data = few_shot_task("marked", _Marked(), seed=1, licence="test")
    for device in held_out_devices(data, AdaptSpec(support=7), seed=3)[:20]:
        counts = np.bincount(device.y_support, minlength=5)
        assert counts.max() - counts.min() <= 1
        assert len(device.y_query) == 50 - 7
