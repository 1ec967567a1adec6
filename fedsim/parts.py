"""Is every algorithm a scenario can name complete?

An algorithm is one class (``fedsim.core.algorithms.Algorithm``) found by its kind in one table
(built-ins, installed entry points, or a dotted path). ``check_parts`` refuses a kind whose class
lacks a required method before any output, in ``fedsim validate`` and before a run starts;
``missing_parts`` lists, for every name the table knows, what it lacks (``fedsim algorithms``).
"""

from __future__ import annotations

from fedsim.core.algorithms import ALGORITHMS, algorithm_class, missing_methods
from fedsim.core.errors import FedsimError

__all__ = ["check_parts", "missing_parts", "spec_kinds"]


def spec_kinds() -> list[str]:
    """Every ``algorithm.kind`` fedsim knows by name (built-in and installed)."""
    return ALGORITHMS.names()


def missing_parts(kind: str) -> list[str]:
    """What ``kind``'s class lacks (empty: it can run); a kind that does not load lacks all."""
    try:
        cls = ALGORITHMS.get(kind, "algorithm.kind")
    except FedsimError as exc:
        return [exc.what]
    return missing_methods(cls)


def check_parts(kind: str, where: str = "algorithm.kind") -> None:
    """A located ``FedsimError`` when algorithm ``kind`` is incomplete."""
    algorithm_class(kind, where)
