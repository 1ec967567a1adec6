"""The base of every scenario section: frozen, unknown keys forbidden, strict types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Spec"]


class Spec(BaseModel):
    # strict: a YAML "10" is not silently an int; extra="forbid": a typo is an error, not a no-op.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
