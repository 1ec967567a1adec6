"""The synthesized keyword-spotting set: bit-exact clips, features, cache, errors, learnability."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedsim.core.datasets import kws
from fedsim.core.errors import FedsimError

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in kws.PROGRAMS), reason="needs espeak-ng, flite and sox"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    return tmp_path


def test_speakers_are_many_distinct_and_fixed() -> None:
    found = kws.speakers()

    names = [s.name for s in found]
    assert len(found) >= 40
    assert len(set(names)) == len(names)
    assert {s.engine for s in found} == {"espeak-ng", "flite"}
    assert found == kws.speakers()


def test_classes_are_ten_words_silence_and_unknown() -> None:
    assert len(kws.CLASSES) == 12
    assert kws.CLASSES[:10] == kws.WORDS
    assert not set(kws.WORDS) & set(kws.UNKNOWN_WORDS)


@pytest.mark.parametrize("speaker", [0, -1], ids=["espeak-ng", "flite"])
def test_same_seed_gives_bit_identical_audio_and_features(speaker: int) -> None:
    voice = kws.speakers()[speaker]

    first = kws.synthesize(voice, "left", 0, seed=3)
    again = kws.synthesize(voice, "left", 0, seed=3)

    assert first.tobytes() == again.tobytes()
    assert kws.features(first).tobytes() == kws.features(again).tobytes()


def test_other_seed_or_take_gives_other_audio() -> None:
    voice = kws.speakers()[0]

    base = kws.synthesize(voice, "go", 0, seed=0)

    assert not np.array_equal(base, kws.synthesize(voice, "go", 0, seed=1))
    assert not np.array_equal(base, kws.synthesize(voice, "go", 1, seed=0))


@pytest.mark.parametrize("word", ["yes", "_silence_", "_unknown_"])
def test_audio_is_one_second_in_range(word: str) -> None:
    audio = kws.synthesize(kws.speakers()[1], word, 0, seed=0)

    assert audio.shape == (16_000,)
    assert audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0


def test_silence_has_far_less_energy_than_words() -> None:
    voices = kws.speakers()[::7]

    def rms(word: str) -> float:
        clips = [kws.synthesize(v, word, t, seed=0) for v in voices for t in range(2)]
        return float(np.sqrt(np.mean(np.square(clips))))

    assert rms("_silence_") < 0.2 * rms("stop")


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_features_are_49_frames_by_40_finite_float32(kind: str) -> None:
    audio = kws.synthesize(kws.speakers()[2], "down", 0, seed=0)

    found = kws.features(audio, kind)  # type: ignore[arg-type]

    assert found.shape == (49, 40)
    assert found.dtype == np.float32
    assert np.isfinite(found).all()


def test_logmel_of_a_tone_peaks_in_the_right_bin() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)).astype(np.float32)

    found = kws.features(tone)

    mels = np.linspace(2595 * np.log10(1 + 125 / 700), 2595 * np.log10(1 + 7500 / 700), 42)
    centres_hz = 700 * (10 ** (mels[1:-1] / 2595) - 1)  # HTK mel scale, 125–7500 Hz
    assert np.all(found.argmax(axis=1) == np.abs(centres_hz - 1000).argmin())


def test_mfcc_is_the_orthonormal_dct_of_logmel() -> None:
    audio = kws.synthesize(kws.speakers()[3], "up", 0, seed=0)
    logmel = kws.features(audio).astype(np.float64)

    mfcc = kws.features(audio, "mfcc")

    # an orthonormal transform keeps each frame's length, and its first row is the scaled mean
    norms = np.linalg.norm(mfcc, axis=1), np.linalg.norm(logmel, axis=1)
    np.testing.assert_allclose(*norms, rtol=1e-4)
    np.testing.assert_allclose(mfcc[:, 0], logmel.sum(axis=1) / np.sqrt(40), rtol=1e-4)


def test_features_reject_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="expected 16000 samples"):
        kws.features(np.zeros(8_000, dtype=np.float32))


def test_generate_writes_the_cache_and_reuses_it(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kws.generate(seed=1, takes=1, speakers_limit=2, words=("yes", "_silence_"))
    assert first.features.shape == (4, 49, 40)
    assert list(first.labels) == [0, 10] * 2
    assert len(kws.cache_files()) == 1

    def fail(*args: object) -> None:
        raise AssertionError("synthesized again instead of reading the cache")

    monkeypatch.setattr(kws, "synthesize", fail)
    again = kws.generate(seed=1, takes=1, speakers_limit=2, words=("yes", "_silence_"))

    assert again.features.tobytes() == first.features.tobytes()
    assert again.speaker_names == first.speaker_names


def test_a_corrupt_cache_is_regenerated(cache: Path) -> None:
    first = kws.generate(seed=2, takes=1, speakers_limit=1, words=("no",))
    (path,) = kws.cache_files()
    path.write_bytes(b"not a zip file")

    again = kws.generate(seed=2, takes=1, speakers_limit=1, words=("no",))

    assert again.features.tobytes() == first.features.tobytes()
    assert np.load(path)["features"].shape == (1, 49, 40)


def test_unknown_class_names_the_known_ones(cache: Path) -> None:
    with pytest.raises(FedsimError, match=r"unknown class 'yess'.*did you mean 'yes'"):
        kws.generate(words=("yess",))


def test_a_missing_program_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(FedsimError, match=r"'espeak-ng' not found.*apt-get install espeak-ng"):
        kws.speakers()


def test_words_are_learnable_on_held_out_takes(cache: Path) -> None:
    from sklearn.linear_model import RidgeClassifier

    words = ("yes", "no", "left", "stop", "_silence_")
    data = kws.generate(seed=0, takes=3, speakers_limit=20, words=words)
    x = data.features.reshape(len(data.labels), -1)
    train, test = data.takes < 2, data.takes == 2

    model = RidgeClassifier(alpha=10.0).fit(x[train], data.labels[train])  # closed form: fast
    accuracy = model.score(x[test], data.labels[test])

    assert accuracy > 0.6  # chance is 0.2; measured 0.89


def test_unknown_clips_say_a_word_from_the_unknown_list(cache: Path) -> None:
    found = kws.generate(seed=0, takes=3, speakers_limit=2, words=("_unknown_", "_silence_"))

    unknown = found.labels == kws.CLASSES.index("_unknown_")
    assert set(found.spoken[unknown]) <= set(kws.UNKNOWN_WORDS)
    assert set(found.spoken[~unknown]) == {""}


def test_synthesize_refuses_what_it_cannot_say() -> None:
    with pytest.raises(FedsimError, match=r"cannot say 'Yes!'; use lowercase letters"):
        kws.synthesize(kws.speakers()[0], "Yes!", 0, seed=0)


def test_generate_refuses_zero_takes(cache: Path) -> None:
    with pytest.raises(FedsimError, match=r"takes >= 1.*takes=0"):
        kws.generate(takes=0)


def test_load_task_holds_out_whole_speakers_of_both_engines(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = kws.generate(seed=0, takes=1, words=("yes", "_silence_"))
    monkeypatch.setattr(kws, "generate", lambda seed: small)

    task = kws.load_task(seed=5)

    assert task.groups_train is not None
    assert task.groups_test is not None
    test_names = {small.speaker_names[g] for g in task.groups_test}
    assert not set(task.groups_train) & set(task.groups_test)
    assert len(test_names) == round(0.2 * len(small.speaker_names))
    assert {n.split("/")[0] for n in test_names} == {"espeak-ng", "flite"}
    assert task.x_train.shape[1:] == (49, 40)
    assert task.num_classes == 12
    assert task.group_kind == "speaker"
    assert task.class_names == kws.CLASSES
    assert len(task.y_train) + len(task.y_test) == len(small.labels)
