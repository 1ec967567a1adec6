"""SVG path data → cubic Bézier chains → polylines: what the KanjiVG renderer draws with.

Only the commands KanjiVG uses (M L H V C S Z, absolute and relative); straight segments become
cubics so every stroke is one kind of chain.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

__all__ = ["Chain", "flatten", "parse_path"]

Chain = NDArray[np.float64]  # [3k+1, 2] cubic Bézier chain P0 C C P1 C C P2 ...
_TOKEN = re.compile(r"[A-Za-z]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Z": 0}
_T = np.linspace(0, 1, 10)[:, None]
_BERNSTEIN = np.concatenate([(1 - _T) ** 3, 3 * (1 - _T) ** 2 * _T, 3 * (1 - _T) * _T**2, _T**3], 1)


def parse_path(d: str) -> list[Chain]:
    """SVG path data (M L H V C S Z, absolute or relative) → absolute cubic Bézier chains, one
    per subpath; straight segments become cubics."""
    tokens = _TOKEN.findall(d)
    chains: list[list[tuple[float, float]]] = []
    x = y = sx = sy = cx = cy = 0.0
    i, cmd = 0, ""
    while i < len(tokens):
        if tokens[i].isalpha():
            cmd, i = tokens[i], i + 1
        elif cmd in ("", "Z", "z"):
            raise ValueError(f"number {tokens[i]!r} without a command")
        op, n = cmd.upper(), _ARGS.get(cmd.upper(), -1)
        if n < 0:
            raise ValueError(f"unsupported path command {cmd!r}")
        if len(tokens[i : i + n]) < n or any(t.isalpha() for t in tokens[i : i + n]):
            raise ValueError(f"command {cmd!r} needs {n} numbers")
        v, i = [float(t) for t in tokens[i : i + n]], i + n
        ox, oy = (x, y) if cmd.islower() else (0.0, 0.0)
        if op == "M":
            x, y = sx, sy = cx, cy = ox + v[0], oy + v[1]
            chains.append([(x, y)])
            cmd = "l" if cmd == "m" else "L"  # further pairs after a moveto are linetos
            continue
        if not chains:
            raise ValueError("path data does not start with a moveto")
        if op in "CS":
            c1 = (ox + v[0], oy + v[1]) if op == "C" else (2 * x - cx, 2 * y - cy)  # S mirrors
            c2, end = (ox + v[-4], oy + v[-3]), (ox + v[-2], oy + v[-1])
            cx, cy = c2
        else:  # a straight segment, as a cubic; a following S mirrors nothing
            if op == "Z":
                end = (sx, sy)
            elif op == "L":
                end = (ox + v[0], oy + v[1])
            else:
                end = (ox + v[0], y) if op == "H" else (x, oy + v[0])
            c1 = (x + (end[0] - x) / 3, y + (end[1] - y) / 3)
            c2 = (x + 2 * (end[0] - x) / 3, y + 2 * (end[1] - y) / 3)
            cx, cy = end
        chains[-1] += [c1, c2, end]
        x, y = end
    return [np.array(c, dtype=np.float64) for c in chains if len(c) > 1]


def flatten(chain: Chain) -> NDArray[np.float64]:
    """A cubic chain [3k+1, 2] → polyline [9k+1, 2] (10 samples per segment)."""
    segments = np.stack([chain[0:-1:3], chain[1::3], chain[2::3], chain[3::3]], axis=1)
    curve = np.einsum("tj,kjd->ktd", _BERNSTEIN, segments)  # [k, 10, 2]
    return np.concatenate([curve[0, :1], curve[:, 1:].reshape(-1, 2)])
