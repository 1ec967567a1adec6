"""The model on the wire: its number format, which tensors travel, and how many bytes that is.

A scenario's ``fleet.payload_dtype`` is what devices and server exchange. With ``float16`` the
global model is rounded before it is sent down and each update before it is sent up, in both
execution modes, so the rounding changes the learning exactly as it would on real devices; the
maths in between stays float32. A device that trained only its head sends only the head.
Bytes counted are the tensors' payload (numbers × size); per-message framing is the link model's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedsim.core.reduce import Arrays

__all__ = [
    "INDEX",
    "VALUE",
    "PayloadDtype",
    "Upload",
    "non_finite",
    "payload_bytes",
    "round_trip",
    "sent_mask",
    "to_wire",
]

PayloadDtype = Literal["float32", "float16"]
INDEX, VALUE = "index", "value"  # a sparse upload's two arrays
INDEX_BYTES = 4  # uint32 positions: models up to 4 G parameters


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


def non_finite(names: Sequence[str], arrays: Arrays, loss: float = 0.0) -> str:
    """What is not finite in an update or a model (its loss, else its first such tensor), or
    ``""``: a diverged update must fail its device, never be averaged in nor counted as 0."""
    if not np.isfinite(loss):
        return f"non-finite training loss {loss}"
    for name, array in zip(names, arrays, strict=True):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            return f"non-finite values in tensor '{name}'"
    return ""


def sent_mask(
    head: Sequence[bool],
    head_only: bool,
    local_head: bool,
    frozen: Sequence[bool] | None = None,
) -> tuple[bool, ...]:
    """Which tensors a device uploads: those it trained (all, or the head when its memory allows
    only that), minus the head when the algorithm keeps it on the device (TinyMetaFed), minus
    ``frozen`` ones (a pre-trained backbone: FedIns)."""
    frozen = frozen or (False,) * len(head)
    return tuple(
        (h or not head_only) and not (h and local_head) and not f
        for h, f in zip(head, frozen, strict=True)
    )


@dataclass(frozen=True)
class Upload:
    """How a device's update travels up, in one definition for the device, the server and the
    cost model (so the bytes counted are the bytes of the payload the codec builds).

    Dense (``fraction`` 1): the sent tensors, each number in ``dtype``. Sparse (TinyMetaFed's
    top-P%): of the change φ − θ over the sent tensors, flattened and concatenated, only the
    ``ceil(fraction·n)`` largest by magnitude travel, as ``index`` (uint32, ascending) and ``value``
    (``dtype``); the receiver adds them to the θ it sent. Unsent entries are θ: no change.
    """

    dtype: PayloadDtype
    fraction: float = 1.0

    @property
    def sparse(self) -> bool:
        return self.fraction < 1.0

    def entries(self, total: int) -> int:
        """How many changes a sparse upload carries for ``total`` sent numbers (the 1e-9 keeps
        float rounding from adding one: 0.07 × 100 is 7, not 8)."""
        return min(total, math.ceil(self.fraction * total - 1e-9)) if total else 0

    def _sparse_pays(self, total: int) -> bool:
        """Sparse only while (index + value) per kept change costs less than every value: at
        P ≥ 1/2 (float32) or 1/3 (float16) the dense tensors are smaller, and are sent instead."""
        itemsize = np.dtype(self.dtype).itemsize
        return self.sparse and self.entries(total) * (INDEX_BYTES + itemsize) < total * itemsize

    def bytes(self, shapes: Sequence[tuple[int, ...]], sent: Sequence[bool]) -> int:
        total = sum(int(np.prod(s)) for s, keep in zip(shapes, sent, strict=True) if keep)
        if not self._sparse_pays(total):
            return payload_bytes(shapes, self.dtype, sent)
        return self.entries(total) * (INDEX_BYTES + np.dtype(self.dtype).itemsize)

    def encode(
        self, arrays: Arrays, base: Arrays, sent: Sequence[bool]
    ) -> dict[str, NDArray[np.generic]]:
        """What the device sends: named arrays (tensor positions, or ``index`` and ``value``)."""
        total = sum(a.size for a, s in zip(arrays, sent, strict=True) if s)
        if not self._sparse_pays(total):
            with np.errstate(over="ignore"):  # out of float16's range: inf, which the sender checks
                return {str(i): np.asarray(a, self.dtype) for i, a in enumerate(arrays) if sent[i]}
        keep = [i for i, s in enumerate(sent) if s]
        if not keep:
            delta = np.zeros(0, np.float32)
        else:
            delta = np.concatenate([(arrays[i] - base[i]).ravel() for i in keep])
        k = self.entries(delta.size)
        # largest |Δ| first; ties by position (stable), so every process picks the same entries
        index = np.sort(np.argsort(-np.abs(delta), kind="stable")[:k]).astype(np.uint32)
        return {INDEX: index, VALUE: delta[index].astype(self.dtype)}

    def decode(
        self, wire: Mapping[str, NDArray[np.generic]], base: Arrays, sent: Sequence[bool]
    ) -> Arrays:
        """The float32 arrays the receiver reconstructs (``base``: the θ it sent, as sent)."""
        if INDEX not in wire:  # dense (an upload sent dense because that was smaller, too)
            out = []
            for i, b in enumerate(base):
                if not sent[i]:
                    out.append(b)
                    continue
                if str(i) not in wire:
                    raise ValueError(f"update lacks tensor {i} (expected shape {b.shape})")
                got = np.asarray(wire[str(i)], np.float32)
                if got.shape != b.shape:
                    raise ValueError(
                        f"update tensor {i} has shape {got.shape}, expected {b.shape}: "
                        "a device must send tensors of the global model's shapes"
                    )
                out.append(got)
            return out
        keep = [i for i, s in enumerate(sent) if s]
        flat = np.concatenate([base[i].ravel() for i in keep]) if keep else np.zeros(0, np.float32)
        flat = flat.astype(np.float32, copy=True)
        index = np.asarray(wire[INDEX])
        if index.size and (index.dtype != np.uint32 or int(index.max()) >= flat.size):
            raise ValueError(f"sparse update: indices must be uint32 below {flat.size}")
        flat[index.astype(np.int64)] += np.asarray(wire[VALUE], np.float32)
        out = list(base)
        offset = 0
        for i in keep:
            out[i] = flat[offset : offset + base[i].size].reshape(base[i].shape)
            offset += base[i].size
        return out

    def apply(self, arrays: Arrays, base: Arrays, sent: Sequence[bool]) -> Arrays:
        """What the receiver gets for ``arrays``: ``decode(encode(...))``."""
        return self.decode(self.encode(arrays, base, sent), base, sent)
