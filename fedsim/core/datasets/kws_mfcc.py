"""Keyword spotting as MLPerf Tiny's DS-CNN hears it: 49 frames × 10 MFCCs.

The clips, speakers and split are ``kws``'s (the same cached corpus, held-out speakers chosen by
the seed). Each frame's 40 log-mel bands (30 ms windows, 20 ms stride) become their DCT-II, of
which the first 10 coefficients are kept: the MLPerf Tiny front end's layout (``mfcc``
features, ``dct_coefficient_count=10``). Its mel filters span 20–4000 Hz where ``kws``'s span
125–7500 Hz (TFLite micro-speech), so the features have the benchmark's shape and kind, not its
exact values. Each coefficient is then standardised with the training split's mean and standard
deviation (20 scalars a device applies before its model): c0, the frame's loudness, is tens of
times larger than the others.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets import kws
from fedsim.core.datasets.base import DatasetSource, TaskData

__all__ = ["COEFFICIENTS", "SOURCE", "dct_ii", "load_task", "mfcc"]

COEFFICIENTS = 10


def dct_ii(bands: int, keep: int) -> NDArray[np.float64]:
    """[keep, bands]: the first ``keep`` rows of the orthonormal DCT-II over ``bands`` values."""
    n, k = np.arange(bands), np.arange(keep)
    rows: NDArray[np.float64] = np.sqrt(2 / bands) * np.cos(
        np.pi / bands * (n[None, :] + 0.5) * k[:, None]
    )
    rows[0] /= np.sqrt(2)
    return rows


def mfcc(logmel: NDArray[np.float32], keep: int = COEFFICIENTS) -> NDArray[np.float32]:
    """[..., frames, keep] MFCCs of [..., frames, bands] log-mel energies."""
    out: NDArray[np.float32] = (logmel @ dct_ii(logmel.shape[-1], keep).T).astype(np.float32)
    return out


def load_task(seed: int) -> TaskData:
    """``kws``'s split, as [N, 49, 10] MFCCs standardised per coefficient.

    ``kws`` standardises its log-mel with two scalars (x − c) / s; that only shifts c0 and scales
    every coefficient, which the per-coefficient standardisation here undoes, so the result is
    what standardising the raw log-mel's MFCCs would give."""
    base = kws.load_task(seed)
    train, test = mfcc(base.x_train), mfcc(base.x_test)
    centre = train.mean(axis=(0, 1), dtype=np.float64)
    scale = train.std(axis=(0, 1), dtype=np.float64)
    return replace(
        base,
        name="kws-mfcc",
        x_train=((train - centre) / scale).astype(np.float32),
        x_test=((test - centre) / scale).astype(np.float32),
    )


SOURCE = DatasetSource(
    load_task,
    "keyword spotting as MLPerf Tiny's DS-CNN takes it: kws's clips as 49×10 MFCCs "
    "(DCT-II of the 40 log-mel bands, first 10)",
    kws.LICENCE,
    "derived from kws (synthesized locally with espeak-ng and flite through sox -R, cached)",
    natural_groups="speaker",
    requires=kws.SOURCE.requires,
    files=kws.cache_files,
    sensors=kws.SOURCE.sensors,
)
