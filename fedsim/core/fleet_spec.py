"""The fleet sections of a scenario: device groups (profiles or registry queries, availability,
faults, attached hardware), data partitions, and the edge topology (gateways between devices and
the server, design §5.1). ``fedsim.core.scenario`` assembles them into a ``Scenario``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedsim.core.errors import known_names
from fedsim.core.specs import DeviceCount, FileName, PathText, at_least, at_most
from fedsim.core.specs import Spec as _Spec

__all__ = [
    "AlwaysOn",
    "AttachedSpec",
    "AvailabilitySpec",
    "DeviceGroup",
    "DirichletPartition",
    "FaultSpec",
    "FedScaleAvailability",
    "FedScaleCapacity",
    "FleetSpec",
    "GatewayAvailabilitySpec",
    "GatewayDevices",
    "GatewaySpec",
    "IidPartition",
    "MarkovAvailability",
    "NaturalPartition",
    "OutageSpell",
    "Outages",
    "PartitionSpec",
    "ShardPartition",
    "TopologySpec",
    "TraceAvailability",
    "topology_problems",
]


class FaultSpec(_Spec):
    """Injected faults, drawn per (seed, round, device) so runs stay reproducible."""

    crash_prob: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability a device crashes in a round (counted, not fatal)",
    )


class AlwaysOn(_Spec):
    kind: Literal["always-on"] = Field("always-on", description="online all the time")


# spells are drawn one by one up to the simulated time: a mean of 10⁻⁹ s would draw ~10¹¹ spells
# per device for a 100 s run
_Spell = Annotated[
    float, at_least(1.0, "spells are simulated one by one, and a round lasts seconds")
]


class MarkovAvailability(_Spec):
    """On for Exp(mean_on_s), off for Exp(mean_off_s), alternating; seeded per device."""

    kind: Literal["markov"] = Field(description="alternating exponential on and off spells")
    mean_on_s: _Spell = Field(gt=0.0, description="mean online spell (1 / on→off rate)")
    mean_off_s: _Spell = Field(gt=0.0, description="mean offline spell (1 / off→on rate)")


class TraceAvailability(_Spec):
    """Online intervals from a CSV ``device,start,end`` (fleet device ids, simulated seconds)."""

    kind: Literal["trace"] = Field(description="online intervals read from a CSV file")
    file: PathText = Field(min_length=1, description="path relative to the scenario file")


_Assign = Literal["in-order", "seeded"]
_ASSIGN = "device i → trace client i mod k: in-order (id order) or seeded (a seeded permutation)"


class FedScaleAvailability(_Spec):
    """Online spells from FedScale's client behaviour trace (``client_behave_trace``: a pickle,
    or its JSON), wrapped modulo each client's ``finish_time`` as FedScale does."""

    kind: Literal["fedscale"] = Field(description="online spells from a FedScale behaviour trace")
    file: PathText = Field(min_length=1, description="path relative to the scenario file")
    assign: _Assign = Field("in-order", description=_ASSIGN)
    start_s: float = Field(0.0, ge=0.0, description="trace time (seconds) at which the run starts")


class FedScaleCapacity(_Spec):
    """Per-device compute speed and bandwidth from FedScale's ``client_device_capacity``: compute
    time scales with the client's ms per sample over the trace's median (the profile stands for
    the median device); the link's throughput is the client's kbit/s."""

    kind: Literal["fedscale"] = Field(description="compute and bandwidth from a FedScale trace")
    file: PathText = Field(min_length=1, description="path relative to the scenario file")
    assign: _Assign = Field("in-order", description=_ASSIGN)


AvailabilitySpec = Annotated[
    AlwaysOn | MarkovAvailability | TraceAvailability | FedScaleAvailability,
    Field(discriminator="kind"),
]


class AttachedSpec(_Spec):
    """A physical (or emulated) device on a serial bridge (``devices/PROTOCOL.md``): its group's
    one device trains on the device itself, and its profile gives the cost model's estimates."""

    port: str = Field(
        min_length=1, description="/dev/ttyACM0, /dev/serial0, socket://host:port (an emulator)"
    )
    baudrate: Annotated[int, at_most(10_000_000, "serial ports run at most a few Mbit/s")] = Field(
        115200, ge=300, description="serial line speed"
    )
    timeout_s: Annotated[float, at_most(3600.0, "a device silent for an hour is gone")] = Field(
        2.0, gt=0.0, description="per request; TRAIN waits longer per sample"
    )
    retries: int = Field(3, ge=0, le=20, description="resends of a request that timed out")


class DeviceGroup(_Spec):
    """Devices of one profile (``profile`` + ``count``), or ``count`` devices drawn (seeded) from
    those a registry query returns (``query`` + ``bind``), e.g. all that can train a model."""

    profile: str | None = Field(None, description="device profile name in the registry")
    query: PathText | None = Field(
        None, description="a named query (ontology/queries) or .rq file returning ?name ?profile"
    )
    bind: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the query's variables, e.g. {modelName: mlp.kws}"
    )
    count: DeviceCount = Field(ge=1, description="devices in the group")
    link: str | None = Field(
        None, description="which of the profile's links it uses (default: wifi, ethernet, ...)"
    )
    availability: AvailabilitySpec = Field(
        AlwaysOn(), description="when the devices are online (simulated time)"
    )
    capacity: FedScaleCapacity | None = Field(
        None, description="per-device compute speed and bandwidth from a trace (default: profile)"
    )
    faults: FaultSpec = Field(FaultSpec(), description="faults injected into the devices")
    attached: AttachedSpec | None = Field(
        None, description="a real device on a serial bridge (count 1): it trains on the device"
    )

    @model_validator(mode="after")
    def _profile_or_query(self) -> DeviceGroup:
        if (self.profile is None) == (self.query is None):
            raise ValueError("give either profile (a device class) or query (registry devices)")
        if self.bind and self.query is None:
            raise ValueError("bind only applies to a query")
        if self.attached is not None and self.count != 1:
            raise ValueError("an attached group is one device on one port: set count: 1")
        return self


class OutageSpell(_Spec):
    start_s: float = Field(ge=0.0, description="simulated time the outage starts")
    end_s: float = Field(gt=0.0, description="simulated time it ends (after start_s)")

    @model_validator(mode="after")
    def _ordered(self) -> OutageSpell:
        if self.end_s <= self.start_s:
            raise ValueError(f"an outage ends after it starts ({self.start_s} → {self.end_s})")
        return self


class Outages(_Spec):
    """Offline spells (simulated seconds from the run's start); online the rest of the time."""

    kind: Literal["outages"] = Field(description="offline during the listed spells")
    spells: list[OutageSpell] = Field(min_length=1, description="the offline spells")


GatewayAvailabilitySpec = Annotated[
    AlwaysOn | MarkovAvailability | Outages, Field(discriminator="kind")
]


class GatewayDevices(_Spec):
    """Which fleet devices reach the server through a gateway: exactly one of ``count`` (the next
    devices, in id order, that no earlier gateway took), ``groups`` (fleet.groups indices),
    ``ids`` (device ids), ``names`` (registry device names) or ``query`` (a registry query
    returning ``?name``, with ``bind``)."""

    count: DeviceCount | None = Field(
        None, ge=1, description="the next this many devices (id order) no earlier gateway took"
    )
    groups: list[int] | None = Field(
        None, min_length=1, description="indices into fleet.groups: all their devices"
    )
    ids: list[int] | None = Field(None, min_length=1, description="fleet device ids")
    names: list[str] | None = Field(None, min_length=1, description="registry device names")
    query: str | None = Field(
        None, description="a named registry query or .rq file returning ?name"
    )
    bind: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the query's variables"
    )

    @model_validator(mode="after")
    def _one_way(self) -> GatewayDevices:
        ways = [k for k in ("count", "groups", "ids", "names", "query") if getattr(self, k)]
        if len(ways) != 1:
            raise ValueError(
                "give exactly one of count, groups, ids, names or query"
                + (f" (got {', '.join(ways)})" if ways else "")
            )
        if self.bind and self.query is None:
            raise ValueError("bind only applies to a query")
        return self


class GatewaySpec(_Spec):
    """A gateway (a Raspberry Pi, a phone, an edge box) between devices and the server: it
    aggregates its devices' updates (or, as an edge server, its child gateways' partials) and
    sends one partial up its ``link``."""

    name: FileName = Field(description="the gateway's name (a registry gateway's, if any)")
    profile: str | None = Field(
        None,
        description="its device profile (default: the registry gateway of this name's, else rpi4)",
    )
    link: str | None = Field(
        None,
        description="its uplink to its parent: wifi, ethernet, lte, ... (default: the registry "
        "gateway of this name's uplinkKind, else the profile's preferred link)",
    )
    parent: str | None = Field(
        None, description="the gateway (an edge server) it reports to; none: the server"
    )
    devices: GatewayDevices | None = Field(
        None, description="the devices behind it; none: an edge server above other gateways"
    )
    availability: GatewayAvailabilitySpec = Field(
        AlwaysOn(), description="when the gateway is online (simulated time)"
    )


class TopologySpec(_Spec):
    """Tiers between devices and the server (design §5.1). Devices behind no gateway reach the
    server directly; with no gateways this is the flat star, with exactly its results."""

    gateways: list[GatewaySpec] = Field(
        default_factory=list, description="the gateways and edge servers, each named once"
    )
    local_rounds: Annotated[
        int, at_most(1_000, "each local round trains every device behind the gateway")
    ] = Field(1, ge=1, description="device rounds a gateway aggregates locally per global round")


class IidPartition(_Spec):
    kind: Literal["iid"] = Field("iid", description="shuffled, equal shares")


class DirichletPartition(_Spec):
    kind: Literal["dirichlet"] = Field(
        description="label mix per device drawn from Dirichlet(alpha)"
    )
    alpha: Annotated[float, at_most(1e6, "above ~100 the split is IID already (use kind: iid)")] = (
        Field(gt=0.0, description="concentration; small = very non-IID")
    )
    min_partition_size: Annotated[
        int, at_most(1_000_000, "it is retried until every device has as many samples")
    ] = Field(2, ge=0, description="redraw until every device has at least this many samples")


class ShardPartition(_Spec):
    """Sort by label, cut into shards, deal each device ``shards_per_device`` (McMahan et al.)."""

    kind: Literal["shards"] = Field(description="label-sorted shards dealt to devices")
    shards_per_device: Annotated[int, at_most(10_000, "every shard is cut from the dataset")] = (
        Field(2, ge=1, description="shards each device gets")
    )


class NaturalPartition(_Spec):
    """One natural group per device (writer, speaker, subject, room): real non-IID clients."""

    kind: Literal["natural"] = Field(description="one natural group of the dataset per device")


PartitionSpec = Annotated[
    IidPartition | DirichletPartition | ShardPartition | NaturalPartition,
    Field(discriminator="kind"),
]


class FleetSpec(_Spec):
    groups: list[DeviceGroup] = Field(
        min_length=1, description="device groups: a profile or a registry query, and a count"
    )
    partition: PartitionSpec = Field(
        IidPartition(), description="how the training data is split across devices"
    )
    samples_per_device: (
        Annotated[int, at_most(100_000, "a device's samples are generated in memory as it trains")]
        | None
    ) = Field(
        None, ge=1, description="generated datasets only: local samples per device (default 32)"
    )
    memory_policy: Literal["skip", "head-only"] = Field(
        "skip", description="a device whose SRAM cannot hold training: sit out, or train the head"
    )
    payload_dtype: Literal["float32", "float16"] = Field(
        "float32", description="number format of the model sent down and the update sent up"
    )
    cost_model: str = Field("datasheet", description="datasheet (catalog figures) or fake")

    @property
    def size(self) -> int:
        return sum(group.count for group in self.groups)


def topology_problems(topology: TopologySpec, fleet: FleetSpec) -> list[tuple[str, str, str]]:
    """Cross-field problems of a topology as (dotted path, what, fix)."""
    problems = []
    names = [g.name for g in topology.gateways]
    index = {name: i for i, name in enumerate(names)}
    for i, gateway in enumerate(topology.gateways):
        where = f"topology.gateways[{i}]"
        if names.index(gateway.name) != i:
            problems.append((f"{where}.name", f"'{gateway.name}' names two gateways", "rename one"))
        children = [g.name for g in topology.gateways if g.parent == gateway.name]
        if gateway.parent is not None and gateway.parent not in index:
            problems.append(
                (
                    f"{where}.parent",
                    known_names("gateway", gateway.parent, names),
                    "name another gateway, or drop parent (the server)",
                )
            )
        if gateway.devices is None and not children:
            problems.append(
                (
                    f"{where}.devices",
                    f"gateway '{gateway.name}' has no devices and no gateway reports to it",
                    "give devices: {count: N} (or groups, ids, names, query)",
                )
            )
        if gateway.devices is not None and children:
            problems.append(
                (
                    f"{where}.devices",
                    f"gateway '{gateway.name}' has devices and gateways ({children[0]}) below "
                    "it; a tier holds one kind",
                    "put its devices behind a gateway of their own",
                )
            )
        devices = gateway.devices
        if devices is not None and devices.groups is not None:
            bad = [g for g in devices.groups if not 0 <= g < len(fleet.groups)]
            if bad:
                problems.append(
                    (
                        f"{where}.devices.groups",
                        f"no fleet group {bad[0]} (the fleet has {len(fleet.groups)})",
                        f"use indices 0..{len(fleet.groups) - 1}",
                    )
                )
        if devices is not None and devices.ids is not None:
            bad = [d for d in devices.ids if not 0 <= d < fleet.size]
            if bad:
                problems.append(
                    (
                        f"{where}.devices.ids",
                        f"no device {bad[0]} (the fleet has {fleet.size})",
                        f"use device ids 0..{fleet.size - 1}",
                    )
                )
        path, parent = [gateway.name], gateway.parent
        while parent is not None and parent in index and parent not in path:
            path.append(parent)
            parent = topology.gateways[index[parent]].parent
        if parent == gateway.name and min(path, key=names.index) == gateway.name:
            problems.append(  # once per cycle, at its first gateway
                (
                    f"{where}.parent",
                    f"gateways {' → '.join([*path, gateway.name])} report in a cycle",
                    "make the gateways a tree under the server",
                )
            )
    return problems
