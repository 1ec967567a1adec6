"""The model on the wire: its number format, which tensors travel, and how many bytes that is.

A scenario's ``fleet.payload_dtype`` is what devices and server exchange. With ``float16`` the
global model is rounded before it is sent down and each update before it is sent up, in both
execution modes, so the rounding changes the learning exactly as it would on real devices; the
maths in between stays float32. A device that trained only its head sends only the head.
Bytes counted are the tensors' payload (numbers × size); per-message framing is the link model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedsim.core.reduce import Arrays

__all__ = ["PayloadDtype", "payload_bytes", "round_trip", "to_wire"]

PayloadDtype = Literal["float32", "float16"]


def to_wire(
    arrays: Sequence[NDArray[np.floating]], dtype: PayloadDtype
) -> list[NDArray[np.floating]]:
    """The arrays as they are sent."""
    return [np.asarray(a, dtype=dtype) for a in arrays]


def round_trip(arrays: Arrays, dtype: PayloadDtype) -> Arrays:
    """The float32 arrays the receiver gets back (unchanged for float32)."""
    if dtype == "float32":
        return arrays
    return [np.asarray(a, dtype=dtype).astype(np.float32) for a in arrays]


def payload_bytes(
    shapes: Sequence[tuple[int, ...]], dtype: PayloadDtype, sent: Sequence[bool] | None = None
) -> int:
    """Bytes of the tensors of ``shapes`` that are sent (all, or where ``sent`` is True)."""
    size = np.dtype(dtype).itemsize
    return sum(
        int(np.prod(shape)) * size for i, shape in enumerate(shapes) if sent is None or sent[i]
    )
