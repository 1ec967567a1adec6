"""Small statistics shared by the evaluation and the sweeps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["mean_ci95"]


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t; 0 for one value)."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(array))
    if len(array) < 2:
        return mean, 0.0
    sem = float(np.std(array, ddof=1)) / math.sqrt(len(array))
    return mean, float(stats.t.ppf(0.975, len(array) - 1)) * sem
