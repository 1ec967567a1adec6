"""Name → object tables for algorithms, datasets, models and cost models, open to users.

A name resolves, in order, to:

1. a built-in registered with ``@table.register(name)`` (a factory, called on lookup) or listed
   with ``table.lazy(name, "package.module:attr")`` (imported on first use, so a scenario that
   names one algorithm never imports the others: plugin modules never import the table);
2. an installed package's entry point in the table's group (``fedsim.algorithms``,
   ``fedsim.models``, ``fedsim.datasets``, ``fedsim.cost_models``): ``name = "pkg.mod:attr"``;
3. a dotted path written in the scenario itself, ``"package.module:attr"``, for a module on the
   Python path (a user's own code, no packaging needed).

Whatever a table's user gets back is checked by that user (``Plugins.load``'s ``check``), so a
wrong object fails with the same located message whichever route it came by.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from fedsim.core.errors import FedsimError, clip, did_you_mean, known_names

__all__ = ["Plugins", "import_object", "is_dotted"]

T = TypeVar("T")


def is_dotted(name: str) -> bool:
    """True for ``"package.module:attr"`` (a user's object on the Python path)."""
    module, _, attr = name.partition(":")
    return bool(module) and bool(attr) and all(p.isidentifier() for p in module.split("."))


def import_object(path: str, where: str, kind: str) -> Any:
    """The object at ``"package.module:attr"``, or a located error saying what failed."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FedsimError(
            where,
            f"cannot import module '{clip(module_name)}' for {kind} '{clip(path)}': {exc}",
            "install the package that provides it, or run from the folder that holds it "
            "(it must be importable: python -c 'import " + clip(module_name) + "')",
        ) from exc
    except Exception as exc:  # the user's module raised while importing
        raise FedsimError(
            where,
            f"importing '{clip(module_name)}' for {kind} '{clip(path)}' failed: "
            f"{type(exc).__name__}: {clip(str(exc))}",
            "fix the module so that it imports",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FedsimError(
                where,
                f"module '{clip(module_name)}' has no '{clip(attr)}' ({kind} '{clip(path)}')",
                "check the name after the colon: package.module:ClassName",
            )
        obj = getattr(obj, part)
    return obj


class Plugins(Generic[T]):
    """A table of named objects; an unknown name lists the known ones and the closest.

    ``kind`` names what the table holds in messages; ``group`` is the entry-point group installed
    packages add to (None: built-ins only).
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[[], T]] = {}
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
        def decorate(factory: Callable[[], T]) -> Callable[[], T]:
            self._claim(name)
            self._factories[name] = factory
            return factory

        return decorate

    def lazy(self, name: str, path: str) -> None:
        """Register ``name`` as the object at ``"package.module:attr"``, imported on first use."""
        self._claim(name)
        self._lazy[name] = path

    def _claim(self, name: str) -> None:
        if name in self._factories or name in self._lazy:
            raise ValueError(f"{self.kind} '{name}' is registered twice")

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self.group is None:
            return {}
        found = importlib.metadata.entry_points(group=self.group)
        return {ep.name: ep for ep in found if ep.name not in self._factories | self._lazy}

    def builtins(self) -> list[str]:
        """The names fedsim itself registers."""
        return sorted({*self._factories, *self._lazy})

    def names(self) -> list[str]:
        """Built-in and installed names (not dotted paths, which any module may offer)."""
        return sorted({*self.builtins(), *self._entry_points()})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._factories or name in self._lazy or name in self._entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def known(self, name: str) -> bool:
        """True if ``name`` resolves: a registered or installed name, or a dotted path."""
        return name in self or is_dotted(name)

    def check(self, name: str) -> str:
        """``name`` if registered; otherwise ValueError with the standard message."""
        if not self.known(name):
            raise ValueError(self._unknown(name))
        return name

    def _unknown(self, name: str) -> str:
        return known_names(self.kind, name, self.names())

    def _fix(self) -> str:
        return f"use one of {', '.join(self.names())}, or package.module:Name for your own"

    def get(self, name: str, where: str = "") -> T:
        """The object ``name`` stands for; a located error if it does not resolve."""
        if name in self._factories:
            return self._factories[name]()
        if name in self._loaded:
            return self._loaded[name]
        if name in self._lazy:
            obj: T = import_object(self._lazy[name], where, self.kind)
        elif (ep := self._entry_points().get(name)) is not None:
            try:
                obj = ep.load()
            except Exception as exc:
                raise FedsimError(
                    where,
                    f"the installed {self.kind} '{clip(name)}' ({ep.value}, entry point group "
                    f"{self.group}) does not load: {type(exc).__name__}: {clip(str(exc))}",
                    "reinstall the package that provides it, or fix its entry point",
                ) from exc
        elif is_dotted(name):
            obj = import_object(name, where, self.kind)
        else:
            what = f"unknown {self.kind} '{clip(name)}'{did_you_mean(name, self.names())}"
            raise FedsimError(where, what, self._fix())
        self._loaded[name] = obj
        return obj
