"""The KanjiVG Omniglot-like generator: parsing, selection, rendering, cache and the episode views.

Small sets (``limit=``) in a temporary cache keep the file fast; the glyph selection itself is
computed once per process.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from fedsim.core.datasets import kanjivg
from fedsim.core.datasets.kanjivg import (
    Characters,
    class_incremental_stream,
    episode,
    parse_path,
    render_characters,
    split_alphabets,
)
from fedsim.core.errors import FedsimError

SMALL = {"writers": 6, "limit": 60}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def chars(tmp_path_factory: pytest.TempPathFactory) -> Characters:
    """120 glyphs × 20 writers, shared by the tests that only read them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSIM_CACHE", str(tmp_path_factory.mktemp("kanjivg")))
        return render_characters(seed=0, writers=20, limit=120)


def _writers_of(chars: Characters, x: NDArray[np.float32], cls: NDArray[np.int64]) -> list[int]:
    """Which writer drew each image (images are exact copies of rows of ``chars.images``)."""
    return [
        int(np.flatnonzero((chars.images[c] == image[0]).all(axis=(1, 2)))[0])
        for image, c in zip(x, cls, strict=True)
    ]


# --- SVG path data ----------------------------------------------------------------------------


def test_parse_path_turns_every_command_into_absolute_cubics() -> None:
    # Prepare: moveto, relative cubic, smooth cubic, lineto, close; a second subpath with h/v
    d = "M10,20c1,2,3,4,5,6s1,1,2,2L0,0z m1-1 h2v3"

    # Execute
    first, second = parse_path(d)

    # Assert: S mirrors the previous control point; lines are cubics at thirds; z returns
    expected = [[10, 20], [11, 22], [13, 24], [15, 26], [17, 28], [16, 27], [17, 28]]
    np.testing.assert_allclose(first[:7], expected)
    np.testing.assert_allclose(first[-1], [10, 20])
    np.testing.assert_allclose(first[7:9], [[17 * 2 / 3, 28 * 2 / 3], [17 / 3, 28 / 3]])
    np.testing.assert_allclose(second[[0, 3, 6]], [[11, 19], [13, 19], [13, 22]])


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ("M1,2 Q3,4,5,6", "unsupported path command 'Q'"),
        ("M1,2 C3,4", "command 'C' needs 6 numbers"),
        ("c1,2,3,4,5,6", "does not start with a moveto"),
        ("5,6", "number '5' without a command"),
    ],
)
def test_parse_path_rejects_bad_data(d: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_path(d)


# --- selection --------------------------------------------------------------------------------


def test_stroke_count_filter_keeps_only_simple_glyphs() -> None:
    folder = kanjivg._kanji_dir()
    counts = {chr(int(p.stem, 16)): n for p, n in kanjivg._stroke_counts(folder)}

    whole_only = kanjivg._glyphs(folder, 3, 0)
    topped_up = kanjivg._glyphs(folder, 4, 2600)

    assert whole_only
    assert all(len(g.strokes) <= 3 for g in whole_only)
    assert all(counts[g.name] <= 3 for g in whole_only)
    assert "語" not in {g.name for g in topped_up}  # 14 strokes: only as a subset
    assert len(topped_up) == 2600
    assert all(1 <= len(g.strokes) <= 4 for g in topped_up)
    for g in topped_up:  # a subset "X:a-b" holds strokes a..b of a character with more than 4
        if ":" in g.name:
            char, span = g.name.split(":")
            first, last = map(int, span.split("-"))
            assert counts[char] > 4
            assert last - first + 1 == len(g.strokes)


def test_alphabets_are_balanced_groups() -> None:
    glyphs = kanjivg._glyphs(kanjivg._kanji_dir(), 4, 2600)

    alphabet, names = kanjivg._alphabets(glyphs, 50)

    sizes = np.bincount(alphabet, minlength=50)
    assert len(names) == 50
    assert len(set(names)) == 50
    assert sizes.min() >= 25
    assert sizes.max() <= 1.5 * len(glyphs) / 50 + 1
    hiragana = {alphabet[i] for i, g in enumerate(glyphs) if g.family == "hiragana"}
    assert all("hiragana" in names[a] for a in hiragana)  # a script stays in its own alphabets


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)

    with pytest.raises(FedsimError, match=r"not installed; .*pip install kanjivg"):
        kanjivg._kanji_dir()


def _fake_kanji(folder: Path, bad: int) -> None:
    good = (kanjivg._kanji_dir() / "04e00.svg").read_text(encoding="utf-8")
    folder.mkdir()
    (folder / "04e00.svg").write_text(good, encoding="utf-8")
    for i in range(bad):  # parsable XML count, broken path data
        name = f"{0x4E01 + i:05x}.svg"
        (folder / name).write_text(good.replace('d="M11', 'd="X11'), encoding="utf-8")


@pytest.mark.parametrize("bad", [2, kanjivg.MAX_BAD_FILES + 1])
def test_unparsable_files_are_counted_or_fail(
    bad: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / f"kanji-{bad}"
    _fake_kanji(folder, bad)

    if bad > kanjivg.MAX_BAD_FILES:
        with pytest.raises(FedsimError, match=rf"{bad} KanjiVG files cannot be parsed.*reinstall"):
            kanjivg._glyphs(folder, 4, 0)
    else:
        with caplog.at_level(logging.WARNING):
            glyphs = kanjivg._glyphs(folder, 4, 0)
        assert [g.name for g in glyphs] == ["一"]
        assert f"skipped {bad} unparsable files" in caplog.text


# --- rendering --------------------------------------------------------------------------------


def test_same_seed_same_images_other_seed_other_images(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = render_characters(seed=0, **SMALL)
    monkeypatch.setenv("FEDSIM_CACHE", str(cache.parent / "elsewhere"))  # render again

    again = render_characters(seed=0, **SMALL)
    other = render_characters(seed=1, **SMALL)

    np.testing.assert_array_equal(first.images, again.images)
    assert first.codepoints == other.codepoints  # the selection does not depend on the seed
    assert not np.array_equal(first.images, other.images)


def test_images_are_inked_but_not_saturated(chars: Characters) -> None:
    x = chars.images

    assert x.dtype == np.float32
    assert x.shape == (120, 20, 28, 28)
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    assert (x.max(axis=(2, 3)) > 0.5).all()  # every image has ink
    ink = x.mean(axis=(2, 3))
    assert 0.04 < ink.mean() < 0.14  # real Omniglot at 28 px: 0.08
    assert ink.max() < 0.35


def test_writers_draw_differently(chars: Characters) -> None:
    pairs = [(w, v) for w in range(5) for v in range(w + 1, 5)]
    for w, v in pairs:
        assert not np.array_equal(chars.images[:, w], chars.images[:, v])


def test_limit_spans_many_alphabets(chars: Characters) -> None:
    assert len(np.unique(chars.alphabets)) == 50  # 120 glyphs, round-robin over 50 alphabets
    assert len(chars.alphabet_names) == 50
    assert list(chars.alphabets) == sorted(chars.alphabets)


def test_progress_bar_renders() -> None:
    chars = render_characters(writers=2, limit=3, progress=True)
    assert chars.images.shape == (3, 2, 28, 28)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"writers": 0}, "writers=0"),
        ({"limit": 0}, "limit=0"),
        ({"characters": -1}, "characters=-1"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=rf"render_characters: need .*{message}"):
        render_characters(**kwargs)  # type: ignore[arg-type]


# --- cache ------------------------------------------------------------------------------------


def _no_render(*args: object) -> None:
    raise AssertionError("rendered although the cache holds the set")


def test_cache_hit_does_not_render(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = render_characters(**SMALL)
    files = list(cache.glob("kanjivg-*.npz"))
    monkeypatch.setattr(kanjivg, "_render_one", _no_render)

    second = render_characters(**SMALL)

    assert len(files) == 1
    assert f"v{kanjivg.GENERATOR_VERSION}-" in files[0].name
    assert not list(cache.glob("*.tmp"))  # written atomically, nothing left over
    np.testing.assert_array_equal(first.images, second.images)
    assert (first.codepoints, first.alphabet_names) == (second.codepoints, second.alphabet_names)
    np.testing.assert_array_equal(first.alphabets, second.alphabets)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # a partial write
        lambda data: b"not a zip file",
        lambda data: data[:100] + bytes(200) + data[300:],  # flipped bytes: the CRC catches it
    ],
)
def test_damaged_cache_is_rendered_again(
    damage: Callable[[bytes], bytes], cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = render_characters(**SMALL)
    (path,) = cache.glob("kanjivg-*.npz")
    path.write_bytes(damage(path.read_bytes()))

    with caplog.at_level(logging.WARNING):
        second = render_characters(**SMALL)

    assert "rendering again" in caplog.text
    np.testing.assert_array_equal(first.images, second.images)
    assert kanjivg._load_cached(path, SMALL["writers"]) is not None  # repaired on disk


def test_cache_with_wrong_shape_is_rendered_again(cache: Path) -> None:
    first = render_characters(**SMALL)
    (path,) = cache.glob("kanjivg-*.npz")
    np.savez_compressed(
        path,
        images=np.zeros((2, 2, 28, 28), np.uint8),
        alphabets=np.zeros(2, np.int64),
        alphabet_names=np.array(["a"]),
        codepoints=np.array(["x", "y"]),
    )

    second = render_characters(**SMALL)

    np.testing.assert_array_equal(first.images, second.images)


# --- views ------------------------------------------------------------------------------------


def test_alphabet_split_is_disjoint_and_covering(chars: Characters) -> None:
    background, evaluation = split_alphabets(chars, seed=3, evaluation_fraction=0.2)

    assert sorted([*background, *evaluation]) == list(range(len(chars.codepoints)))
    assert not set(chars.alphabets[background]) & set(chars.alphabets[evaluation])
    assert len(set(chars.alphabets[evaluation])) == 10  # 20% of 50 alphabets
    again, _ = split_alphabets(chars, seed=3)
    other, _ = split_alphabets(chars, seed=4)
    np.testing.assert_array_equal(background, again)
    assert not np.array_equal(background, other)


def test_alphabet_split_refuses_a_bad_fraction(chars: Characters) -> None:
    with pytest.raises(ValueError, match=r"0 < evaluation_fraction < 1 .* got 1.0"):
        split_alphabets(chars, seed=0, evaluation_fraction=1.0)


def test_episode_shapes_labels_and_disjoint_writers(chars: Characters) -> None:
    classes = np.arange(40, dtype=np.int64)
    rng = np.random.default_rng(0)

    sx, sy, qx, qy = episode(chars, classes, n_way=5, k_shot=3, q_queries=4, rng=rng)

    assert sx.shape == (15, 1, 28, 28)
    assert qx.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(sy, np.repeat(np.arange(5), 3))
    np.testing.assert_array_equal(qy, np.repeat(np.arange(5), 4))
    # find each image's character and writer: support and query writers never meet
    cls = [int(np.flatnonzero((chars.images == x[0]).all(axis=(2, 3)).any(1))[0]) for x in sx[::3]]
    assert len(set(cls)) == 5
    assert set(cls) <= set(classes.tolist())
    support = _writers_of(chars, sx, np.repeat(cls, 3))
    query = _writers_of(chars, qx, np.repeat(cls, 4))
    assert not set(support) & set(query)
    assert all(len(set(support[i : i + 3])) == 3 for i in range(0, 15, 3))


def test_episode_needs_enough_writers(chars: Characters) -> None:
    with pytest.raises(ValueError, match=r"k_shot \+ q_queries ≤ 20 writers, got 5, 10, 11"):
        episode(chars, np.arange(10), 5, 10, 11, np.random.default_rng(0))


def test_class_incremental_missions_are_disjoint_without_replacement(chars: Characters) -> None:
    classes = np.arange(10, 33, dtype=np.int64)  # 23 classes: missions of 5, 5, 5, 5, 3

    missions = list(class_incremental_stream(chars, classes, 5, 4, np.random.default_rng(1)))

    assert [len(set(y.tolist())) for _, y in missions] == [5, 5, 5, 5, 3]
    seen = [c for _, y in missions for c in set(y.tolist())]
    assert sorted(seen) == classes.tolist()  # every class once, in exactly one mission
    for x, y in missions:
        assert x.shape == (len(y), 1, 28, 28)
        assert (np.bincount(y)[np.unique(y)] == 4).all()
        who = _writers_of(chars, x, y)
        for c in np.unique(y):
            assert len({w for w, label in zip(who, y, strict=True) if label == c}) == 4


def test_one_nearest_neighbour_beats_chance_on_5_way_5_shot(chars: Characters) -> None:
    # a learnability check: raw-pixel 1-NN on unseen writers (chance is 20%; measured ~54%)
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(60):
        sx, sy, qx, qy = episode(chars, np.arange(120), 5, 5, 5, rng)
        distance = ((qx.reshape(len(qx), 1, -1) - sx.reshape(1, len(sx), -1)) ** 2).sum(-1)
        hits.append(sy[distance.argmin(1)] == qy)
    assert np.mean(hits) > 0.4


def test_load_task_pools_background_characters_by_writer(
    chars: Characters, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kanjivg, "render_characters", lambda **_: chars)

    task = kanjivg.load_task(seed=5)

    background, _ = split_alphabets(chars, seed=5)
    assert task.num_classes == len(background) == len(task.class_names)
    assert task.class_names == tuple(chars.codepoints[i] for i in background)
    assert task.x_train.shape == (len(background) * 16, 1, 28, 28)
    assert task.x_test.shape == (len(background) * 4, 1, 28, 28)
    assert task.group_kind == "writer"
    assert task.licence == "CC BY-SA 3.0 (KanjiVG, Ulrich Apel)"
    assert task.groups_train is not None
    assert task.groups_test is not None
    assert not set(task.groups_train.tolist()) & set(task.groups_test.tolist())
    assert set(task.y_train.tolist()) == set(range(task.num_classes))
    i = 37  # a sample is its class's character drawn by its writer
    row = background[task.y_train[i]]
    np.testing.assert_array_equal(task.x_train[i, 0], chars.images[row, task.groups_train[i]])


def test_empty_data_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "kanji").mkdir()
    with pytest.raises(FedsimError, match=r"kanji: no KanjiVG character SVGs found; reinstall"):
        kanjivg._stroke_counts(tmp_path / "kanji")
