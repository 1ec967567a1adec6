"""Name → lazy factory registries for algorithms, datasets, models and partitioners."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedsim.core.errors import FedsimError, known_names

__all__ = ["Plugins"]

T = TypeVar("T")


class Plugins(Generic[T]):
    """A registry of named factories; an unknown name lists the known ones and the closest."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[[], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
        def decorate(factory: Callable[[], T]) -> Callable[[], T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check(self, name: str) -> str:
        """``name`` if registered; otherwise ValueError with the standard message."""
        if name not in self._factories:
            raise ValueError(known_names(self.kind, name, self._factories))
        return name

    def get(self, name: str, where: str = "") -> T:
        if name not in self._factories:
            raise FedsimError(where, known_names(self.kind, name, self._factories))
        return self._factories[name]()
