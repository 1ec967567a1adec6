"""A minimal read-only registry API over the Turtle catalog: device profiles by name."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from rdflib import Graph

from fedsim.core.errors import FedsimError, known_names
from fedsim.core.profiles import DeviceProfile

__all__ = ["CATALOG_DIR", "DeviceRegistry", "default_registry"]

HERE = Path(__file__).parent
CATALOG_DIR = HERE / "catalog"
QUERY_DIR = HERE / "queries"


class DeviceRegistry:
    """Device profiles read from an RDF graph with the named query ``profiles.rq``."""

    def __init__(self, graph: Graph) -> None:
        self._profiles = self._read(graph)

    @classmethod
    def from_files(cls, paths: list[Path]) -> DeviceRegistry:
        graph = Graph()
        for path in paths:
            graph.parse(path, format="turtle")
        return cls(graph)

    @staticmethod
    def _read(graph: Graph) -> dict[str, DeviceProfile]:
        rows: dict[str, dict[str, object]] = {}
        radios: dict[str, list[str]] = {}
        for row in graph.query((QUERY_DIR / "profiles.rq").read_text(encoding="utf-8")):
            values: dict[str, Any] = row.asdict()  # type: ignore[union-attr]
            name = str(values["name"])
            rows[name] = {
                "name": name,
                "label": str(values["label"]),
                "core": str(values["core"]),
                "cores": int(values["cores"].toPython()),
                "clock_mhz": float(values["clock"].toPython()),
                "sram_bytes": int(values["sram"].toPython()),
                "flash_bytes": int(values["flash"].toPython()),
                "fpu": bool(values["fpu"].toPython()),
                "source": str(values["source"]),
            }
            radio = values.get("radio")
            radios.setdefault(name, [])
            if radio is not None:
                radios[name].append(str(radio))
        return {
            name: DeviceProfile.model_validate({**row, "radios": tuple(radios[name])})
            for name, row in rows.items()
        }

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def profiles(self) -> list[DeviceProfile]:
        return [self._profiles[n] for n in self.names()]

    def profile(self, name: str, where: str = "") -> DeviceProfile:
        """The profile ``name``; an unknown name lists the known ones and the closest match."""
        if name not in self._profiles:
            raise FedsimError(where, known_names("profile", name, self._profiles))
        return self._profiles[name]


@lru_cache(maxsize=1)
def default_registry() -> DeviceRegistry:
    """The registry of the catalog shipped with fedsim (read once per process)."""
    return DeviceRegistry.from_files(sorted(CATALOG_DIR.glob("*.ttl")))
