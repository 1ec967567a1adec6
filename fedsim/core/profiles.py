"""Device profiles and link technologies as plain values: what the registry (``ontology``) returns.

Canonical units: bytes, MHz, milliwatts, seconds, bits per second. Every figure carries its source.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LINK_PREFERENCE", "DeviceProfile", "LinkPower", "LinkType", "ModelFigures"]

# The link a device uses when its scenario group names none: the first of these it has.
LINK_PREFERENCE = ("wifi", "ethernet", "ble", "lora", "serial", "lte")


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LinkPower(_Value):
    """What one of a device's links draws while sending and receiving (on top of idle)."""

    kind: str = Field(description="link technology: ble, wifi, ethernet, lora, serial")
    tx_mw: float = Field(ge=0)
    rx_mw: float = Field(ge=0)
    source: str


class LinkType(_Value):
    """A link technology as the application sees it: useful throughput and per-message costs."""

    kind: str
    label: str
    throughput_bps: float = Field(gt=0, description="application-level payload bits per second")
    latency_s: float = Field(ge=0, description="fixed cost of one round trip")
    mtu_bytes: int = Field(
        gt=0, description="payload per round trip: a packet (BLE, LoRa, serial), a TCP window"
    )
    source: str


class DeviceProfile(_Value):
    """Datasheet figures of one device class."""

    name: str = Field(description="short id used in scenarios, e.g. 'nano33-ble-sense'")
    label: str
    board: str = Field(min_length=1, description="as vendors and MLPerf Tiny write it")
    soc: str = Field(min_length=1, description="the chip the figures are of, e.g. 'STM32L4R5ZI'")
    core: str
    cores: int = Field(ge=1)
    clock_mhz: float = Field(gt=0)
    sram_bytes: int = Field(gt=0)
    flash_bytes: int = Field(gt=0)
    fpu: bool
    source: str = Field(description="where the core, clock and memory figures come from")
    links: tuple[LinkPower, ...] = ()
    active_mw: float = Field(gt=0, description="whole device computing at full clock")
    idle_mw: float = Field(ge=0, description="whole device waiting (sleep between rounds)")
    power_source: str
    cycles_per_mac: float = Field(gt=0, description="float32 multiply-accumulate, one core")
    cycles_source: str

    @property
    def radios(self) -> tuple[str, ...]:
        return tuple(link.kind for link in self.links)

    def link(self, kind: str | None = None) -> LinkPower | None:
        """The named link, or the preferred one (``LINK_PREFERENCE``); None if it has none."""
        by_kind = {link.kind: link for link in self.links}
        if kind is not None:
            return by_kind.get(kind)
        return next((by_kind[k] for k in LINK_PREFERENCE if k in by_kind), None)


class ModelFigures(_Value):
    """A model architecture on a dataset, with its counted costs (``devices.model_catalog``)."""

    architecture: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    sensors: tuple[str, ...]  # fedsim vocabulary sensor classes, e.g. "Microphone"
    parameters: int
    forward_macs: int
    train_macs: int
    inference_ram_bytes: int  # activations at batch 1; weights read from flash
    inference_flash_bytes: int
    train_ram_bytes: int
    head_train_ram_bytes: int
    train_batch_size: int
    quantization: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.dataset}"
