"""Device profiles as plain values: what the registry (``ontology``) returns for a device class."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeviceProfile"]


class DeviceProfile(BaseModel):
    """Datasheet figures of one device class, in canonical units (bytes, MHz)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="short id used in scenarios, e.g. 'nano33-ble-sense'")
    label: str
    core: str
    cores: int = Field(ge=1)
    clock_mhz: float = Field(gt=0)
    sram_bytes: int = Field(gt=0)
    flash_bytes: int = Field(gt=0)
    fpu: bool
    radios: tuple[str, ...]
    source: str = Field(description="where the figures come from")
