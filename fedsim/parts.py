"""Does every algorithm the scenario schema accepts have all the parts a run needs?

An algorithm today lives in three registries: its spec (a member of the scenario's
``AlgorithmSpec`` union, so pydantic accepts its ``kind``), its device half
(``clients.learners.LEARNERS``) and its reduce (``fedsim.core.aggregators.AGGREGATORS``). A kind
that the schema accepts but one registry lacks used to validate "ok" and run with every device
update failed. ``check_parts`` refuses it up front, in ``fedsim validate`` and before a run starts.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping

from clients.learners import LEARNERS
from fedsim.core.aggregators import AGGREGATORS
from fedsim.core.errors import FedsimError
from fedsim.core.plugins import Plugins
from fedsim.core.scenario import AlgorithmSpec

__all__ = ["PARTS", "check_parts", "missing_parts", "spec_kinds"]

# what each registry holds, as the error names it → the registry
PARTS: Mapping[str, Plugins[typing.Any]] = {
    "device-side learner (clients.learners.LEARNERS)": LEARNERS,
    "aggregator (fedsim.core.aggregators.AGGREGATORS)": AGGREGATORS,
}


def spec_kinds() -> list[str]:
    """Every ``algorithm.kind`` the scenario schema accepts."""
    union = typing.get_args(AlgorithmSpec)[0]
    kinds = []
    for spec in typing.get_args(union):
        (kind,) = typing.get_args(spec.model_fields["kind"].annotation)
        kinds.append(str(kind))
    return sorted(kinds)


def missing_parts(kind: str) -> list[str]:
    """The parts ``kind`` lacks (empty: it can run)."""
    return [part for part, registry in PARTS.items() if kind not in registry]


def check_parts(kind: str, where: str = "algorithm.kind") -> None:
    """A located ``FedsimError`` when algorithm ``kind`` lacks a part."""
    missing = missing_parts(kind)
    if missing:
        complete = [k for k in spec_kinds() if not missing_parts(k)]
        raise FedsimError(
            where,
            f"algorithm '{kind}' is incomplete: no {' and no '.join(missing)} is registered, so "
            "every device update would fail",
            f"register the missing part, or choose a complete algorithm: {', '.join(complete)}",
        )
