"""Keyword spotting (KWS) clips synthesized offline with espeak-ng and flite, resampled by sox.

Twelve classes as in TFLite micro-speech / Speech Commands: ten command words, ``_silence_``
(background noise only) and ``_unknown_`` (another word from ``UNKNOWN_WORDS``). A *speaker* is
an engine, a voice (espeak-ng accent + variant, or a flite voice), a base pitch and a base speed;
each utterance jitters pitch and speed, shifts the word in time and adds noise at a random SNR,
all drawn from ``derive_seed(seed, "kws", speaker, word, take)``. Clips are 16 kHz mono, 1 s.
``sox -R -D`` (fixed random state, no dither) into float32 makes every clip bit-exact across
runs. Features are 49 frames × 40 log-mel bins (30 ms windows, 20 ms stride), or their MFCCs.
Generated sets are cached as .npz under ``cache_dir()``, keyed by everything that shapes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets.base import DatasetSource, TaskData, cache_dir
from fedsim.core.errors import FedsimError, known_names
from fedsim.core.seeds import derive_seed

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "LICENCE",
    "SOURCE",
    "UNKNOWN_WORDS",
    "WORDS",
    "KwsSet",
    "Speaker",
    "cache_files",
    "features",
    "generate",
    "load_task",
    "speakers",
    "synthesize",
]

GENERATOR_VERSION = 1  # bump when anything below changes what a clip or its features hold
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
CLASSES = (*WORDS, SILENCE, UNKNOWN)
UNKNOWN_WORDS = (  # Speech Commands v2's auxiliary words
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip
LICENCE = (
    "generated locally with espeak-ng (GPL-3.0-or-later) and flite (CMU/Edinburgh BSD-style "
    "licence) through sox; those licences cover the programs, not the speech they output, "
    "so the generated clips carry no licence restriction"
)
PROGRAMS = ("espeak-ng", "flite", "sox")
INSTALL = "install it: apt-get install espeak-ng flite sox"

RATE, SAMPLES = 16_000, 16_000  # 16 kHz, 1 s
WINDOW, STRIDE, FFT, MEL_BINS = 480, 320, 512, 40  # 30 ms, 20 ms
FRAMES = 1 + (SAMPLES - WINDOW) // STRIDE  # 49
MEL_LOW_HZ, MEL_HIGH_HZ, LOG_FLOOR = 125.0, 7500.0, 1e-6  # as TFLite micro-speech
MAX_SHIFT = RATE // 10  # ±100 ms time shift
DEFAULT_TAKES, WORKERS, CORPUS_SEED, TEST_SPEAKER_FRACTION = 5, 2, 0, 0.2

# Preferred voices, in a fixed order; those missing from the installed engines are skipped.
# 8 accents × 20 variants pair up (i % 8, i % 20) into 40 distinct espeak-ng speakers.
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
ESPEAK_VARIANTS = (
    "m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5",
    "m6", "Annie", "m7", "Andrea", "klatt", "belinda", "klatt2", "linda", "klatt3", "steph",
)  # fmt: skip
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")  # awb_time is a limited-domain (clock) voice
FLITE_TAKES_PER_VOICE = 2  # each flite voice at two base pitches/speeds


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker. ``pitch_st``: semitones from the voice's default; ``speed``: rate ×."""

    engine: Literal["espeak-ng", "flite"]
    voice: str  # espeak-ng accent ("en-gb-scotland") or flite voice ("slt")
    variant: str  # espeak-ng variant ("f3"), or the flite speaker's index ("1")
    pitch_st: float
    speed: float

    @property
    def name(self) -> str:
        joiner = "+" if self.engine == "espeak-ng" else "#"
        return f"{self.engine}/{self.voice}{joiner}{self.variant}"


@dataclass(frozen=True)
class KwsSet:
    """A generated set. ``labels`` index ``CLASSES``; ``speakers`` index ``speaker_names``;
    ``spoken`` is the word actually said (the ``_unknown_`` word, or "" for silence)."""

    features: NDArray[np.float32]  # [N, 49, 40]
    labels: NDArray[np.int64]  # [N]
    speakers: NDArray[np.int64]  # [N]
    takes: NDArray[np.int64]  # [N]
    spoken: NDArray[np.str_]  # [N]
    speaker_names: tuple[str, ...]
    audio: NDArray[np.float32] | None = None  # [N, 16000] when asked for


def _require_programs() -> dict[str, str]:
    """Each program's path; a clear error naming the first missing one."""
    found = {p: shutil.which(p) for p in PROGRAMS}
    for program, path in found.items():
        if path is None:
            raise FedsimError(
                "dataset kws",
                f"program '{program}' not found on PATH (needed to synthesize the clips)",
                INSTALL,
            )
    return {p: path for p, path in found.items() if path}


def _run(command: list[str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        what = f"'{' '.join(command)}' failed (exit {done.returncode}): {done.stderr[-300:]!r}"
        raise FedsimError("dataset kws", what, f"check that it runs; if not, {INSTALL}")
    return done.stdout


@lru_cache(maxsize=8)
def _version(path: str) -> str:
    done = subprocess.run([path, "--version"], capture_output=True, check=False)  # flite exits 1
    text = (done.stdout + done.stderr).decode(errors="replace")
    lines = [
        line.removeprefix(f"{path}:").split("Data at")[0].strip()  # sox starts with its path
        for line in text.splitlines()
        if line.strip()
    ]
    return next((line for line in lines if "version" in line.lower()), lines[0] if lines else "")


@lru_cache(maxsize=8)
def _installed_voices(espeak: str, flite: str) -> tuple[frozenset[str], frozenset[str], str]:
    """(espeak-ng accents, espeak-ng variants, flite's voice list) as the engines report them."""
    accents = {
        row.split()[1]
        for row in _run([espeak, "--voices=en"]).decode().splitlines()[1:]
        if len(row.split()) > 4 and not row.split()[4].startswith("mb/")  # MBROLA: not installed
    }
    variants = {
        row.split()[4].removeprefix("!v/")
        for row in _run([espeak, "--voices=variant"]).decode().splitlines()[1:]
        if len(row.split()) > 4
    }
    return frozenset(accents), frozenset(variants), _run([flite, "-lv"]).decode()


def _base_voice(engine: str, voice: str, variant: str) -> tuple[float, float]:
    """A speaker's fixed base pitch (semitones) and speed (×), independent of any run seed."""
    rng = np.random.default_rng(derive_seed(0, "kws", "speaker", engine, voice, variant))
    return round(float(rng.uniform(-3.0, 3.0)), 2), round(float(rng.uniform(0.85, 1.15)), 3)


def speakers() -> list[Speaker]:
    """The fixed speaker list: 40 espeak-ng accent+variant pairs, then 2 per flite voice."""
    paths = _require_programs()
    accents, variants, flite_list = _installed_voices(paths["espeak-ng"], paths["flite"])
    found: list[Speaker] = []
    accent_count, variant_count = len(ESPEAK_ACCENTS), len(ESPEAK_VARIANTS)
    for i in range(math.lcm(accent_count, variant_count)):
        accent, variant = ESPEAK_ACCENTS[i % accent_count], ESPEAK_VARIANTS[i % variant_count]
        if accent in accents and variant in variants:
            found.append(Speaker("espeak-ng", accent, variant, *_base_voice("e", accent, variant)))
    flite_voices = set(flite_list.split(":")[-1].split())
    for voice in (v for v in FLITE_VOICES if v in flite_voices):
        for k in range(1, FLITE_TAKES_PER_VOICE + 1):
            found.append(Speaker("flite", voice, str(k), *_base_voice("f", voice, str(k))))
    return found


def _speech(speaker: Speaker, text: str, pitch_st: float, speed: float) -> NDArray[np.float32]:
    """The engine's rendering of ``text``, as float32 at 16 kHz via ``sox -R``."""
    effects: list[str] = []
    if speaker.engine == "espeak-ng":  # espeak's -p is 0..99 (≈ 6.5 steps per semitone)
        pitch = str(int(np.clip(round(50 + 6.5 * pitch_st), 0, 99)))
        words_per_min = str(round(175 * speed))
        voice = f"{speaker.voice}+{speaker.variant}"
        wav = _run(["espeak-ng", "-v", voice, "-p", pitch, "-s", words_per_min, "--stdout", text])
    else:  # flite's f0 target is ignored by some voices (rms): shift pitch in sox instead
        stretch = f"duration_stretch={1.0 / speed:.4f}"
        command = ["flite", "-voice", speaker.voice, "--setf", stretch, "-t", text]
        wav = _run([*command, "-o", "/dev/stdout"])
        effects = ["pitch", str(round(100 * pitch_st))]
    raw_f32 = ["-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1", "-r", str(RATE)]
    sox = ["sox", "-R", "-D", "-t", "wav", "-", *raw_f32, "-", *effects, "rate", "-h", str(RATE)]
    return np.frombuffer(_run(sox, wav), dtype="<f4").astype(np.float32)


def _trim(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """The word without the engine's leading and trailing silence (below 2% of the peak)."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * float(np.abs(x).max(initial=0.0)))
    if loud.size == 0:
        raise FedsimError("dataset kws", "the speech engine returned silence", INSTALL)
    return x[loud[0] : loud[-1] + 1]


def _noise(rng: np.random.Generator) -> NDArray[np.float64]:
    """1 s of background noise at unit RMS: white, pink, brown, or mains hum over hiss."""
    kind = int(rng.integers(4))
    white: NDArray[np.float64] = rng.standard_normal(SAMPLES)
    if kind in (1, 2):  # shape the spectrum: pink ∝ 1/√f, brown ∝ 1/f in amplitude
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.arange(spectrum.size), 1.0)
        white = np.fft.irfft(spectrum / f ** (0.5 * kind), n=SAMPLES)
    elif kind == 3:
        t = np.arange(SAMPLES) / RATE
        mains = float(rng.choice([50.0, 60.0]))
        amps, phases = rng.uniform(0.2, 1.0, 5), rng.uniform(0, 2 * np.pi, 5)
        harmonics = np.arange(1, 6)[:, None]  # [5, 1] × [16000] → [5, 16000]
        hum = amps @ np.sin(2 * np.pi * mains * harmonics * t + phases[:, None])
        white = hum + 0.1 * white
    unit: NDArray[np.float64] = white / np.sqrt(np.mean(white**2))
    return unit


def _place(speech: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float64]:
    """The word centred in 1 s, shifted by up to ±100 ms, cropped if it is longer."""
    out = np.zeros(SAMPLES)
    shift = int(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1))
    if speech.size >= SAMPLES:
        start = (speech.size - SAMPLES) // 2
        out[:] = speech[start : start + SAMPLES]
    else:
        start = int(np.clip((SAMPLES - speech.size) // 2 + shift, 0, SAMPLES - speech.size))
        out[start : start + speech.size] = speech
    return out


def _mix(speech: NDArray[np.float32] | None, rng: np.random.Generator) -> NDArray[np.float32]:
    """Word (or nothing) + noise at 5–30 dB SNR, at a peak of 0.1–0.9 (silence: RMS 3e-4–1e-2)."""
    noise = _noise(rng)
    snr_db = rng.uniform(5, 30)
    peak, silence_rms = 10 ** rng.uniform(-1, -0.05), 10 ** rng.uniform(-3.5, -2)
    if speech is None:
        return (noise * silence_rms).astype(np.float32)
    word = _trim(speech)
    rms = float(np.sqrt(np.mean(word.astype(np.float64) ** 2)))
    clip = _place(word, rng) + noise * rms / 10 ** (snr_db / 20)
    scaled: NDArray[np.float64] = clip * (peak / np.abs(clip).max())
    return scaled.astype(np.float32)


def _check_word(word: str) -> None:
    if word not in (SILENCE, UNKNOWN) and not re.fullmatch(r"[a-z]+", word):
        raise FedsimError(
            "dataset kws", f"cannot say {word!r}", f"use lowercase letters or one of {CLASSES}"
        )


def _unknown_word(speaker: Speaker, take: int, seed: int) -> str:
    return UNKNOWN_WORDS[
        derive_seed(seed, "kws", "unknown", speaker.name, take) % len(UNKNOWN_WORDS)
    ]


def synthesize(speaker: Speaker, word: str, take: int, seed: int) -> NDArray[np.float32]:
    """One 1 s clip (16,000 float32 samples in [-1, 1]) of ``speaker`` saying ``word``.

    ``word`` is any lowercase word, ``_silence_`` (noise only) or ``_unknown_`` (a word from
    ``UNKNOWN_WORDS`` chosen by seed, speaker and take).
    """
    _require_programs()
    _check_word(word)
    rng = np.random.default_rng(derive_seed(seed, "kws", speaker.name, word, take))
    pitch_st = speaker.pitch_st + rng.uniform(-0.5, 0.5)  # per-utterance jitter
    speed = speaker.speed * rng.uniform(0.93, 1.07)
    if word == SILENCE:
        return _mix(None, rng)
    text = _unknown_word(speaker, take, seed) if word == UNKNOWN else word
    return _mix(_speech(speaker, text, pitch_st, speed), rng)


@lru_cache(maxsize=1)
def _mel_matrix() -> NDArray[np.float64]:
    """[40, 257] triangular filters, equally spaced in HTK mels between 125 and 7500 Hz."""
    low_mel, high_mel = (2595 * np.log10(1 + hz / 700) for hz in (MEL_LOW_HZ, MEL_HIGH_HZ))
    edges = 700 * (10 ** (np.linspace(low_mel, high_mel, MEL_BINS + 2) / 2595) - 1)
    hz = np.arange(FFT // 2 + 1) * RATE / FFT
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (hz - low) / (centre - low), (high - hz) / (high - centre)
    filters: NDArray[np.float64] = np.maximum(0.0, np.minimum(rising, falling))
    return filters


@lru_cache(maxsize=1)
def _dct_matrix() -> NDArray[np.float64]:
    """[40, 40] orthonormal DCT-II."""
    n = np.arange(MEL_BINS)
    dct: NDArray[np.float64] = np.cos(np.pi / MEL_BINS * (n[None, :] + 0.5) * n[:, None])
    dct *= np.sqrt(2 / MEL_BINS)
    dct[0] /= np.sqrt(2)
    return dct


def features(
    audio: NDArray[np.float32], kind: Literal["logmel", "mfcc"] = "logmel"
) -> NDArray[np.float32]:
    """[49, 40] log-mel energies (natural log, floor 1e-6) of a 1 s clip, or their MFCCs."""
    if audio.shape != (SAMPLES,):
        raise ValueError(f"expected {SAMPLES} samples (1 s at 16 kHz), got shape {audio.shape}")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    frames = audio[np.arange(FRAMES)[:, None] * STRIDE + np.arange(WINDOW)] * hann
    power = np.abs(np.fft.rfft(frames, n=FFT)) ** 2  # [49, 257]
    logmel = np.log(power @ _mel_matrix().T + LOG_FLOOR)  # [49, 40]
    out = logmel @ _dct_matrix().T if kind == "mfcc" else logmel
    return out.astype(np.float32)


def cache_files() -> list[Path]:
    """Every cached KWS set on disk."""
    return sorted(cache_dir().glob("kws-*.npz"))


def _cache_key(params: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]


def _load_cache(path: Path, key: str) -> KwsSet | None:
    """The cached set, or None when it is missing, damaged or for other parameters."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                return None
            names = tuple(str(n) for n in f["speaker_names"])
            audio = f["audio"] if "audio" in f.files else None
            found = KwsSet(
                f["features"], f["labels"], f["speakers"], f["takes"], f["spoken"], names, audio
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = found.labels.shape[0]
    shapes_ok = found.features.shape == (n, FRAMES, MEL_BINS) and found.speakers.shape == (n,)
    return found if shapes_ok else None


def _save_cache(path: Path, key: str, found: KwsSet) -> None:
    """Write atomically: a crash leaves the old file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "key": np.array(key),
        "features": found.features,
        "labels": found.labels,
        "speakers": found.speakers,
        "takes": found.takes,
        "spoken": found.spoken,
        "speaker_names": np.array(found.speaker_names),
    }
    if found.audio is not None:
        arrays["audio"] = found.audio
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is shared like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


Job = tuple[Speaker, str, int, int, Literal["logmel", "mfcc"]]  # speaker, class, take, seed, kind


def _clip(job: Job) -> tuple[NDArray[np.float32], NDArray[np.float32], str]:
    speaker, cls, take, seed, kind = job
    audio = synthesize(speaker, cls, take, seed)
    spoken = "" if cls == SILENCE else _unknown_word(speaker, take, seed) if cls == UNKNOWN else cls
    return audio, features(audio, kind), spoken


def _check_classes(words: tuple[str, ...]) -> None:
    for word in words:
        if word not in CLASSES:
            raise FedsimError("dataset kws", known_names("class", word, CLASSES))


def generate(
    seed: int = 0,
    takes: int = DEFAULT_TAKES,
    speakers_limit: int | None = None,
    words: tuple[str, ...] | None = None,
    progress: bool = False,
    kind: Literal["logmel", "mfcc"] = "logmel",
    keep_audio: bool = False,
) -> KwsSet:
    """``takes`` clips of every class in ``words`` (default: all 12) by each of the first
    ``speakers_limit`` speakers (default: all), cached; ``keep_audio`` also keeps the waveforms.
    """
    classes = CLASSES if words is None else words
    _check_classes(classes)
    if not classes or takes < 1 or (speakers_limit is not None and speakers_limit < 1):
        got = f"words={classes}, takes={takes}, speakers_limit={speakers_limit}"
        raise FedsimError("dataset kws", f"need a word, takes >= 1 and speakers_limit >= 1; {got}")
    voices = speakers()[:speakers_limit]
    paths = _require_programs()
    key = _cache_key(
        {
            "generator": GENERATOR_VERSION,
            "seed": seed,
            "takes": takes,
            "classes": classes,
            "speakers": [repr(s) for s in voices],  # with their base pitch and speed
            "kind": kind,
            "audio": keep_audio,
            "engines": {p: _version(paths[p]) for p in PROGRAMS},
        }
    )
    path = cache_dir() / f"kws-{key}.npz"
    cached = _load_cache(path, key) if path.exists() else None
    if cached is not None:
        return cached
    order = [(s, cls, take) for s in range(len(voices)) for cls in classes for take in range(takes)]
    jobs: list[Job] = [(voices[s], cls, take, seed, kind) for s, cls, take in order]
    clips = _run_jobs(jobs, progress)
    found = KwsSet(
        np.stack([c[1] for c in clips]),
        np.array([CLASSES.index(cls) for _, cls, _ in order], dtype=np.int64),
        np.array([s for s, _, _ in order], dtype=np.int64),
        np.array([take for _, _, take in order], dtype=np.int64),
        np.array([c[2] for c in clips], dtype="<U16"),
        tuple(s.name for s in voices),
        np.stack([c[0] for c in clips]) if keep_audio else None,
    )
    _save_cache(path, key, found)
    return found


def _run_jobs(
    jobs: list[Job], progress: bool
) -> list[tuple[NDArray[np.float32], NDArray[np.float32], str]]:
    """Synthesize in order on 2 threads: the work is in the engines' processes, not Python."""
    with ThreadPoolExecutor(max_workers=min(WORKERS, os.cpu_count() or 1)) as pool:
        results = pool.map(_clip, jobs)
        if not progress:
            return list(results)
        from rich.console import Console
        from rich.progress import Progress

        out = []
        # stderr: stdout may be a pipe carrying a command's answer (--format json)
        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("synthesizing keyword clips", total=len(jobs))
            for result in results:
                out.append(result)
                bar.advance(task)
        return out


def load_task(seed: int) -> TaskData:
    """The default corpus (``CORPUS_SEED``), split by held-out *speakers* chosen by ``seed``.

    Held-out speakers, as Speech Commands splits by speaker: a test clip's voice is never heard
    in training, so accuracy measures generalisation to new users, and the natural clients
    (speakers) own disjoint data. Per-speaker splits by take are possible from ``generate()``.
    The corpus does not change with ``seed``, so one cached set serves every scenario.
    Features are standardised with the training split's mean and standard deviation (two
    scalars, as a device would apply before its model): raw log-mel values sit around −5 ± 4,
    which makes plain SGD on an MLP diverge.
    """
    corpus = generate(CORPUS_SEED)
    rng = np.random.default_rng(derive_seed(seed, "kws", "test-speakers"))
    test: list[int] = []
    for engine in ("espeak-ng/", "flite/"):  # stratified: both engines in both splits
        ids = [i for i, n in enumerate(corpus.speaker_names) if n.startswith(engine)]
        test += [int(i) for i in rng.permutation(ids)[: round(TEST_SPEAKER_FRACTION * len(ids))]]
    is_test = np.isin(corpus.speakers, test)
    train = corpus.features[~is_test]
    centre, scale = float(train.mean()), float(train.std())
    return TaskData(
        "kws",
        ((train - centre) / scale).astype(np.float32),
        corpus.labels[~is_test],
        ((corpus.features[is_test] - centre) / scale).astype(np.float32),
        corpus.labels[is_test],
        len(CLASSES),
        LICENCE,
        groups_train=corpus.speakers[~is_test],
        groups_test=corpus.speakers[is_test],
        group_kind="speaker",
        class_names=CLASSES,
    )


SOURCE = DatasetSource(
    load_task,
    "keyword spotting: 10 words + silence + unknown, 49×40 log-mel, 50 synthetic speakers",
    LICENCE,
    "synthesized locally with espeak-ng and flite through sox -R (bit-exact), then cached",
    natural_groups="speaker",
    requires="apt-get install espeak-ng flite sox",
    files=cache_files,
    sensors=("Microphone",),
)
