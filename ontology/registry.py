"""A minimal read-only registry API over the Turtle catalog: device profiles by name."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from rdflib import Graph

from fedsim.core.errors import FedsimError, known_names
from fedsim.core.profiles import DeviceProfile

__all__ = ["CATALOG_DIR", "DeviceRegistry", "default_registry"]


def _data_dir() -> Path:
    """Where the Turtle catalog and the .rq queries are.

    Beside this module in a checkout or an installed wheel. Under ``flwr run`` this module runs
    from Flower's app bundle (FAB), which keeps only .py/.toml/.md/.yaml/.json files, so the data
    comes from the installed fedsim distribution instead (editable installs point at the checkout).
    """
    here = Path(__file__).parent
    if (here / "catalog").is_dir():
        return here
    dist = metadata.distribution("fedsim")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        return Path(url2pathname(urlparse(direct["url"]).path)) / "ontology"
    return Path(str(dist.locate_file("ontology")))


DATA_DIR = _data_dir()
CATALOG_DIR = DATA_DIR / "catalog"
QUERY_DIR = DATA_DIR / "queries"


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
