"""The base of every scenario section (frozen, unknown keys forbidden, strict types, finite
numbers) and the bounded types its fields share: an upper bound on every count that sizes memory
or time, with the reason in the message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from fedsim.core.errors import shown

__all__ = [
    "BatchSize",
    "Checked",
    "DeviceCount",
    "Epochs",
    "FileName",
    "PathText",
    "Rounds",
    "Seed",
    "Spec",
    "Steps",
    "at_least",
    "at_most",
]


class Spec(BaseModel):
    # strict: a YAML "10" is not silently an int; extra="forbid": a typo is an error, not a no-op;
    # allow_inf_nan=False: .inf or .nan in any number (lr, alpha, a timeout) would make every loss,
    # model and cost NaN and still report success.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Checked:
    """A check run after pydantic's own validation that also states its bound in the JSON
    Schema (``minimum``, ``maximum``): pydantic cannot see inside a validator function, so
    without them ``fedsim schema`` and the scenario reference would not show the bound."""

    check: Callable[[Any], Any]
    minimum: int | float | None = None
    maximum: int | float | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        for keyword in ("minimum", "maximum"):
            if getattr(self, keyword) is not None:
                found[keyword] = getattr(self, keyword)
        return found


def at_most(limit: int | float, why: str) -> Checked:
    """An upper bound with its reason (``why``: what the value sizes), e.g. a device count that
    is held in memory. Lower bounds stay ``Field(ge=...)``."""

    def check(value: int | float) -> int | float:
        if value > limit:
            raise ValueError(
                f"must be at most {limit:,}, got {shown(value)}: {why}; use at most {limit:,}"
            )
        return value

    return Checked(check, maximum=limit)


def at_least(limit: float, why: str) -> Checked:
    """A lower bound with its reason, where the obvious one (> 0) is not enough."""

    def check(value: float) -> float:
        if value < limit:
            raise ValueError(
                f"must be at least {limit:g}, got {shown(value)}: {why}; use at least {limit:g}"
            )
        return value

    return Checked(check, minimum=limit)


SEED_LIMIT = 2**32


def _seed(value: int) -> int:
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(
            f"must be from 0 to {SEED_LIMIT - 1:,}, got {shown(value)}: numpy, scikit-learn and "
            f"Flower take 32-bit seeds; use a value from 0 to {SEED_LIMIT - 1}"
        )
    return value


def _file_name(name: str) -> str:
    size = len(name.encode())
    if size > 255:
        raise ValueError(
            f"is {size} bytes long: it becomes a file or folder name, which holds at most 255 "
            "bytes; shorten it"
        )
    if set(name) == {"."}:
        raise ValueError(f"'{name}' names a folder, not a run; use letters or digits")
    return name


def _path_text(path: str) -> str:
    if "\x00" in path:
        raise ValueError("a path cannot hold a NUL character; remove it")
    if len(path.encode()) > 4096:
        raise ValueError(
            f"is {len(path.encode()):,} bytes long: a path holds at most 4,096; shorten it"
        )
    longest = max((len(part.encode()) for part in path.split("/")), default=0)
    if longest > 255:
        raise ValueError(
            f"names a file or folder {longest} bytes long: a name holds at most 255; shorten it"
        )
    return path


Seed = Annotated[int, Checked(_seed, minimum=0, maximum=SEED_LIMIT - 1)]
# letters, digits, _ . - only: the name is used as a results folder and in file names
FileName = Annotated[
    str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$"), AfterValidator(_file_name)
]
PathText = Annotated[str, AfterValidator(_path_text)]

# Counts that size memory or time; a value in the 10⁸-10¹² range is a typo or an attack, and
# would run out of memory (devices, batches) or run for days (rounds, steps) instead of failing.
MAX_DEVICES = 1_000_000
DeviceCount = Annotated[
    int,
    at_most(
        MAX_DEVICES,
        "every device is simulated in this process, its profile and data held in memory",
    ),
]
Rounds = Annotated[int, at_most(100_000, "every round is run, logged and checkpointed in turn")]
Epochs = Annotated[int, at_most(1_000, "each epoch passes over all of a device's samples")]
Steps = Annotated[int, at_most(1_000_000, "every step is run in turn")]
BatchSize = Annotated[int, at_most(65_536, "a batch and its activations are held in memory")]
